#!/usr/bin/env bash
# demo.sh up|down — an hms-node mesh on one machine, in namespaces of its own.
#
# up: builds bin/, starts the control plane (embedded etcd on loopback ports
# of its own; its API is mTLS, the admin config is <data-dir>/admin.yaml),
# builds two simulated nodes joined by a fabric:
#
#   hmsdemo-client  10.251.1.2                     hmsdemo-notify 10.251.2.2
#   hmsdemo-outside 10.251.1.3 (not enrolled)            | eth0
#         | eth0                                         |
#   [hmsdemo-n1 br0 10.251.1.1]                    [hmsdemo-n2 br0 10.251.2.1]
#         | fab0 10.251.255.1                            | fab0 10.251.255.2
#         +----------------- [hmsdemo-fab br0] ----------+
#
# creates one bootstrap token per node (`token create`), starts one agent per
# node with --token-file (it pins the control plane's CA by the token's hash
# and trades the token for a node certificate kept in its --state-dir; root
# netns, each steering its node's cgroup subtree), applies a manifest for
# notify-svc, runs an HTTP server in the notify pod, enrolls notify and
# client (each gets a SPIFFE workload certificate) and runs an unmodified
# `curl http://notify-svc.svc/sms` in the client pod: the name is answered by
# agent n1's DNS redirect, the connection to the VIP is rewritten into agent
# n1, which opens an HBONE tunnel (HTTP/2 CONNECT over mutual TLS 1.3) with
# the client's certificate to the notify pod's port 15008 on n2, where agent
# n2 verifies the caller's identity and hands the stream to the server. It
# prints both workloads' identities and certificate expiry and the tunnel,
# then shows that plaintext from the pod outside the mesh to the server's
# port is refused (STRICT: mtls required).
#
# down: removes all of it (identities and tokens included: they live in
# /tmp/hmsdemo); safe to run twice or after a failed up.
#
# Traffic stays inside these namespaces and on loopback: pods have no default
# route, every pod and node netns blackholes the VIP range, the agents' DNS
# upstream is a dead loopback port, and nothing is added to the root netns.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

readonly run_dir=/tmp/hmsdemo
readonly control_dir=$run_dir/control
readonly control_addr=127.0.0.1:19090 control_http=127.0.0.1:19091
readonly etcd_client_port=22379 etcd_peer_port=22380
readonly nodes=(n1 n2)
readonly fab_ns=hmsdemo-fab
readonly bridge=br0 pod_range=10.251.0.0/16 vip_range=240.240.0.0/16
readonly svc=notify-svc svc_port=7000
readonly svc_body="hello from notify-svc on node n2"
hms_bin=$repo/bin/hms-node
testapp=$repo/bin/hms-testapp

# Per node: its index (subnets 10.251.<i>.0/24, fabric 10.251.255.<i>),
# agent socket, metrics address, bpffs pin dir.
node_index() { echo "${1#n}"; }
sock_of() { echo "$run_dir/$1/agent.sock"; }
metrics_of() { echo "127.0.0.1:$((15920 + $(node_index "$1")))"; }
bpffs_of() { echo "/sys/fs/bpf/hmsdemo-$1"; }

# The CLI always uses the demo's admin config, never ~/.hms/config.
export HMS_CONFIG=$control_dir/admin.yaml
hms() { "$hms_bin" "$@"; }

say() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() { printf 'demo: FAIL: %s\n' "$*" >&2; exit 1; }

# cgroup2_mount prints the mount point of the cgroup2 filesystem:
# /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on hybrid ones.
# mountinfo: id parent maj:min root mountpoint opts [optional...] - fstype ...
cgroup2_mount() {
	awk '{ for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) == "cgroup2") { print $5; exit } break } }' /proc/self/mountinfo
}

cg2=$(cgroup2_mount)
[[ -n $cg2 ]] || die "no cgroup2 filesystem mounted (mount -t cgroup2 none /sys/fs/cgroup)"
readonly cg_nodes=$cg2/hmsdemo             # <node> = --cgroup-root; pods below it
readonly cg_agents=$cg2/hmsdemo-agent      # <node>: each agent's own, outside the nodes'
readonly cg_control=$cg2/hmsdemo-control   # the control plane

# spawn CGROUP PIDFILE NETNS|"" CMD... starts CMD in the background in its own
# session, moved into CGROUP before it execs (so cgroup programs see it from
# its first instruction) and, when NETNS is set, entered into that netns with
# nsenter (`ip netns exec` would remount /sys). Its pid goes to PIDFILE.
# shellcheck disable=SC2016 # the inner script expands its own $1..$@
spawn() {
	setsid sh -c '
		cg=$1 pidfile=$2 ns=$3; shift 3
		echo $$ >"$cg/cgroup.procs" || exit 1
		echo $$ >"$pidfile"
		[ -z "$ns" ] && exec "$@"
		exec nsenter --net="$ns" -- "$@"' sh "$@" </dev/null &
}

# in_pod NODE POD CMD... runs CMD in the foreground in the pod's cgroup and netns.
# shellcheck disable=SC2016
in_pod() {
	local node=$1 pod=$2
	shift 2
	sh -c 'echo $$ >"$1/cgroup.procs" || exit 1; ns=$2; shift 2; exec nsenter --net="$ns" -- "$@"' \
		sh "$cg_nodes/$node/$pod" "/run/netns/hmsdemo-$pod" "$@"
}

# in_ns NETNS CMD... runs CMD in a netns without remounting /sys.
in_ns() {
	local ns=$1
	shift
	nsenter --net="/run/netns/$ns" -- "$@"
}

# wait_for SECONDS WHAT CMD... polls CMD every 0.2s.
wait_for() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || { echo "demo: timed out waiting for $what" >&2; return 1; }
		sleep 0.2
	done
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_ready SECONDS WHAT PIDFILE CMD... polls CMD until it succeeds; fails
# at once when the process of PIDFILE dies.
wait_ready() {
	local deadline=$((SECONDS + $1)) what=$2 pidfile=$3
	shift 3
	wait_for 5 "the pid file of $what" test -s "$pidfile" || die "$what did not start"
	until "$@" >/dev/null 2>&1; do
		if ! alive "$pidfile"; then
			sleep 0.2 # let its last words reach the log
			die "$what exited while starting"
		fi
		((SECONDS < deadline)) || die "$what was not ready within $1s"
		sleep 0.2
	done
}

control_ready() { hms list --control "$control_addr" >/dev/null 2>&1; }

agent_ready() {
	local sock metrics
	sock=$(sock_of "$1") metrics=$(metrics_of "$1")
	[[ -S $sock ]] &&
		hms status --socket "$sock" >/dev/null 2>&1 &&
		curl -sf --noproxy '*' --max-time 2 "http://$metrics/readyz" >/dev/null 2>&1
}

# flat prints stdin as one line without blanks (JSON from our own tools:
# no blanks inside the strings we look at).
flat() { tr -d ' \t\r\n'; }

# service_json prints the flattened `list -o json` entry of service $svc.
service_json() {
	hms list -o json --control "$control_addr" 2>/dev/null | flat |
		awk -v key="\"name\":\"$svc\"" '{ i = index($0, key); if (i) { s = substr($0, i + length(key)); j = index(s, "\"name\":"); print (j ? substr(s, 1, j - 1) : s) } }'
}

svc_healthy() { service_json | grep -q '"node":"n2".*"healthy":true'; }

agent_synced() {
	hms status --socket "$(sock_of n1)" -o json 2>/dev/null | flat | grep -q '"connected":true'
}

# counter SOCK NAME prints a datapath counter of the agent at SOCK.
counter() {
	hms status --socket "$1" -o json 2>/dev/null | flat |
		sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" | head -n 1
}

# top_counter SOCK NAME prints a top-level counter of `status -o json`
# (denied, plaintext_refused).
top_counter() {
	hms status --socket "$1" -o json 2>/dev/null | flat |
		sed 's/"registry":.*//; s/"workloads":.*//' |
		sed -n "s/.*\"$2\":\([0-9][0-9]*\).*/\1/p" | head -n 1
}

# counter_above SOCK NAME N: top-level counter NAME of the agent at SOCK is above N.
counter_above() {
	local v
	v=$(top_counter "$1" "$2")
	((${v:-0} > $3))
}

# workloads SOCK prints one line per workload of the agent at SOCK:
# service, identity, cert_expiry, cert_serial (from `status -o json`; the
# fields of one workload follow its "netns").
workloads() {
	hms status --socket "$1" -o json 2>/dev/null | flat | sed 's/"datapath":.*//; s/"netns":/\n/g' |
		awk '/"identity":/ {
			n = split("service identity cert_expiry cert_serial", k, " "); line = ""
			for (i = 1; i <= n; i++) {
				v = "-"; key = "\"" k[i] "\":\""; j = index($0, key)
				if (j) { v = substr($0, j + length(key)); v = substr(v, 1, index(v, "\"") - 1) }
				if (v == "") v = "-"
				line = line (i > 1 ? " " : "") v
			}
			print line
		}'
}

# certified SOCK SVC: the agent at SOCK holds a workload certificate of SVC.
certified() {
	workloads "$1" | awk -v svc="$2" '$1 == svc && $2 ~ /^spiffe:/ && $3 != "pending" && $3 != "-" { ok = 1 } END { exit !ok }'
}

# cg_procs DIR prints the pids in cgroup DIR and every cgroup below it.
cg_procs() {
	[[ -d $1 ]] || return 0
	find "$1" -name cgroup.procs -exec cat {} + 2>/dev/null
}

# stop_cgroup DIR GRACE sends SIGTERM to every process in the cgroup tree,
# waits up to GRACE seconds, then SIGKILLs what is left. Only processes in
# our own cgroups are touched.
stop_cgroup() {
	local dir=$1 grace=$2 pids deadline
	pids=$(cg_procs "$dir")
	[[ -n $pids ]] || return 0
	# shellcheck disable=SC2086 # one pid per word
	kill -TERM $pids 2>/dev/null || true
	deadline=$((SECONDS + grace))
	while [[ -n $(cg_procs "$dir") ]] && ((SECONDS < deadline)); do sleep 0.2; done
	pids=$(cg_procs "$dir")
	[[ -n $pids ]] || return 0
	# shellcheck disable=SC2086
	kill -KILL $pids 2>/dev/null || true
	deadline=$((SECONDS + 5))
	while [[ -n $(cg_procs "$dir") ]] && ((SECONDS < deadline)); do sleep 0.1; done
}

# rm_cgroup DIR removes a cgroup tree bottom-up (a dying cgroup can stay busy
# for a moment after its last process exits, so retry).
rm_cgroup() {
	local dir=$1 i
	[[ -d $dir ]] || return 0
	for ((i = 0; i < 50; i++)); do
		find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
		[[ -d $dir ]] || return 0
		sleep 0.1
	done
	echo "demo: could not remove cgroup $dir" >&2
	return 1
}

down() {
	local rc=0 ns dir
	# Pods first (nothing of theirs needs a goodbye), then the agents, which
	# get SIGTERM and time to shut down, then the control plane.
	stop_cgroup "$cg_nodes" 2
	stop_cgroup "$cg_agents" 15
	stop_cgroup "$cg_control" 15
	# /sys/fs/bpf/hmsdemo is the pin dir of the earlier single-node demo.
	for dir in /sys/fs/bpf/hmsdemo /sys/fs/bpf/hmsdemo-*; do
		[[ -d $dir ]] || continue
		if [[ -x $hms_bin ]]; then
			hms agent --cleanup --bpffs "$dir" >/dev/null || rc=1
		fi
		# Whatever the cleanup left (or all of it, without a binary): pins
		# are files, and unlinking the last one detaches a link.
		rm -rf "$dir" || rc=1
	done
	for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^hmsdemo-/ {print $1}'); do
		ip netns del "$ns" || rc=1
	done
	rm_cgroup "$cg_nodes" || rc=1
	rm_cgroup "$cg_agents" || rc=1
	rm_cgroup "$cg_control" || rc=1
	rm -rf "$run_dir"
	return "$rc"
}

add_netns() {
	ip netns add "$1"
	ip -n "$1" link set lo up
	ip -n "$1" route replace blackhole "$vip_range"
}

# add_node NODE: netns hmsdemo-NODE with bridge 10.251.<i>.1/24, forwarding
# on, and fab0 (10.251.255.<i>) on the fabric bridge.
add_node() {
	local node=$1 i ns=hmsdemo-$1
	i=$(node_index "$node")
	add_netns "$ns"
	ip -n "$ns" link add "$bridge" type bridge
	ip -n "$ns" addr add "10.251.$i.1/24" dev "$bridge"
	ip -n "$ns" link set "$bridge" up
	# Both veth ends are created in their own namespaces: nothing appears in
	# the root netns, even for a moment.
	ip -n "$ns" link add fab0 type veth peer name "$node" netns "$fab_ns"
	ip -n "$fab_ns" link set "$node" master "$bridge" up
	ip -n "$ns" addr add "10.251.255.$i/24" dev fab0
	ip -n "$ns" link set fab0 up
	in_ns "$ns" sh -c 'echo 1 >/proc/sys/net/ipv4/ip_forward'
	mkdir -p "$cg_nodes/$node" "$cg_agents/$node" "$run_dir/$node/state"
}

# add_pod NODE POD ADDR: netns hmsdemo-POD on NODE's bridge, a route for the
# pod range via the node, no default route.
add_pod() {
	local node=$1 pod=$2 addr=$3 ns=hmsdemo-$2 gw
	gw=10.251.$(node_index "$node").1
	add_netns "$ns"
	ip -n "hmsdemo-$node" link add "veth-$pod" type veth peer name eth0 netns "$ns"
	ip -n "hmsdemo-$node" link set "veth-$pod" master "$bridge" up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add "$pod_range" via "$gw" dev eth0
	mkdir "$cg_nodes/$node/$pod"
}

build() {
	local version commit ldflags
	version=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)
	commit=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
	ldflags="-X main.version=$version -X main.commit=$commit"
	(cd "$repo" &&
		go build -trimpath -ldflags "$ldflags" -o bin/hms-node ./cmd/hms-node &&
		go build -trimpath -ldflags "$ldflags" -o bin/hms-testapp ./internal/testapp/cmd/hms-testapp)
}

on_up_error() {
	local log
	echo >&2
	echo "demo: up failed. Logs: $run_dir/*.log" >&2
	for log in "$run_dir"/n1/agent.log "$run_dir"/n2/agent.log "$run_dir"/control.log; do
		[[ -s $log ]] || continue
		echo "demo: last lines of $log:" >&2
		tail -n 20 "$log" >&2 || true
	done
	echo "demo: clean up with: bash scripts/demo.sh down" >&2
}

start_agent() {
	local node=$1
	spawn "$cg_agents/$node" "$run_dir/$node/agent.pid" "" "$hms_bin" agent \
		--node "$node" --cgroup-root "$cg_nodes/$node" --bpffs "$(bpffs_of "$node")" \
		--state-dir "$run_dir/$node/state" --socket "$(sock_of "$node")" \
		--metrics-addr "$(metrics_of "$node")" --control "$control_addr" \
		--token-file "$run_dir/$node/token" \
		--probe-interval 2s --dns-upstream 127.0.0.1:1 \
		>"$run_dir/$node/agent.log" 2>&1
}

up() {
	say "dependencies (scripts/deps.sh)"
	bash "$repo/scripts/deps.sh"
	if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
		export PATH=$PATH:/usr/local/go/bin
	fi
	[[ -e /etc/resolv.conf ]] || die "/etc/resolv.conf is missing: the client pod's resolver is bind-mounted over it"

	say "building bin/hms-node and bin/hms-testapp"
	build

	say "clearing leftovers of an earlier demo"
	down

	# From here on a failure (set -e or die) explains itself on the way out.
	trap 'rc=$?; ((rc == 0)) || on_up_error' EXIT
	if ! grep -qs ' /sys/fs/bpf bpf ' /proc/self/mounts; then
		mount -t bpf bpf /sys/fs/bpf
	fi
	mkdir -p "$control_dir" "$cg_control"

	say "starting the control plane on $control_addr (log: $run_dir/control.log)"
	# HOME=$run_dir: the default client config it writes when ~/.hms/config
	# is absent lands in $run_dir/.hms, not in the real home.
	spawn "$cg_control" "$run_dir/control.pid" "" env HOME="$run_dir" "$hms_bin" control \
		--data-dir "$control_dir" --listen "$control_addr" --http-addr "$control_http" \
		--etcd-client-port "$etcd_client_port" --etcd-peer-port "$etcd_peer_port" \
		>"$run_dir/control.log" 2>&1
	wait_ready 60 "the control plane" "$run_dir/control.pid" control_ready
	echo "    admin config: $HMS_CONFIG"

	say "topology: nodes hmsdemo-n1 (10.251.1.0/24) and hmsdemo-n2 (10.251.2.0/24) on fabric $fab_ns"
	add_netns "$fab_ns"
	ip -n "$fab_ns" link add "$bridge" type bridge
	ip -n "$fab_ns" link set "$bridge" up
	add_node n1
	add_node n2
	ip -n hmsdemo-n1 route add 10.251.2.0/24 via 10.251.255.2 dev fab0
	ip -n hmsdemo-n2 route add 10.251.1.0/24 via 10.251.255.1 dev fab0
	add_pod n1 client 10.251.1.2
	add_pod n1 outside 10.251.1.3
	add_pod n2 notify 10.251.2.2
	echo "    pods: hmsdemo-client 10.251.1.2 on n1, hmsdemo-notify 10.251.2.2 on n2,"
	echo "          hmsdemo-outside 10.251.1.3 on n1 (never enrolled: outside the mesh)"
	echo "    cgroups: $cg_nodes/{n1/client,n1/outside,n2/notify}, agents in $cg_agents/{n1,n2}"

	local node
	for node in "${nodes[@]}"; do
		say "bin/hms-node token create --config $HMS_CONFIG --ttl 10m > $run_dir/$node/token"
		(umask 077 && hms token create --config "$HMS_CONFIG" --ttl 10m >"$run_dir/$node/token") ||
			die "token create for $node failed"
		[[ $(wc -l <"$run_dir/$node/token") -eq 1 && -s $run_dir/$node/token ]] ||
			die "token create for $node did not print one line"
		echo "    $(cut -c1-16 "$run_dir/$node/token")... (one use; agent $node joins with --token-file)"
	done
	for node in "${nodes[@]}"; do
		say "starting agent $node (log: $run_dir/$node/agent.log, metrics: $(metrics_of "$node"))"
		start_agent "$node"
	done
	for node in "${nodes[@]}"; do
		wait_ready 30 "agent $node" "$run_dir/$node/agent.pid" agent_ready "$node"
		grep -q 'msg="joined the mesh"' "$run_dir/$node/agent.log" ||
			die "agent $node is ready but did not log that it joined the mesh"
		echo "    agent $node: $(grep -m1 'msg="joined the mesh"' "$run_dir/$node/agent.log" | sed 's/^time=[^ ]* //')"
		echo "    node identity in $run_dir/$node/state/identity: $(find "$run_dir/$node/state/identity" -mindepth 1 -printf '%f ' 2>/dev/null)"
	done

	say "bin/hms-node apply -f $run_dir/notify.yaml"
	cat >"$run_dir/notify.yaml" <<-YAML
		service: {name: $svc, port: $svc_port}
		protocol: http
		health: {path: /healthz, interval: 2s}
	YAML
	sed 's/^/    /' "$run_dir/notify.yaml"
	hms apply -f "$run_dir/notify.yaml" --control "$control_addr"

	say "starting the HTTP server in hmsdemo-notify (:$svc_port)"
	spawn "$cg_nodes/n2/notify" "$run_dir/notify.pid" /run/netns/hmsdemo-notify \
		"$testapp" http --addr ":$svc_port" --body "$svc_body" \
		>"$run_dir/notify.log" 2>&1
	wait_ready 10 "the notify server" "$run_dir/notify.pid" \
		sh -c "nsenter --net=/run/netns/hmsdemo-notify -- ss -Htln 'sport = :$svc_port' | grep -q ."

	say "enrolling notify with agent n2 and client with agent n1"
	hms enroll --socket "$(sock_of n2)" --netns /run/netns/hmsdemo-notify --service "$svc" --port "$svc_port"
	hms enroll --socket "$(sock_of n1)" --netns /run/netns/hmsdemo-client --service client

	say "waiting for the notify-svc instance on n2 to be healthy"
	wait_for 30 "notify-svc to be healthy in the registry" svc_healthy ||
		die "notify-svc has no healthy instance on n2: $(service_json)"
	wait_for 10 "agent n1 to be connected to the control plane" agent_synced ||
		die "agent n1 is not connected to the control plane"
	wait_for 20 "the workload certificate of notify-svc" certified "$(sock_of n2)" "$svc" ||
		die "agent n2 holds no workload certificate for $svc: $(workloads "$(sock_of n2)")"
	wait_for 20 "the workload certificate of client" certified "$(sock_of n1)" client ||
		die "agent n1 holds no workload certificate for client: $(workloads "$(sock_of n1)")"

	say "bin/hms-node list"
	hms list --control "$control_addr"

	say "in hmsdemo-client: curl -sS --max-time 5 http://$svc.svc/sms"
	printf 'nameserver 192.0.2.53\n' >"$run_dir/resolv.conf"
	local out rc=0 n1_sock n2_sock redir0 dns0
	n1_sock=$(sock_of n1) n2_sock=$(sock_of n2)
	redir0=$(counter "$n1_sock" redirected) dns0=$(counter "$n1_sock" dns_redirected)
	# The pod's resolver is 192.0.2.53 (TEST-NET, unreachable: only agent
	# n1's DNS redirect can answer it), bind-mounted over /etc/resolv.conf
	# in a mount namespace of curl's own. Proxy variables are dropped so curl
	# dials the service itself, as an application in a pod would.
	out=$(in_pod n1 client env -u http_proxy -u HTTP_PROXY -u all_proxy -u ALL_PROXY \
		unshare -m sh -c "mount --bind $run_dir/resolv.conf /etc/resolv.conf && exec curl -sS --max-time 5 http://$svc.svc/sms" 2>&1) || rc=$?
	echo "$out"
	((rc == 0)) || die "curl in the client pod failed (exit $rc)"

	say "bin/hms-node status --socket $n1_sock"
	hms status --socket "$n1_sock"

	# Agent n1's counters must have moved during the call: it answered the
	# DNS query and took the connection. (Agent n2's sk_lookup is not on
	# this path: the tunnel lands on the notify pod's own 15008 listener.)
	local redirected dns_redirected
	redirected=$(counter "$n1_sock" redirected)
	dns_redirected=$(counter "$n1_sock" dns_redirected)
	echo "    agent n1: dns_redirected ${dns0:-0} -> ${dns_redirected:-missing}, redirected ${redir0:-0} -> ${redirected:-missing}"
	[[ $out == *"$svc_body"* ]] || die "unexpected response: $out"
	((${dns_redirected:-0} > ${dns0:-0})) || die "curl answered but dns_redirected stayed at ${dns_redirected:-missing}: the name was not resolved through agent n1"
	((${redirected:-0} > ${redir0:-0})) || die "curl answered but redirected stayed at ${redirected:-missing}: the connection was not intercepted by agent n1"

	say "workload identities (bin/hms-node status -o json of each agent)"
	local sock wsvc wid wexp wserial
	for node in "${nodes[@]}"; do
		sock=$(sock_of "$node")
		while read -r wsvc wid wexp wserial; do
			printf '    agent %s: %-10s %s  cert expires %s  serial %s\n' "$node" "$wsvc" "$wid" "$wexp" "$wserial"
		done < <(workloads "$sock")
	done
	local client_id notify_id
	client_id=$(workloads "$n1_sock" | awk '$1 == "client" { print $2 }')
	notify_id=$(workloads "$n2_sock" | awk -v s="$svc" '$1 == s { print $2 }')
	[[ $client_id == spiffe://*/sa/client ]] || die "agent n1 shows no SPIFFE identity for the client: '$client_id'"
	[[ $notify_id == spiffe://*/sa/"$svc" ]] || die "agent n2 shows no SPIFFE identity for $svc: '$notify_id'"

	say "the cross-node call was mutually authenticated (HBONE: HTTP/2 CONNECT over mTLS 1.3 to 10.251.2.2:15008)"
	# The tunnel outlives the call (idle HBONE connections are pooled), so
	# the notify pod's netns still shows it, from the client pod's address.
	local tunnel denied
	tunnel=$(in_ns hmsdemo-notify ss -Htn state established '( sport = :15008 )' |
		sed 's/\[::ffff:\([0-9.]*\)\]/\1/g' | awk '{ print $3 " <- " $4 }' | head -n 1)
	echo "    in hmsdemo-notify, ss state established sport = :15008: ${tunnel:-none}"
	[[ $tunnel == *"<- 10.251.1.2:"* ]] || die "no HBONE connection from the client pod (10.251.1.2) to 10.251.2.2:15008 in the notify pod"
	denied=$(top_counter "$n2_sock" denied)
	echo "    agent n2: tunnels denied ${denied:-missing} (it verified the caller's certificate, $client_id, and its policy allowed it)"
	((${denied:-1} == 0)) || die "agent n2 denied ${denied:-?} tunnel(s): $(grep 'msg=denied' "$run_dir/n2/agent.log" | tail -n 1)"
	# Port 15008 insists on a client certificate: a caller without one gets
	# the server's workload certificate, then TLS 1.3's "certificate
	# required" alert instead of a tunnel.
	local tls_out san
	tls_out=$(in_pod n1 outside timeout 5 openssl s_client -connect 10.251.2.2:15008 -alpn h2 -tls1_3 </dev/null 2>&1) || true
	san=$(printf '%s\n' "$tls_out" | openssl x509 -noout -ext subjectAltName 2>/dev/null | sed -n 's/^ *//; /URI:/p')
	echo "    hmsdemo-outside (no certificate): openssl s_client -connect 10.251.2.2:15008 -alpn h2 -tls1_3"
	echo "      server certificate: ${san:-none}"
	# TLS 1.3 refuses a missing client certificate after the client's
	# side of the handshake, so the evidence is agent n2's refusal.
	local refused=""
	for _ in $(seq 1 20); do
		refused=$(grep 'msg=denied' "$run_dir/n2/agent.log" | grep 'no certificate presented' | tail -n 1)
		[[ -n $refused ]] && break
		sleep 0.1
	done
	[[ -n $refused ]] || die "port 15008 did not refuse a client without a certificate: $(tail -n 3 <<<"$tls_out")"
	echo "      refused: agent n2: $(sed 's/^time=[^ ]* //' <<<"$refused")"

	say "STRICT: in hmsdemo-outside (n1, not in the mesh): curl -sS --max-time 3 http://10.251.2.2:$svc_port/"
	local plain0 plain steered0 steered
	plain0=$(top_counter "$n2_sock" plaintext_refused)
	steered0=$(counter "$n2_sock" inbound_steered)
	rc=0
	out=$(in_pod n1 outside env -u http_proxy -u HTTP_PROXY -u all_proxy -u ALL_PROXY \
		curl -sS --max-time 3 "http://10.251.2.2:$svc_port/" 2>&1) || rc=$?
	echo "    ${out:-(no output)} (exit $rc)"
	((rc != 0)) || die "plaintext from outside the mesh reached the server: $out"
	wait_for 5 "agent n2 to count the refused plaintext" counter_above "$n2_sock" plaintext_refused "${plain0:-0}" ||
		die "curl failed but agent n2's plaintext_refused stayed at ${plain0:-missing}: it was not refused by mTLS STRICT"
	plain=$(top_counter "$n2_sock" plaintext_refused)
	steered=$(counter "$n2_sock" inbound_steered)
	echo "    refused (mtls: required): agent n2's sk_lookup took it (inbound_steered ${steered0:-0} -> ${steered:-missing}), plaintext_refused ${plain0:-0} -> $plain"
	echo "    agent n2: $(grep 'msg="plaintext refused (mtls: required)"' "$run_dir/n2/agent.log" | tail -n 1 | sed 's/^time=[^ ]* //')"

	echo
	say "OK: curl on n1 called http://$svc.svc/sms by name and got the answer from n2 through an HBONE tunnel, mutually authenticated ($client_id -> $notify_id); plaintext from outside the mesh was refused (STRICT)"
	echo "    logs: $run_dir/control.log $run_dir/n1/agent.log $run_dir/n2/agent.log"
	echo "    remove everything with: bash scripts/demo.sh down"
}

((EUID == 0)) || die "run as root (sudo bash scripts/demo.sh ${1:-up})"
case ${1:-} in
up) up ;;
down)
	down
	echo "demo: removed (netns hmsdemo-*, cgroups $cg_nodes, $cg_agents and $cg_control, /sys/fs/bpf/hmsdemo-*, $run_dir)"
	;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
