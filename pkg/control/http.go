package control

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// readyTimeout bounds /readyz's etcd probe.
const readyTimeout = time.Second

// listenHTTP listens for /healthz and /readyz, unless HTTPAddr is "off".
func (s *Server) listenHTTP(cli *clientv3.Client, st *store) (*http.Server, net.Listener, error) {
	if s.cfg.HTTPAddr == "off" {
		return nil, nil, nil
	}
	lis, err := net.Listen("tcp", s.cfg.HTTPAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("listen for http on %s: %w", s.cfg.HTTPAddr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", s.metrics.handler())
	s.mountDashboard(mux, st)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-s.ready:
		default:
			http.Error(w, "not serving yet", http.StatusServiceUnavailable)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
		defer cancel()
		// A linearizable read: it answers only with an etcd quorum.
		if _, err := cli.Get(ctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly()); err != nil {
			http.Error(w, "etcd unreachable: "+oneLine(err.Error()), http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	return &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}, lis, nil
}
