package kube

import (
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestDecide(t *testing.T) {
	on := namespace("shop", map[string]string{LabelMesh: "enabled", LabelService: "shop-default"})
	off := namespace("shop", nil)
	withAnn := pod("p", node, "10.0.0.1", meshed("web"), 8080)
	withAnn.Annotations = map[string]string{AnnotationPorts: "9090, 7000,9090"}
	hostNet := pod("p", node, "10.0.0.1", meshed("web"))
	hostNet.Spec.HostNetwork = true
	done := pod("p", node, "10.0.0.1", meshed("web"))
	done.Status.Phase = corev1.PodSucceeded
	udp := pod("p", node, "10.0.0.1", meshed("web"), 8080)
	udp.Spec.Containers[0].Ports = append(udp.Spec.Containers[0].Ports, corev1.ContainerPort{ContainerPort: 53, Protocol: corev1.ProtocolUDP})
	for _, c := range []struct {
		name string
		pod  *corev1.Pod
		ns   *corev1.Namespace
		want string
	}{
		{"pod labels", pod("p", node, "10.0.0.1", meshed("web"), 8080, 8443), off, "member shop/web [8080 8443]"},
		{"namespace enables, pod names the service", pod("p", node, "", map[string]string{LabelService: "web"}, 80), on, "member shop/web [80]"},
		{"namespace enables and names the service", pod("p", node, "", nil), on, "member shop/shop-default []"},
		{"app label names the service", pod("p", node, "", map[string]string{LabelMesh: "enabled", "app": "cart"}), off, "member shop/cart []"},
		{"pod opts out of a meshed namespace", pod("p", node, "", map[string]string{LabelMesh: "disabled"}), on, "out"},
		{"no labels anywhere", pod("p", node, "", nil), off, "out"},
		{"namespace unknown", pod("p", node, "", nil), nil, "out"},
		{"meshed without a service name", pod("p", node, "", map[string]string{LabelMesh: "enabled"}), off, "out"},
		{"service label alone is not membership", pod("p", node, "", map[string]string{LabelService: "web"}), off, "out"},
		{"ports annotation", withAnn, off, "member shop/web [7000 9090]"},
		{"UDP ports are not service ports", udp, off, "member shop/web [8080]"},
		{"host network", hostNet, on, "out"},
		{"finished pod", done, on, "out"},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := Decide(c.pod, c.ns)
			got := "out"
			if w.Member {
				got = fmt.Sprintf("member %s/%s %v", w.Namespace, w.Service, w.Ports)
			} else if w.Reason == "" {
				t.Errorf("a pod left out must say why")
			}
			if got != c.want {
				t.Errorf("got %q, want %q (reason %q)", got, c.want, w.Reason)
			}
		})
	}
}

func TestSameIgnoresPortOrderButNotDegradation(t *testing.T) {
	w := Want{Member: true, Service: "web", Namespace: "shop", Ports: []uint16{80, 443}}
	if !w.same(Enrollment{Service: "web", Namespace: "shop", Ports: []uint16{443, 80}}) {
		t.Error("same ports in another order must match")
	}
	for _, e := range []Enrollment{
		{Service: "web", Namespace: "shop", Ports: []uint16{80}},
		{Service: "api", Namespace: "shop", Ports: []uint16{80, 443}},
		{Service: "web", Namespace: "other", Ports: []uint16{80, 443}},
		{Service: "web", Namespace: "shop", Ports: []uint16{80, 443}, Degraded: true},
	} {
		if w.same(e) {
			t.Errorf("%+v matched %+v", e, w)
		}
	}
}
