package main

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

// proc is one of the stack's programs running as a child process.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has exited
	err     error         // its exit status, read after exited is closed

	mu       sync.Mutex
	stopping bool
}

// startProc starts bin as a child process: in its own process group, so that a Ctrl-C in the
// terminal reaches only the benchmark, which stops its children in order; killed by the
// kernel if the benchmark dies; its output appended to logPath. failed receives an error if
// it exits before stop is called.
func startProc(name, bin string, args, env []string, logPath string, failed chan<- error) (*proc, error) {
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, logPath: logPath, exited: make(chan struct{})}
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
			case failed <- fmt.Errorf("%s exited unexpectedly (%v); its log:\n%s", name, p.err, tail(logPath, 30)):
			default: // another child's death is already being reported
			}
		}
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// stop asks the process to stop (SIGTERM) and kills it if it has not within grace.
func (p *proc) stop(grace time.Duration) {
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

// tail returns about the last n lines of a file.
func tail(path string, n int) string {
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

// freeAddr returns a loopback address that nothing listens on at the moment. The port comes
// from below the kernel's ephemeral range, which the kernel never hands out on its own: between
// this check and the service's bind, only a process that asks for this very port can take it,
// not any of the connections and ":0" listeners that tests running beside the benchmark open.
func freeAddr() (string, error) {
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

// waitReady polls url (a /readyz) until it answers 200, failed reports a child's death, or
// ctx ends.
func waitReady(ctx context.Context, name, url string, failed <-chan error) error {
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

// waitLine waits until the file at path holds a line starting with prefix and returns the
// rest of that line.
func waitLine(ctx context.Context, path, prefix string, failed <-chan error) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	for {
		if f, err := os.Open(path); err == nil {
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				if rest, ok := strings.CutPrefix(sc.Text(), prefix); ok {
					f.Close()
					return strings.TrimSpace(rest), nil
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
