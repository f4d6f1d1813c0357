// Package fakegw is a small in-memory stand-in for the PopBox gateway,
// used by the load tool's tests: POST /trans and the five consumer
// transports (SSE, per-queue WebSocket, multiplexed WebSocket, HTTP
// streaming, long-poll pop) with the wire formats of the API, and none of
// the durability. It is not used by the load tool itself.
package fakegw

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Msg is one queued message.
type Msg struct {
	Payload, TID, Queue, Priority string
}

// Server is a fake gateway on a loopback port.
type Server struct {
	*httptest.Server
	mu      sync.Mutex
	queues  map[string]chan Msg
	remotes map[string]int
	nextTID atomic.Int64
	// Provisions counts POST /trans calls that succeeded.
	Provisions atomic.Int64
	// FailProvision makes POST /trans answer 500 while set.
	FailProvision atomic.Bool
}

// New starts a fake gateway; it is closed when the test ends.
func New(t interface{ Cleanup(func()) }) *Server {
	s := &Server{queues: map[string]chan Msg{}, remotes: map[string]int{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /trans", s.provision)
	mux.HandleFunc("GET /queue/{id}/events", s.onQueue(sse))
	mux.HandleFunc("POST /queue/{id}/subscribe", s.onQueue(stream))
	mux.HandleFunc("POST /queue/{id}/pop", s.onQueue(pop))
	mux.HandleFunc("GET /queue/{id}/ws", s.onQueue(ws))
	mux.HandleFunc("GET /ws", s.wsMux)
	s.Server = httptest.NewUnstartedServer(mux)
	s.Server.Config.ConnState = func(c net.Conn, st http.ConnState) {
		if st == http.StateNew {
			host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
			s.mu.Lock()
			s.remotes[host]++
			s.mu.Unlock()
		}
	}
	s.Start()
	t.Cleanup(s.Close)
	return s
}

// Remotes returns how many connections came from each client IP.
func (s *Server) Remotes() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return maps.Clone(s.remotes)
}

func (s *Server) queue(id string) chan Msg {
	s.mu.Lock()
	defer s.mu.Unlock()
	q := s.queues[id]
	if q == nil {
		q = make(chan Msg, 4096)
		s.queues[id] = q
	}
	return q
}

// onQueue serves a route of one queue with h, given the queue of the
// route's {id}.
func (s *Server) onQueue(h func(http.ResponseWriter, *http.Request, chan Msg)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) { h(w, r, s.queue(r.PathValue("id"))) }
}

// Push queues a message directly.
func (s *Server) Push(queue, payload string) {
	tid := strconv.FormatInt(s.nextTID.Add(1), 10)
	s.queue(queue) <- Msg{Payload: payload, TID: tid, Queue: queue, Priority: "H"}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) provision(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != "application/json" {
		writeJSON(w, 400, map[string]any{"errors": []string{"invalid content-type header"}})
		return
	}
	var body struct {
		Payload  *string `json:"payload"`
		Priority string  `json:"priority"`
		Queue    []struct {
			ID string `json:"id"`
		} `json:"queue"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Payload == nil || len(body.Queue) == 0 {
		writeJSON(w, 400, map[string]any{"errors": []string{fmt.Sprint("bad request: ", err)}})
		return
	}
	if s.FailProvision.Load() {
		writeJSON(w, 500, map[string]any{"errors": []string{"storage down"}})
		return
	}
	tid := fmt.Sprintf("00000000-0000-4000-8000-%012d", s.nextTID.Add(1))
	for _, q := range body.Queue {
		s.queue(q.ID) <- Msg{Payload: *body.Payload, TID: tid, Queue: q.ID, Priority: body.Priority}
	}
	s.Provisions.Add(1)
	writeJSON(w, 200, map[string]any{"ok": true, "data": tid})
}

func eventJSON(m Msg) []byte {
	b, _ := json.Marshal(map[string]string{"data": m.Payload, "transaction": m.TID, "queue": m.Queue, "priority": m.Priority})
	return b
}

func sse(w http.ResponseWriter, r *http.Request, q chan Msg) {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	fmt.Fprint(w, "retry: 2000\n: connected\n\n")
	flushEach(w, r, q, func(m Msg) {
		fmt.Fprintf(w, "id: %s\nevent: message\ndata: %s\n\n", m.TID, eventJSON(m))
	})
}

// flushEach flushes what is written so far, then writes every message of q
// with write and flushes it, until the request ends or a flush fails.
func flushEach(w http.ResponseWriter, r *http.Request, q <-chan Msg, write func(Msg)) {
	rc := http.NewResponseController(w)
	_ = rc.Flush()
	forward(r.Context(), q, func(m Msg) error {
		write(m)
		return rc.Flush()
	})
}

// forward sends every message of q with send until ctx ends or send fails.
func forward(ctx context.Context, q <-chan Msg, send func(Msg) error) {
	for {
		select {
		case <-ctx.Done():
			return
		case m := <-q:
			if send(m) != nil {
				return
			}
		}
	}
}

func streamJSON(ms []Msg) []byte {
	var data, tids []string
	for _, m := range ms {
		data = append(data, m.Payload)
		tids = append(tids, m.TID)
	}
	if data == nil {
		data, tids = []string{}, []string{}
	}
	b, _ := json.Marshal(map[string]any{"ok": true, "data": data, "transactions": tids})
	return b
}

func stream(w http.ResponseWriter, r *http.Request, q chan Msg) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	flushEach(w, r, q, func(m Msg) { w.Write(append(streamJSON([]Msg{m}), '\n')) })
}

func pop(w http.ResponseWriter, r *http.Request, q chan Msg) {
	timeout, err := strconv.Atoi(r.URL.Query().Get("timeout"))
	if err != nil || timeout <= 0 {
		timeout = 5
	}
	limit, err := strconv.Atoi(r.URL.Query().Get("max"))
	if err != nil || limit < 1 {
		limit = 1 << 30 // no max given: everything queued
	}
	t := time.NewTimer(time.Duration(timeout) * time.Second)
	defer t.Stop()
	var got []Msg
	select {
	case <-r.Context().Done():
		return
	case <-t.C:
	case m := <-q:
		got = append(got, m)
	more:
		for len(got) < limit {
			select {
			case m := <-q:
				got = append(got, m)
			default:
				break more
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(streamJSON(got))
}

func ws(w http.ResponseWriter, r *http.Request, q chan Msg) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx := c.CloseRead(r.Context())
	forward(ctx, q, func(m Msg) error { return c.Write(ctx, websocket.MessageText, eventJSON(m)) })
}

func (s *Server) wsMux(w http.ResponseWriter, r *http.Request) {
	c, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	defer c.CloseNow()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	out := make(chan Msg, 64)
	var wmu sync.Mutex
	write := func(b []byte) error {
		wmu.Lock()
		defer wmu.Unlock()
		return c.Write(ctx, websocket.MessageText, b)
	}
	go func() {
		defer cancel()
		for {
			_, b, err := c.Read(ctx)
			if err != nil {
				return
			}
			var f struct{ Op, Queue string }
			if json.Unmarshal(b, &f) != nil || f.Op != "subscribe" {
				_ = write([]byte(`{"op":"error","code":"bad_frame","message":"unknown op"}`))
				continue
			}
			go forward(ctx, s.queue(f.Queue), func(m Msg) error {
				select {
				case out <- m:
					return nil
				case <-ctx.Done():
					return ctx.Err()
				}
			})
		}
	}()
	forward(ctx, out, func(m Msg) error {
		b, _ := json.Marshal(map[string]string{"op": "message", "queue": m.Queue, "data": m.Payload, "transaction": m.TID, "priority": m.Priority})
		return write(b)
	})
}
