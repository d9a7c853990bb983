package datapath

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"

	"github.com/hms-node/hms-node/internal/cgroupv2"
)

// Config says where the datapath lives. The zero value attaches to the
// host's cgroup2 root and pins under /sys/fs/bpf/hms.
type Config struct {
	// BPFFS is the pin directory inside a bpffs; default /sys/fs/bpf/hms.
	BPFFS string
	// CgroupRoot is the cgroup v2 directory whose processes are steered;
	// default the cgroup2 mount found in /proc/self/mountinfo.
	CgroupRoot string
	// AgentCgroup is the agent's own cgroup; the proxy's accepted sockets
	// belong to it, so sockops is attached there too. Default: our cgroup.
	AgentCgroup string
	// Mark is the SO_MARK of the agent's own sockets; default DefaultMark.
	Mark uint32
	// VIPRange holds the service VIPs; a connect to one of its addresses
	// that no service answers on is refused at once. Default
	// 240.240.0.0/16.
	VIPRange netip.Prefix
	// NoAccel turns the sockhash/sk_msg short-circuit off.
	NoAccel bool
	// NoShortcut keeps same-node L4 connections relayed by the agent
	// instead of moving them into the kernel (Shortcut); implied by
	// NoAccel.
	NoShortcut bool
	// Log receives load and attach events; default slog.Default().
	Log *slog.Logger
}

// DefaultMark is the socket mark of the agent's own sockets ("HS").
const DefaultMark = 0x4853

// DefaultBPFFS is the default pin directory.
const DefaultBPFFS = "/sys/fs/bpf/hms"

// Datapath is a loaded and attached set of hms programs and maps.
type Datapath struct {
	cfg   Config
	maps  map[string]*ebpf.Map
	progs map[string]*ebpf.Program
	links map[string]link.Link // by pin name

	sklookup *ebpf.CollectionSpec // loaded once per pod, with pod_netns set
	podProgs map[uint64]*ebpf.Program
}

// cgroupHooks are the programs attached to the cgroup root: program name →
// attach type.
var cgroupHooks = []struct {
	prog   string
	attach ebpf.AttachType
}{
	{"hms_connect4", ebpf.AttachCGroupInet4Connect},
	{"hms_connect6", ebpf.AttachCGroupInet6Connect},
	{"hms_getpeername4", ebpf.AttachCgroupInet4GetPeername},
	{"hms_getpeername6", ebpf.AttachCgroupInet6GetPeername},
	{"hms_sendmsg4", ebpf.AttachCGroupUDP4Sendmsg},
	{"hms_sendmsg6", ebpf.AttachCGroupUDP6Sendmsg},
	{"hms_recvmsg4", ebpf.AttachCGroupUDP4Recvmsg},
	{"hms_recvmsg6", ebpf.AttachCGroupUDP6Recvmsg},
	{"hms_sockops", ebpf.AttachCGroupSockOps},
}

func (c *Config) setDefaults() error {
	if c.BPFFS == "" {
		c.BPFFS = DefaultBPFFS
	}
	if c.Mark == 0 {
		c.Mark = DefaultMark
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if !c.VIPRange.IsValid() {
		c.VIPRange = netip.MustParsePrefix("240.240.0.0/16")
	}
	if !c.VIPRange.Addr().Is4() {
		return fmt.Errorf("VIP range %s: only IPv4 ranges are supported", c.VIPRange)
	}
	if c.CgroupRoot == "" {
		mnt, err := cgroupv2.Mount()
		if err != nil {
			return &MissingError{"cgroup v2", err.Error()}
		}
		c.CgroupRoot = mnt
	}
	if c.AgentCgroup == "" {
		self, err := cgroupv2.Self()
		if err != nil {
			return &MissingError{"cgroup v2", err.Error()}
		}
		c.AgentCgroup = self
	}
	return nil
}

// Open probes the kernel, loads the programs (reusing compatible pinned
// maps, replacing stale ones), attaches them — updating pinned links in
// place, so a restarted agent never leaves a gap — and pins what it made.
func Open(cfg Config) (*Datapath, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	start := time.Now()
	if err := Probe(); err != nil {
		return nil, err
	}
	if err := ensureBPFFS(cfg.BPFFS); err != nil {
		return nil, err
	}
	cfg.Log.Info("datapath: kernel features present; loading programs", "bpffs", cfg.BPFFS, "cgroup", cfg.CgroupRoot)
	d := &Datapath{cfg: cfg, progs: map[string]*ebpf.Program{}, links: map[string]link.Link{},
		podProgs: map[uint64]*ebpf.Program{}}
	if err := d.load(); err != nil {
		d.Close()
		return nil, err
	}
	cfg.Log.Info("datapath: programs verified and loaded", "programs", len(d.progs), "maps", len(d.maps), "took", time.Since(start).Round(time.Millisecond))
	if err := d.attach(); err != nil {
		d.Close()
		return nil, err
	}
	if err := d.pinMaps(); err != nil {
		d.Close()
		return nil, err
	}
	cfg.Log.Info("datapath: attached", "links", len(d.links), "accel", !cfg.NoAccel, "took", time.Since(start).Round(time.Millisecond))
	return d, nil
}

// specs parses every object; parsing needs no privileges.
func specs() (map[string]*ebpf.CollectionSpec, error) {
	loaders := map[string]func() (*ebpf.CollectionSpec, error){
		"connect": loadConnect, "getpeername": loadGetpeername, "dns": loadDns,
		"sockops": loadSockops, "skmsg": loadSkmsg, "sklookup": loadSklookup,
	}
	out := map[string]*ebpf.CollectionSpec{}
	for name, load := range loaders {
		s, err := load()
		if err != nil {
			return nil, fmt.Errorf("parse %s object: %w", name, err)
		}
		out[name] = s
	}
	return out, nil
}

func (d *Datapath) load() error {
	all, err := specs()
	if err != nil {
		return err
	}
	d.maps, err = openMaps(d.cfg.BPFFS, all["connect"].Maps, d.cfg.Log)
	if err != nil {
		return err
	}
	d.sklookup = all["sklookup"]
	delete(all, "sklookup")
	for name, spec := range all {
		progs, err := d.loadObject(name, spec, nil)
		if err != nil {
			return err
		}
		for pname, p := range progs {
			d.progs[pname] = p
		}
	}
	return nil
}

// loadObject loads one object's programs against the shared maps, with the
// knobs set; extra sets further variables.
func (d *Datapath) loadObject(name string, spec *ebpf.CollectionSpec, extra map[string]any) (map[string]*ebpf.Program, error) {
	accel := uint8(1)
	if d.cfg.NoAccel {
		accel = 0
	}
	vnet, vmask := vipRangeWords(d.cfg.VIPRange)
	vars := map[string]any{"agent_mark": d.cfg.Mark, "accel_enabled": accel, "vip_net": vnet, "vip_mask": vmask}
	for k, v := range extra {
		vars[k] = v
	}
	spec = spec.Copy()
	for k, v := range vars {
		if err := setVar(spec, k, v); err != nil {
			return nil, err
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: d.maps})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load %s: %+v", name, ve)
		}
		return nil, fmt.Errorf("load %s: %w", name, err)
	}
	defer coll.Close()
	progs := map[string]*ebpf.Program{}
	for pname := range spec.Programs {
		progs[pname] = coll.DetachProgram(pname)
	}
	return progs, nil
}

func setVar(spec *ebpf.CollectionSpec, name string, v any) error {
	vs, ok := spec.Variables[name]
	if !ok {
		return nil
	}
	if err := vs.Set(v); err != nil {
		return fmt.Errorf("set %s: %w", name, err)
	}
	return nil
}

func (d *Datapath) attach() error {
	root, err := os.Open(d.cfg.CgroupRoot)
	if err != nil {
		return fmt.Errorf("open cgroup root %s: %w", d.cfg.CgroupRoot, err)
	}
	root.Close()
	for _, h := range cgroupHooks {
		if err := d.attachCgroup(linkPin(h.prog), d.cfg.CgroupRoot, h.prog, h.attach); err != nil {
			return err
		}
	}
	// The proxy's accepted sockets live in the agent's cgroup; when that is
	// outside the root, sockops must see them there too.
	if !isUnder(d.cfg.AgentCgroup, d.cfg.CgroupRoot) {
		id, err := CgroupID(d.cfg.AgentCgroup)
		if err != nil {
			return err
		}
		pin := fmt.Sprintf("link_sockops_agent_%d", id)
		if err := d.attachCgroup(pin, d.cfg.AgentCgroup, "hms_sockops", ebpf.AttachCGroupSockOps); err != nil {
			return err
		}
	}
	// sk_msg attaches to the sockhash itself, not to a cgroup; attaching
	// again replaces the program in place.
	err = link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: d.maps["hms_sockhash"].FD(), Program: d.progs["hms_skmsg"], Attach: ebpf.AttachSkMsgVerdict,
	})
	if err != nil {
		return fmt.Errorf("attach sk_msg to hms_sockhash: %w", err)
	}
	return nil
}

func linkPin(prog string) string { return "link_" + strings.TrimPrefix(prog, "hms_") }

// attachCgroup updates the pinned link in place when there is one, else
// creates and pins a new link.
func (d *Datapath) attachCgroup(pin, cgroup, prog string, at ebpf.AttachType) error {
	path := filepath.Join(d.cfg.BPFFS, pin)
	if l, err := link.LoadPinnedLink(path, nil); err == nil {
		if err := l.Update(d.progs[prog]); err == nil {
			d.links[pin] = l
			d.cfg.Log.Debug("datapath: pinned link updated in place", "program", prog, "cgroup", cgroup)
			return nil
		}
		// A link of another kind or to a dead cgroup: replace it.
		l.Unpin()
		l.Close()
	}
	l, err := link.AttachCgroup(link.CgroupOptions{Path: cgroup, Attach: at, Program: d.progs[prog]})
	if err != nil {
		return fmt.Errorf("attach %s to %s: %w", prog, cgroup, err)
	}
	if err := l.Pin(path); err != nil {
		l.Close()
		return fmt.Errorf("pin %s: %w", pin, err)
	}
	d.links[pin] = l
	return nil
}

func isUnder(dir, root string) bool {
	rel, err := filepath.Rel(root, dir)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, "../")
}

// CgroupID returns the id of a cgroup v2 directory (its inode number), the
// value bpf_get_current_cgroup_id reports for its processes.
func CgroupID(dir string) (uint64, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return 0, fmt.Errorf("cgroup %s: %w", dir, err)
	}
	return st.Ino, nil
}

// Close releases the agent's handles. Pinned maps and links stay, so pods
// keep failing closed until the next agent takes over.
func (d *Datapath) Close() error {
	for _, l := range d.links {
		l.Close()
	}
	for _, p := range d.progs {
		p.Close()
	}
	for _, p := range d.podProgs {
		p.Close()
	}
	for _, m := range d.maps {
		m.Close()
	}
	d.links, d.progs, d.maps = nil, nil, nil
	return nil
}

// PinPath is the pin directory in use.
func (d *Datapath) PinPath() string { return d.cfg.BPFFS }

// Accel tells whether sk_msg acceleration is on.
func (d *Datapath) Accel() bool { return !d.cfg.NoAccel }

// ShortcutOn tells whether same-node L4 connections move into the kernel.
func (d *Datapath) ShortcutOn() bool { return !d.cfg.NoAccel && !d.cfg.NoShortcut }

// CgroupRoot is the cgroup v2 directory whose processes are steered.
func (d *Datapath) CgroupRoot() string { return d.cfg.CgroupRoot }

// Mark is the socket mark the agent's own sockets must carry.
func (d *Datapath) Mark() uint32 { return d.cfg.Mark }
