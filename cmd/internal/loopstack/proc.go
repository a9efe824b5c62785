package loopstack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Proc is one of the stack's programs running as a child process.
type Proc struct {
	Name    string
	cmd     *exec.Cmd
	LogPath string
	exited  chan struct{} // closed once the process has exited
	err     error         // its exit status, read after exited is closed

	mu       sync.Mutex
	stopping bool
}

// StartProc starts bin as a child process: in its own process group, so that a Ctrl-C in the
// terminal reaches only the parent, which stops its children in order; killed by the kernel if
// the parent dies; its output appended to logPath. failed receives an error if it exits before
// Stop or Kill is called.
func StartProc(name, bin string, args, env []string, logPath string, failed chan<- error) (*Proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	p := &Proc{Name: name, LogPath: logPath, exited: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	// The parent-death signal fires when the thread that started the child ends, and the Go
	// runtime ends a thread whose goroutine exits while locked to it: start the child from a
	// goroutine that holds its thread until the child has exited.
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		defer logf.Close()
		if err := p.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		p.err = p.cmd.Wait()
		close(p.exited)
		p.mu.Lock()
		stopping := p.stopping
		p.mu.Unlock()
		if !stopping {
			select {
			case failed <- fmt.Errorf("%s exited unexpectedly (%v); its log:\n%s", name, p.err, Tail(logPath, 30)):
			default: // another child's death is already being reported
			}
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// PID returns the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Stop asks the process to stop (SIGTERM) and kills it if it has not within grace.
func (p *Proc) Stop(grace time.Duration) {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

// Kill kills the process with SIGKILL, as a crash would, and waits until it has exited.
func (p *Proc) Kill() {
	p.mu.Lock()
	p.stopping = true
	p.mu.Unlock()
	_ = p.cmd.Process.Kill()
	<-p.exited
}

// Tail returns about the last n lines of a file.
func Tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "(" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// FreeAddr returns a loopback address that nothing listens on at the moment. The port comes
// from below the kernel's ephemeral range, which the kernel never hands out on its own: between
// this check and the service's bind, only a process that asks for this very port can take it,
// not any of the connections and ":0" listeners that tests running beside the stack open.
func FreeAddr() (string, error) {
	low := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	const span = 10_000
	if low-span < 1024 {
		return freeEphemeralAddr()
	}
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(low-span+rand.IntN(span)))
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		return addr, nil
	}
	return freeEphemeralAddr()
}

func freeEphemeralAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// FreeAddrs returns n distinct addresses from FreeAddr.
func FreeAddrs(n int) ([]string, error) {
	var addrs []string
	for len(addrs) < n {
		a, err := FreeAddr()
		if err != nil {
			return nil, err
		}
		dup := false
		for _, b := range addrs {
			dup = dup || a == b
		}
		if !dup {
			addrs = append(addrs, a)
		}
	}
	return addrs, nil
}

// WaitReady polls url (a /readyz) until it answers 200, failed reports a child's death, or
// ctx ends.
func WaitReady(ctx context.Context, name, url string, failed <-chan error) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	client := &http.Client{Timeout: 2 * time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case err := <-failed:
			return err
		case <-ctx.Done():
			return fmt.Errorf("%s not ready at %s: %w", name, url, ctx.Err())
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// WaitLine waits until the file at path holds, past its first from bytes, a line starting with
// prefix and returns the rest of that line.
func WaitLine(ctx context.Context, path string, from int64, prefix string, failed <-chan error) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if f, err := os.Open(path); err == nil {
			if _, err := f.Seek(from, io.SeekStart); err == nil {
				sc := bufio.NewScanner(f)
				for sc.Scan() {
					if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
						f.Close()
						return strings.TrimSpace(rest), nil
					}
				}
			}
			f.Close()
		}
		select {
		case err := <-failed:
			return "", err
		case <-ctx.Done():
			return "", fmt.Errorf("no %q in %s: %w", prefix, path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// fileSize returns the size of the file at path, or 0 if it does not exist.
func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}
