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

// Take is run by the new agent on a conn to the old one: it asks for a
// handover and receives the state and sockets, all before deadline. The
// caller then rebuilds its listeners from the Received sockets and calls
// Commit; if it gives up instead, it closes the Received and the conn, and
// the old agent keeps serving.
func Take(conn *net.UnixConn, deadline time.Time) (*Received, error) {
	if err := conn.SetDeadline(deadline); err != nil {
		return nil, fmt.Errorf("handover: set deadline: %w", err)
	}
	defer conn.SetDeadline(time.Time{})
	if err := writeFrame(conn, askMsg{Proto: proto, Version: Version}); err != nil {
		return nil, fmt.Errorf("handover: send request: %w", wrapTimeout(err))
	}
	r := &fdReader{conn: conn, oob: make([]byte, unix.CmsgSpace(253*4))}
	rec, err := take(r)
	if err != nil {
		r.closeAll()
		return nil, err
	}
	return rec, nil
}

func take(r *fdReader) (*Received, error) {
	var h header
	if err := readFrame(r, &h); err != nil {
		return nil, fmt.Errorf("handover: read header: %w", wrapTimeout(err))
	}
	if h.Proto != proto {
		return nil, fmt.Errorf("handover: predecessor does not speak %s", proto)
	}
	if h.Version != Version {
		return nil, fmt.Errorf("handover: %w: predecessor speaks version %d, this agent speaks version %d; stop the old agent before starting this one",
			ErrVersion, h.Version, Version)
	}
	if len(h.Kinds) != len(h.Names) {
		return nil, fmt.Errorf("handover: header has %d names but %d kinds", len(h.Names), len(h.Kinds))
	}
	for batches := (len(h.Names) + maxFDsPerMsg - 1) / maxFDsPerMsg; batches > 0; batches-- {
		var b [1]byte
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return nil, fmt.Errorf("handover: read sockets: %w", wrapTimeout(err))
		}
		if b[0] != batchByte {
			return nil, fmt.Errorf("handover: unexpected byte %q in socket stream", b[0])
		}
	}
	if len(r.fds) != len(h.Names) {
		return nil, fmt.Errorf("handover: got %d sockets for %d names", len(r.fds), len(h.Names))
	}
	rec := &Received{State: h.State, Files: make(map[string]*os.File, len(h.Names)), kinds: make(map[string]string, len(h.Names))}
	for i, name := range h.Names {
		if _, dup := rec.Files[name]; dup {
			return nil, fmt.Errorf("handover: socket name %q repeated", name)
		}
		rec.kinds[name] = h.Kinds[i]
		rec.Files[name] = nil
	}
	// Each fd shares its open file description, and so its O_NONBLOCK flag,
	// with the predecessor's socket. Handed to os.NewFile non-blocking, it
	// stays so: the Fd call inside net.FileListener then does not switch the
	// predecessor's socket to blocking mode (its Accept would block a thread
	// and its Close hang). A Go predecessor sends them non-blocking already.
	for i, name := range h.Names {
		if err := unix.SetNonblock(r.fds[i], true); err != nil {
			return nil, fmt.Errorf("handover: socket %q: set non-blocking: %w", name, err)
		}
	}
	for i, name := range h.Names {
		rec.Files[name] = os.NewFile(uintptr(r.fds[i]), "handover:"+name)
	}
	r.fds = nil
	return rec, nil
}

// fdReader reads a stream that may carry SCM_RIGHTS, keeping every fd that
// arrives; a plain read would make the kernel drop (close) them.
type fdReader struct {
	conn *net.UnixConn
	oob  []byte
	fds  []int
}

func (r *fdReader) Read(p []byte) (int, error) {
	n, oobn, flags, _, err := r.conn.ReadMsgUnix(p, r.oob)
	if oobn > 0 {
		if perr := r.collect(r.oob[:oobn]); perr != nil && err == nil {
			err = perr
		}
	}
	if err == nil && flags&unix.MSG_CTRUNC != 0 {
		err = errors.New("fds truncated (MSG_CTRUNC): too many in one message")
	}
	if err == nil && n == 0 && len(p) > 0 {
		err = io.EOF
	}
	return n, err
}

func (r *fdReader) collect(oob []byte) error {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return err
	}
	for i := range msgs {
		fds, err := unix.ParseUnixRights(&msgs[i])
		if err != nil {
			continue // not SCM_RIGHTS
		}
		r.fds = append(r.fds, fds...)
	}
	return nil
}

func (r *fdReader) closeAll() {
	for _, fd := range r.fds {
		unix.Close(fd)
	}
	r.fds = nil
}
