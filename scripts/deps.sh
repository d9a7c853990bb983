#!/usr/bin/env bash
# deps.sh — install what building, testing and demoing hms-node needs on a
# Debian 12 machine, idempotently: the Debian packages below (only those
# missing, so a machine that has them all skips apt entirely) and the Go
# modules. Go itself (the version go.mod names) is expected at
# /usr/local/go or on PATH.
#
# Runs unattended: as root, with no stdin, with CI=true.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'deps: %s\n' "$*" >&2; }
die() { printf 'deps: FAIL: %s\n' "$*" >&2; exit 1; }

# Debian package → a file or command that proves it is installed. Checking a
# probe per package (not one command for all) means a machine with clang-19
# but without llvm-strip-19 still gets llvm-19.
declare -A probe=(
	[clang-19]=clang-19              # compiles bpf/*.c (bpf2go -cc)
	[llvm-19]=llvm-strip-19          # strips the objects (bpf2go -strip)
	[libbpf-dev]=/usr/include/bpf/bpf_helpers.h
	[bpftool]=bpftool                # inspecting programs, maps, links
	[iproute2]=ip                    # netns, veth, bridges, routes (+ ss)
	[util-linux]=nsenter             # entering pod netns without remounting /sys
	[procps]=pgrep
	[curl]=curl                      # the demo's unmodified client
	[git]=git                        # version stamping, drift checks
	[make]=make                      # the Makefile
	[ca-certificates]=/etc/ssl/certs/ca-certificates.crt # go mod download
	[protobuf-compiler]=protoc       # pkg/api drift check (go generate ./pkg/api/)
	[etcd-server]=/usr/bin/etcd      # the 3-member cluster test (pkg/control)
	[tshark]=tshark                  # the wire test: only TLS 1.3 crosses between nodes
	[haproxy]=haproxy                # the sidecar baseline of the mTLS benchmark
	[prometheus]=prometheus          # the metrics test scrapes the agents with a real Prometheus (+ promtool)
	[chromium]=chromium              # the dashboard test drives a headless browser
	[podman]=podman                  # the container-image test runs the agent image
	[buildah]=buildah                # make image: builds the OCI image without a daemon
	[containernetworking-plugins]=/usr/lib/cni/bridge # the CNI test chains our plugin after bridge + host-local
	[runc]=runc                      # the image test's OCI runtime: crun refuses hybrid cgroup hosts
)

present() {
	case $1 in
	/*) [[ -e $1 ]] ;;
	*) command -v "$1" >/dev/null 2>&1 ;;
	esac
}

missing=()
for pkg in "${!probe[@]}"; do
	present "${probe[$pkg]}" || missing+=("$pkg")
done

if ((${#missing[@]} == 0)); then
	log "Debian packages: all present"
else
	((EUID == 0)) || die "missing ${missing[*]}; run as root (sudo bash scripts/deps.sh)"
	command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install them by hand"
	log "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get -o DPkg::Lock::Timeout=300 update </dev/null
	apt-get install -y -o DPkg::Lock::Timeout=300 "${missing[@]}" </dev/null
	for pkg in "${missing[@]}"; do
		present "${probe[$pkg]}" || die "$pkg installed but ${probe[$pkg]} is still missing"
	done
fi

# Go: sudo's secure_path drops /usr/local/go/bin, so look there too.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=$PATH:/usr/local/go/bin
fi
command -v go >/dev/null 2>&1 ||
	die "no go on PATH or in /usr/local/go: install Go $(awk '$1=="go"{print $2}' "$repo/go.mod") from the official tarball"

cd "$repo"
log "go modules ($(go env GOVERSION))"
go mod download

# Tools installed with `go install`, each pinned to a version (bpf2go is a
# go.mod tool, run with `go tool`). cnitool drives CNI plugins by hand
# (docs/kubernetes.md); the CNI test installs its own copy, same version.
log "cnitool"
go install github.com/containernetworking/cni/cnitool@v1.3.0

log "OK"
