/* Shared maps, knobs and helpers of the hms-node datapath.
 *
 * Every object includes this header, so every object's ELF declares every
 * map below; the loader (pkg/datapath) creates each map once and hands the
 * same map to all objects. Each map says who writes it and who reads it.
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define SK_DROP 0
#define SK_PASS 1
#define LO_IFINDEX 1

/* Runtime knobs, set by the agent through the spec before load. */
volatile const __u32 agent_mark = 0x4853; /* SO_MARK of the agent's own sockets */
volatile const __u8 accel_enabled = 1;    /* sockhash insertion (sk_msg acceleration) */
volatile const __u32 vip_net = 0x0000f0f0; /* VIP range, network order (240.240.0.0) */
volatile const __u32 vip_mask = 0x0000ffff; /* its netmask, network order (/16) */

/* Decision counters, indexes of hms_counters. Keep in sync with
 * pkg/datapath/counters.go. */
enum hms_counter {
	CNT_REDIRECTED = 0,     /* enrolled TCP connect rewritten to 15001 */
	CNT_PASSED,             /* enrolled connect left alone (loopback, own mark) */
	CNT_ORIGDST_MISSED,     /* 15001 connection established without a recorded destination */
	CNT_INBOUND_STEERED,    /* sk_lookup assigned the 15006 listener */
	CNT_INBOUND_DROPPED,    /* sk_lookup found no listener: fail closed */
	CNT_DNS_REDIRECTED,     /* UDP :53 connect/sendmsg rewritten to 15053 */
	CNT_SOCKMAP_INSERTED,   /* socket added to hms_sockhash */
	CNT_MSG_REDIRECTED,     /* sk_msg redirected a message to its peer */
	CNT_VIP_REFUSED,        /* connect to a VIP:port no service answers on */
	CNT_SHORTCUT_ON,        /* a same-node L4 direction moved into the kernel */
	CNT_MSG_SHORTCUT,       /* sk_msg sent a message straight to the other app */
	CNT_MAX,
};

/* hms_counters: per-CPU decision counters.
 * Writer: every program. Reader: agent (status, metrics). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} hms_counters SEC(".maps");

static __always_inline void count(enum hms_counter c)
{
	__u32 key = c;
	__u64 *v = bpf_map_lookup_elem(&hms_counters, &key);
	if (v)
		*v += 1;
}

/* What an enrollment says about a pod or a host cgroup. */
struct enrollment {
	__u16 outbound_port; /* listener for rewritten connects (host: per-agent port) */
	__u16 dns_port;      /* listener for rewritten DNS */
	__u32 flags;         /* reserved */
};

/* hms_pods: netns cookie -> enrollment of a pod.
 * Writer: agent (enroll/unenroll). Reader: connect, dns, sockops, sk_msg. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct enrollment);
} hms_pods SEC(".maps");

/* hms_cgroups: cgroup id -> enrollment of a host process group (dev mode).
 * Writer: agent. Reader: connect, dns. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, struct enrollment);
} hms_cgroups SEC(".maps");

/* An address as the application dialled it; IPv4 is v4-mapped. */
struct origdst {
	__u32 ip6[4];
	__u16 port; /* host byte order */
	__u16 family;
};

/* hms_sk_orig: per-socket original destination, freed with the socket.
 * Writer: connect4/6, sendmsg4/6. Reader: sockops, getpeername, recvmsg. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct origdst);
} hms_sk_orig SEC(".maps");

/* A client socket as the proxy sees it after accept. */
struct clientkey {
	__u64 netns;
	__u32 ip6[4]; /* v4-mapped for IPv4 */
	__u16 port;   /* host byte order */
	__u16 pad;
	__u32 pad2;   /* explicit: implicit padding is not zeroed, and keys compare bytes */
};

/* hms_origdst: client {netns cookie, ip, port} -> original destination.
 * Writer: sockops (active established). Reader and deleter: agent, after
 * accept. LRU so a crashed agent cannot leak entries. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct clientkey);
	__type(value, struct origdst);
} hms_origdst SEC(".maps");

/* A loopback connection end, as the kernel sees it from the socket. */
struct sockkey {
	__u64 netns;
	__u32 local_ip4;
	__u32 remote_ip4;
	__u32 local_port;  /* host byte order */
	__u32 remote_port; /* host byte order */
};

/* hms_sockhash: both ends of app<->proxy loopback connections.
 * Writer: sockops (established). Reader: sk_msg (redirect to the peer). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct sockkey);
	__type(value, __u64);
} hms_sockhash SEC(".maps");

/* A direction of a same-node L4 connection, app socket to app socket.
 * While the agent relays it, sent counts the bytes the app's sk_msg sent
 * the agent's way; the agent switches it into the kernel (SHORTCUT_ON)
 * only when it has relayed exactly that many bytes, so a byte sent
 * straight to target can never overtake one still queued at the agent. */
struct shortcut {
	__u64 sent; /* bytes sent; SHORTCUT_ON set = straight to target */
	struct sockkey target; /* the other app's socket; read once ON is set */
};
#define SHORTCUT_ON (1ULL << 63)   /* this direction goes straight to target */
#define SHORTCUT_EVER (1ULL << 62) /* it did once: sent is the direction's byte count */
#define SHORTCUT_BYTES (SHORTCUT_EVER - 1)

/* hms_shortcuts: an app's end of an accelerated hop (own sockkey) ->
 * shortcut. Writer: sockops (creates it, established; when either app's
 * socket leaves ESTABLISHED it switches both directions back to the
 * agent, which is always in order, and deletes an entry never switched),
 * sk_msg (counts), hms_shortcut_flip (targets and the switch, run by the
 * agent), agent (deletes switched entries after the connection). Reader:
 * sk_msg, agent (final count). A closing socket thus never leaves a
 * switched peer aimed at a 4-tuple a new connection may reuse, and a dead
 * agent leaves no connection running past it. LRU as a backstop. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536); /* as hms_sockhash: only its members get one */
	__type(key, struct sockkey);
	__type(value, struct shortcut);
} hms_shortcuts SEC(".maps");

/* Inbound steering key: the pod's netns and one of its service ports. */
struct portkey {
	__u64 netns;
	__u32 port; /* host byte order */
	__u32 pad;
};

/* hms_inbound_ports: {netns cookie, service port} the pod serves; the value
 * is reserved. Writer: agent (enroll). Reader: sk_lookup, sockops. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct portkey);
	__type(value, __u32);
} hms_inbound_ports SEC(".maps");

/* hms_listeners: netns cookie -> that pod's 15006 listener. The kernel
 * removes a socket when it closes, which is what makes a dead agent fail
 * closed. Writer: agent. Reader: sk_lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} hms_listeners SEC(".maps");

/* hms_pod_ips: {netns cookie} -> the pod's own IPv4 (network order); a pod
 * dialling its own IP arrives on eth0's ifindex but must not be steered.
 * Writer: agent. Reader: sk_lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u32);
} hms_pod_ips SEC(".maps");

/* hms_exempt_src: source IPv4 (network order) never steered inbound: the
 * node's own addresses (kubelet probes). Writer: agent. Reader: sk_lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} hms_exempt_src SEC(".maps");

/* A service address: VIP (network order) and port (host order). */
struct vipkey {
	__u32 vip;
	__u32 port;
};

/* hms_vips: VIP:port -> service id, mirrored from the registry.
 * Writer: agent (registry sync). Reader: connect4/6. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct vipkey);
	__type(value, __u32);
} hms_vips SEC(".maps");

static __always_inline int is_vip(__u32 ip_net)
{
	return (ip_net & vip_mask) == vip_net;
}

/* vip_known tells whether some service answers on a VIP:port. */
static __always_inline int vip_known(__u32 ip_net, __u16 port)
{
	struct vipkey k = {.vip = ip_net, .port = port};
	return bpf_map_lookup_elem(&hms_vips, &k) != 0;
}

/* enrollment_of returns the enrollment of the socket's netns or cgroup, or
 * NULL when the socket is not ours to touch. */
static __always_inline struct enrollment *enrollment_of(void *ctx)
{
	__u64 cookie = bpf_get_netns_cookie(ctx);
	struct enrollment *e = bpf_map_lookup_elem(&hms_pods, &cookie);
	if (e)
		return e;
	__u64 cg = bpf_get_current_cgroup_id();
	return bpf_map_lookup_elem(&hms_cgroups, &cg);
}

static __always_inline int is_loopback4(__u32 ip_net)
{
	return (bpf_ntohl(ip_net) >> 24) == 127;
}
