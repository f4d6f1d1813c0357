package gateway

import (
	"encoding/json"
	"testing"

	"github.com/popbox/popbox/redisq"
)

// BenchmarkEncodeEvent is the per-message encoding of SSE and WebSocket.
func BenchmarkEncodeEvent(b *testing.B) {
	m := redisq.Message{TID: "7f1d0c4e-1b7a-4a38-9a53-0c3f8b1e2d44", Queue: "UNSEC:inbox-1", Priority: 'H',
		Payload: `{"title":"hello","body":"a message of a realistic size for a push notification"}`}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(newEventData("inbox-1", m)); err != nil {
			b.Fatal(err)
		}
	}
}
