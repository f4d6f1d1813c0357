package tick_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/popbox/popbox/internal/tick"
)

// goRun runs run in a goroutine; the channel closes when run returns.
func goRun(run func()) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		run()
	}()
	return done
}

func TestEveryCallsUntilContextEnds(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	done := goRun(func() {
		tick.Every(ctx, time.Millisecond, func() {
			if calls.Add(1) == 3 {
				cancel()
			}
		})
	})
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Every did not return after ctx ended")
	}
	if n := calls.Load(); n != 3 {
		t.Fatalf("f called %d times, want 3 (no call after ctx ended)", n)
	}
}

func TestEveryFirstCallWaitsForInterval(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var calls atomic.Int32
	done := goRun(func() { tick.Every(ctx, time.Hour, func() { calls.Add(1) }) })
	cancel()
	<-done
	if n := calls.Load(); n != 0 {
		t.Fatalf("f called %d times before the first interval, want 0", n)
	}
}

func TestEveryOrWakeCallsOnWake(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	wake := make(chan struct{})
	called := make(chan struct{}, 1)
	done := goRun(func() { tick.EveryOrWake(ctx, time.Hour, wake, func() { called <- struct{}{} }) })
	for range 2 {
		select {
		case wake <- struct{}{}:
		case <-time.After(10 * time.Second):
			t.Fatal("EveryOrWake did not take the wake-up")
		}
		select {
		case <-called:
		case <-time.After(10 * time.Second):
			t.Fatal("wake-up did not call f")
		}
	}
	cancel()
	<-done
}
