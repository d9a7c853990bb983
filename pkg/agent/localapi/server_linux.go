package localapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Server serves Handler on a unix listener. Before any byte of a request is
// read it checks the caller's SO_PEERCRED: only uid 0 and the agent's own
// euid are served; anyone else has the connection closed and is logged. The
// zero value serves nothing useful but is safe: a nil Handler is
// http.NotFoundHandler, a nil Log discards.
//
// Connections reach handlers unwrapped (*net.UnixConn), so a handler can
// hijack one and hand it to package handover.
type Server struct {
	// Handler serves the API. Nil means every path is 404.
	Handler http.Handler
	// Log receives refused callers and HTTP server errors. Nil discards.
	Log *slog.Logger

	mu  sync.Mutex // guards srv
	srv *http.Server
}

type peerKey struct{}

// PeerFromContext returns the credentials of the caller whose request
// carries ctx, for handlers that log or authorize by caller.
func PeerFromContext(ctx context.Context) (unix.Ucred, bool) {
	c, ok := ctx.Value(peerKey{}).(unix.Ucred)
	return c, ok
}

func (s *Server) log() *slog.Logger {
	if s.Log == nil {
		return slog.New(slog.DiscardHandler)
	}
	return s.Log
}

func (s *Server) server() *http.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv == nil {
		h := s.Handler
		if h == nil {
			h = http.NotFoundHandler()
		}
		s.srv = &http.Server{
			Handler:           h,
			ReadHeaderTimeout: 10 * time.Second,
			ErrorLog:          slog.NewLogLogger(s.log().Handler(), slog.LevelWarn),
			ConnContext: func(ctx context.Context, c net.Conn) context.Context {
				if uc, ok := c.(*net.UnixConn); ok {
					if cred, err := PeerCred(uc); err == nil {
						ctx = context.WithValue(ctx, peerKey{}, cred)
					}
				}
				return ctx
			},
		}
	}
	return s.srv
}

// Serve accepts connections on l until Shutdown, then returns nil. Any
// other return is the listener's error.
func (s *Server) Serve(l *net.UnixListener) error {
	err := s.server().Serve(&peerListener{UnixListener: l, euid: uint32(os.Geteuid()), log: s.log()})
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting, closes the listener and waits for in-flight
// requests until ctx is done (see http.Server.Shutdown). Hijacked
// connections are the hijacker's to close.
func (s *Server) Shutdown(ctx context.Context) error {
	return s.server().Shutdown(ctx)
}

// PeerCred returns the SO_PEERCRED of c: the pid, uid and gid of the process
// that connected (as of connect(2)).
func PeerCred(c *net.UnixConn) (unix.Ucred, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return unix.Ucred{}, err
	}
	var cred *unix.Ucred
	var serr error
	if err := rc.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return unix.Ucred{}, err
	}
	if serr != nil {
		return unix.Ucred{}, fmt.Errorf("getsockopt SO_PEERCRED: %w", serr)
	}
	return *cred, nil
}

// peerListener refuses callers in Accept, so http.Server never reads a byte
// from them. It hands out the *net.UnixConn itself (no wrapper) so hijacked
// connections can still carry SCM_RIGHTS.
type peerListener struct {
	*net.UnixListener
	euid uint32
	log  *slog.Logger
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		cred, err := PeerCred(c)
		if err != nil {
			l.log.Warn("local api: cannot read caller credentials, closing connection", "err", err)
			c.Close()
			continue
		}
		if cred.Uid != 0 && cred.Uid != l.euid {
			l.log.Warn("local api: refused caller: uid is neither root nor the agent's",
				"uid", cred.Uid, "pid", cred.Pid, "agent_euid", l.euid)
			c.Close()
			continue
		}
		return c, nil
	}
}
