package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
)

// CentrifugoScheme is the URL scheme of a Centrifugo target: the benchmark
// suite's peer (centrifugo://api:KEY@127.0.0.1:8000, the password being the
// server API key). Against such a target the same transports speak
// Centrifugo's unidirectional protocol instead of PopBox's:
//
//   - SSE: GET /connection/uni_sse?cf_connect={"subs":{"<queue>":{}}}
//   - WS: the uni_websocket endpoint with the same connect request
//   - provisioning: POST /api/publish {"channel":"<queue>","data":<payload>}
//     (POST /api/broadcast for several queues), header X-API-Key
//
// The queue name is the channel name. The server must let anonymous
// connections subscribe to channels in their connect request
// (client.allow_anonymous_connect_without_token and the without_namespace
// allow_subscribe_for_client + allow_subscribe_for_anonymous options).
const CentrifugoScheme = "centrifugo"

// Centrifugo's default endpoint paths (v6).
const (
	centrifugoUniSSE = "/connection/uni_sse"
	centrifugoUniWS  = "/connection/uni_websocket"
	centrifugoAPI    = "/api"
)

// IsCentrifugo reports whether u is a Centrifugo target.
func IsCentrifugo(u *url.URL) bool { return u != nil && u.Scheme == CentrifugoScheme }

// CentrifugoKinds are the transports a Centrifugo target offers.
var CentrifugoKinds = []Kind{SSE, WS}

func (c *Client) centrifugo() bool { return IsCentrifugo(c.Base) }

// centrifugoPath is the path and query of a uni endpoint subscribing queue.
func (c *Client) centrifugoPath(endpoint, queue string) string {
	b := []byte(`{"subs":{`)
	b = appendJSONString(b, queue)
	b = append(b, ":{}}}"...)
	return c.Base.Path + endpoint + "?cf_connect=" + url.QueryEscape(string(b))
}

// centrifugoPush is the part of a Centrifugo push (JSON protocol) that the
// load tool reads. An empty object is a ping.
type centrifugoPush struct {
	Channel string `json:"channel"`
	Pub     *struct {
		Data json.RawMessage `json:"data"`
	} `json:"pub"`
	Connect *struct {
		Subs map[string]json.RawMessage `json:"subs"`
	} `json:"connect"`
	Disconnect *struct {
		Code   int    `json:"code"`
		Reason string `json:"reason"`
	} `json:"disconnect"`
}

// errNotSubscribed is a Centrifugo connection whose connect push lacks the
// channel asked for (the server ignored the subscription: its channel
// options do not allow it).
var errNotSubscribed = errors.New("centrifugo connected without subscribing the channel (channel options refuse anonymous subscriptions?)")

// centrifugoFrame handles one transport frame from Centrifugo: one or more
// pushes separated by newlines. opened tracks whether the connect push
// (which opens the subscription for the load tool) was seen. A disconnect
// push or a missing subscription ends the connection with an error.
func (c *Client) centrifugoFrame(b []byte, queue string, h *Handler, opened *bool) error {
	for len(b) > 0 {
		line := b
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			line, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		line = bytes.TrimSpace(line)
		if len(line) == 0 {
			continue
		}
		var p centrifugoPush
		if err := json.Unmarshal(line, &p); err != nil {
			h.problem("undecodable frame")
			continue
		}
		switch {
		case p.Connect != nil:
			if _, ok := p.Connect.Subs[queue]; !ok {
				return errNotSubscribed
			}
			if !*opened {
				*opened = true
				h.open()
			}
		case p.Disconnect != nil:
			return fmt.Errorf("centrifugo disconnect %d: %s", p.Disconnect.Code, truncate(p.Disconnect.Reason, 60))
		case p.Pub != nil:
			if p.Channel != queue {
				h.problem("message for a channel not subscribed")
				continue
			}
			if !*opened {
				h.problem("publication before the connect push")
				continue
			}
			h.msg(0, string(p.Pub.Data))
		}
	}
	return nil
}

// appendCentrifugoPublish appends the body of a Centrifugo publish (one
// queue) or broadcast (several) of payload, which must be JSON, and returns
// the API method.
func appendCentrifugoPublish(b []byte, queues []string, payload []byte) ([]byte, string) {
	method := "publish"
	if len(queues) == 1 {
		b = append(b, `{"channel":`...)
		b = appendJSONString(b, queues[0])
	} else {
		method = "broadcast"
		b = append(b, `{"channels":[`...)
		for i, q := range queues {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONString(b, q)
		}
		b = append(b, ']')
	}
	b = append(b, `,"data":`...)
	b = append(b, payload...)
	return append(b, '}'), method
}

// centrifugoAnswer checks a Centrifugo API answer: {"result":{...}} or
// {"error":{"code":N,"message":"..."}}.
func centrifugoAnswer(body []byte) error {
	var r struct {
		Error  *centrifugoError `json:"error"`
		Result *struct {
			// broadcast: one answer per channel
			Responses []struct {
				Error *centrifugoError `json:"error"`
			} `json:"responses"`
		} `json:"result"`
	}
	if err := json.Unmarshal(body, &r); err != nil || (r.Error == nil && r.Result == nil) {
		return fmt.Errorf("unexpected centrifugo answer: %.100s", body)
	}
	if r.Error != nil {
		return r.Error
	}
	for _, a := range r.Result.Responses {
		if a.Error != nil {
			return a.Error
		}
	}
	return nil
}

// centrifugoError is an error answer of Centrifugo's API.
type centrifugoError struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
}

func (e *centrifugoError) Error() string {
	return fmt.Sprintf("centrifugo error %d: %s", e.Code, truncate(e.Message, 80))
}
