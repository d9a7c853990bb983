package handover

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"syscall"
)

// Version is the handover protocol version this agent speaks.
const Version = 1

// ErrVersion means the two agents speak different handover versions. The
// new agent cannot take over; stop the old one first (connections are then
// refused briefly).
var ErrVersion = errors.New("incompatible handover version")

const (
	proto        = "hms-handover"
	batchByte    = 'F'
	commitByte   = 'C'
	maxFDsPerMsg = 200      // below the kernel's SCM_MAX_FD (253)
	maxFrame     = 64 << 20 // a sane bound on the state blob
)

// Socket kinds, as sent in the header so the taker can give clear errors.
const (
	kindListener     = "listener"
	kindUnixListener = "unix-listener"
	kindPacket       = "packet"
	kindOther        = "other"
)

// Socket is one named socket to hand over: a *net.TCPListener,
// *net.UDPConn or *net.UnixListener (any syscall.Conn is carried).
type Socket struct {
	// Name is how the successor asks for the socket; unique per Offer.
	Name string
	// Conn is the socket. Offer borrows its fd and never closes it.
	Conn syscall.Conn
}

type askMsg struct {
	Proto   string `json:"proto"`
	Version int    `json:"version"`
}

type header struct {
	Proto   string   `json:"proto"`
	Version int      `json:"version"`
	Names   []string `json:"names"`
	Kinds   []string `json:"kinds"`
	State   []byte   `json:"state"` // base64 in JSON
}

func kindOf(c syscall.Conn) string {
	switch c.(type) {
	case *net.UnixListener:
		return kindUnixListener
	case net.Listener:
		return kindListener
	case net.PacketConn:
		return kindPacket
	}
	return kindOther
}

func writeFrame(w io.Writer, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if len(b) > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d", len(b), maxFrame)
	}
	buf := make([]byte, 4, 4+len(b))
	binary.BigEndian.PutUint32(buf, uint32(len(b)))
	_, err = w.Write(append(buf, b...))
	return err
}

// readFrame reads one frame with exact-size reads, so it never consumes
// bytes (or fds) that follow it.
func readFrame(r io.Reader, v any) error {
	var n [4]byte
	if _, err := io.ReadFull(r, n[:]); err != nil {
		return err
	}
	size := binary.BigEndian.Uint32(n[:])
	if size > maxFrame {
		return fmt.Errorf("frame of %d bytes exceeds %d: peer does not speak %s", size, maxFrame, proto)
	}
	b := make([]byte, size)
	if _, err := io.ReadFull(r, b); err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("peer does not speak %s: %w", proto, err)
	}
	return nil
}

// Received is what Take got: the predecessor's state and its sockets as
// files. The Listener, PacketConn and UnixListener helpers take ownership of
// a file (it leaves Files); Close releases whatever was not taken.
type Received struct {
	// State is the predecessor's opaque state blob.
	State []byte
	// Files holds the sockets not yet taken, by name.
	Files map[string]*os.File

	kinds map[string]string
}

func (r *Received) take(name string, want ...string) (*os.File, error) {
	f, ok := r.Files[name]
	if !ok {
		return nil, fmt.Errorf("handover: no socket %q from predecessor (or already taken)", name)
	}
	k := r.kinds[name]
	for _, w := range want {
		if k == w {
			delete(r.Files, name)
			return f, nil
		}
	}
	return nil, fmt.Errorf("handover: socket %q is a %s, want %v", name, k, want)
}

// Listener turns the named socket into a net.Listener (a *net.TCPListener or
// *net.UnixListener) and takes ownership of it.
func (r *Received) Listener(name string) (net.Listener, error) {
	f, err := r.take(name, kindListener, kindUnixListener)
	if err != nil {
		return nil, err
	}
	defer f.Close() // FileListener dups the fd
	l, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("handover: socket %q: %w", name, err)
	}
	return l, nil
}

// PacketConn turns the named socket into a net.PacketConn (a *net.UDPConn)
// and takes ownership of it.
func (r *Received) PacketConn(name string) (net.PacketConn, error) {
	f, err := r.take(name, kindPacket)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	c, err := net.FilePacketConn(f)
	if err != nil {
		return nil, fmt.Errorf("handover: socket %q: %w", name, err)
	}
	return c, nil
}

// UnixListener turns the named socket into a *net.UnixListener and takes
// ownership of it. Its Close does not remove the socket file, so an aborted
// takeover leaves the predecessor reachable; once Commit succeeded, call
// SetUnlinkOnClose(true) if this agent should remove the file on exit.
func (r *Received) UnixListener(name string) (*net.UnixListener, error) {
	l, err := r.Listener(name)
	if err != nil {
		return nil, err
	}
	ul, ok := l.(*net.UnixListener)
	if !ok {
		l.Close()
		return nil, fmt.Errorf("handover: socket %q is not a unix listener", name)
	}
	return ul, nil
}

// Close closes every socket not yet taken. Closing them does not disturb
// the predecessor, which holds its own descriptors.
func (r *Received) Close() error {
	var errs []error
	for name, f := range r.Files {
		errs = append(errs, f.Close())
		delete(r.Files, name)
	}
	return errors.Join(errs...)
}
