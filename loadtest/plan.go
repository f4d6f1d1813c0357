package main

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/popbox/popbox/loadtest/internal/transport"
)

// SubGroup is a run of subscribers of one transport inside a worker.
type SubGroup struct {
	Kind string `json:"kind"`
	Subs int    `json:"subs"`
}

// WorkerSpec is everything one worker process needs; the parent sends it as
// the first line of the worker's stdin.
type WorkerSpec struct {
	Scenario  string        `json:"scenario"`
	Index     int           `json:"index"`
	Targets   []string      `json:"targets"`
	Offset    int           `json:"offset"` // global index of the first subscriber (target round-robin)
	Groups    []SubGroup    `json:"groups"`
	Load                    // as the options give it
	Prefix    string        `json:"prefix"`
	Sources   []string      `json:"sources,omitempty"`
	ProvConns int           `json:"prov_conns"`
	Window    int           `json:"window"`
	Rate      float64       `json:"rate"`
	Deadline  time.Time     `json:"deadline"`
	Progress  time.Duration `json:"progress_ns"`
}

// Subs is the number of subscribers (queues) of the worker.
func (s *WorkerSpec) Subs() int {
	n := 0
	for _, g := range s.Groups {
		n += g.Subs
	}
	return n
}

// Conns is the number of connections the worker opens.
func (s *WorkerSpec) Conns() int {
	n := 0
	for _, g := range s.Groups {
		n += connsFor(g.Kind, g.Subs, s.MuxQueues)
	}
	return n
}

func connsFor(kind string, subs, mux int) int {
	if kind == string(transport.WSMux) && mux > 1 {
		return (subs + mux - 1) / mux
	}
	return subs
}

// QueueName is the queue of subscriber i of worker w.
func QueueName(prefix string, w, i int) string {
	return prefix + "-" + strconv.Itoa(w) + "-" + strconv.Itoa(i)
}

// Plan is how a run is divided between worker processes.
type Plan struct {
	Workers []*WorkerSpec
	ByKind  map[string]int // subscribers per transport
	Conns   int            // connections in all
	Sources bool           // client sockets bound to distinct loopback sources
	Nice    int            // nice value of worker processes (0: as this one)
}

// fileReserve is the file descriptors a worker keeps for itself besides
// subscriber connections (stdio, provisioning pool, runtime).
const fileReserve = 200

// makePlan splits o over worker processes. nofile is the per-process
// open-file limit.
func makePlan(o *Options, nofile uint64, prefix string, deadline time.Time) (*Plan, error) {
	byKind := splitWeights(o.Conns, o.Mix)
	conns := 0
	for k, n := range byKind {
		conns += connsFor(k, n, o.MuxQueues)
	}
	if conns > MaxConns {
		return nil, fmt.Errorf("%d connections is above the hard cap of %d", conns, MaxConns)
	}
	budget := int(nofile) - fileReserve - o.ProvConns
	if budget < 1 {
		return nil, fmt.Errorf("open-file limit %d is too low", nofile)
	}
	procs := o.Procs
	if procs == 0 {
		procs = (conns + budget - 1) / budget
	}
	if procs > o.Conns {
		procs = o.Conns
	}
	p := &Plan{ByKind: byKind, Conns: conns, Nice: o.Nice}
	perKind := map[string][]int{}
	for k, n := range byKind {
		perKind[k] = spread(n, procs)
	}
	prov := spread(o.ProvConns, procs)
	offset := 0
	for w := 0; w < procs; w++ {
		s := &WorkerSpec{
			Scenario: o.Scenario, Index: w, Targets: urlStrings(o), Offset: offset,
			Load: o.Load, Prefix: prefix, ProvConns: max(1, prov[w]),
			Deadline: deadline, Progress: o.Progress, Rate: o.Rate / float64(procs),
		}
		for _, k := range transport.Kinds {
			if n := perKind[string(k)]; len(n) > 0 && n[w] > 0 {
				s.Groups = append(s.Groups, SubGroup{Kind: string(k), Subs: n[w]})
			}
		}
		if o.Window > 0 {
			s.Window = max(1, o.Window/procs)
		} else {
			s.Window = max(64, 2*s.Subs())
		}
		if s.Conns() > budget {
			return nil, fmt.Errorf("%d connections per worker process is above the open-file budget of %d (limit %d); use --procs %d or more",
				s.Conns(), budget, nofile, (conns+budget-1)/budget)
		}
		offset += s.Subs()
		p.Workers = append(p.Workers, s)
	}
	if err := assignSources(o, p); err != nil {
		return nil, err
	}
	return p, nil
}

func urlStrings(o *Options) []string {
	out := make([]string, len(o.targetURL))
	for i, u := range o.targetURL {
		out[i] = u.String()
	}
	return out
}

// assignSources gives every worker its own loopback source addresses when
// some destination would get more connections than the ephemeral port
// range can hold from one source address.
func assignSources(o *Options, p *Plan) error {
	perDest := map[string]int{}
	for i, u := range o.targetURL {
		// connections are spread round-robin over the targets
		n := p.Conns / len(o.targetURL)
		if i < p.Conns%len(o.targetURL) {
			n++
		}
		perDest[u.Host] += n
	}
	need := false
	for _, n := range perDest {
		if n > o.SrcAfter {
			need = true
		}
	}
	if !need {
		return nil
	}
	for _, ips := range o.targetIPs {
		for _, ip := range ips {
			if !ip.Unmap().Is4() {
				return errors.New("more connections to one destination than one source address allows, and the target is IPv6 (::1 has no other source addresses): use an IPv4 127.x.y.z target or several targets")
			}
		}
	}
	next := netip.AddrFrom4([4]byte{127, 0, 0, 2})
	for _, s := range p.Workers {
		n := (s.Conns() + srcPortsPerAddr - 1) / srcPortsPerAddr
		for i := 0; i < n; i++ {
			s.Sources = append(s.Sources, next.String())
			next = next.Next()
			if next.As4()[3] == 0 || next.As4()[3] == 255 {
				next = next.Next()
			}
			if !next.IsLoopback() {
				return errors.New("ran out of loopback source addresses")
			}
		}
	}
	p.Sources = true
	return nil
}

// describeGroups is "sse=400 ws=300" for logs.
func describeGroups(byKind map[string]int) string {
	var parts []string
	for _, k := range transport.Kinds {
		if n := byKind[string(k)]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, n))
		}
	}
	return strings.Join(parts, " ")
}
