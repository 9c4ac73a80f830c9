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

// parseToolFlags reads the flags status and doctor share.
func parseToolFlags(cmd string, args []string, stderr io.Writer, more ...func(*flag.FlagSet)) (socket string, asJSON bool, err error) {
	fs := flag.NewFlagSet("vxbridge "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&socket, "socket", "", "the plugin's socket (default: found under "+status.PluginsDir+")")
	fs.BoolVar(&asJSON, "json", false, "print JSON instead of tables")
	for _, add := range more {
		add(fs)
	}
	if err := fs.Parse(args); err != nil {
		return "", false, err
	}
	if fs.NArg() > 0 {
		return "", false, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return socket, asJSON, nil
}

// runStatus is `vxbridge status [--socket PATH] [--json]`: it asks the
// running plugin (managed or not) for its status and prints it. Without
// --socket it finds the socket under /run/docker/plugins.
func runStatus(args []string, stdout, stderr io.Writer) error {
	socket, asJSON, err := parseToolFlags("status", args, stderr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	var rep *status.Report
	if socket != "" {
		rep, err = status.Fetch(ctx, socket)
	} else {
		_, rep, err = status.Find(ctx, status.PluginsDir)
	}
	if err != nil {
		return err
	}
	if asJSON {
		return status.WriteJSON(stdout, rep)
	}
	return status.WriteTable(stdout, rep)
}

// errDoctorFailed makes `vxbridge doctor` exit 1 after printing findings.
var errDoctorFailed = errors.New("doctor found failures (see FAIL above)")

// runDoctor is `vxbridge doctor [--socket PATH] [--json] [--state-dir DIR]
// [--netns-dir DIR]`; the directories are read when no plugin answers.
func runDoctor(args []string, stdout, stderr io.Writer) error {
	var o doctor.GatherOptions
	socket, asJSON, err := parseToolFlags("doctor", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&o.StateDir, "state-dir", "/var/lib/vxbridge", "the plugin's state directory, read when it does not answer")
		fs.StringVar(&o.NetNSDir, "netns-dir", "/run/vxbridge/netns", "the plugin's --netns-dir, read when it does not answer")
	})
	if err != nil {
		return err
	}
	o.Socket = socket
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	findings := doctor.Run(doctor.Gather(ctx, o))
	if asJSON {
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
