// Package sysinfo reads what the load tool and the e2e attack tests report
// about processes and the machine from /proc: a gateway's resident memory
// and CPU time, which processes are gateways listening on a port, the
// open-file limit, and a one-line machine description.
package sysinfo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// RaiseNoFile raises the soft RLIMIT_NOFILE to the hard limit and returns
// the resulting soft limit.
func RaiseNoFile() (uint64, error) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		return 0, err
	}
	if rl.Cur < rl.Max {
		rl.Cur = rl.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
			return 0, err
		}
	}
	return rl.Cur, nil
}

// Proc reads /proc (a different root in tests).
type Proc struct {
	Root string // default "/proc"
}

func (p Proc) root() string {
	if p.Root == "" {
		return "/proc"
	}
	return p.Root
}

// Mem is a process's memory in bytes.
type Mem struct {
	RSS int64 `json:"rss_bytes"` // VmRSS
	HWM int64 `json:"hwm_bytes"` // VmHWM, the peak RSS
}

// Memory reads VmRSS and VmHWM from /proc/PID/status.
func (p Proc) Memory(pid int) (Mem, error) {
	b, err := os.ReadFile(filepath.Join(p.root(), strconv.Itoa(pid), "status"))
	if err != nil {
		return Mem{}, err
	}
	var m Mem
	found := false
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		f := strings.Fields(v)
		if len(f) < 1 {
			continue
		}
		n, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return Mem{}, fmt.Errorf("/proc/%d/status %s: %w", pid, k, err)
		}
		if len(f) > 1 && f[1] == "kB" {
			n *= 1024
		}
		if k == "VmRSS" {
			m.RSS = n
			found = true
		} else {
			m.HWM = n
		}
	}
	if !found {
		return Mem{}, fmt.Errorf("/proc/%d/status: no VmRSS (process gone or a kernel thread)", pid)
	}
	return m, nil
}

// ClockTicks is USER_HZ, the unit of CPU times in /proc/PID/stat (100 on
// every Linux architecture the tool runs on).
const ClockTicks = 100

// CPUTime reads utime+stime of a process from /proc/PID/stat.
func (p Proc) CPUTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(filepath.Join(p.root(), strconv.Itoa(pid), "stat"))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses: fields
	// are counted from the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return time.Duration(ut+st) * time.Second / ClockTicks, nil
}

// Cmdline returns the arguments of a process.
func (p Proc) Cmdline(pid int) ([]string, error) {
	b, err := os.ReadFile(filepath.Join(p.root(), strconv.Itoa(pid), "cmdline"))
	if err != nil {
		return nil, err
	}
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil, nil
	}
	return strings.Split(string(b), "\x00"), nil
}

// ListeningInodes returns the socket inodes of TCP sockets in LISTEN state
// on port, from /proc/net/tcp and /proc/net/tcp6.
func (p Proc) ListeningInodes(port int) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	var firstErr error
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(p.root(), "net", name))
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		sc := bufio.NewScanner(f)
		sc.Scan() // header
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) < 10 || fl[3] != "0A" { // 0A = LISTEN
				continue
			}
			_, hexPort, ok := strings.Cut(fl[1], ":")
			if !ok {
				continue
			}
			pn, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil || int(pn) != port {
				continue
			}
			if ino, err := strconv.ParseUint(fl[9], 10, 64); err == nil && ino != 0 {
				out[ino] = true
			}
		}
		f.Close()
	}
	if len(out) == 0 && firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// socketInodes returns the inodes of the sockets a process holds.
func (p Proc) socketInodes(pid int) map[uint64]bool {
	dir := filepath.Join(p.root(), strconv.Itoa(pid), "fd")
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[uint64]bool{}
	for _, e := range ents {
		l, err := os.Readlink(filepath.Join(dir, e.Name()))
		if err != nil || !strings.HasPrefix(l, "socket:[") {
			continue
		}
		if ino, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]"), 10, 64); err == nil {
			out[ino] = true
		}
	}
	return out
}

// pids lists the numeric entries of /proc.
func (p Proc) pids() []int {
	ents, err := os.ReadDir(p.root())
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			out = append(out, pid)
		}
	}
	sort.Ints(out)
	return out
}

// IsGatewayCmdline reports whether a command line looks like a gateway:
// some argument mentions "popbox" and one is "serve".
func IsGatewayCmdline(args []string) bool {
	popbox, serve := false, false
	for _, a := range args {
		if strings.Contains(a, "popbox") {
			popbox = true
		}
		if a == "serve" {
			serve = true
		}
	}
	return popbox && serve
}

// FindGateways returns the pids of gateway processes (see
// IsGatewayCmdline) listening on any of ports, with a note on how they were
// found. Best effort: when socket ownership cannot be read, it falls back
// to gateways whose command line mentions ":PORT".
func (p Proc) FindGateways(ports []int) ([]int, string, error) {
	var candidates []int
	self := os.Getpid()
	for _, pid := range p.pids() {
		if pid == self {
			continue
		}
		args, err := p.Cmdline(pid)
		if err != nil || !IsGatewayCmdline(args) {
			continue
		}
		candidates = append(candidates, pid)
	}
	if len(candidates) == 0 {
		return nil, "", errors.New("no process with \"popbox\" and \"serve\" in its command line")
	}
	listen := map[uint64]bool{}
	for _, port := range ports {
		inos, _ := p.ListeningInodes(port)
		for ino := range inos {
			listen[ino] = true
		}
	}
	var found []int
	if len(listen) > 0 {
		for _, pid := range candidates {
			for ino := range p.socketInodes(pid) {
				if listen[ino] {
					found = append(found, pid)
					break
				}
			}
		}
	}
	if len(found) > 0 {
		return found, "listening socket owner", nil
	}
	for _, pid := range candidates {
		args, _ := p.Cmdline(pid)
		joined := strings.Join(args, " ")
		for _, port := range ports {
			if strings.Contains(joined, ":"+strconv.Itoa(port)) {
				found = append(found, pid)
				break
			}
		}
	}
	if len(found) > 0 {
		return found, "command line mentions the port", nil
	}
	return nil, "", fmt.Errorf("%d popbox serve process(es) found, none listening on port(s) %v", len(candidates), ports)
}

// Machine describes the host for reports.
type Machine struct {
	CPU       string `json:"cpu"`
	Cores     int    `json:"cores"`
	MemoryGiB string `json:"memory_gib"`
	Kernel    string `json:"kernel"`
	Go        string `json:"go"`
	NoFile    uint64 `json:"nofile_limit"`
}

// DescribeMachine gathers a Machine (fields it cannot read stay empty).
func (p Proc) DescribeMachine() Machine {
	m := Machine{Cores: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile(filepath.Join(p.root(), "cpuinfo")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(p.root(), "meminfo")); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && k == "MemTotal" {
				if f := strings.Fields(v); len(f) > 0 {
					if kb, err := strconv.ParseFloat(f[0], 64); err == nil {
						m.MemoryGiB = strconv.FormatFloat(kb/(1<<20), 'f', 1, 64)
					}
				}
				break
			}
		}
	}
	if b, err := os.ReadFile(filepath.Join(p.root(), "sys", "kernel", "osrelease")); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	var rl syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl) == nil {
		m.NoFile = rl.Max
	}
	return m
}

// MachineCPU returns the busy and total CPU time of the whole machine since
// boot, from the first line of /proc/stat (busy excludes idle and iowait).
func (p Proc) MachineCPU() (busy, total time.Duration, err error) {
	b, err := os.ReadFile(filepath.Join(p.root(), "stat"))
	if err != nil {
		return 0, 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	var ticks []uint64
	for _, s := range f[1:] {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %w", err)
		}
		ticks = append(ticks, v)
	}
	var all, idle uint64
	for i, v := range ticks {
		if i >= 8 { // guest time is already counted in user
			break
		}
		all += v
		if i == 3 || i == 4 { // idle, iowait
			idle += v
		}
	}
	tick := time.Second / ClockTicks
	return time.Duration(all-idle) * tick, time.Duration(all) * tick, nil
}

// LoadAvg returns the 1-minute load average.
func (p Proc) LoadAvg() (float64, error) {
	b, err := os.ReadFile(filepath.Join(p.root(), "loadavg"))
	if err != nil {
		return 0, err
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0, errors.New("/proc/loadavg: empty")
	}
	return strconv.ParseFloat(f[0], 64)
}
