// SPDX-License-Identifier: GPL-2.0
/* sk_lookup, attached to each enrolled pod's netns: a TCP connection that
 * arrives from outside the pod for one of the pod's service ports goes to
 * the in-pod 15006 listener; when that listener is gone (the agent died),
 * the connection is refused, so nothing reaches the application unproxied. */
#include "hms.h"

/* The netns cookie of the pod this copy of the program is attached to:
 * sk_lookup programs cannot call bpf_get_netns_cookie, so the agent loads
 * one copy per pod. */
volatile const __u64 pod_netns = 0;

SEC("sk_lookup")
int hms_sklookup(struct bpf_sk_lookup *ctx)
{
	if (ctx->protocol != IPPROTO_TCP || ctx->ingress_ifindex == LO_IFINDEX)
		return SK_PASS;
	__u64 netns = pod_netns;
	struct portkey pk = {.netns = netns, .port = ctx->local_port};
	if (!bpf_map_lookup_elem(&hms_inbound_ports, &pk))
		return SK_PASS;
	if (ctx->family == AF_INET) {
		/* A pod dialling its own IP arrives on eth0, over loopback. */
		__u32 *own = bpf_map_lookup_elem(&hms_pod_ips, &netns);
		if (own && *own == ctx->remote_ip4)
			return SK_PASS;
		__u32 src = ctx->remote_ip4;
		if (bpf_map_lookup_elem(&hms_exempt_src, &src))
			return SK_PASS;
	}
	struct bpf_sock *sk = bpf_map_lookup_elem(&hms_listeners, &netns);
	if (!sk) {
		count(CNT_INBOUND_DROPPED);
		return SK_DROP;
	}
	long err = bpf_sk_assign(ctx, sk, 0);
	bpf_sk_release(sk);
	if (err) {
		count(CNT_INBOUND_DROPPED);
		return SK_DROP;
	}
	count(CNT_INBOUND_STEERED);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
