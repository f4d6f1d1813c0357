// Package version holds the build version, set with -ldflags -X.
package version

// Version is the gateway's version ("dev" for an unstamped build).
var Version = "dev"
