// Package js holds the PopBox JavaScript client (an npm package: see
// package.json and README.md) and embeds its ES module source for the Go
// side: the dashboard (package web) serves these very files, so the
// browser speaks the streaming protocol through one implementation, and
// `go build` needs no copy step (go:embed cannot reach outside its
// package's directory, so the embedding lives here, next to the source).
package js

import "embed"

// Source is the client's ES modules: src/popbox.js (the entry point, which
// imports ./protocol.js) and src/protocol.js, plus the type declarations
// src/popbox.d.ts.
//
//go:embed src/popbox.js src/protocol.js src/popbox.d.ts
var Source embed.FS
