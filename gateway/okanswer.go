package gateway

import (
	"strings"
	"sync"
	"unicode/utf8"

	"github.com/labstack/echo/v4"
)

// The POST /trans answer, the most frequent answer under provisioning
// load, is written by hand into a pooled buffer instead of through echo's
// c.JSON (encoding/json reflection over a map, a fresh encoder and, per
// call, a parse of the query string for ?pretty): byte for byte the same
// output (FuzzOKAnswerMatchesEncodingJSON), measurably cheaper
// (BenchmarkAnswerProvision). Other answers keep c.JSON; the pop answer has
// its own bounded encoder (answer.go).

var answerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// writeAnswer writes b, built by build into a pooled buffer, as a JSON
// answer; with ?pretty (echo indents then) it answers through
// c.JSON(v()) (v is only called then: the value is not built otherwise).
func writeAnswer(c echo.Context, status int, v func() any, build func([]byte) []byte) error {
	if strings.Contains(c.Request().URL.RawQuery, "pretty") {
		return c.JSON(status, v())
	}
	bp := answerBufs.Get().(*[]byte)
	b := build((*bp)[:0])
	err := c.JSONBlob(status, b)
	if cap(b) <= 64<<10 { // do not keep the buffer of a huge answer
		*bp = b
		answerBufs.Put(bp)
	}
	return err
}

// okTIDAnswer answers {"ok":true,"data":tid} as c.JSON(okData(tid)) does.
func okTIDAnswer(c echo.Context, status int, tid string) error {
	return writeAnswer(c, status, func() any { return okData(tid) }, func(b []byte) []byte { return appendOKData(b, tid) })
}

func appendOKData(b []byte, s string) []byte {
	b = append(b, `{"data":`...) // encoding/json sorts map keys
	b = appendJSONString(b, s)
	return append(b, ",\"ok\":true}\n"...)
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s as a JSON string exactly as encoding/json
// writes it with HTML escaping on (its default, and echo's): <, > and &
// as \u003c, \u003e, \u0026; U+2028 and U+2029 escaped; invalid UTF-8 as
// \ufffd.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
