// Package tick runs a function periodically until a context ends.
package tick

import (
	"context"
	"time"
)

// Every calls f every d until ctx ends. The first call comes after d, not
// at once; a call in progress is not interrupted.
func Every(ctx context.Context, d time.Duration, f func()) {
	EveryOrWake(ctx, d, nil, f)
}

// EveryOrWake is Every that also calls f whenever a value arrives on wake
// (a nil wake never does).
func EveryOrWake(ctx context.Context, d time.Duration, wake <-chan struct{}, f func()) {
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
		f()
	}
}
