package sysinfo

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeProc builds a /proc tree with the given processes.
type fakeProcess struct {
	pid     int
	cmdline []string
	status  string
	stat    string
	sockets []uint64
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func fakeProc(t *testing.T, procs []fakeProcess, tcp string) Proc {
	root := t.TempDir()
	for _, p := range procs {
		dir := filepath.Join(root, fmt.Sprint(p.pid))
		writeFile(t, filepath.Join(dir, "cmdline"), strings.Join(p.cmdline, "\x00")+"\x00")
		writeFile(t, filepath.Join(dir, "status"), p.status)
		writeFile(t, filepath.Join(dir, "stat"), p.stat)
		if err := os.MkdirAll(filepath.Join(dir, "fd"), 0o755); err != nil {
			t.Fatal(err)
		}
		for i, ino := range p.sockets {
			if err := os.Symlink(fmt.Sprintf("socket:[%d]", ino), filepath.Join(dir, "fd", fmt.Sprint(i+3))); err != nil {
				t.Fatal(err)
			}
		}
	}
	writeFile(t, filepath.Join(root, "net", "tcp"), tcp)
	writeFile(t, filepath.Join(root, "net", "tcp6"), "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")
	return Proc{Root: root}
}

const tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"

func TestMemoryAndCPU(t *testing.T) {
	p := fakeProc(t, []fakeProcess{{
		pid: 42, cmdline: []string{"popbox", "serve"},
		status: "Name:\tpopbox\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\nThreads:\t9\n",
		stat:   "42 (pop box) (x) S 1 42 42 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 9 0 100 0 0\n",
	}}, tcpHeader)
	m, err := p.Memory(42)
	if err != nil || m.RSS != 100<<20 || m.HWM != 200<<20 {
		t.Fatalf("Memory: %+v %v", m, err)
	}
	c, err := p.CPUTime(42)
	if err != nil || c != 4*time.Second {
		t.Fatalf("CPUTime: %v %v", c, err)
	}
	if _, err := p.Memory(43); err == nil {
		t.Fatal("missing process must fail")
	}
}

func TestFindGateways(t *testing.T) {
	// port 3001 = 0BB9 listening (0A) with inode 777; port 3002 on inode 888
	tcp := tcpHeader +
		"   0: 0100007F:0BB9 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0\n" +
		"   1: 0100007F:0BBA 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 888 1 0000000000000000 100 0 0 10 0\n" +
		"   2: 0100007F:0BB9 0100007F:C000 01 00000000:00000000 00:00000000 00000000     0        0 999 1 0000000000000000 100 0 0 10 0\n"
	p := fakeProc(t, []fakeProcess{
		{pid: 10, cmdline: []string{"/usr/bin/popbox", "serve", "--listen", "127.0.0.1:3001"}, sockets: []uint64{777, 5}},
		{pid: 11, cmdline: []string{"/tmp/popbox", "serve"}, sockets: []uint64{888}},
		{pid: 12, cmdline: []string{"/usr/bin/nginx"}, sockets: []uint64{777}},
		{pid: 13, cmdline: []string{"go", "run", "./cmd/popbox", "serve"}},
	}, tcp)
	pids, how, err := p.FindGateways([]int{3001})
	if err != nil || fmt.Sprint(pids) != "[10]" || how != "listening socket owner" {
		t.Fatalf("3001: %v %q %v", pids, how, err)
	}
	pids, _, err = p.FindGateways([]int{3001, 3002})
	if err != nil || fmt.Sprint(pids) != "[10 11]" {
		t.Fatalf("3001+3002: %v %v", pids, err)
	}
	if _, _, err := p.FindGateways([]int{4000}); err == nil {
		t.Fatal("no gateway on 4000")
	}
	inos, err := p.ListeningInodes(3001)
	if err != nil || len(inos) != 1 || !inos[777] {
		t.Fatalf("ListeningInodes: %v %v", inos, err)
	}
}

func TestFindGatewaysFallsBackToCmdline(t *testing.T) {
	p := fakeProc(t, []fakeProcess{
		{pid: 20, cmdline: []string{"popbox", "serve", "--listen=127.0.0.1:3005"}},
	}, tcpHeader)
	pids, how, err := p.FindGateways([]int{3005})
	if err != nil || fmt.Sprint(pids) != "[20]" || !strings.Contains(how, "command line") {
		t.Fatalf("%v %q %v", pids, how, err)
	}
}

func TestRealProc(t *testing.T) {
	var p Proc
	m, err := p.Memory(os.Getpid())
	if err != nil || m.RSS <= 0 {
		t.Fatalf("own memory: %+v %v", m, err)
	}
	if _, err := p.CPUTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	n, err := RaiseNoFile()
	if err != nil || n == 0 {
		t.Fatalf("RaiseNoFile: %d %v", n, err)
	}
	if mc := p.DescribeMachine(); mc.Cores < 1 || mc.Go == "" {
		t.Fatalf("machine: %+v", mc)
	}
}

func TestMachineCPUAndLoad(t *testing.T) {
	p := fakeProc(t, nil, tcpHeader)
	writeFile(t, filepath.Join(p.Root, "stat"), "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 1 2 3 4 5 6 7 8 9 0\n")
	writeFile(t, filepath.Join(p.Root, "loadavg"), "1.25 0.50 0.10 2/300 12345\n")
	busy, total, err := p.MachineCPU()
	if err != nil || busy != 1700*time.Millisecond || total != 9900*time.Millisecond {
		t.Fatalf("busy %v total %v %v", busy, total, err)
	}
	if l, err := p.LoadAvg(); err != nil || l != 1.25 {
		t.Fatal(l, err)
	}
	if b, tot, err := (Proc{}).MachineCPU(); err != nil || b <= 0 || tot < b {
		t.Fatal(b, tot, err)
	}
}
