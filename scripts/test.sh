#!/usr/bin/env bash
# shellcheck disable=SC2317 # the check_* functions are called through step
# test.sh — everything CI checks, in one command (the README's test command):
#   deps → generated-code drift → go.mod tidiness → vet → gofmt →
#   unprivileged tests → privileged tests (as root only).
# Every step runs even when an earlier one failed, a summary closes the
# output, and the exit status is non-zero if any step failed.
#
# Environment: HMS_TEST_PRIVILEGED=0 skips the privileged run even as root;
# HMS_TEST_TIMEOUT (default 40m) bounds it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

# sudo's secure_path drops /usr/local/go/bin.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then
	export PATH=$PATH:/usr/local/go/bin
fi
export BPF2GO_CC=clang-19 BPF2GO_STRIP=llvm-strip-19

results=()
failed=0
started=$SECONDS

# step NAME CMD... runs CMD in a subshell with errexit in force (a subshell
# that is not an `if` condition keeps it), records PASS/FAIL and goes on.
step() {
	local name=$1 t0=$SECONDS rc
	shift
	printf '\n=== %s\n' "$name"
	set +e
	("$@")
	rc=$?
	set -e
	if ((rc == 0)); then
		results+=("PASS  $name ($((SECONDS - t0))s)")
	else
		results+=("FAIL  $name ($((SECONDS - t0))s, exit $rc)")
		failed=1
	fi
	return 0
}

skip() { results+=("SKIP  $1 — $2"); }

summary() {
	printf '\n=== summary (%ss)\n' "$((SECONDS - started))"
	printf '  %s\n' "${results[@]}"
	if ((failed)); then
		echo "test.sh: FAILED"
	else
		echo "test.sh: all steps passed"
	fi
}

# Regenerate the eBPF objects in a scratch copy of the tree and compare them
# with pkg/datapath here: the committed *_bpfel.{go,o} must be exactly what
# bpf/ compiles to. The checkout itself is never modified.
check_generate() {
	local tmp
	tmp=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $tmp now
	trap "rm -rf '$tmp'" EXIT
	if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
		git ls-files -z --cached --others --exclude-standard |
			tar --null -T - -cf - 2>/dev/null | tar -C "$tmp" -xf -
	else
		tar --exclude=./bin --exclude=./.git -cf - . | tar -C "$tmp" -xf -
	fi
	(cd "$tmp" && go generate ./pkg/datapath/ ./pkg/api/)
	if ! diff -r -q pkg/datapath "$tmp/pkg/datapath"; then
		echo "generated files drifted from bpf/: run 'make generate' and commit pkg/datapath" >&2
		return 1
	fi
	if ! diff -r -q pkg/api "$tmp/pkg/api"; then
		echo "generated files drifted from pkg/api/proto: run 'make generate' and commit pkg/api" >&2
		return 1
	fi
	# In CI the checkout is fresh: also insist nothing there is uncommitted.
	if [[ ${CI:-} == true ]] && git rev-parse --verify -q HEAD >/dev/null; then
		local dirty
		dirty=$(git status --porcelain -- pkg/datapath pkg/api)
		[[ -z $dirty ]] || { echo "uncommitted generated files:" >&2; echo "$dirty" >&2; return 1; }
	fi
}

check_tidy() {
	# -diff changes nothing and fails when go.mod/go.sum are not tidy.
	go mod tidy -diff || { echo "go.mod/go.sum are not tidy: run 'go mod tidy' and commit them" >&2; return 1; }
}

check_gofmt() {
	local out
	out=$(gofmt -l .)
	[[ -z $out ]] || { echo "not gofmt'ed (run gofmt -w):" >&2; echo "$out" >&2; return 1; }
}

ensure_bpffs() {
	if ! grep -qs ' /sys/fs/bpf bpf ' /proc/self/mounts; then
		mount -t bpf bpf /sys/fs/bpf
	fi
}

step "deps" bash "$repo/scripts/deps.sh"
if [[ ${results[-1]} == FAIL* ]]; then
	summary
	exit 1
fi
step "generate: pkg/datapath and pkg/api match their sources" check_generate
step "go mod tidy -diff" check_tidy
step "go vet ./..." go vet ./...
step "gofmt -l" check_gofmt
step "go test ./... (unprivileged)" env -u HMS_TEST_PRIVILEGED go test -count=1 ./...

if ((EUID != 0)); then
	skip "go test ./... (privileged)" "not root"
elif [[ ${HMS_TEST_PRIVILEGED:-1} == 0 ]]; then
	skip "go test ./... (privileged)" "HMS_TEST_PRIVILEGED=0"
else
	step "bpffs at /sys/fs/bpf" ensure_bpffs
	step "go test ./... (privileged, -p 1)" env HMS_TEST_PRIVILEGED=1 \
		go test -p 1 -count=1 -timeout "${HMS_TEST_TIMEOUT:-40m}" ./...
fi

summary
exit "$failed"
