package kube

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"
)

var bg = context.Background()

// The pod informer asks the API server for this node's pods only, and a
// pod of another node is never enrolled even if the API sends it.
func TestInformerIsRestrictedToTheNode(t *testing.T) {
	f := newFixture(t, namespace("shop", nil),
		pod("mine", node, "10.0.0.1", meshed("web"), 8080),
		pod("theirs", "node-b", "10.0.0.2", meshed("web"), 8080))
	f.netnsFile("mine", "10.0.0.1")
	f.netnsFile("theirs", "10.0.0.2")
	selectors := make(chan string, 10)
	f.client.PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		selectors <- a.(k8stesting.ListAction).GetListRestrictions().Fields.String()
		return false, nil, nil
	})
	f.start(Config{})
	if got := <-selectors; got != "spec.nodeName="+node {
		t.Fatalf("pods listed with field selector %q, want spec.nodeName=%s", got, node)
	}
	f.waitCalls("enroll mine shop/web [8080]")
}

// Pods that ran before the agent started are enrolled at start-up; those
// the agent already serves (restored or taken over) are not touched, so
// their connections go on; a pod outside the mesh stays out.
func TestStartupEnrollsExistingPodsAndLeavesEnrolledOnes(t *testing.T) {
	f := newFixture(t, namespace("shop", nil),
		pod("old", node, "10.0.0.1", meshed("web"), 8080),
		pod("served", node, "10.0.0.2", meshed("cart"), 7000),
		pod("plain", node, "10.0.0.3", nil, 80))
	f.netnsFile("old", "10.0.0.1")
	served := f.netnsFile("served", "10.0.0.2")
	f.netnsFile("plain", "10.0.0.3")
	// The predecessor enrolled "served" through the CNI plugin.
	if err := saveSandboxes(f.state, map[string]Sandbox{served: {UID: "uid-served", Name: "served", Namespace: "shop",
		Netns: served, Seen: time.Now().Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	f.enr.enrolled[served] = Enrollment{Service: "cart", Namespace: "shop", Ports: []uint16{7000}}
	f.start(Config{})
	f.waitCalls("enroll old shop/web [8080]")
	sbs, err := loadSandboxes(f.state)
	if err != nil || len(sbs) != 2 {
		t.Fatalf("persisted sandboxes %v, %v: want the discovered pod recorded beside the served one", sbs, err)
	}
}

// Label changes on a running pod, and on its namespace, move it in, out
// and between services.
func TestLabelChangesOnARunningPod(t *testing.T) {
	p := pod("web-1", node, "10.0.0.1", nil, 8080)
	f := newFixture(t, namespace("shop", nil), p)
	f.netnsFile("web-1", "10.0.0.1")
	f.start(Config{})
	update := func(labels map[string]string) {
		t.Helper()
		p = p.DeepCopy()
		p.Labels = labels
		if _, err := f.client.CoreV1().Pods("shop").Update(bg, p, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	nsLabels := func(labels map[string]string) {
		t.Helper()
		if _, err := f.client.CoreV1().Namespaces().Update(bg, namespace("shop", labels), metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	f.waitCalls() // not labelled: nothing
	update(meshed("web"))
	f.waitCalls("enroll web-1 shop/web [8080]")
	update(meshed("web-v2"))
	f.waitCalls("unenroll web-1", "enroll web-1 shop/web-v2 [8080]")
	update(map[string]string{LabelService: "web-v2"}) // mesh label removed
	f.waitCalls("unenroll web-1")
	nsLabels(map[string]string{LabelMesh: "enabled"}) // the namespace brings it back
	f.waitCalls("enroll web-1 shop/web-v2 [8080]")
	update(map[string]string{LabelService: "web-v2", LabelMesh: "disabled"})
	f.waitCalls("unenroll web-1")
}

// A pod deleted while the agent was down (its DEL never reached the
// agent) is unenrolled and forgotten when the agent starts.
func TestPodDeletedWhileTheAgentWasDown(t *testing.T) {
	f := newFixture(t, namespace("shop", nil))
	gone := f.netnsFile("gone", "10.0.0.9")
	if err := saveSandboxes(f.state, map[string]Sandbox{gone: {UID: "uid-gone", Name: "gone", Namespace: "shop",
		Netns: gone, Seen: time.Now().Add(-time.Hour)}}); err != nil {
		t.Fatal(err)
	}
	f.enr.enrolled[gone] = Enrollment{Service: "web", Namespace: "shop"} // restored from the agent's state
	f.start(Config{})
	f.waitCalls("unenroll gone")
	if sbs, _ := loadSandboxes(f.state); len(sbs) != 0 {
		t.Fatalf("sandboxes after the pod's deletion: %v", sbs)
	}
}

// A pod deleted while the agent runs leaves the mesh.
func TestPodDeletedWhileRunning(t *testing.T) {
	f := newFixture(t, namespace("shop", nil), pod("web-1", node, "10.0.0.1", meshed("web"), 8080))
	f.netnsFile("web-1", "10.0.0.1")
	f.start(Config{Grace: time.Millisecond})
	f.waitCalls("enroll web-1 shop/web [8080]")
	if err := f.client.CoreV1().Pods("shop").Delete(bg, "web-1", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitCalls("unenroll web-1")
}

// A pod whose netns disappeared without a DEL is dropped.
func TestNetnsGoneWithoutDel(t *testing.T) {
	f := newFixture(t, namespace("shop", nil), pod("web-1", node, "10.0.0.1", meshed("web"), 8080))
	path := f.netnsFile("web-1", "10.0.0.1")
	f.start(Config{})
	f.waitCalls("enroll web-1 shop/web [8080]")
	os.Remove(path)
	delete(f.byIP, mustAddr("10.0.0.1"))
	f.rec.Reconcile()
	f.waitCalls("unenroll web-1")
}

// CNI ADD decides at once when the informer knows the pod, and waits for
// it (up to AddWait) when it lags; DEL unenrolls; CHECK finds breakage.
func TestCNIAddDelCheck(t *testing.T) {
	f := newFixture(t, namespace("shop", map[string]string{LabelMesh: "enabled"}))
	f.start(Config{AddWait: 2 * time.Second})
	path := f.netnsFile("web-1", "10.0.0.1")
	sb := Sandbox{UID: "uid-web-1", Name: "web-1", Namespace: "shop", ContainerID: "c1", Netns: path}
	go func() { // the pod reaches the informer after the runtime's ADD
		time.Sleep(200 * time.Millisecond)
		f.client.CoreV1().Pods("shop").Create(bg, pod("web-1", node, "10.0.0.1", map[string]string{"app": "web"}, 8080), metav1.CreateOptions{})
	}()
	want, enrolled, err := f.rec.Add(sb)
	if err != nil || !enrolled || !want.Member || want.Service != "web" {
		t.Fatalf("ADD: %+v enrolled=%v err=%v", want, enrolled, err)
	}
	f.waitCalls("enroll web-1 shop/web [8080]")
	if _, err := f.rec.Check(sb); err != nil {
		t.Fatalf("CHECK of a good enrollment: %v", err)
	}
	f.enr.verifyErr = errString("sk_lookup link gone")
	if _, err := f.rec.Check(sb); err == nil || !strings.Contains(err.Error(), "sk_lookup") {
		t.Fatalf("CHECK with the datapath broken: %v", err)
	}
	f.enr.verifyErr = nil
	f.enr.Unenroll(path) // behind the reconciler's back
	f.enr.takeCalls()
	if _, err := f.rec.Check(sb); err == nil || !strings.Contains(err.Error(), "not enrolled") {
		t.Fatalf("CHECK of a pod that should be enrolled but is not: %v", err)
	}
	f.enr.Enroll(path, "web", "shop", []uint16{8080})
	f.enr.takeCalls()
	if err := f.rec.Del(Sandbox{ContainerID: "c1"}); err != nil { // DEL may come without a netns
		t.Fatal(err)
	}
	f.waitCalls("unenroll web-1")
	if err := f.rec.Del(sb); err != nil {
		t.Fatalf("a second DEL must succeed: %v", err)
	}
}

// An ADD for a pod the informer never shows returns in time, and the pod
// is enrolled once it appears.
func TestCNIAddBeforeThePodIsKnown(t *testing.T) {
	f := newFixture(t, namespace("shop", nil))
	f.start(Config{AddWait: 100 * time.Millisecond})
	path := f.netnsFile("late", "10.0.0.5")
	start := time.Now()
	want, enrolled, err := f.rec.Add(Sandbox{UID: "uid-late", Name: "late", Namespace: "shop", Netns: path})
	if err != nil || enrolled || want.Member || want.Reason == "" || time.Since(start) > 2*time.Second {
		t.Fatalf("ADD of an unknown pod: %+v %v %v after %s", want, enrolled, err, time.Since(start))
	}
	f.client.CoreV1().Pods("shop").Create(bg, pod("late", node, "10.0.0.5", meshed("late"), 9000), metav1.CreateOptions{})
	f.waitCalls("enroll late shop/late [9000]")
}

// Without a Kubernetes API the CNI arguments decide, and the sandboxes
// survive a restart of the reconciler.
func TestCNIArgumentsWithoutKubernetes(t *testing.T) {
	f := newFixture(t)
	enr, state := f.enr, f.state
	rec, err := New(Config{Enroller: enr, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	path := f.netnsFile("plain", "10.0.0.7")
	want, enrolled, err := rec.Add(Sandbox{ContainerID: "c7", Netns: path, Service: "echo", Ports: []uint16{7000}})
	if err != nil || !enrolled || want.Namespace != "default" {
		t.Fatalf("ADD: %+v %v %v", want, enrolled, err)
	}
	other := f.netnsFile("other", "10.0.0.8")
	if want, enrolled, _ := rec.Add(Sandbox{ContainerID: "c8", Netns: other}); want.Member || enrolled {
		t.Fatalf("a pod without HMS_SERVICE was enrolled: %+v", want)
	}
	rec2, err := New(Config{Enroller: enr, StateDir: state})
	if err != nil {
		t.Fatal(err)
	}
	enr.takeCalls()
	rec2.Reconcile()
	if c := enr.takeCalls(); len(c) != 0 {
		t.Fatalf("a restarted reconciler changed served pods: %v", c)
	}
	if _, err := rec2.Check(Sandbox{ContainerID: "c7"}); err != nil {
		t.Fatalf("CHECK after restart: %v", err)
	}
}

type errString string

func (e errString) Error() string { return string(e) }
