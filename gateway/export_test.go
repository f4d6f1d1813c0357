package gateway

// IdleKeepAliveSockets is how many sockets the connection limit counts as
// idle on keep-alive (0 without a limit), for tests that must wait for
// the node to see a socket go idle: a client has the answer before the
// node marks the socket idle.
func IdleKeepAliveSockets(s *Server) int {
	l := s.sec.limit
	if l == nil {
		return 0
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, lc := range l.conns {
		if lc.phase == phaseIdle {
			n++
		}
	}
	return n
}
