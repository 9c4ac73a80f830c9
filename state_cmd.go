package main

// `vxbridge state check|restore`, the state file's checks at serve's start,
// and the exit codes of what a restart cannot fix.
//
// Why a subcommand and not a serve flag: restoring goes back in time and
// must happen once, on purpose, with vxbridge stopped. A flag left in a
// unit file or a plugin's settings would roll the state back at every
// restart; a command that refuses while vxbridge runs, keeps the file it
// replaces and prints what it did cannot.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/vxbridge/vxbridge/internal/server"
	"github.com/vxbridge/vxbridge/ownership"
	"github.com/vxbridge/vxbridge/store"
)

// Exit codes beyond 1 (any other error), for supervisors: a restart loop
// cannot fix these (systemd: RestartPreventExitStatus=3 4 5).
const (
	exitDamagedState    = 3 // the state file is damaged: `vxbridge state restore`
	exitAnotherInstance = 4 // another vxbridge serves this socket or network namespace
	exitRefused         = 5 // the state file does not own the kernel's vxbridge objects
)

func exitCode(err error) int {
	switch {
	case errors.Is(err, store.ErrDamaged):
		return exitDamagedState
	case errors.Is(err, server.ErrAnotherInstance), errors.Is(err, store.ErrLocked):
		return exitAnotherInstance
	case errors.Is(err, ownership.ErrRefused):
		return exitRefused
	}
	return 1
}

// openState opens the state file for serve; a damaged one fails naming the
// command that recovers.
func openState(dir string, log *slog.Logger) (*store.DB, error) {
	db, err := store.Open(dir, store.Options{})
	if errors.Is(err, store.ErrDamaged) {
		return nil, fmt.Errorf("%w. To start again from the last good copy: vxbridge state restore --state-dir %s", err, dir)
	}
	if err != nil {
		return nil, err
	}
	o := db.Origin()
	for _, note := range o.Notes {
		log.Warn("state file damaged but readable", "path", db.Path(), "damage", note)
	}
	log.Info("state file", "path", db.Path(), "identity", o.Identity, "records", o.Records, "commit", o.Commit,
		"created", o.Created, "rollback", o.Rollback, "replaced", o.Replaced)
	return db, nil
}

// runState is `vxbridge state check|restore [--state-dir DIR]`.
func runState(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || args[0] != "check" && args[0] != "restore" {
		return errors.New("usage: vxbridge state check|restore [--state-dir DIR]")
	}
	fs := flag.NewFlagSet("vxbridge state "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("state-dir", "/var/lib/vxbridge", "directory holding the bbolt state file")
	if err := server.ApplyEnv(fs, "VXBRIDGE_", os.LookupEnv); err != nil {
		return err
	}
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if args[0] == "restore" {
		return restoreState(*dir, stdout)
	}
	return checkState(*dir, stdout)
}

// checkState prints what the state file, its good copy and its commit mark
// hold; it fails when the state file is damaged.
func checkState(dir string, stdout io.Writer) error {
	path := filepath.Join(dir, store.FileName)
	info, err := store.Inspect(path)
	switch {
	case errors.Is(err, store.ErrLocked):
		fmt.Fprintf(stdout, "state file  %s: in use by a running vxbridge (checked when it started)\n", path)
		err = nil
	case err != nil:
		fmt.Fprintf(stdout, "state file  %s: %v\n", path, err)
	default:
		fmt.Fprintf(stdout, "state file  %s: %s\n", path, describeInfo(info))
	}
	good, goodErr := store.Inspect(path + store.GoodSuffix)
	if goodErr != nil {
		fmt.Fprintf(stdout, "good copy   %s: %v\n", path+store.GoodSuffix, goodErr)
	} else {
		fmt.Fprintf(stdout, "good copy   %s: %s\n", good.Path, describeInfo(good))
	}
	if err != nil && goodErr == nil {
		return fmt.Errorf("%w. To start again from the last good copy: vxbridge state restore --state-dir %s", err, dir)
	}
	return err
}

func describeInfo(i store.Info) string {
	s := fmt.Sprintf("sound; identity %s, commit %d, %d records, %d bytes, written %s",
		i.Identity, i.Commit, i.Records, i.Size, i.Modified.UTC().Format(time.RFC3339))
	for _, n := range i.Notes {
		s += "; " + n
	}
	return s
}

// restoreState puts the good copy in place and says what was lost.
func restoreState(dir string, stdout io.Writer) error {
	r, err := store.Restore(dir, time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "restored %s from its good copy: %s\n", filepath.Join(dir, store.FileName), describeInfo(r.From))
	if r.Kept != "" {
		fmt.Fprintf(stdout, "the file it replaced is kept as %s\n", r.Kept)
	}
	fmt.Fprintf(stdout, "networks, endpoints and addresses created after %s are not in it; the file records that it went back in time\n",
		r.From.Modified.UTC().Format(time.RFC3339))
	return nil
}
