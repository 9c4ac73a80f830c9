// Command plot turns a `make bench` results file into PNG plots and
// BENCHMARKS.md. `make bench` builds it (bench/ is a module of its own) and runs it from
// the repository's top: bin/plot -in bench/results/results.json.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/vxbridge/vxbridge/bench/result"
)

func main() {
	in := flag.String("in", "bench/results/results.json", "results file written by the harness")
	dir := flag.String("plots", "bench/results", "directory for the PNG plots")
	md := flag.String("md", "BENCHMARKS.md", "results page to write")
	flag.Parse()
	if err := run(*in, *dir, *md); err != nil {
		fmt.Fprintln(os.Stderr, "plot:", err)
		os.Exit(1)
	}
}

func run(in, dir, md string) error {
	r, err := result.Read(in)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	plots, err := writePlots(r, dir)
	if err != nil {
		return err
	}
	// Links in the page are relative to the page's directory.
	rel := map[string]string{}
	for k, p := range plots {
		if rp, err := filepath.Rel(filepath.Dir(md), p); err == nil {
			rel[k] = rp
		}
	}
	return os.WriteFile(md, []byte(report(r, rel, in)), 0o644)
}
