package gateway

import (
	"context"
	"log/slog"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// Reasons of popbox_stream_ends_total (why a stream ended; docs/DEPLOYMENT.md
// section 8 says what each means and what to do about it).
const (
	StreamEndClientClosed    = "client_closed"     // the client closed or went away (EOF, close frame, request cancelled)
	StreamEndPongTimeout     = "pong_timeout"      // a WebSocket ping got no pong within the pong timeout
	StreamEndHeartbeatFailed = "heartbeat_failed"  // writing a heartbeat failed or timed out
	StreamEndSlowConsumer    = "slow_consumer"     // a message write timed out
	StreamEndAckTimeout      = "ack_timeout"       // a reliable message was not acknowledged in time
	StreamEndShutdown        = "shutdown"          // the node shut down
	StreamEndRedis           = "redis_unavailable" // Redis could not be reached
	StreamEndTokenExpired    = "token_expired"     // the token the stream depends on expired
	StreamEndFrameRate       = "frame_rate"        // the client sent frames faster than allowed (1008)
	StreamEndShed            = "shed"              // a silent /ws closed by the connection limit (1013) or the auth timeout (1008)
	StreamEndAuthFailed      = "auth_failed"       // a /ws closed for too many refused subscriptions (1008)
	StreamEndInternalError   = "internal_error"    // the node could not encode a message
	StreamEndControlTimeout  = "control_timeout"   // coder/websocket closed the socket itself: a control frame's payload not read within its 5 s
)

// StreamEndReasons lists every reason of popbox_stream_ends_total.
var StreamEndReasons = []string{StreamEndClientClosed, StreamEndPongTimeout, StreamEndHeartbeatFailed, StreamEndSlowConsumer,
	StreamEndAckTimeout, StreamEndShutdown, StreamEndRedis, StreamEndTokenExpired, StreamEndFrameRate, StreamEndShed,
	StreamEndAuthFailed, StreamEndInternalError, StreamEndControlTimeout}

// endLabels are the metric labels of the end reasons.
var endLabels = [numEndReasons]string{
	endClientGone:      StreamEndClientClosed,
	endShutdown:        StreamEndShutdown,
	endAckTimeout:      StreamEndAckTimeout,
	endSlow:            StreamEndSlowConsumer,
	endError:           StreamEndInternalError,
	endUnavailable:     StreamEndRedis,
	endTokenExpired:    StreamEndTokenExpired,
	endPongTimeout:     StreamEndPongTimeout,
	endHeartbeatFailed: StreamEndHeartbeatFailed,
	endFrameRate:       StreamEndFrameRate,
	endShed:            StreamEndShed,
	endAuthFailed:      StreamEndAuthFailed,
	endControlTimeout:  StreamEndControlTimeout,
}

// label is the reason's value of popbox_stream_ends_total.
func (r endReason) label() string {
	if r < 0 || r >= numEndReasons {
		return StreamEndInternalError
	}
	return endLabels[r]
}

// abnormal tells whether an end points at a problem of the node or of the
// network between it and its clients (logged as a warning): the node was
// too slow to answer pings or write, or failed.
func (r endReason) abnormal() bool {
	switch r {
	case endPongTimeout, endHeartbeatFailed, endSlow, endError, endControlTimeout:
		return true
	}
	return false
}

// endWarnInterval is the least time between two warnings about abnormal
// stream ends of the same reason.
const endWarnInterval = 10 * time.Second

// endWarnings lets through at most one warning per interval for each
// reason, and counts the ones it held back (x/time/rate's Sometimes, as
// the callback sink limits its logs, plus the count Sometimes does not
// keep): when thousands of streams end at once the log says so in a few
// lines, and every end is still counted and logged at debug level.
type endWarnings struct {
	every [numEndReasons]rate.Sometimes
	held  [numEndReasons]atomic.Int64
}

func newEndWarnings(interval time.Duration) *endWarnings {
	w := &endWarnings{}
	for i := range w.every {
		w.every[i].Interval = interval
	}
	return w
}

// do runs log now, with the number of warnings about r held back since
// the last one, unless a warning about r ran within the interval: then it
// counts this one as held back.
func (w *endWarnings) do(r endReason, log func(held int64)) {
	ran := false
	w.every[r].Do(func() {
		ran = true
		log(w.held[r].Swap(0))
	})
	if !ran {
		w.held[r].Add(1)
	}
}

// streamEnded counts and logs the end of a stream of transport name, that
// had queues subscriptions and lived for lived: every end at debug level,
// the abnormal ones also as a rate-limited warning.
func (s *Server) streamEnded(ctx context.Context, name string, r endReason, queues int, lived time.Duration) {
	reason := r.label()
	s.m.StreamEnds.WithLabelValues(name, reason).Inc()
	debug := s.log.Enabled(ctx, slog.LevelDebug)
	if !debug && !r.abnormal() {
		return
	}
	attrs := []slog.Attr{slog.String("transport", name), slog.String("reason", reason), slog.Int("queues", queues), slog.Duration("lived", lived)}
	if debug {
		s.log.LogAttrs(ctx, slog.LevelDebug, "stream ended", attrs...)
	}
	if r.abnormal() {
		s.endWarn.do(r, func(held int64) {
			s.log.LogAttrs(ctx, slog.LevelWarn, "stream ended abnormally (one warning per reason every "+endWarnInterval.String()+
				"; popbox_stream_ends_total counts them all)", append(attrs, slog.Int64("held_back", held))...)
		})
	}
}
