package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sync"
	"time"
)

// pprofArgs gives the service name a pprof listener when --profile is set, and returns the
// flag that turns it on.
func (s *stack) pprofArgs(name string) ([]string, error) {
	if s.cfg.profileDir == "" {
		return nil, nil
	}
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	if s.pprof == nil {
		s.pprof = map[string]string{}
	}
	s.pprof[name] = addr
	return []string{"--pprof-addr", addr}, nil
}

// startProfiles takes a CPU profile of --profile-seconds from every service at once, and a heap
// profile after it, into --profile's directory (name.cpu.pprof, name.heap.pprof, read with `go
// tool pprof`). The returned function waits for them and reports what failed.
func (s *stack) startProfiles() (wait func()) {
	if s.cfg.profileDir == "" {
		return func() {}
	}
	var wg sync.WaitGroup
	// The benchmark's own process too: the load generator and the provider fakes share the
	// machine with Herald.
	wg.Go(func() {
		file := filepath.Join(s.cfg.profileDir, "bench.cpu.pprof")
		if err := profileSelf(file, s.cfg.profileTime); err != nil {
			fmt.Fprintf(s.Out, "profile %s: %v\n", file, err)
		}
	})
	for name, addr := range s.pprof {
		wg.Go(func() {
			secs := int(s.cfg.profileTime / time.Second)
			for _, p := range []struct{ kind, path string }{
				{"cpu", fmt.Sprintf("/debug/pprof/profile?seconds=%d", secs)},
				{"heap", "/debug/pprof/heap"},
			} {
				file := filepath.Join(s.cfg.profileDir, name+"."+p.kind+".pprof")
				if err := fetch("http://"+addr+p.path, file); err != nil {
					fmt.Fprintf(s.Out, "profile %s: %v\n", file, err)
				}
			}
		})
	}
	return wg.Wait
}

// profileSelf writes a CPU profile of this process, taken for d, to file.
func profileSelf(file string, d time.Duration) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return err
	}
	time.Sleep(d)
	pprof.StopCPUProfile()
	return f.Close()
}

func fetch(url, file string) error {
	resp, err := http.Get(url)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
