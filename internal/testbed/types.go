package testbed

import (
	"net/netip"
	"os"
	"os/exec"
	"sync"
)

// Bed is one test bed: a fabric netns plus the nodes and pods added to it.
// Its methods are safe for concurrent use.
type Bed struct {
	prefix string
	id     string // <prefix>-<pid>-<n>: cgroup dir and netns name stem
	tag    string // interface name stem, see ifTag
	cgRoot string // <cgroup2 mount>/<id>
	fabric string // fabric netns name
	fabBr  string // fabric bridge name

	// mu guards the fields below.
	mu        sync.Mutex
	nodes     []*Node
	nodeSeq   int // last node index handed out; never reused
	cmds      []*exec.Cmd
	made      []string // netns names created, in creation order
	cgMade    bool     // cgRoot was created
	routeHeld bool     // holds a reference on the root-netns VIP blackhole
	closed    bool
	closeErr  error
}

// Node is a simulated node: a netns holding a bridge that its pods attach
// to, joined to the other nodes through the fabric.
type Node struct {
	Name      string
	Netns     string       // netns path, /run/netns/<prefix>-<pid>-<n>-n<idx>
	CgroupDir string       // absolute cgroup v2 dir of the node; the agent's --cgroup-root
	Subnet    netip.Prefix // 10.250.<idx>.0/24
	Gateway   netip.Addr   // 10.250.<idx>.1, the node bridge's address (the node's own address)

	bed    *Bed
	idx    int
	nsName string
	bridge string
	pods   []*Pod // guarded by bed.mu
	podSeq int    // last pod index handed out; guarded by bed.mu
}

// Pod is a simulated pod: a netns with lo and eth0 on its node's bridge, and
// a cgroup v2 directory its processes start in.
type Pod struct {
	Name      string
	Node      *Node
	NetnsPath string     // /run/netns/<unique name>
	IP        netip.Addr // 10.250.<idx>.<2..>
	CgroupDir string     // <node CgroupDir>/<pod>

	idx    int
	nsName string
	cgFD   *os.File // open cgroup dir, for CLONE_INTO_CGROUP; closed by Bed.Close
}

// netnsDir is where `ip netns add` puts named namespaces.
const netnsDir = "/run/netns"
