package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of the CPU times in /proc/<pid>/stat. It is 100
// on every Linux architecture Go runs on (reading it needs sysconf, hence cgo).
const clockTicks = 100

// cpuTimes returns a process's CPU time, user plus system, in seconds, and that of its children
// that have exited and been waited for.
func cpuTimes(pid int) (self, children float64, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, err
	}
	f, err := statFields(b)
	if err != nil {
		return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	// Fields 14-17 (1-based): utime, stime, cutime, cstime.
	var t [4]float64
	for i := range t {
		v, err := strconv.ParseInt(f[11+i], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
		}
		t[i] = float64(v) / clockTicks
	}
	return t[0] + t[1], t[2] + t[3], nil
}

// statFields returns the fields of /proc/<pid>/stat after the command name (which may hold
// spaces and parentheses): the first is the state (field 3).
func statFields(b []byte) ([]string, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("malformed")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return nil, fmt.Errorf("malformed")
	}
	return f, nil
}

// parentPID returns a process's parent.
func parentPID(pid int) (int, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	f, err := statFields(b)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(f[1])
}

// memKB returns fields of /proc/<pid>/status (VmRSS, VmHWM), in kB.
func memKB(pid int, names ...string) (map[string]int64, error) {
	return kBFields(fmt.Sprintf("/proc/%d/status", pid), names...)
}

// kBFields reads "Name:   123 kB" lines of a /proc file.
func kBFields(path string, names ...string) (map[string]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := make(map[string]int64, len(names))
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		for _, n := range names {
			if n == name {
				v, _, _ := strings.Cut(strings.TrimSpace(rest), " ")
				out[n], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	}
	return out, sc.Err()
}

// children returns the pids whose parent is pid.
func children(pid int) []int {
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	var out []int
	for _, d := range dirs {
		p, err := strconv.Atoi(filepath.Base(d))
		if err != nil {
			continue
		}
		if pp, err := parentPID(p); err == nil && pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// machineCPU returns the machine's busy CPU time so far, in seconds, from /proc/stat, and the
// part of it spent in softirq, which the kernel charges to no process (on loopback, most of it
// is the network stack carrying the benchmark's own traffic).
func machineCPU() (busy, softirq float64) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0
	}
	// user nice system idle iowait irq softirq steal ...
	for i, s := range f[1:] {
		v, _ := strconv.ParseFloat(s, 64)
		switch i {
		case 3, 4: // idle, iowait
		case 6:
			softirq = v
			busy += v
		default:
			busy += v
		}
	}
	return busy / clockTicks, softirq / clockTicks
}

// busyCores returns how many cores were busy, on average, over the next d.
func busyCores(d time.Duration) float64 {
	b0, _ := machineCPU()
	time.Sleep(d)
	b1, _ := machineCPU()
	return (b1 - b0) / d.Seconds()
}

// machine describes the machine the benchmark runs on.
type machine struct {
	CPUs     int
	Model    string
	MemGiB   float64
	Kernel   string
	Go       string
	Postgres string
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), Model: "unknown CPU"}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.Model = strings.TrimSpace(v)
				break
			}
		}
	}
	if mem, err := kBFields("/proc/meminfo", "MemTotal"); err == nil {
		m.MemGiB = float64(mem["MemTotal"]) / (1 << 20)
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	return m
}

func (m machine) String() string {
	s := fmt.Sprintf("%d CPUs (%s), %.1f GiB RAM, Linux %s, %s", m.CPUs, m.Model, m.MemGiB, m.Kernel, m.Go)
	if m.Postgres != "" {
		s += ", " + m.Postgres
	}
	return s
}
