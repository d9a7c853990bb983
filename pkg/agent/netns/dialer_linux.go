package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Dialer dials TCP and UDP from inside a pod's netns. The zero value dials
// from the agent's own netns without a mark. A Dialer opens the netns file
// once, on first use, and keeps it open until Close; it is safe for
// concurrent use and must not be copied after first use.
//
// Each dial creates its socket on a locked OS thread switched into the netns
// (the netns is decided at socket creation) and sets SO_MARK before
// connect, so the eBPF connect hooks, which skip marked sockets, never
// redirect the agent to itself. Go's dialer creates and connects the socket
// synchronously on the calling goroutine for a single address, which is why
// one address at a time is dialled.
type Dialer struct {
	// NetnsPath is the netns to dial from, e.g. /var/run/netns/NAME or
	// /proc/PID/ns/net. Empty means the agent's own netns.
	NetnsPath string
	// Mark is set as SO_MARK on every socket before connect. Zero sets no
	// mark.
	Mark uint32
	// Timeout bounds a whole dial, as in net.Dialer; zero means no limit
	// beyond the context and the OS.
	Timeout time.Duration

	mu     sync.Mutex // guards the fields below
	fd     int        // open netns fd; valid when opened && !closed
	opened bool
	closed bool
}

// errClosed reports a dial on a closed Dialer.
var errClosed = errors.New("netns dialer closed")

// nsFd returns the cached netns fd, opening it on first use.
func (d *Dialer) nsFd() (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return -1, errClosed
	}
	if !d.opened {
		fd, err := openNetns(d.NetnsPath)
		if err != nil {
			return -1, err
		}
		d.fd, d.opened = fd, true
	}
	return d.fd, nil
}

// Close releases the netns fd (which otherwise keeps a deleted pod's netns
// alive). Later dials fail; connections already dialled are not affected.
// Close is idempotent. It must not race with a dial in progress.
func (d *Dialer) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if d.opened {
		return unix.Close(d.fd)
	}
	return nil
}

// DialContext connects to addr on network ("tcp", "tcp4", "tcp6", "udp",
// "udp4", "udp6") from inside the netns. A host name in addr is resolved in
// the agent's own netns (the proxy dials IP literals), and its addresses
// are tried in order.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6", "udp", "udp4", "udp6":
	default:
		return nil, &net.OpError{Op: "dial", Net: network, Err: net.UnknownNetworkError(network)}
	}
	if d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.Timeout)
		defer cancel()
	}
	targets, err := d.resolve(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, t := range targets {
		c, err := d.dialOne(ctx, network, t)
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, errors.Join(errs...)
}

// resolve turns addr into IP literals, so that the dial of each one is a
// single synchronous attempt (several addresses would make net.Dialer race
// them on other goroutines, hence other threads, hence the host netns).
func (d *Dialer) resolve(ctx context.Context, network, addr string) ([]string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return []string{addr}, nil
	}
	family := "ip"
	switch network[len(network)-1] {
	case '4':
		family = "ip4"
	case '6':
		family = "ip6"
	}
	ips, err := net.DefaultResolver.LookupNetIP(ctx, family, host)
	if err != nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: err}
	}
	out := make([]string, 0, len(ips))
	for _, ip := range ips {
		out = append(out, net.JoinHostPort(ip.Unmap().String(), port))
	}
	return out, nil
}

// dialOne dials one IP literal with the socket created inside the netns.
func (d *Dialer) dialOne(ctx context.Context, network, addr string) (net.Conn, error) {
	nd := &net.Dialer{Control: d.control}
	nd.SetMultipathTCP(false)
	if d.NetnsPath == "" {
		return nd.DialContext(ctx, network, addr)
	}
	fd, err := d.nsFd()
	if err != nil {
		return nil, err
	}
	var c net.Conn
	err = run(fd, hostNetns, func() error {
		c, err = nd.DialContext(ctx, network, addr)
		return err
	})
	if err != nil {
		if c != nil {
			c.Close()
		}
		return nil, fmt.Errorf("dial %s %s from %s: %w", network, addr, d.NetnsPath, err)
	}
	return c, nil
}

// control sets SO_MARK between socket creation and connect.
func (d *Dialer) control(_, _ string, rc syscall.RawConn) error {
	if d.Mark == 0 {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(d.Mark))
	}); err != nil {
		return err
	}
	if serr != nil {
		return fmt.Errorf("set SO_MARK: %w", serr)
	}
	return nil
}
