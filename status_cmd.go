package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/vxbridge/vxbridge/doctor"
	"github.com/vxbridge/vxbridge/status"
)

// runStatus is `vxbridge status [--socket PATH] [--json]`: it asks the
// running plugin (managed or not) for its status and prints it. Without
// --socket it finds the socket under /run/docker/plugins.
func runStatus(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vxbridge status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "the plugin's socket (default: found under "+status.PluginsDir+")")
	asJSON := fs.Bool("json", false, "print JSON instead of tables")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var rep *status.Report
	var err error
	if *socket != "" {
		rep, err = status.Fetch(ctx, *socket)
	} else {
		_, rep, err = status.Find(ctx, status.PluginsDir)
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return status.WriteJSON(stdout, rep)
	}
	return status.WriteTable(stdout, rep)
}

// errDoctorFailed makes `vxbridge doctor` exit 1 after printing findings.
var errDoctorFailed = errors.New("doctor found failures (see FAIL above)")

// runDoctor is `vxbridge doctor [--socket PATH] [--json]`.
func runDoctor(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vxbridge doctor", flag.ContinueOnError)
	fs.SetOutput(stderr)
	socket := fs.String("socket", "", "the plugin's socket (default: found under "+status.PluginsDir+")")
	asJSON := fs.Bool("json", false, "print JSON instead of a table")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	findings := doctor.Run(doctor.Gather(ctx, doctor.GatherOptions{Socket: *socket}))
	var err error
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		err = enc.Encode(findings)
	} else {
		err = doctor.Write(stdout, findings)
	}
	if err != nil {
		return err
	}
	if doctor.Failed(findings) {
		return errDoctorFailed
	}
	return nil
}
