package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/hms-node/hms-node/pkg/api"
)

// headerTapAgents is the control plane's header saying how many agents a
// Tap asked and how many answered in time, as "answered/asked".
const headerTapAgents = "hms-tap-agents"

func tapCmd() *cobra.Command {
	var ns, output string
	var last uint32
	var follow bool
	cmd := &cobra.Command{
		Use:   "tap SVC [--last N] [--follow] [-o json|text]",
		Short: "Show the recent calls of a service (as caller or callee), and follow new ones",
		Long: "tap asks every agent connected to the control plane for the calls of SVC, as\n" +
			"caller or callee, and prints the last N (default 10) oldest first; --follow then\n" +
			"prints new calls until Ctrl-C (without --last, only new ones). A call between two\n" +
			"mesh workloads is shown once, as its caller's agent saw it.\n\n" +
			"Columns: TIME (local, HH:MM:SS.mmm), REP (src: reported by the caller's agent,\n" +
			"dst: by the callee's), CALLER and CALLEE (without the namespace when it is SVC's),\n" +
			"METHOD, PATH (cut to fit), CODE (HTTP status), LATENCY, RETR (retries), FLAGS\n" +
			"(Istio response flags: - UF UH UO UT RL URX DC).\n\n" +
			"-o json prints JSON Lines: one object per call, keys in snake_case: time (RFC 3339,\n" +
			"UTC), time_unix_nano, reporter, node, source_workload, source_principal,\n" +
			"destination_service, destination_principal, endpoint, method, path, protocol,\n" +
			"status, latency_us, retries, flags, trace_id, connection_security_policy,\n" +
			"request_bytes, response_bytes, grpc_status (gRPC calls: the grpc-status code they\n" +
			"ended with; protocol is then \"gRPC\").",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if !cmd.Flags().Changed("last") && follow {
				last = 0
			}
			return runTap(cmd, &api.TapRequest{Namespace: ns, Service: args[0], Last: last, Follow: follow}, output, "tap")
		},
	}
	f := cmd.Flags()
	f.Uint32Var(&last, "last", 10, "how many recent calls to show (default 0 with --follow)")
	f.BoolVarP(&follow, "follow", "f", false, "then show new calls until Ctrl-C")
	f.StringVarP(&output, "output", "o", "", "output format: text or json (JSON Lines)")
	f.StringVarP(&ns, "namespace", "n", "default", "namespace of the service")
	controlFlags(cmd)
	return cmd
}

func tailCmd() *cobra.Command {
	var ns, svc, output string
	cmd := &cobra.Command{
		Use:   "tail --service SVC [-o json]",
		Short: "Follow the live access log of a service (as caller or callee) until Ctrl-C",
		Long: "tail prints one access-log line per new call of SVC, as caller or callee, seen by\n" +
			"the agents connected to the control plane, until Ctrl-C:\n\n" +
			"  [2026-12-02T18:40:01.123Z] \"GET /sms HTTP/1.1\" 200 - reporter=source node=n1\n" +
			"    src=default/client dst=default/notify-svc endpoint=10.0.2.2:7000\n" +
			"    latency=1.2ms retries=0 mtls=mutual_tls bytes=0/18 trace=4bf92f35...\n\n" +
			"(one line): UTC time the request arrived, request line, status, response flags,\n" +
			"then key=value fields, \"-\" when empty. -o json prints the JSON Lines of tap -o json.",
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runTap(cmd, &api.TapRequest{Namespace: ns, Service: svc, Follow: true}, output, "tail")
		},
	}
	f := cmd.Flags()
	f.StringVar(&svc, "service", "", "the service whose calls to follow")
	f.StringVarP(&output, "output", "o", "", "output format: text or json (JSON Lines)")
	f.StringVarP(&ns, "namespace", "n", "default", "namespace of the service")
	cmd.MarkFlagRequired("service")
	controlFlags(cmd)
	return cmd
}

// runTap runs one Tap and prints its calls. A tap without follow is
// bounded by rpcTimeout and ends by itself; a following one runs until
// SIGINT or SIGTERM (a normal end) or until the control plane goes (an
// error).
func runTap(cmd *cobra.Command, req *api.TapRequest, output, verb string) error {
	var print func(*api.Call) error
	switch output {
	case "json":
		enc := json.NewEncoder(os.Stdout)
		print = func(c *api.Call) error { return enc.Encode(toTapped(c)) }
	case "", "text":
		if verb == "tail" {
			print = func(c *api.Call) error { _, err := fmt.Println(accessLine(c)); return err }
		} else {
			header := false
			print = func(c *api.Call) error {
				if !header {
					header = true
					fmt.Println(tapHeader)
				}
				_, err := fmt.Println(tapRow(req.Namespace, c))
				return err
			}
		}
	default:
		return fmt.Errorf("-o %s: want json or text", output)
	}
	if req.Namespace == "" {
		req.Namespace = "default"
	}
	name := req.Namespace + "/" + req.Service
	what := verb + " " + name

	var ctx context.Context
	var c controlClients
	if req.Follow {
		conn, to, err := dialControl(cmd)
		if err != nil {
			return err
		}
		defer conn.Close()
		var stop context.CancelFunc
		ctx, stop = signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
		defer stop()
		c = controlClients{registry: api.NewRegistryClient(conn), to: to}
	} else {
		var done func()
		var err error
		ctx, c, done, err = dialCall(cmd)
		if err != nil {
			return err
		}
		defer done()
	}
	reg := c.registry

	stream, err := reg.Tap(ctx, req)
	if err != nil {
		return rpcError(c.to, what, err)
	}
	answered, asked, known := tapAgents(stream)
	if known && answered < asked {
		fmt.Fprintf(os.Stderr, "%s: %d of the %d agents connected did not answer in time; their recent calls are missing\n",
			verb, asked-answered, asked)
	}
	if req.Follow && known {
		fmt.Fprintf(os.Stderr, "%s: following the calls of %s seen by the %d agents connected to the control plane; Ctrl-C stops\n",
			verb, name, asked)
	}
	n := 0
	for {
		call, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if req.Follow && ctx.Err() != nil {
				return nil // Ctrl-C: the normal end of following
			}
			if req.Follow && status.Code(err) == codes.Unavailable {
				return fmt.Errorf("%s: the control plane went away (%s: %s); calls since are not shown: run it again once it is back",
					what, c.to.addr, status.Convert(err).Message())
			}
			return rpcError(c.to, what, err)
		}
		n++
		if err := print(call); err != nil {
			return err // stdout closed (| head): nothing more to say
		}
	}
	if n == 0 && req.Last > 0 {
		switch {
		case !known:
			fmt.Fprintf(os.Stderr, "no recent calls of %s\n", name)
		case asked == 0:
			fmt.Fprintf(os.Stderr, "no recent calls of %s: no agents are connected to this control plane\n", name)
		default:
			fmt.Fprintf(os.Stderr, "no calls of %s recorded by the %d agents connected\n", name, answered)
		}
	}
	return nil
}

// tapAgents reads how many agents a Tap asked and how many answered, from
// the header the control plane sends once the recent calls are gathered.
func tapAgents(stream grpc.ServerStreamingClient[api.Call]) (answered, asked int, ok bool) {
	md, err := stream.Header()
	if err != nil {
		return 0, 0, false // Recv reports the error
	}
	v := md.Get(headerTapAgents)
	if len(v) != 1 {
		return 0, 0, false
	}
	if _, err := fmt.Sscanf(v[0], "%d/%d", &answered, &asked); err != nil {
		return 0, 0, false
	}
	return answered, asked, true
}

// tapped is a call in tap and tail -o json: every field, always present.
type tapped struct {
	Time                     string `json:"time"`
	TimeUnixNano             int64  `json:"time_unix_nano"`
	Reporter                 string `json:"reporter"`
	Node                     string `json:"node"`
	SourceWorkload           string `json:"source_workload"`
	SourcePrincipal          string `json:"source_principal"`
	DestinationService       string `json:"destination_service"`
	DestinationPrincipal     string `json:"destination_principal"`
	Endpoint                 string `json:"endpoint"`
	Method                   string `json:"method"`
	Path                     string `json:"path"`
	Protocol                 string `json:"protocol"`
	Status                   uint32 `json:"status"`
	LatencyUs                int64  `json:"latency_us"`
	Retries                  uint32 `json:"retries"`
	Flags                    string `json:"flags"`
	TraceID                  string `json:"trace_id"`
	ConnectionSecurityPolicy string `json:"connection_security_policy"`
	RequestBytes             int64  `json:"request_bytes"`
	ResponseBytes            int64  `json:"response_bytes"`
	GRPCStatus               string `json:"grpc_status"` // "" unless protocol is gRPC
}

func toTapped(c *api.Call) tapped {
	return tapped{
		Time: callTime(c).UTC().Format(time.RFC3339Nano), TimeUnixNano: c.GetTimeUnixNano(),
		Reporter: c.GetReporter(), Node: c.GetNode(),
		SourceWorkload: c.GetSourceWorkload(), SourcePrincipal: c.GetSourcePrincipal(),
		DestinationService: c.GetDestinationService(), DestinationPrincipal: c.GetDestinationPrincipal(),
		Endpoint: c.GetEndpoint(), Method: c.GetMethod(), Path: c.GetPath(), Protocol: c.GetProtocol(),
		Status: c.GetStatus(), LatencyUs: c.GetLatencyUs(), Retries: c.GetRetries(), Flags: c.GetFlags(),
		TraceID: c.GetTraceId(), ConnectionSecurityPolicy: c.GetConnectionSecurityPolicy(),
		RequestBytes: c.GetRequestBytes(), ResponseBytes: c.GetResponseBytes(), GRPCStatus: c.GetGrpcStatus(),
	}
}

func callTime(c *api.Call) time.Time { return time.Unix(0, c.GetTimeUnixNano()) }

// The tap table keeps to 80 columns: fixed widths, so followed calls line
// up with the header without buffering; longer values are cut with "…".
const (
	tapRowFormat = "%-12s %-3s %-10s %-10s %-6s %-10s %4s %7s %4s %s"
	wName        = 10 // CALLER, CALLEE
	wMethod      = 6
	wPath        = 10
	wFlags       = 5
)

var tapHeader = fmt.Sprintf(tapRowFormat, "TIME", "REP", "CALLER", "CALLEE", "METHOD", "PATH", "CODE", "LATENCY", "RETR", "FLAGS")

// tapRow is one call in the table; names in namespace ns are shown bare.
func tapRow(ns string, c *api.Call) string {
	rep := c.GetReporter()
	switch rep {
	case "source":
		rep = "src"
	case "destination":
		rep = "dst"
	}
	caller := firstOf(c.GetSourceWorkload(), c.GetSourcePrincipal())
	return fmt.Sprintf(tapRowFormat, callTime(c).Local().Format("15:04:05.000"), cut(rep, 3),
		cut(relName(ns, caller), wName), cut(relName(ns, c.GetDestinationService()), wName),
		cut(c.GetMethod(), wMethod), cut(escapePath(c.GetPath()), wPath), fmt.Sprint(c.GetStatus()),
		latency(c.GetLatencyUs()), fmt.Sprint(c.GetRetries()), cut(orDash(c.GetFlags()), wFlags))
}

// relName drops the namespace ns from "ns/svc"; other names stay whole.
func relName(ns, name string) string {
	if rest, ok := strings.CutPrefix(name, ns+"/"); ok {
		return rest
	}
	return orDash(name)
}

// cut shortens s to w columns (runes; fmt pads by runes too), marking
// the cut with "…".
func cut(s string, w int) string {
	if utf8.RuneCountInString(s) <= w {
		return s
	}
	return string([]rune(s)[:w-1]) + "…"
}

// latency prints microseconds as 850µs, 12.3ms or 1.50s (at most 7
// columns below 10000 s).
func latency(us int64) string {
	switch {
	case us < 1000:
		return fmt.Sprintf("%dµs", us)
	case us < 1_000_000:
		return fmt.Sprintf("%.1fms", float64(us)/1e3)
	default:
		return fmt.Sprintf("%.2fs", float64(us)/1e6)
	}
}

// escapePath prints a path as on the request line: a space or a quote in
// it cannot break the line's fields.
func escapePath(p string) string {
	if p == "" {
		return "-"
	}
	return (&url.URL{Path: p}).EscapedPath()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// accessLine is one call in tail's access log (documented in its help
// and in docs/operations.md).
func accessLine(c *api.Call) string {
	return fmt.Sprintf(`[%s] "%s %s %s" %d %s reporter=%s node=%s src=%s dst=%s endpoint=%s latency=%s retries=%d mtls=%s bytes=%d/%d trace=%s`,
		callTime(c).UTC().Format("2006-01-02T15:04:05.000Z"), orDash(c.GetMethod()), escapePath(c.GetPath()), orDash(c.GetProtocol()),
		c.GetStatus(), orDash(c.GetFlags()), orDash(c.GetReporter()), orDash(c.GetNode()),
		orDash(firstOf(c.GetSourceWorkload(), c.GetSourcePrincipal())), orDash(c.GetDestinationService()),
		orDash(c.GetEndpoint()), latency(c.GetLatencyUs()), c.GetRetries(),
		orDash(c.GetConnectionSecurityPolicy()), c.GetRequestBytes(), c.GetResponseBytes(), orDash(c.GetTraceId()))
}

func firstOf(a, b string) string {
	if a != "" {
		return a
	}
	return b
}
