package redisq

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// notifyFlags are the notify-keyspace-events flags the gateway needs:
// keyevent notifications (E) for list commands (l).
const notifyFlags = "El"

// EnableNotifications turns on the keyspace notifications that wake-ups
// rely on, on every Redis node it can reach. It returns false, and switches
// the store to explicit wake-up publishing, when the server does not allow
// it (no CONFIG command, or a server such as the embedded store that has no
// keyspace events); the caller should say so in the log.
func (s *Store) EnableNotifications(ctx context.Context) (bool, error) {
	var ok bool
	var err error
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		var failed atomic.Bool // ForEachShard calls back concurrently
		err = c.ForEachShard(ctx, func(ctx context.Context, n *redis.Client) error {
			if !enableOn(ctx, n) {
				failed.Store(true)
			}
			return nil
		})
		ok = !failed.Load()
	case *redis.Client:
		ok = enableOn(ctx, c)
	default:
		return false, errors.New("enable notifications: unsupported client")
	}
	if err != nil {
		return false, fmt.Errorf("enable notifications: %w", err)
	}
	if !ok {
		s.SetExplicitWake(true)
	}
	return ok, nil
}

// enableOn makes sure one server publishes keyevents for list commands.
func enableOn(ctx context.Context, c *redis.Client) bool {
	cur, err := c.ConfigGet(ctx, "notify-keyspace-events").Result()
	if err != nil {
		return false
	}
	flags := cur["notify-keyspace-events"]
	if hasNotifyFlags(flags) {
		return true
	}
	want := flags
	for _, f := range notifyFlags {
		if !strings.ContainsRune(want, f) {
			want += string(f)
		}
	}
	if err := c.ConfigSet(ctx, "notify-keyspace-events", want).Err(); err != nil {
		return false
	}
	return true
}

func hasNotifyFlags(flags string) bool {
	if !strings.ContainsRune(flags, 'E') {
		return false
	}
	return strings.ContainsRune(flags, 'l') || strings.ContainsRune(flags, 'A')
}

// WakeHandler receives the full name of a queue that got new entries.
type WakeHandler func(full string)

// Wakeups subscribes for wake-ups and calls wake for every queue that got
// entries (keyevent notifications for RPUSH/LPUSH on queue lists, and
// explicit publishes on WakeChannel). resync is called whenever a
// subscription was (re)established after a gap, when wake-ups may have been
// missed; lost is called when a subscription breaks (once per
// interruption: Redis may be unreachable). It uses one connection per Redis
// primary, follows Cluster topology changes, and returns when ctx ends.
func (s *Store) Wakeups(ctx context.Context, wake WakeHandler, resync func(), lost func(error)) error {
	switch c := s.rdb.(type) {
	case *redis.ClusterClient:
		return s.clusterWakeups(ctx, c, wake, resync, lost)
	case *redis.Client:
		s.nodeWakeups(ctx, c, wake, resync, lost)
		return nil
	default:
		return errors.New("wakeups: unsupported client")
	}
}

func wakeChannels(db int) []string {
	return []string{
		fmt.Sprintf("__keyevent@%d__:rpush", db),
		fmt.Sprintf("__keyevent@%d__:lpush", db),
		WakeChannel,
	}
}

// nodeWakeups runs the subscription on one server until ctx ends.
func (s *Store) nodeWakeups(ctx context.Context, c *redis.Client, wake WakeHandler, resync func(), lost func(error)) {
	ps := c.Subscribe(ctx, wakeChannels(c.Options().DB)...)
	// Receive does not return on ctx cancellation by itself: closing the
	// subscription unblocks it.
	stop := context.AfterFunc(ctx, func() { _ = ps.Close() })
	defer stop()
	defer ps.Close()
	subscribed := 0
	var failing time.Time // when the current interruption began
	backoff := 50 * time.Millisecond
	for {
		msg, err := ps.Receive(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			// go-redis reconnects and resubscribes on the next Receive;
			// one log line per interruption, retries backing off to 2 s.
			if failing.IsZero() {
				failing = time.Now()
				s.log.LogAttrs(ctx, slog.LevelWarn, "wake-up subscription interrupted; reconnecting", slog.String("addr", c.Options().Addr), slog.Any("err", err))
				if lost != nil {
					lost(err)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 2*time.Second)
			continue
		}
		if !failing.IsZero() {
			s.log.LogAttrs(ctx, slog.LevelInfo, "wake-up subscription back", slog.String("addr", c.Options().Addr),
				slog.Duration("after", time.Since(failing).Round(time.Millisecond)))
			failing, backoff = time.Time{}, 50*time.Millisecond
		}
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind == "subscribe" {
				subscribed++
				// Each (re)subscription reports every channel. A full
				// set means the subscription is live: wake-ups may have
				// been missed before it (a reconnect, or a primary that
				// is new to a Cluster subscription), so re-check only
				// now; a re-check started before the subscription is
				// confirmed leaves a window where a push wakes nobody.
				if subscribed%len(wakeChannels(0)) == 0 {
					// The server may be another one now (Sentinel
					// failover) or a restarted one: CONFIG SET is not
					// persisted, so turn the keyevents on again before
					// re-checking, or no push would wake anyone.
					if !s.ExplicitWake() && !enableOn(ctx, c) {
						s.log.LogAttrs(ctx, slog.LevelWarn, "could not enable keyspace notifications after reconnect", slog.String("addr", c.Options().Addr))
					}
					resync()
				}
			}
		case *redis.Message:
			if m.Channel == WakeChannel {
				wake(m.Payload)
			} else if full, ok := QueueOfListKey(m.Payload); ok {
				wake(full)
			}
		}
	}
}

// clusterWakeups keeps one subscription per primary and follows topology
// changes (failover, added or removed shards) by re-reading the primaries
// every few seconds.
func (s *Store) clusterWakeups(ctx context.Context, c *redis.ClusterClient, wake WakeHandler, resync func(), lost func(error)) error {
	type sub struct{ cancel context.CancelFunc }
	subs := map[string]sub{}
	var wg sync.WaitGroup
	defer func() {
		for _, sb := range subs {
			sb.cancel()
		}
		wg.Wait()
	}()
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	for {
		current := map[string]*redis.Client{}
		var mu sync.Mutex
		err := c.ForEachMaster(ctx, func(ctx context.Context, n *redis.Client) error {
			mu.Lock()
			current[n.Options().Addr] = n
			mu.Unlock()
			return nil
		})
		if err != nil && ctx.Err() == nil {
			s.log.LogAttrs(ctx, slog.LevelWarn, "cluster topology", slog.Any("err", err))
		}
		changed := false
		for addr, n := range current {
			if _, ok := subs[addr]; ok {
				continue
			}
			enableOn(ctx, n)
			sctx, cancel := context.WithCancel(ctx)
			subs[addr] = sub{cancel}
			changed = true
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.nodeWakeups(sctx, n, wake, resync, lost)
			}()
		}
		for addr, sb := range subs {
			if _, ok := current[addr]; !ok && err == nil {
				sb.cancel()
				delete(subs, addr)
			}
		}
		if changed && len(subs) > 0 {
			// Each new subscription re-checks once it is confirmed
			// (nodeWakeups).
			s.log.LogAttrs(ctx, slog.LevelInfo, "wake-up subscriptions", slog.Int("primaries", len(subs)))
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
			c.ReloadState(ctx)
		}
	}
}
