//go:build !linux

package hangup

import "syscall"

// watch: only Linux has the epoll watcher; elsewhere callers read the
// connection on a goroutine.
func watch(syscall.RawConn, func()) (func(), error) { return nil, ErrUnsupported }
