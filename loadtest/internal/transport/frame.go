package transport

import (
	"bytes"
	"encoding/json"
	"fmt"
)

// strList decodes a JSON string or an array of strings.
type strList []string

// UnmarshalJSON accepts a string, an array of strings or null.
func (s *strList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case len(b) == 0 || string(b) == "null":
		*s = nil
		return nil
	case b[0] == '"':
		var v string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = append((*s)[:0], v)
		return nil
	case b[0] == '[':
		var v []string
		if err := json.Unmarshal(b, &v); err != nil {
			return err
		}
		*s = v
		return nil
	}
	return fmt.Errorf("data: want a string or an array of strings, got %.20s", b)
}

// Frame is any message the gateway sends to a subscriber, decoded into one
// shape:
//
//   - SSE event data and per-queue WebSocket frames:
//     {"data": "<payload>", "transaction": "<tid>", "queue": "<id>", "priority": "H"}
//   - multiplexed WebSocket frames:
//     {"op": "message", "queue": "<id>", "data": "<payload>", ...} or {"op": "error", ...}
//   - streaming objects and pop responses:
//     {"ok": true, "data": ["<payload>", ...], "transactions": ["<tid>", ...]}
type Frame struct {
	Op      string          `json:"op"`
	Queue   string          `json:"queue"`
	Data    strList         `json:"data"`
	Errors  json.RawMessage `json:"errors"`
	Error   json.RawMessage `json:"error"`
	Message json.RawMessage `json:"message"`
	Reason  json.RawMessage `json:"reason"`
	Code    json.RawMessage `json:"code"`
}

// DecodeFrame decodes one gateway frame.
func DecodeFrame(b []byte) (Frame, error) {
	var f Frame
	if err := json.Unmarshal(b, &f); err != nil {
		return Frame{}, fmt.Errorf("undecodable frame: %w", err)
	}
	return f, nil
}

// ProblemText summarises an error frame for the error table.
func (f *Frame) ProblemText() string {
	for _, r := range []json.RawMessage{f.Code, f.Error, f.Message, f.Reason, f.Errors} {
		if len(r) > 0 && string(r) != "null" {
			s := string(r)
			if len(s) > 60 {
				s = s[:60]
			}
			return "error frame: " + s
		}
	}
	return "error frame"
}
