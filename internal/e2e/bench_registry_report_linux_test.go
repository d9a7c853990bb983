package e2e

import (
	"fmt"
	"io"
	"time"
)

// propResult is what BenchmarkPrivilegedPropagation measured, per round.
type propResult struct {
	apply, first, median, svc, flip []time.Duration
	svcMissed, flipMissed           int
}

func printPropagation(w io.Writer, r propResult) {
	fmt.Fprintf(w, "\nRegistry propagation: %d agents (registry.Client + Table + eBPF hash map each, own gRPC conn), %d rounds\n",
		propAgents, len(r.apply))
	fmt.Fprintf(w, "%-44s %9s %9s %9s %9s\n", "latency (ms)", "p50", "p90", "p99", "max")
	row := func(name string, ds []time.Duration) {
		s := statsOf(ds)
		fmt.Fprintf(w, "%-44s %9s %9s %9s %9s\n", name, ms(s.p50), ms(s.p90), ms(s.p99), ms(s.max))
	}
	row("Apply RPC (returns)", r.apply)
	row("new service -> first agent (map+table)", r.first)
	row("new service -> median agent", r.median)
	row("new service -> EVERY agent (round)", r.svc)
	row("health flip -> every other agent (Pick)", r.flip)
	svc, flip := statsOf(r.svc), statsOf(r.flip)
	fmt.Fprintf(w, "target p99 <= %s: new service %s (p99 %s ms, %d rounds timed out), health flip %s (p99 %s ms, %d timed out)\n",
		propTarget, passMiss(r.svcMissed == 0 && svc.p99 <= propTarget), ms(svc.p99), r.svcMissed,
		passMiss(r.flipMissed == 0 && flip.p99 <= propTarget), ms(flip.p99), r.flipMissed)
}

// scaleResult is what BenchmarkPrivilegedRegistryScale measured.
type scaleResult struct {
	services, instances           int
	applyTime, registerTime       time.Duration
	heapBefore, heapAfter         uint64
	etcdDB                        int64
	snapshotBytes                 int
	defaultLimitErr               string
	connectToFull, applySnapshot  time.Duration
	tableBytes                    int64
	lookupNs, pickNs, bothNs, par float64
	bothTargetNs                  float64 // LookupVIP + PickTarget + done
	parallelism, wave             int
}

func printScale(w io.Writer, r scaleResult) {
	perEP := float64(r.tableBytes) / float64(r.instances)
	fmt.Fprintf(w, "\nRegistry scale: %d services, %d instances (%d per service)\n", r.services, r.instances, r.instances/r.services)
	fmt.Fprintf(w, "%-58s %s\n", "measure", "value")
	row := func(k, v string) { fmt.Fprintf(w, "%-58s %s\n", k, v) }
	row("register services (Apply, batches of 500)", r.applyTime.Round(time.Millisecond).String())
	row(fmt.Sprintf("register instances (%d agent Hellos x %d, waves of %d)", scaleAgents, r.instances/scaleAgents, r.wave), r.registerTime.Round(time.Millisecond).String())
	row("process heap before (HeapInuse after GC)", mib(int64(r.heapBefore)))
	row("process heap after (control plane + etcd + streams)", fmt.Sprintf("%s (+%s, %.0f B/instance)",
		mib(int64(r.heapAfter)), mib(int64(r.heapAfter)-int64(r.heapBefore)),
		float64(int64(r.heapAfter)-int64(r.heapBefore))/float64(r.instances)))
	row("etcd db file (member/snap/db)", mib(r.etcdDB))
	row("snapshot message size (wire)", mib(int64(r.snapshotBytes)))
	if r.defaultLimitErr != "" {
		row("new agent, gRPC default 4 MiB recv limit", "FAILS: "+r.defaultLimitErr)
	} else {
		row("new agent, gRPC default 4 MiB recv limit", "ok")
	}
	row("new agent connect -> table has all endpoints", r.connectToFull.Round(time.Millisecond).String())
	row("  of which Table.ApplySnapshot", r.applySnapshot.Round(time.Millisecond).String())
	row("agent table memory per endpoint (target <= 1 KiB)", fmt.Sprintf("%.0f B (%s total) %s",
		perEP, mib(r.tableBytes), passMiss(perEP <= 1024)))
	row("LookupVIP (ns/op)", fmt.Sprintf("%.0f", r.lookupNs))
	row("Pick + done (ns/op)", fmt.Sprintf("%.0f", r.pickNs))
	row("LookupVIP + Pick + done (ns/op, target < 1 us)", fmt.Sprintf("%.0f %s", r.bothNs, passMiss(r.bothNs < 1000)))
	row("LookupVIP + PickTarget + done (ns/op, target < 1 us)", fmt.Sprintf("%.0f %s", r.bothTargetNs, passMiss(r.bothTargetNs < 1000)))
	row(fmt.Sprintf("LookupVIP + Pick + done, %d goroutines (ns/op each)", r.parallelism), fmt.Sprintf("%.0f", r.par))
	row("reference: 25,000 instances, lookups < 50 ms", fmt.Sprintf("here %dx the instances, lookup+pick %.0fx under 50 ms",
		r.instances/25000, float64(50*time.Millisecond)/r.bothNs))
}
