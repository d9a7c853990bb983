package localapi

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// ErrInUse means an agent already answers on the socket path. The caller
// should take over from it (package handover) rather than start beside it.
var ErrInUse = errors.New("an agent is already listening on the socket")

// Listen creates the agent's socket at path, mode 0600 whatever the umask,
// creating the parent directory 0755 if absent. A socket file left behind by
// a dead agent is replaced; if an agent still answers on it, Listen returns
// an error wrapping ErrInUse and leaves the file alone. A path that exists
// and is not a socket is never removed.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket dir: %w", err)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	// bind(2) creates the file 0777&^umask. Tighten it before anyone is told
	// the agent is up; a caller that slips in between still meets the
	// SO_PEERCRED check in Server, which is the real guard.
	if err := os.Chmod(path, 0o600); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// removeStale removes path if it is a socket nothing answers on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket; refusing to replace it", path)
	}
	c, err := net.DialTimeout("unix", path, 2*time.Second)
	switch {
	case err == nil:
		c.Close()
		return fmt.Errorf("%s: %w", path, ErrInUse)
	case errors.Is(err, syscall.EAGAIN):
		// Backlog full: someone is there, just busy.
		return fmt.Errorf("%s: %w", path, ErrInUse)
	case errors.Is(err, fs.ErrNotExist):
		return nil // gone meanwhile
	case !errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("probe %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
