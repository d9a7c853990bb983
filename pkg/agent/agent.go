package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"k8s.io/client-go/kubernetes"

	"github.com/hms-node/hms-node/pkg/agent/dns"
	"github.com/hms-node/hms-node/pkg/agent/kube"
	"github.com/hms-node/hms-node/pkg/agent/l7"
	"github.com/hms-node/hms-node/pkg/agent/metrics"
	"github.com/hms-node/hms-node/pkg/agent/registry"
	"github.com/hms-node/hms-node/pkg/agent/stats"
	"github.com/hms-node/hms-node/pkg/agent/tap"
	"github.com/hms-node/hms-node/pkg/api"
	"github.com/hms-node/hms-node/pkg/datapath"
)

// Datapath is what the agent needs of the eBPF datapath; *datapath.Datapath
// implements it, and agent tests without root can fake it.
type Datapath interface {
	EnrollPod(p datapath.Pod) error
	UnenrollPod(p datapath.Pod) error
	SetInboundListener(cookie uint64, l syscall.Conn) error
	OrigDst(cookie uint64, client netip.AddrPort) (netip.AddrPort, error)
	Counters() (map[string]uint64, error)
	Attachments() []datapath.Attachment
	PinPath() string
	Accel() bool
	Shortcut(clientNetns uint64, accepted net.Conn, serverNetns uint64, dialled net.Conn) *datapath.Shortcut
	Mark() uint32
	SetVIP(vp netip.AddrPort, id uint32) error
	DeleteVIP(vp netip.AddrPort) error
	VIPs() (map[netip.AddrPort]uint32, error)
	EnrollCgroup(dir string, outbound, dns uint16) (uint64, error)
	UnenrollCgroup(id uint64) error
	CgroupRoot() string
	Close() error
}

// Config of an agent. The zero value of each field documents its default.
type Config struct {
	// Node names this node; default the host name.
	Node string
	// StateDir holds the persisted enrollments; default /var/lib/hms.
	StateDir string
	// Socket is the local API's unix socket; default /var/run/hms/agent.sock.
	// A successor takes over through Socket + ".handover".
	Socket string
	// MetricsAddr serves /healthz, /readyz and /metrics; default
	// 127.0.0.1:15020; "off" disables it.
	MetricsAddr string
	// VIPRange is blackholed inside every pod so a connect that escapes
	// the redirect never leaves the pod; default 240.240.0.0/16.
	VIPRange netip.Prefix
	// DrainTimeout bounds how long a replaced agent waits for its
	// connections to finish; default 30s.
	DrainTimeout time.Duration
	// DialTimeout bounds upstream connects; default 5s.
	DialTimeout time.Duration
	// Control is the control plane's address (host:port); empty runs the
	// agent standalone.
	Control string
	// TokenFile holds a bootstrap token (`hms-node token create`) for the
	// first start; later starts use the identity kept in StateDir.
	TokenFile string
	// DNSUpstreams answer every name outside the mesh ("ip:port");
	// default the node's resolv.conf servers.
	DNSUpstreams []string
	// ProbeInterval is the health-check interval of services that do not
	// set one; default 10s.
	ProbeInterval time.Duration
	// ExternalCA is a PEM bundle that TLS to external services is
	// verified against; default the system roots.
	ExternalCA string
	// HostIP is the address dev-mode workloads (host processes) are
	// registered at; default 127.0.0.1 (reachable from this node only).
	HostIP netip.Addr
	// Version is reported by status.
	Version string
	// Kube, when set, makes pod and namespace labels (hms.dev/mesh,
	// hms.dev/service) decide which pods of Node are in the mesh, read
	// through informers restricted to Node; nil: the CNI plugin's
	// arguments decide (cni_linux.go).
	Kube kubernetes.Interface
	// NetnsDir holds the runtime's pod namespaces, searched for pods that
	// started before the agent; default /var/run/netns.
	NetnsDir string
	// Log receives the agent's events; default slog.Default().
	Log *slog.Logger
}

func (c *Config) setDefaults() {
	if c.StateDir == "" {
		c.StateDir = "/var/lib/hms"
	}
	if c.Socket == "" {
		c.Socket = "/var/run/hms/agent.sock"
	}
	if c.MetricsAddr == "" {
		c.MetricsAddr = "127.0.0.1:15020"
	}
	if !c.VIPRange.IsValid() {
		c.VIPRange = netip.MustParsePrefix("240.240.0.0/16")
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if !c.HostIP.IsValid() {
		c.HostIP = hostIPDefault
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = 10 * time.Second
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// Agent is one node's agent.
type Agent struct {
	cfg     Config
	dp      Datapath
	log     *slog.Logger
	started time.Time

	conns sync.WaitGroup // proxied connections, for draining

	mu       sync.Mutex      // guards the fields below
	pods     map[string]*pod // by netns path
	degraded map[string]degradedPod
	byAddr   map[netip.AddrPort]*pod // pod IP:service port → pod, for same-node calls
	closed   bool
	// handedOver: a successor owns our sockets now; never unlink them, and
	// refuse changes (the successor serves the API).
	handedOver bool
	cancel     context.CancelFunc // ends what Run started
	handover   chan struct{}      // closed once a successor has committed

	api      *apiServer
	takeover net.Listener // Socket + ".handover"

	table    *registry.Table
	client   *registry.Client // nil when standalone
	ident    *nodeIdentity    // nil when standalone: no mTLS
	idClient api.IdentityClient
	control  *grpc.ClientConn

	accepted         atomic.Uint64 // HBONE tunnels accepted (caller verified and allowed)
	denied           atomic.Uint64 // HBONE tunnels refused by policy or identity
	plaintextRefused atomic.Uint64 // plaintext refused by mtls: required
	dns              *dns.Server
	externalCAs      *x509.CertPool

	tap   *tap.Ring         // recent calls per local workload, for tap and tail
	stats *stats.Aggregator // calls per edge, sent to the control plane every statsWindow
	// circuitStatus, when set, reports the circuits for the stats; nil = none.
	circuitStatus func() []*api.CircuitStatus
	taps          tapSessions // the tap requests this agent is answering

	membership atomic.Pointer[kube.Reconciler] // set once Run has started it (cni_linux.go)

	vipMu sync.Mutex                // guards vips
	vips  map[netip.AddrPort]uint32 // what hms_vips holds

	httpOut *l7.Client // the calling side of HTTP services
	httpIn  *l7.Server // the called side

	metrics *metrics.Metrics // served on MetricsAddr's /metrics

	firstSync sync.Once // logs the first registry snapshot, start-up's last step
}

// New prepares an agent over an opened datapath; it starts nothing.
func New(cfg Config, dp Datapath) (*Agent, error) {
	cfg.setDefaults()
	if cfg.Node == "" {
		return nil, errors.New("agent: node name is required")
	}
	cas, err := loadCAs(cfg.ExternalCA)
	if err != nil {
		return nil, err
	}
	table := registry.NewTable()
	a := &Agent{
		cfg: cfg, dp: dp, log: cfg.Log.With("node", cfg.Node), table: table, externalCAs: cas,
		dns:  &dns.Server{Resolver: table, Upstreams: cfg.DNSUpstreams, Log: cfg.Log},
		pods: map[string]*pod{}, degraded: map[string]degradedPod{},
		byAddr: map[netip.AddrPort]*pod{}, handover: make(chan struct{}),
		tap: tap.New(tapPerWorkload), stats: stats.New(),
	}
	a.metrics = a.newMetrics()
	a.initL7()
	return a, nil
}

// Run serves until ctx ends or a successor takes over, then stops
// accepting and drains the connections it carries.
func (a *Agent) Run(ctx context.Context) error {
	a.started = time.Now()
	ctx, a.cancel = context.WithCancel(ctx)
	if err := a.connectControl(ctx); err != nil {
		return err
	}
	inherited, err := a.takeOverPredecessor()
	if err != nil {
		return err
	}
	if inherited == nil {
		if err := a.restore(); err != nil {
			return err
		}
	}
	if err := a.startServers(inherited); err != nil {
		a.shutdown()
		return err
	}
	if inherited != nil {
		inherited.commit()
	}
	if err := a.startRegistry(ctx); err != nil {
		a.shutdown()
		return err
	}
	if err := a.startCNI(ctx); err != nil {
		a.shutdown()
		return err
	}
	a.log.Info("agent running", "pods", len(a.pods), "socket", a.cfg.Socket, "accel", a.dp.Accel())
	select {
	case <-ctx.Done():
		a.log.Info("agent stopping")
	case <-a.handover:
		a.log.Info("successor took over; draining")
	}
	a.shutdown()
	return nil
}

// shutdown stops every listener this agent holds (a successor holds its
// own copies of them) and waits for proxied connections, bounded.
func (a *Agent) shutdown() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	pods := make([]*pod, 0, len(a.pods))
	for _, p := range a.pods {
		pods = append(pods, p)
	}
	keep := a.handedOver
	a.mu.Unlock()
	if a.cancel != nil {
		a.cancel() // the registry stream, renewals and rotations end with us
	}
	if a.takeover != nil {
		if ul, ok := a.takeover.(*net.UnixListener); ok && keep {
			ul.SetUnlinkOnClose(false)
		}
		a.takeover.Close()
	}
	if a.api != nil {
		a.api.close(keep)
	}
	for _, p := range pods {
		p.stop()
		if p.dev { // not handed over: unsteer it rather than leave it pointing at a dead port
			a.dp.UnenrollCgroup(p.cgroupID)
		}
	}
	done := make(chan struct{})
	go func() { a.conns.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(a.cfg.DrainTimeout):
		a.log.Warn("drain timeout; closing remaining connections")
		for _, p := range pods {
			p.closeConns()
		}
	}
	for _, p := range pods {
		p.release()
	}
}

// Close stops the agent; idempotent.
func (a *Agent) Close() error {
	a.shutdown()
	return nil
}

func (a *Agent) isClosed() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.closed
}

// errorf makes a one-line error for the CLI.
func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
