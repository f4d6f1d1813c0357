//go:build linux

package hangup

import (
	"errors"
	"fmt"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// watcher is the process's epoll instance. A watched socket is known by a
// token (carried in the event's data), never by its descriptor: a socket
// closed and its descriptor number reused by another connection cannot be
// mistaken for the first, since a token is forgotten at stop and an event
// for a forgotten token is dropped.
type watcher struct {
	mu      sync.Mutex
	epfd    int
	wake    int // eventfd, token wakeToken: the loop re-checks whether anything is watched
	next    uint32
	watched map[uint32]func()
	running bool  // the loop goroutine runs (while anything is watched)
	failed  error // epoll_wait failed for good: nothing more is watched
}

// wakeToken is the eventfd's token; sockets get the others.
const wakeToken = 0

var (
	w        watcher
	initOnce sync.Once
	initErr  error
)

func (w *watcher) init() error {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return fmt.Errorf("hangup: epoll_create1: %w", err)
	}
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		_ = unix.Close(epfd)
		return fmt.Errorf("hangup: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeToken}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)
		return fmt.Errorf("hangup: epoll_ctl(eventfd): %w", err)
	}
	w.epfd, w.wake, w.watched = epfd, wake, make(map[uint32]func())
	return nil
}

func watch(rc syscall.RawConn, gone func()) (func(), error) {
	initOnce.Do(func() { initErr = w.init() })
	if initErr != nil {
		return nil, errors.Join(ErrUnsupported, initErr)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed != nil {
		return nil, errors.Join(ErrUnsupported, w.failed)
	}
	tok := w.token()
	var ctlErr error
	// EPOLLRDHUP: the peer shut down its writing half (FIN); EPOLLHUP and
	// EPOLLERR (reset, failure) are always reported. ONESHOT: one event
	// per socket, then it stays quiet until stop removes it. A socket
	// whose peer has already gone is reported at once.
	err := rc.Control(func(fd uintptr) {
		ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(tok)}
		ctlErr = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
	})
	if err == nil {
		err = ctlErr
	}
	if err != nil {
		return nil, fmt.Errorf("hangup: epoll_ctl(add): %w", err)
	}
	w.watched[tok] = gone
	if !w.running {
		w.running = true
		go w.loop()
	}
	var once sync.Once
	return func() { once.Do(func() { w.stop(rc, tok) }) }, nil
}

// token returns a token no watched socket has (w.mu held). Tokens wrap
// after 2³² watches; a fired one is free again (its socket, ONESHOT,
// reports nothing more).
func (w *watcher) token() uint32 {
	for {
		w.next++
		if w.next == wakeToken {
			continue
		}
		if _, used := w.watched[w.next]; !used {
			return w.next
		}
	}
}

func (w *watcher) stop(rc syscall.RawConn, tok uint32) {
	w.mu.Lock()
	delete(w.watched, tok)
	// Removed while the connection is open, so the descriptor is still
	// ours; a closed one (Control fails) has left the epoll set already.
	_ = rc.Control(func(fd uintptr) {
		_ = unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, int(fd), nil)
	})
	wake := w.running && len(w.watched) == 0
	w.mu.Unlock()
	if wake {
		one := [8]byte{1}
		_, _ = unix.Write(w.wake, one[:])
	}
}

// loop waits for hang-ups while anything is watched, then ends (a process
// that watches nothing holds no goroutine here).
func (w *watcher) loop() {
	events := make([]unix.EpollEvent, 256)
	var fire []func()
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		w.mu.Lock()
		if err != nil {
			// Cannot happen with a valid epoll descriptor and buffer. The
			// sockets watched now are seen to go at their next failed
			// write instead (the stream's heartbeat); new ones are read
			// on goroutines (ErrUnsupported).
			w.failed = fmt.Errorf("hangup: epoll_wait: %w", err)
			clear(w.watched)
			w.running = false
			w.mu.Unlock()
			return
		}
		for _, ev := range events[:n] {
			tok := uint32(ev.Fd)
			if tok == wakeToken {
				var b [8]byte
				_, _ = unix.Read(w.wake, b[:])
				continue
			}
			if gone, ok := w.watched[tok]; ok {
				delete(w.watched, tok)
				fire = append(fire, gone)
			}
		}
		idle := len(w.watched) == 0
		if idle {
			w.running = false
		}
		w.mu.Unlock()
		for i, gone := range fire {
			gone()
			fire[i] = nil
		}
		fire = fire[:0]
		if idle {
			return
		}
	}
}
