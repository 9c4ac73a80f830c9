//go:build benchpprof

package main

// Only in binaries built with -tags benchpprof (bench/README: profiling):
// VXBRIDGE_PPROF=/path.sock serves net/http/pprof on that unix socket, so a
// benchmark can profile the real plugin inside its namespace. Release builds
// never contain this file.

import (
	"net"
	"net/http"
	_ "net/http/pprof"
	"os"
)

func init() {
	path := os.Getenv("VXBRIDGE_PPROF")
	if path == "" {
		return
	}
	os.Remove(path)
	l, err := net.Listen("unix", path)
	if err != nil {
		return
	}
	go http.Serve(l, nil)
}
