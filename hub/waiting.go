package hub

// Waiting returns the queues that have local waiters now (long polls and
// streams of this node), each with its number of waiters.
func (h *Hub) Waiting() map[string]int {
	out := map[string]int{}
	for i := range h.sh {
		s := &h.sh[i]
		s.mu.Lock()
		for name, q := range s.queues {
			if n := len(q.waiters); n > 0 {
				out[name] = n
			}
		}
		s.mu.Unlock()
	}
	return out
}
