package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"strconv"

	"github.com/popbox/popbox/web"
)

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

func newRequestID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func uiHandler() http.Handler { return web.UI() }
