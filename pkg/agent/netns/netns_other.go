//go:build !linux

package netns

import (
	"context"
	"errors"
	"net"
	"syscall"
	"time"
)

// errUnsupported is returned everywhere but Linux, which has network
// namespaces.
var errUnsupported = errors.ErrUnsupported

// Do runs fn inside a netns; Linux only.
func Do(nsPath string, fn func() error) error { return errUnsupported }

// Cookie returns the netns cookie of a netns; Linux only.
func Cookie(nsPath string) (uint64, error) { return 0, errUnsupported }

// SocketCookie returns the netns cookie of a socket; Linux only.
func SocketCookie(c syscall.Conn) (uint64, error) { return 0, errUnsupported }

// Listen creates a TCP listener inside a netns; Linux only.
func Listen(nsPath, addr string) (*net.TCPListener, error) { return nil, errUnsupported }

// ListenUDP creates a UDP socket inside a netns; Linux only.
func ListenUDP(nsPath, addr string) (*net.UDPConn, error) { return nil, errUnsupported }

// Dialer dials from inside a netns; Linux only.
type Dialer struct {
	// NetnsPath is the netns to dial from.
	NetnsPath string
	// Mark is set as SO_MARK before connect.
	Mark uint32
	// Timeout bounds a whole dial.
	Timeout time.Duration
}

// DialContext dials from inside the netns; Linux only.
func (d *Dialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	return nil, errUnsupported
}

// Close releases the Dialer's resources.
func (d *Dialer) Close() error { return nil }
