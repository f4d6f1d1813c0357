package main

import "io"

// runClient runs the command-line client subcommands; ok is false for an
// unknown command.
func runClient(args []string, stdout, stderr io.Writer) (code int, ok bool) {
	return 0, false
}
