//go:build linux

package hangup

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 10 * time.Second

// pair is a loopback TCP connection: the server side (watched) and the
// client side (the peer that goes away).
func pair(t *testing.T, ln net.Listener) (srv, cli *net.TCPConn) {
	t.Helper()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(); _ = s.Close() })
	return s.(*net.TCPConn), c.(*net.TCPConn)
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// watchChan watches conn; the channel is closed when gone is called, and
// the counter counts the calls.
func watchChan(t *testing.T, conn net.Conn) (stop func(), gone chan struct{}, calls *atomic.Int32) {
	t.Helper()
	gone = make(chan struct{})
	calls = new(atomic.Int32)
	stop, err := Watch(conn, func() {
		if calls.Add(1) == 1 {
			close(gone)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return stop, gone, calls
}

func waitGone(t *testing.T, gone <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-gone:
	case <-time.After(wait):
		t.Fatalf("%s: hang-up not reported within %v", what, wait)
	}
}

// waitIdle waits until nothing is watched and the loop has ended.
func waitIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		n, running := watching()
		if n == 0 && !running {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("watcher not idle: %d watched, running %v", n, running)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPeerCloseIsReported(t *testing.T) {
	srv, cli := pair(t, listen(t))
	_, gone, calls := watchChan(t, srv)
	_ = cli.Close()
	waitGone(t, gone, "close")
	waitIdle(t)
	if n := calls.Load(); n != 1 {
		t.Fatalf("gone called %d times, want 1", n)
	}
}

func TestPeerResetIsReported(t *testing.T) {
	srv, cli := pair(t, listen(t))
	_, gone, _ := watchChan(t, srv)
	if err := cli.SetLinger(0); err != nil { // close sends RST
		t.Fatal(err)
	}
	_ = cli.Close()
	waitGone(t, gone, "reset")
}

func TestPeerGoneBeforeWatchIsReported(t *testing.T) {
	srv, cli := pair(t, listen(t))
	_ = cli.Close()
	// Wait for the FIN to arrive (a read sees EOF; the socket stays shut
	// for reading), then watch: the state is reported at once.
	if n, err := srv.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("read = %d, %v; want EOF", n, err)
	}
	_, gone, _ := watchChan(t, srv)
	waitGone(t, gone, "already closed")
}

// A peer that sends data has not gone: nothing is reported and nothing is
// read; what it sent is still there to read after stop.
func TestDataIsNotAHangUp(t *testing.T) {
	ln := listen(t)
	srvA, cliA := pair(t, ln)
	srvB, cliB := pair(t, ln)
	stopA, goneA, _ := watchChan(t, srvA)
	_, goneB, _ := watchChan(t, srvB)
	if _, err := cliA.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	// B's hang-up is sent after A's data: once B is reported, A's data has
	// arrived (one loopback path, in order) and was seen by the same epoll.
	_ = cliB.Close()
	waitGone(t, goneB, "B")
	select {
	case <-goneA:
		t.Fatal("data reported as a hang-up")
	default:
	}
	stopA()
	buf := make([]byte, 5)
	if _, err := io.ReadFull(srvA, buf); err != nil || string(buf) != "hello" {
		t.Fatalf("read after stop: %q, %v", buf, err)
	}
}

// After stop, a hang-up is not reported.
func TestStopEndsTheWatch(t *testing.T) {
	ln := listen(t)
	srvA, cliA := pair(t, ln)
	srvB, cliB := pair(t, ln)
	stopA, _, callsA := watchChan(t, srvA)
	_, goneB, _ := watchChan(t, srvB)
	stopA()
	stopA() // twice is harmless
	_ = cliA.Close()
	_ = cliB.Close() // after A's close: its report comes after A's would have
	waitGone(t, goneB, "B")
	waitIdle(t)
	if n := callsA.Load(); n != 0 {
		t.Fatalf("gone called %d times after stop", n)
	}
}

// A descriptor number reused by a new connection after the first was
// stopped and closed is a new watch: the first's report (queued or not)
// does not reach the second.
func TestReusedDescriptorIsANewWatch(t *testing.T) {
	ln := listen(t)
	for range 50 {
		srvA, cliA := pair(t, ln)
		stopA, _, _ := watchChan(t, srvA)
		_ = cliA.Close() // a report for A may be queued now
		stopA()
		_ = srvA.Close()
		srvB, cliB := pair(t, ln) // likely A's descriptor number
		stopB, goneB, callsB := watchChan(t, srvB)
		if _, err := cliB.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		// C's close is reported after anything queued for A.
		srvC, cliC := pair(t, ln)
		_, goneC, _ := watchChan(t, srvC)
		_ = cliC.Close()
		waitGone(t, goneC, "C")
		select {
		case <-goneB:
			t.Fatal("B reported gone while open")
		default:
		}
		_ = cliB.Close()
		waitGone(t, goneB, "B")
		stopB()
		if n := callsB.Load(); n != 1 {
			t.Fatalf("B: gone called %d times", n)
		}
	}
	waitIdle(t)
}

// Many sockets: each hang-up reported once, to its own watch.
func TestManyConnections(t *testing.T) {
	ln := listen(t)
	const n = 500
	clis := make([]*net.TCPConn, n)
	gones := make([]chan struct{}, n)
	calls := make([]*atomic.Int32, n)
	for i := range n {
		var srv *net.TCPConn
		srv, clis[i] = pair(t, ln)
		_, gones[i], calls[i] = watchChan(t, srv)
	}
	if got, _ := watching(); got != n {
		t.Fatalf("watching %d, want %d", got, n)
	}
	for i := range n {
		_ = clis[i].Close()
	}
	for i := range n {
		waitGone(t, gones[i], "conn")
	}
	waitIdle(t)
	for i := range n {
		if c := calls[i].Load(); c != 1 {
			t.Fatalf("conn %d: gone called %d times", i, c)
		}
	}
}

// A TLS connection is watched through its socket.
func TestTLSConnIsWatched(t *testing.T) {
	srv, cli := pair(t, listen(t))
	tc := tls.Server(srv, &tls.Config{})
	_, gone, _ := watchChan(t, tc)
	_ = cli.Close()
	waitGone(t, gone, "tls")
}

func TestNotASocketIsUnsupported(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	if _, err := Watch(a, func() {}); !errors.Is(err, ErrUnsupported) {
		t.Fatalf("Watch(pipe) = %v, want ErrUnsupported", err)
	}
}
