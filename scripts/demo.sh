#!/usr/bin/env bash
# demo.sh up|down — hms-node on one machine, in namespaces of its own.
#
# up: builds bin/, makes a node netns with a bridge (10.251.1.1/24) and two
# pods on it (hmsdemo-client 10.251.1.2, hmsdemo-server 10.251.1.3), each
# with a cgroup v2 dir under the node's, starts the agent (root netns) and an
# HTTP server in the server pod, enrolls both pods, then runs an unmodified
# curl in the client pod. Its connection is rewritten by the agent's
# cgroup/connect4 program into the agent's in-pod listener; `status` shows the
# `redirected` counter that proves it.
#
# down: removes all of it; safe to run twice or after a failed up.
#
# Traffic stays inside these namespaces: pods have no default route and
# blackhole the VIP range; nothing is added to the root netns.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

readonly run_dir=/tmp/hmsdemo
readonly bpffs=/sys/fs/bpf/hmsdemo
readonly sock=$run_dir/agent.sock
readonly metrics=127.0.0.1:15920
readonly node_ns=hmsdemo-node client_ns=hmsdemo-client server_ns=hmsdemo-server
readonly bridge=br0 gw=10.251.1.1 client_ip=10.251.1.2 server_ip=10.251.1.3
readonly pod_range=10.251.0.0/16 vip_range=240.240.0.0/16
readonly server_port=8080
hms=$repo/bin/hms-node
testapp=$repo/bin/hms-testapp

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
readonly cg_node=$cg2/hmsdemo          # --cgroup-root: the node; pods below it
readonly cg_agent=$cg2/hmsdemo-agent   # the agent's own, outside the node's

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

# in_pod POD CMD... runs CMD in the foreground in the pod's cgroup and netns.
in_pod() {
	local pod=$1
	shift
	sh -c 'echo $$ >"$1/cgroup.procs" || exit 1; ns=$2; shift 2; exec nsenter --net="$ns" -- "$@"' \
		sh "$cg_node/$pod" "/run/netns/hmsdemo-$pod" "$@"
}

# wait_for SECONDS WHAT CMD... polls CMD every 0.1s.
wait_for() {
	local deadline=$((SECONDS + $1)) what=$2
	shift 2
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || { echo "demo: timed out waiting for $what" >&2; return 1; }
		sleep 0.1
	done
}

agent_ready() {
	[[ -S $sock ]] &&
		"$hms" status --socket "$sock" >/dev/null 2>&1 &&
		curl -sf --noproxy '*' --max-time 2 "http://$metrics/readyz" >/dev/null 2>&1
}

alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

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
	local rc=0 ns
	# Pods first (nothing of theirs needs a goodbye), then the agent, which
	# gets SIGTERM and time to shut down.
	stop_cgroup "$cg_node" 2
	stop_cgroup "$cg_agent" 15
	if [[ -d $bpffs ]]; then
		if [[ -x $hms ]]; then
			"$hms" agent --cleanup --bpffs "$bpffs" >/dev/null || rc=1
		fi
		# Whatever the cleanup left (or all of it, without a binary): pins
		# are files, and unlinking the last one detaches a link.
		rm -rf "$bpffs" || rc=1
	fi
	for ns in $(ip netns list 2>/dev/null | awk '$1 ~ /^hmsdemo-/ {print $1}'); do
		ip netns del "$ns" || rc=1
	done
	rm_cgroup "$cg_node" || rc=1
	rm_cgroup "$cg_agent" || rc=1
	rm -rf "$run_dir"
	return "$rc"
}

add_netns() {
	ip netns add "$1"
	ip -n "$1" link set lo up
	ip -n "$1" route replace blackhole "$vip_range"
}

add_pod() {
	local pod=$1 addr=$2 ns=hmsdemo-$1
	add_netns "$ns"
	# Both veth ends are created in their own namespaces: nothing appears in
	# the root netns, even for a moment.
	ip -n "$node_ns" link add "veth-$pod" type veth peer name eth0 netns "$ns"
	ip -n "$node_ns" link set "veth-$pod" master "$bridge" up
	ip -n "$ns" addr add "$addr/24" dev eth0
	ip -n "$ns" link set eth0 up
	ip -n "$ns" route add "$pod_range" via "$gw" dev eth0
	mkdir "$cg_node/$pod"
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
	echo >&2
	echo "demo: up failed. Logs: $run_dir/*.log. Last agent log lines:" >&2
	tail -n 20 "$run_dir/agent.log" >&2 2>/dev/null || true
	echo "demo: clean up with: bash scripts/demo.sh down" >&2
}

up() {
	say "dependencies (scripts/deps.sh)"
	bash "$repo/scripts/deps.sh"
	if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
		export PATH=$PATH:/usr/local/go/bin
	fi

	say "building bin/hms-node and bin/hms-testapp"
	build

	say "clearing leftovers of an earlier demo"
	down

	# From here on a failure (set -e or die) explains itself on the way out.
	trap 'rc=$?; ((rc == 0)) || on_up_error' EXIT
	if ! grep -qs ' /sys/fs/bpf bpf ' /proc/self/mounts; then
		mount -t bpf bpf /sys/fs/bpf
	fi
	mkdir -p "$run_dir/state"

	say "topology: node netns $node_ns (bridge $gw/24), pods $client_ns ($client_ip) and $server_ns ($server_ip)"
	mkdir "$cg_node" "$cg_agent"
	add_netns "$node_ns"
	ip -n "$node_ns" link add "$bridge" type bridge
	ip -n "$node_ns" addr add "$gw/24" dev "$bridge"
	ip -n "$node_ns" link set "$bridge" up
	add_pod client "$client_ip"
	add_pod server "$server_ip"
	echo "    cgroups: $cg_node/{client,server}, agent in $cg_agent"

	say "starting the agent (log: $run_dir/agent.log)"
	spawn "$cg_agent" "$run_dir/agent.pid" "" "$hms" agent \
		--node demo-node --cgroup-root "$cg_node" --bpffs "$bpffs" \
		--state-dir "$run_dir/state" --socket "$sock" --metrics-addr "$metrics" \
		>"$run_dir/agent.log" 2>&1
	wait_for 5 "agent pid file" test -s "$run_dir/agent.pid"
	# Ready = the local API answers and /readyz says so; an agent that dies
	# while starting (a port in use, no BPF) fails the demo at once.
	local deadline=$((SECONDS + 30))
	until agent_ready; do
		if ! alive "$run_dir/agent.pid"; then
			sleep 0.2 # let its last words reach the log
			die "the agent exited while starting"
		fi
		((SECONDS < deadline)) || die "the agent was not ready within 30s; see $run_dir/agent.log"
		sleep 0.1
	done

	say "starting the HTTP server in $server_ns (:$server_port)"
	spawn "$cg_node/server" "$run_dir/server.pid" "/run/netns/$server_ns" \
		"$testapp" http --addr ":$server_port" --body "hello from the server pod" \
		>"$run_dir/server.log" 2>&1
	wait_for 10 "the server to listen" \
		sh -c "nsenter --net=/run/netns/$server_ns -- ss -Htln 'sport = :$server_port' | grep -q ."

	say "enrolling the pods"
	"$hms" enroll --socket "$sock" --netns "/run/netns/$client_ns" --service client
	"$hms" enroll --socket "$sock" --netns "/run/netns/$server_ns" --service server --port "$server_port"

	say "in $client_ns: curl -sS --max-time 5 http://$server_ip:$server_port/hello"
	local out
	# Proxy variables are dropped so curl dials the server itself, as an
	# application in a pod would.
	out=$(in_pod client env -u http_proxy -u HTTP_PROXY -u all_proxy -u ALL_PROXY \
		curl -sS --max-time 5 "http://$server_ip:$server_port/hello")
	echo "$out"

	say "bin/hms-node status --socket $sock"
	"$hms" status --socket "$sock"

	local redirected
	redirected=$("$hms" status --socket "$sock" -o json |
		sed -n 's/.*"redirected": *\([0-9][0-9]*\).*/\1/p' | head -n 1)
	[[ $out == *"hello from the server pod"* ]] || die "unexpected response from the server: $out"
	((${redirected:-0} >= 1)) || die "curl answered but the redirected counter is ${redirected:-missing}: the connection was not intercepted"
	echo
	say "OK: curl's connection was intercepted by the agent (redirected=$redirected)"
	echo "    agent log: $run_dir/agent.log   metrics: http://$metrics/metrics"
	echo "    remove everything with: bash scripts/demo.sh down"
}

((EUID == 0)) || die "run as root (sudo bash scripts/demo.sh ${1:-up})"
case ${1:-} in
up) up ;;
down)
	down
	echo "demo: removed (netns hmsdemo-*, cgroups $cg_node and $cg_agent, $bpffs, $run_dir)"
	;;
*)
	echo "usage: $0 up|down" >&2
	exit 2
	;;
esac
