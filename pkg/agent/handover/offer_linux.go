package handover

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// Offer is run by the old agent on an accepted (or hijacked) unix conn: it
// waits for the new agent's request, sends state and socks, and waits for
// the commit until deadline. It returns nil only when the successor
// committed; then the caller stops accepting and drains. On any error the
// caller's sockets are untouched and it keeps serving as if nothing happened.
//
// On commit, every *net.UnixListener in socks is set not to remove its
// socket file on Close: the file now belongs to the successor.
func Offer(conn *net.UnixConn, state []byte, socks []Socket, deadline time.Time) error {
	if err := conn.SetDeadline(deadline); err != nil {
		return fmt.Errorf("handover: set deadline: %w", err)
	}
	defer conn.SetDeadline(time.Time{})
	h := header{Proto: proto, Version: Version, State: state}
	seen := make(map[string]bool, len(socks))
	for _, s := range socks {
		if s.Name == "" || seen[s.Name] {
			return fmt.Errorf("handover: socket name %q is empty or repeated", s.Name)
		}
		seen[s.Name] = true
		h.Names = append(h.Names, s.Name)
		h.Kinds = append(h.Kinds, kindOf(s.Conn))
	}

	var ask askMsg
	if err := readFrame(conn, &ask); err != nil {
		return fmt.Errorf("handover: read request: %w", wrapTimeout(err))
	}
	if ask.Proto != proto {
		return fmt.Errorf("handover: peer does not speak %s", proto)
	}
	// Answer in our own version even if the successor's differs: it decides
	// whether it can take over from us.
	if err := writeFrame(conn, h); err != nil {
		return fmt.Errorf("handover: send header: %w", wrapTimeout(err))
	}
	if err := withRawFDs(socks, func(fds []int) error { return sendFDs(conn, fds) }); err != nil {
		return fmt.Errorf("handover: send sockets: %w", wrapTimeout(err))
	}

	var b [1]byte
	if _, err := io.ReadFull(conn, b[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return errors.New("handover: successor hung up without committing")
		}
		return fmt.Errorf("handover: waiting for commit: %w", wrapTimeout(err))
	}
	if b[0] != commitByte {
		return fmt.Errorf("handover: successor sent %q, not a commit", b[0])
	}
	for _, s := range socks {
		if ul, ok := s.Conn.(*net.UnixListener); ok {
			ul.SetUnlinkOnClose(false)
		}
	}
	return nil
}

func wrapTimeout(err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("deadline passed: %w", err)
	}
	return err
}

// withRawFDs calls fn with the raw descriptors of socks, each obtained
// inside SyscallConn().Control and valid because fn runs inside all the
// nested Control calls. Unlike (*os.File).Fd, this leaves every socket in
// non-blocking mode, so the old agent's Accept and Close keep working.
func withRawFDs(socks []Socket, fn func(fds []int) error) error {
	fds := make([]int, len(socks))
	var nest func(i int) error
	nest = func(i int) error {
		if i == len(socks) {
			return fn(fds)
		}
		rc, err := socks[i].Conn.SyscallConn()
		if err != nil {
			return fmt.Errorf("socket %q: %w", socks[i].Name, err)
		}
		var inner error
		if err := rc.Control(func(fd uintptr) {
			fds[i] = int(fd)
			inner = nest(i + 1)
		}); err != nil {
			return fmt.Errorf("socket %q: %w", socks[i].Name, err)
		}
		return inner
	}
	return nest(0)
}

// sendFDs sends fds in batches of at most maxFDsPerMsg, one marker byte per
// message (SCM_RIGHTS needs at least one byte of data).
func sendFDs(conn *net.UnixConn, fds []int) error {
	for len(fds) > 0 {
		n := min(len(fds), maxFDsPerMsg)
		oob := unix.UnixRights(fds[:n]...)
		wn, woobn, err := conn.WriteMsgUnix([]byte{batchByte}, oob, nil)
		if err != nil {
			return err
		}
		if wn != 1 || woobn != len(oob) {
			return fmt.Errorf("short write of fd batch (%d, %d)", wn, woobn)
		}
		fds = fds[n:]
	}
	return nil
}

// Commit tells the old agent, on the conn Take used, that this agent has
// rebuilt everything and serves now; the old one then stops accepting.
func Commit(conn *net.UnixConn) error {
	if _, err := conn.Write([]byte{commitByte}); err != nil {
		return fmt.Errorf("handover: commit: %w", err)
	}
	return nil
}
