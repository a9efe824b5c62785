package pgserver

import (
	"os/exec"
	"runtime"
	"syscall"
)

// procAttr runs a child as cred (nil: as the caller), in its own process group so that a
// terminal's Ctrl-C reaches only the parent, which decides how to stop the server, and has the
// kernel send it deathsig when the parent dies.
func procAttr(cred *syscall.Credential, deathsig syscall.Signal) *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Credential: cred, Setpgid: true, Pdeathsig: deathsig}
}

// startChild starts cmd and returns a channel that receives the result of cmd.Wait.
//
// The parent-death signal fires when the thread that started the child ends, not the process,
// and the Go runtime ends a thread whose goroutine exits while locked to it. So the child is
// started from a goroutine that holds its thread until the child has exited.
func startChild(cmd *exec.Cmd) (<-chan error, error) {
	started := make(chan error, 1)
	waited := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		waited <- cmd.Wait()
	}()
	if err := <-started; err != nil {
		return nil, err
	}
	return waited, nil
}
