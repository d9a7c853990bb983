// SPDX-License-Identifier: GPL-2.0
/* sk_msg on hms_sockhash: a message sent on one end of an app<->proxy
 * loopback connection goes straight into the peer's receive queue, skipping
 * the loopback TCP stack. When the peer is not in the map, it takes the
 * normal path. */
#include "hms.h"

SEC("sk_msg")
int hms_skmsg(struct sk_msg_md *msg)
{
	struct sockkey peer = {
		.netns = bpf_get_netns_cookie(msg),
		.local_ip4 = msg->remote_ip4,
		.remote_ip4 = msg->local_ip4,
		.local_port = bpf_ntohl(msg->remote_port),
		.remote_port = msg->local_port,
	};
	if (bpf_msg_redirect_hash(msg, &hms_sockhash, &peer, BPF_F_INGRESS) == SK_PASS)
		count(CNT_MSG_REDIRECTED);
	return SK_PASS;
}

char _license[] SEC("license") = "GPL";
