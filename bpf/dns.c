// SPDX-License-Identifier: GPL-2.0
/* cgroup/sendmsg4/6 and cgroup/recvmsg4/6: DNS of enrolled sockets that do
 * not connect their UDP socket (connect4/6 handle those that do). sendmsg
 * sends a query for port 53 to the in-pod DNS listener; recvmsg makes its
 * reply appear to come from the server the application asked (musl drops
 * replies from a foreign source). */
#include "hms.h"

static __always_inline int remember(struct bpf_sock *sk, __u32 ip6[4])
{
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return 0;
	o->ip6[0] = ip6[0];
	o->ip6[1] = ip6[1];
	o->ip6[2] = ip6[2];
	o->ip6[3] = ip6[3];
	o->port = 53;
	o->family = AF_INET6;
	return 1;
}

SEC("cgroup/sendmsg4")
int hms_sendmsg4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk || ctx->protocol != IPPROTO_UDP || sk->mark == agent_mark)
		return 1;
	if (bpf_ntohs((__u16)ctx->user_port) != 53 || is_loopback4(ctx->user_ip4))
		return 1;
	struct enrollment *e = enrollment_of(ctx);
	if (!e)
		return 1;
	__u32 mapped[4] = {0, 0, bpf_htonl(0xffff), ctx->user_ip4};
	if (!remember(sk, mapped))
		return 1;
	count(CNT_DNS_REDIRECTED);
	ctx->user_ip4 = bpf_htonl(0x7f000001);
	ctx->user_port = bpf_htons(e->dns_port);
	return 1;
}

SEC("cgroup/sendmsg6")
int hms_sendmsg6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk || ctx->protocol != IPPROTO_UDP || sk->mark == agent_mark)
		return 1;
	if (bpf_ntohs((__u16)ctx->user_port) != 53)
		return 1;
	__u32 ip[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	int mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
	if (mapped ? is_loopback4(ip[3]) : (ip[0] | ip[1] | ip[2]) == 0 && ip[3] == bpf_htonl(1))
		return 1;
	struct enrollment *e = enrollment_of(ctx);
	if (!e || !remember(sk, ip))
		return 1;
	count(CNT_DNS_REDIRECTED);
	if (mapped) {
		ctx->user_ip6[3] = bpf_htonl(0x7f000001);
	} else {
		ctx->user_ip6[0] = 0;
		ctx->user_ip6[1] = 0;
		ctx->user_ip6[2] = 0;
		ctx->user_ip6[3] = bpf_htonl(1);
	}
	ctx->user_port = bpf_htons(e->dns_port);
	return 1;
}

/* is_dns_listener tells whether a reply's source is the in-pod DNS listener. */
static __always_inline int is_dns_listener(struct bpf_sock_addr *ctx, __u32 ip4)
{
	struct enrollment *e = enrollment_of(ctx);
	return e && ip4 == bpf_htonl(0x7f000001) && bpf_ntohs((__u16)ctx->user_port) == e->dns_port;
}

SEC("cgroup/recvmsg4")
int hms_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, 0);
	if (!o || o->port != 53 || !is_dns_listener(ctx, ctx->user_ip4))
		return 1;
	ctx->user_ip4 = o->ip6[3];
	ctx->user_port = bpf_htons(53);
	return 1;
}

SEC("cgroup/recvmsg6")
int hms_recvmsg6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, 0);
	if (!o || o->port != 53)
		return 1;
	__u32 ip[4] = {ctx->user_ip6[0], ctx->user_ip6[1], ctx->user_ip6[2], ctx->user_ip6[3]};
	int mapped = ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff);
	__u32 as4 = mapped ? ip[3] : ((ip[0] | ip[1] | ip[2]) == 0 && ip[3] == bpf_htonl(1) ? bpf_htonl(0x7f000001) : 0);
	if (!is_dns_listener(ctx, as4))
		return 1;
	ctx->user_ip6[0] = o->ip6[0];
	ctx->user_ip6[1] = o->ip6[1];
	ctx->user_ip6[2] = o->ip6[2];
	ctx->user_ip6[3] = o->ip6[3];
	ctx->user_port = bpf_htons(53);
	return 1;
}

char _license[] SEC("license") = "GPL";
