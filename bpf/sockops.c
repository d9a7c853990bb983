// SPDX-License-Identifier: GPL-2.0
/* sockops: when an application's rewritten connect completes, publish its
 * original destination under the client's {netns cookie, ip, port} for the
 * proxy to read after accept; and put both ends of app<->proxy loopback
 * connections into hms_sockhash before any byte flows, so sk_msg can
 * short-circuit them. Attached to the pods' cgroup root and to the agent's
 * own cgroup (the proxy's accepted sockets belong to the agent). */
#include "hms.h"

static __always_inline void sockkey_of(struct bpf_sock_ops *skops, __u64 netns, struct sockkey *k)
{
	k->netns = netns;
	k->local_ip4 = skops->local_ip4;
	k->remote_ip4 = skops->remote_ip4;
	k->local_port = skops->local_port;
	k->remote_port = bpf_ntohl(skops->remote_port);
}

/* insert puts a loopback socket into hms_sockhash; an application's end
 * (app) also gets its hms_shortcuts entry, before any byte is sent. */
static __always_inline void insert(struct bpf_sock_ops *skops, __u64 netns, int app)
{
	if (!accel_enabled)
		return;
	/* IPv4, or v4-mapped on an AF_INET6 socket (Go's ":port" listeners):
	 * local_ip4/remote_ip4 hold the IPv4 addresses of both, and are 0 for
	 * native IPv6, which stays unaccelerated. */
	if (!is_loopback4(skops->local_ip4) || !is_loopback4(skops->remote_ip4))
		return;
	struct sockkey k = {};
	sockkey_of(skops, netns, &k);
	if (bpf_sock_hash_update(skops, &hms_sockhash, &k, BPF_NOEXIST) != 0)
		return;
	count(CNT_SOCKMAP_INSERTED);
	if (app) {
		struct shortcut s = {};
		if (bpf_map_update_elem(&hms_shortcuts, &k, &s, BPF_ANY) == 0)
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags | BPF_SOCK_OPS_STATE_CB_FLAG);
	}
}

/* left_established: an app's socket with an hms_shortcuts entry is
 * closing (FIN sent or received, reset). Both directions go back through
 * the agent — always in order, since the agent's hop stays where it was —
 * and an entry that never switched goes away. */
static __always_inline void left_established(struct bpf_sock_ops *skops)
{
	struct sockkey k = {};
	sockkey_of(skops, bpf_get_netns_cookie(skops), &k);
	struct shortcut *s = bpf_map_lookup_elem(&hms_shortcuts, &k);
	if (!s)
		return;
	__sync_fetch_and_and(&s->sent, ~SHORTCUT_ON);
	struct sockkey t = s->target;
	if (t.netns) {
		struct shortcut *p = bpf_map_lookup_elem(&hms_shortcuts, &t);
		if (p)
			__sync_fetch_and_and(&p->sent, ~SHORTCUT_ON);
	}
	if (!(s->sent & SHORTCUT_EVER))
		bpf_map_delete_elem(&hms_shortcuts, &k);
}

static __always_inline void active(struct bpf_sock_ops *skops)
{
	__u64 netns = bpf_get_netns_cookie(skops);
	struct enrollment *e = bpf_map_lookup_elem(&hms_pods, &netns);
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return;
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, 0);
	__u32 rport = bpf_ntohl(skops->remote_port);
	if (o && o->port != 53) {
		struct clientkey ck;
		__builtin_memset(&ck, 0, sizeof(ck));
		ck.netns = netns;
		ck.port = skops->local_port;
		/* Read every field up front: clang turns two branches that
		 * read different ctx fields into one load at a computed
		 * offset, which the verifier refuses. */
		__u32 l4 = skops->local_ip4;
		__u32 l6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2], skops->local_ip6[3]};
		if (skops->family == AF_INET) {
			ck.ip6[2] = bpf_htonl(0xffff);
			ck.ip6[3] = l4;
		} else {
			ck.ip6[0] = l6[0];
			ck.ip6[1] = l6[1];
			ck.ip6[2] = l6[2];
			ck.ip6[3] = l6[3];
		}
		bpf_map_update_elem(&hms_origdst, &ck, o, BPF_ANY);
	} else if (e && rport == e->outbound_port && is_loopback4(skops->remote_ip4)) {
		count(CNT_ORIGDST_MISSED);
	}
	if (!e)
		return;
	/* The app's end of the outbound hop, or the agent's end of the
	 * inbound hop (the agent dials the app over the pod's loopback). */
	if (o && rport == e->outbound_port)
		insert(skops, netns, 1);
	else if (sk->mark == agent_mark)
		insert(skops, netns, 0);
}

static __always_inline void passive(struct bpf_sock_ops *skops)
{
	__u64 netns = bpf_get_netns_cookie(skops);
	struct enrollment *e = bpf_map_lookup_elem(&hms_pods, &netns);
	if (!e)
		return;
	/* The proxy's end of the outbound hop, or the app's end of the
	 * inbound hop (a declared service port). */
	struct portkey pk = {.netns = netns, .port = skops->local_port};
	if (skops->local_port == e->outbound_port)
		insert(skops, netns, 0);
	else if (bpf_map_lookup_elem(&hms_inbound_ports, &pk))
		insert(skops, netns, 1);
}

SEC("sockops")
int hms_sockops(struct bpf_sock_ops *skops)
{
	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
		active(skops);
		break;
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		passive(skops);
		break;
	case BPF_SOCK_OPS_STATE_CB:
		if (skops->args[0] == BPF_TCP_ESTABLISHED)
			left_established(skops);
		break;
	}
	return 1;
}

char _license[] SEC("license") = "GPL";
