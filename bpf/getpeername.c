// SPDX-License-Identifier: GPL-2.0
/* cgroup/getpeername4 and cgroup/getpeername6: show the application the
 * address it dialled, not the in-pod listener it was rewritten to. */
#include "hms.h"

SEC("cgroup/getpeername4")
int hms_getpeername4(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, 0);
	if (!o)
		return 1;
	ctx->user_ip4 = o->ip6[3];
	ctx->user_port = bpf_htons(o->port);
	return 1;
}

SEC("cgroup/getpeername6")
int hms_getpeername6(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	if (!sk)
		return 1;
	struct origdst *o = bpf_sk_storage_get(&hms_sk_orig, sk, 0, 0);
	if (!o)
		return 1;
	ctx->user_ip6[0] = o->ip6[0];
	ctx->user_ip6[1] = o->ip6[1];
	ctx->user_ip6[2] = o->ip6[2];
	ctx->user_ip6[3] = o->ip6[3];
	ctx->user_port = bpf_htons(o->port);
	return 1;
}

char _license[] SEC("license") = "GPL";
