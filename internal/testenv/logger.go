package testenv

import (
	"io"
	"log/slog"
)

// QuietLogger returns a logger that discards everything: for code under
// test that needs a logger whose output the test does not look at.
func QuietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }
