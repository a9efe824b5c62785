//go:build unix && !linux

package pgserver

import (
	"os/exec"
	"syscall"
)

// procAttr runs a child as cred (nil: as the caller), in its own process group so that a
// terminal's Ctrl-C reaches only the parent, which decides how to stop the server. Without a
// parent-death signal on this system, a server outlives a parent that dies without stopping it.
func procAttr(cred *syscall.Credential, _ syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true}
}

// startChild starts cmd and returns a channel that receives the result of cmd.Wait.
func startChild(cmd *exec.Cmd) (<-chan error, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	return waited, nil
}
