package gateway

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/popbox/popbox/hub/delivery"
)

// answerOverhead is the size of the fixed parts of a pop answer:
// {"ok":true,"data":[],"transactions":[]} and the final newline.
const answerOverhead = len(`{"ok":true,"data":[],"transactions":[]}` + "\n")

// popEncoder writes the classic pop / peek answer {"ok": true, "data":
// [...], "transactions": [...]} straight to the response, one payload at a
// time (no buffer holding the whole answer), without HTML escaping (the
// original escaped nothing; Go's default turns each <, > and & into six
// bytes), and stops before the answer would exceed a byte bound.
type popEncoder struct {
	buf bytes.Buffer
	enc *json.Encoder
}

func newPopEncoder() *popEncoder {
	e := &popEncoder{}
	e.enc = json.NewEncoder(&e.buf)
	e.enc.SetEscapeHTML(false)
	return e
}

// encode puts the JSON string of s in e.buf.
func (e *popEncoder) encode(s string) []byte {
	e.buf.Reset()
	_ = e.enc.Encode(s) // a string always encodes
	return bytes.TrimSuffix(e.buf.Bytes(), []byte("\n"))
}

// writePopAnswer answers 200 with msgs, as many of them (a prefix) as fit in
// maxBytes of encoded answer; the first message is always included, so one
// message larger than the bound is still deliverable. It returns how many
// were written; err is a write error (the client went away).
func writePopAnswer(c echo.Context, msgs []delivery.Message, maxBytes int64) (n int, err error) {
	resp := c.Response()
	resp.Header().Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
	resp.WriteHeader(http.StatusOK)
	return encodePopAnswer(resp, msgs, maxBytes)
}

// encodePopAnswer is writePopAnswer's encoding, on any writer.
func encodePopAnswer(w io.Writer, msgs []delivery.Message, maxBytes int64) (n int, err error) {
	e := newPopEncoder()
	ew := &errWriter{w: w}
	ew.WriteString(`{"ok":true,"data":[`)
	size := int64(answerOverhead)
	for i, m := range msgs {
		data := e.encode(m.Payload)
		// payload, its tid (a UUID needs no escaping) and two commas
		cost := int64(len(data) + len(m.TID) + 2 + 2)
		if i > 0 && size+cost > maxBytes {
			break
		}
		if i > 0 {
			ew.WriteString(",")
		}
		ew.Write(data)
		size += cost
		n++
		if ew.err != nil {
			return n, ew.err
		}
	}
	ew.WriteString(`],"transactions":[`)
	for i, m := range msgs[:n] {
		if i > 0 {
			ew.WriteString(",")
		}
		ew.Write(e.encode(m.TID))
	}
	ew.WriteString("]}\n")
	return n, ew.err
}

// errWriter keeps the first write error so the encoder can write on
// unchecked and look once.
type errWriter struct {
	w   io.Writer
	err error
}

func (w *errWriter) Write(p []byte) {
	if w.err == nil {
		_, w.err = w.w.Write(p)
	}
}

func (w *errWriter) WriteString(s string) {
	if w.err == nil {
		_, w.err = io.WriteString(w.w, s)
	}
}
