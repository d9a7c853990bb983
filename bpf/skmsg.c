// SPDX-License-Identifier: GPL-2.0
/* sk_msg on hms_sockhash: a message sent on one end of an app<->proxy
 * loopback connection goes straight into the peer's receive queue, skipping
 * the loopback TCP stack. When the peer is not in the map, it takes the
 * normal path.
 *
 * Same-node L4 shortcut: when the agent relays a connection between two
 * apps of its node, it switches each direction (hms_shortcut_flip) so that
 * the app's messages go straight into the other app's receive queue, and
 * the agent keeps only the connection's lifecycle. */
#include "hms.h"

SEC("sk_msg")
int hms_skmsg(struct sk_msg_md *msg)
{
	__u64 netns = bpf_get_netns_cookie(msg);
	struct sockkey self = {
		.netns = netns,
		.local_ip4 = msg->local_ip4,
		.remote_ip4 = msg->remote_ip4,
		.local_port = msg->local_port,
		.remote_port = bpf_ntohl(msg->remote_port),
	};
	struct shortcut *s = bpf_map_lookup_elem(&hms_shortcuts, &self);
	if (s) {
		/* Counted before the redirect: a message the agent's flip does
		 * not see in sent is one that saw SHORTCUT_ON. */
		__u64 before = __sync_fetch_and_add(&s->sent, msg->size);
		if (before & SHORTCUT_ON) {
			struct sockkey t = s->target;
			if (bpf_msg_redirect_hash(msg, &hms_sockhash, &t, BPF_F_INGRESS) == SK_PASS) {
				count(CNT_MSG_SHORTCUT);
				return SK_PASS;
			}
			/* The other app is gone: the agent's socket still is
			 * the way out, and the agent ends the connection. */
		}
	}
	struct sockkey peer = {
		.netns = netns,
		.local_ip4 = msg->remote_ip4,
		.remote_ip4 = msg->local_ip4,
		.local_port = bpf_ntohl(msg->remote_port),
		.remote_port = msg->local_port,
	};
	if (bpf_msg_redirect_hash(msg, &hms_sockhash, &peer, BPF_F_INGRESS) == SK_PASS)
		count(CNT_MSG_REDIRECTED);
	return SK_PASS;
}

/* What the agent passes hms_shortcut_flip. */
struct flip_args {
	struct sockkey self;   /* the sending app's socket */
	struct sockkey target; /* the receiving app's socket */
	__u64 relayed;         /* bytes of self the agent relayed so far */
};

enum flip_result {
	FLIP_DONE = 1,     /* the direction is in the kernel now */
	FLIP_PENDING = 2,  /* bytes are still on their way to the agent: relay, try again */
	FLIP_NO_SELF = 3,  /* self has no entry (not accelerated, or closing): never */
	FLIP_NO_TARGET = 4 /* target has no entry (yet: its established callback may still run) */
};

/* hms_shortcut_flip, run by the agent (BPF_PROG_RUN): switches self's
 * direction into the kernel if, and only if, every byte self has sent so
 * far is one the agent relayed. One compare-and-swap against the counter
 * sk_msg adds to, so no message can fall between the check and the switch. */
SEC("syscall")
int hms_shortcut_flip(struct flip_args *args)
{
	struct sockkey self = args->self;
	struct sockkey target = args->target;
	__u64 relayed = args->relayed;
	if (relayed & ~SHORTCUT_BYTES)
		return FLIP_PENDING;
	struct shortcut *s = bpf_map_lookup_elem(&hms_shortcuts, &self);
	if (!s)
		return FLIP_NO_SELF;
	struct shortcut *t = bpf_map_lookup_elem(&hms_shortcuts, &target);
	if (!t)
		return FLIP_NO_TARGET;
	/* Both entries name each other, so whichever socket closes first
	 * can switch the other's direction back (sockops). */
	s->target = target;
	t->target = self;
	if (__sync_val_compare_and_swap(&s->sent, relayed, relayed | SHORTCUT_ON | SHORTCUT_EVER) != relayed)
		return FLIP_PENDING;
	count(CNT_SHORTCUT_ON);
	return FLIP_DONE;
}

char _license[] SEC("license") = "GPL";
