// SPDX-License-Identifier: GPL-2.0
/* cgroup/connect4 and cgroup/connect6: rewrite an enrolled socket's TCP
 * connects to the in-pod outbound listener, and its UDP connects to port 53
 * to the in-pod DNS listener, recording where the application meant to go.
 * IPv4 connects on an AF_INET6 socket (v4-mapped) only reach connect6. */
#include "hms.h"

static __always_inline int record(struct bpf_sock *sk, __u32 ip6[4], __u16 port)
{
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;
	o->ip6[0] = ip6[0];
	o->ip6[1] = ip6[1];
	o->ip6[2] = ip6[2];
	o->ip6[3] = ip6[3];
	o->port = port;
	o->family = AF_INET6;
	return 1;
}

/* decide returns the port to rewrite to, or 0 to leave the connect alone. */
static __always_inline __u16 decide(__u32 proto, struct enrollment *e, __u16 dport, int loopback)
{
	if (proto == IPPROTO_UDP) {
		if (dport != 53 || loopback)
			return 0;
		count(CNT_DNS_REDIRECTED);
		return e->dns_port;
	}
	if (proto != IPPROTO_TCP)
		return 0;
	if (loopback) {
		count(CNT_PASSED);
		return 0;
	}
	count(CNT_REDIRECTED);
	return e->outbound_port;
}

SEC("cgroup/connect4")
int hms_connect4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct enrollment *e = enrollment_of(ctx);
	if (!e)
		return 1;
	if (sk->mark == agent_mark) {
		count(CNT_PASSED);
		return 1;
	}
	__u32 dst = ctx->user_ip4;
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	/* Read ctx fields once: clang otherwise keeps a computed ctx pointer,
	 * which the verifier refuses. */
	__u32 proto = ctx->protocol;
	if (proto == IPPROTO_TCP && is_vip(dst) && !vip_known(dst, dport)) {
		count(CNT_VIP_REFUSED);
		return 0; /* EPERM at once, instead of a connect that hangs */
	}
	__u16 to = decide(proto, e, dport, is_loopback4(dst));
	if (!to)
		return 1;
	__u32 mapped[4] = {0, 0, bpf_htonl(0xffff), dst};
	if (!record(sk, mapped, dport))
		return 1; /* cannot remember it: better a direct connect than a blind proxy */
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(to);
	return 1;
}

SEC("cgroup/connect6")
int hms_connect6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct enrollment *e = enrollment_of(ctx);
	if (!e)
		return 1;
	if (sk->mark == agent_mark) {
		count(CNT_PASSED);
		return 1;
	}
	__u32 ip[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	int mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
	int loopback = mapped ? is_loopback4(ip[3])
			      : (ip[0] == 0 && ip[1] == 0 && ip[2] == 0 && ip[3] == bpf_htonl(1));
	__u16 dport = bpf_ntohs((__u16)ctx->user_port);
	__u32 proto = ctx->protocol;
	if (mapped && proto == IPPROTO_TCP && is_vip(ip[3]) && !vip_known(ip[3], dport)) {
		count(CNT_VIP_REFUSED);
		return 0;
	}
	__u16 to = decide(proto, e, dport, loopback);
	if (!to)
		return 1;
	if (!record(sk, ip, dport))
		return 1;
	if (mapped) {
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(to);
	return 1;
}

char _license[] SEC("license") = "GPL";
