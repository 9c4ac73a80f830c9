// Package namespace keeps named, persistent network namespaces as files in a
// directory, the way `ip netns add` does under /run/netns, but in a
// directory of the caller's choice. vxbridge gives each cross-host network a
// namespace of its own; the bind mount keeps the namespace alive when the
// plugin process exits or crashes, and the name finds it again after a
// restart. This file is pure (names, listing); the kernel calls are in
// namespace_linux.go and mountns_linux.go.
//
// # Design notes
//
// A namespace lives as long as something refers to it: a process or thread
// in it, an open file descriptor of it, or a mount of its nsfs file. Ensure
// makes it on a thread of its own (unshare(CLONE_NEWNET)) and bind-mounts
// /proc/thread-self/ns/net onto the plain file Dir/<name> before switching
// the thread back, so the mount is its only lasting reference. Delete
// detaches that mount (MNT_DETACH); the namespace, with every link in it,
// goes away once the last open handle and the last process in it are gone.
//
// Crash safety. The file is created before the mount. A crash between the
// two leaves a plain file with nothing mounted on it: Open reports it as
// missing and Ensure creates the namespace on it again. A crash before the
// mount loses nothing: the new namespace dies with its thread.
//
// Mount namespaces. The bind mount exists in the mount namespace the Dir's
// files are in: the caller's, or Mounts (a MountNS). The directory is not
// made a shared mount of itself as `ip netns` does. A process in a mount
// namespace of its own that dies with it (a managed plugin's container)
// would lose its mounts, and with them the namespaces, at every restart:
// it gives the host's mount namespace as Mounts, and every file operation
// and mount of the Dir runs on a thread that joined it (setns, after
// unshare(CLONE_FS): a thread sharing its root with other threads may not
// change mount namespace), and that Go ends afterwards. A restart then
// finds the namespaces where it left them. Without Mounts, in a private
// mount namespace, a restart finds plain files, and Ensure puts fresh,
// empty namespaces on them.
//
// Kernel behaviour worth knowing. In the mount namespace that holds the
// mount, unlinking Dir/<name> fails with EBUSY, so `rm -rf` of the directory
// fails too and the directory cannot go while a namespace is mounted in it.
// From a mount namespace that sees a plain file there (the mount did not
// propagate to it) the unlink succeeds and silently detaches the mount in
// every namespace. Renaming the directory keeps the mounts: they follow the
// dentries, and /proc/self/mountinfo shows the new path.
//
// Concurrency. Calls for different names may run concurrently. Calls for
// the same name must be serialised by the caller: two concurrent Ensures of
// one name can both mount, stacking two namespaces on the file (Delete
// removes every stacked mount).
package namespace

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxNameLen bounds a namespace name, in bytes.
const maxNameLen = 64

// Dir is a directory of named network namespaces, each a bind mount of a
// namespace file (nsfs) on a plain file Dir/<name>.
type Dir struct {
	Path string
	// Mounts is the mount namespace Path is in, where the namespaces are
	// mounted; nil: the process's own.
	Mounts *MountNS
}

// validName rejects names that are not a single, short path component.
func validName(name string) error {
	switch {
	case name == "":
		return errors.New("namespace name is empty")
	case name == "." || name == "..":
		return fmt.Errorf("namespace name %q is not a file name", name)
	case strings.ContainsAny(name, "/\x00"):
		return fmt.Errorf("namespace name %q contains '/' or NUL", name)
	case len(name) > maxNameLen:
		return fmt.Errorf("namespace name %q is longer than %d bytes", name, maxNameLen)
	}
	return nil
}

// path returns Dir/<name> after checking name.
func (d Dir) path(name string) (string, error) {
	if err := validName(name); err != nil {
		return "", err
	}
	return filepath.Join(d.Path, name), nil
}

// List returns the names of the entries of Dir (mounted or not) that match
// prefix, sorted; a missing directory is an empty list. Entries are not
// checked: a leftover plain file is listed like a namespace.
func (d Dir) List(prefix string) ([]string, error) {
	var entries []os.DirEntry
	err := d.Mounts.Run(func() (err error) {
		entries, err = os.ReadDir(d.Path)
		return err
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list namespaces in %s: %w", d.Path, err)
	}
	var names []string
	for _, e := range entries { // os.ReadDir sorts by name
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names, nil
}
