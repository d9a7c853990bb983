package testapp

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
)

// ServeGRPC is a plain gRPC server (h2c, no TLS) with the standard health
// service, which reports service as SERVING: unary Check and streaming
// Watch, the two shapes a proxy must carry.
func ServeGRPC(l net.Listener, service string) error {
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus(service, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	return s.Serve(l)
}

// GRPCClient calls the health service at addr (host:port, resolved by the
// system resolver): Check of service, Check of a service the server does
// not know (an error status in a trailers-only response), and the first
// message of a Watch stream, which arrives while the stream stays open.
// It prints one line per call.
func GRPCClient(addr, service string, out io.Writer) error {
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Check(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("check %s: %w", service, err)
	}
	fmt.Fprintf(out, "check %s=%s\n", service, r.Status)
	_, err = c.Check(ctx, &healthpb.HealthCheckRequest{Service: "no-such-service"})
	fmt.Fprintf(out, "check no-such-service=%s\n", status.Code(err))
	w, err := c.Watch(ctx, &healthpb.HealthCheckRequest{Service: service})
	if err != nil {
		return fmt.Errorf("watch %s: %w", service, err)
	}
	m, err := w.Recv()
	if err != nil {
		return fmt.Errorf("watch %s: %w", service, err)
	}
	fmt.Fprintf(out, "watch %s=%s\n", service, m.Status)
	return nil
}
