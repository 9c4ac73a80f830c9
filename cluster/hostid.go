package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// HostIDFile is the file in the state directory that keeps this host's id.
const HostIDFile = "host-id"

// LoadHostID returns this host's id, kept in <stateDir>/host-id, creating
// it the first time: it must survive restarts (address blocks and endpoint
// records are filed under it in etcd) and differ between hosts.
func LoadHostID(stateDir string) (string, error) {
	path := filepath.Join(stateDir, HostIDFile)
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if id == "" || strings.ContainsAny(id, "/ \t") {
			return "", fmt.Errorf("host id file %s holds %q: delete it to get a new id", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read host id: %w", err)
	}
	id, err := NewHostID()
	if err != nil {
		return "", err
	}
	file, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return "", fmt.Errorf("create host id: %w", err)
	}
	if _, err := file.WriteString(id + "\n"); err != nil {
		file.Close()
		return "", fmt.Errorf("write host id: %w", err)
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return "", err
	}
	return id, file.Close()
}

// NewHostID draws a new host id: 16 hex digits.
func NewHostID() (string, error) {
	raw := make([]byte, 8)
	if _, err := rand.Read(raw); err != nil {
		return "", err
	}
	return hex.EncodeToString(raw), nil
}
