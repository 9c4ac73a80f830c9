//go:build tools

// Package deps pins modules that features under construction import, so
// `go mod tidy` keeps them. Remove an import once real code uses it.
package deps

import (
	_ "github.com/prometheus/client_golang/prometheus"
)
