package transport

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"syscall"

	"github.com/gobwas/ws/wsutil"
)

var addrRe = regexp.MustCompile(`(\[[0-9a-fA-F:]+\]|\d+\.\d+\.\d+\.\d+):\d+`)

// Reason turns an error into a short, low-cardinality label for the "errors
// by reason" tables (no addresses or ports in it).
func Reason(err error) string {
	if err == nil {
		return ""
	}
	var se *StatusError
	var wce wsutil.ClosedError
	var ne net.Error
	var errno syscall.Errno
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("http %d", se.Code)
	case errors.As(err, &wce):
		return fmt.Sprintf("websocket closed %d", int(wce.Code))
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, os.ErrDeadlineExceeded):
		return "timeout"
	case errors.As(err, &errno):
		return errnoReason(errno)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "closed by peer (EOF)"
	case errors.Is(err, net.ErrClosed):
		return "connection closed"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	s := addrRe.ReplaceAllString(err.Error(), "ADDR")
	if len(s) > 100 {
		s = s[:100]
	}
	return s
}

func errnoReason(e syscall.Errno) string {
	switch e {
	case syscall.ECONNREFUSED:
		return "connection refused"
	case syscall.ECONNRESET:
		return "connection reset"
	case syscall.EPIPE:
		return "broken pipe"
	case syscall.EMFILE, syscall.ENFILE:
		return "too many open files"
	case syscall.EADDRNOTAVAIL:
		return "no free local port (EADDRNOTAVAIL)"
	case syscall.EADDRINUSE:
		return "local address in use (EADDRINUSE)"
	case syscall.ETIMEDOUT:
		return "timeout"
	}
	return e.Error()
}
