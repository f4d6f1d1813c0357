package hub

import (
	"context"
	"log/slog"
	"time"
)

// The node's health: a heartbeat key in Redis, refreshed every third of the
// lease, which also tells the hub whether Redis can be reached (Outage).

// Outage is closed while Redis cannot be reached (two heartbeats in a row
// failed); once Redis answers again a later call returns a fresh channel.
// A stream that sees it closed ends and tells its client so.
func (h *Hub) Outage() <-chan struct{} {
	h.healthMu.Lock()
	defer h.healthMu.Unlock()
	return h.down
}

// checkRedis asks the heartbeat loop to look at Redis now.
func (h *Hub) checkRedis() { signal(h.probe) }

// outageProbe is how soon a failed heartbeat is retried before Redis is
// taken for unreachable (one failure may be a blip).
const outageProbe = 500 * time.Millisecond

func (h *Hub) heartbeats(ctx context.Context) {
	every := h.opts.Lease / 3
	failed := false
	for {
		next := every
		if failed {
			next = outageProbe
		}
		if !sleep(ctx, next, h.probe) {
			return
		}
		ok := h.beat(ctx)
		if ok {
			h.setDown(false)
			// Failed pops whose undo could not reach Redis: put their
			// entries back now, even if no pop of their queues follows.
			h.store.UndoPending(ctx)
		} else if failed && ctx.Err() == nil {
			h.setDown(true)
		}
		failed = !ok
	}
}

// OnOutage makes the hub call f each time Redis becomes unreachable,
// after Outage's channel is closed (so a caller that checks it after
// registering something f would reach cannot miss an outage). f runs
// on the hub's health goroutine and must not block.
func (h *Hub) OnOutage(f func()) {
	h.healthMu.Lock()
	defer h.healthMu.Unlock()
	h.onOutage = append(h.onOutage, f)
}

// setDown records whether Redis is unreachable.
func (h *Hub) setDown(down bool) {
	h.healthMu.Lock()
	var notify []func()
	switch {
	case down && !h.isDown:
		close(h.down)
		notify = h.onOutage
		h.log.LogAttrs(context.Background(), slog.LevelError, "Redis cannot be reached: open streams end")
	case !down && h.isDown:
		h.down = make(chan struct{})
		h.log.LogAttrs(context.Background(), slog.LevelInfo, "Redis reachable again")
	}
	h.isDown = down
	h.healthMu.Unlock()
	for _, f := range notify {
		f()
	}
}

// beat refreshes the node's heartbeat; when it had lapsed (first beat, or a
// Redis outage longer than the lease) readers may have dropped this node's
// registrations, so every local queue is registered again. It reports
// whether Redis answered.
func (h *Hub) beat(ctx context.Context) bool {
	existed, err := h.store.Heartbeat(ctx, h.opts.Node, h.opts.Lease)
	if err != nil {
		if ctx.Err() == nil {
			h.log.LogAttrs(ctx, slog.LevelWarn, "heartbeat", slog.Any("err", err))
		}
		return false
	}
	if !existed {
		h.reassert()
	}
	return true
}

// reassert registers every local queue again (the node's heartbeat had
// lapsed, so readers may have dropped its registrations).
func (h *Hub) reassert() {
	for _, q := range h.registeredQueues() {
		h.markDirty(q)
	}
}
