//go:build !crashhook

package main

import "io"

// crashHook is nil in release builds: the test-only crash hook exists only
// in `-tags crashhook` builds (main_crashhook.go).
func crashHook(io.Writer) (func(point string), error) { return nil, nil }
