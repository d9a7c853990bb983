package kube

import (
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Labels and annotations that put a pod into the mesh.
const (
	// LabelMesh set to "enabled" on a pod or its namespace puts the pod
	// in the mesh; "disabled" on the pod keeps it out whatever its
	// namespace says.
	LabelMesh = "hms.dev/mesh"
	// LabelService names the service the pod is an instance of; on the
	// pod, else on its namespace, else the pod's app.kubernetes.io/name
	// or app label.
	LabelService = "hms.dev/service"
	// AnnotationPorts overrides the service ports ("8080,9090"); default
	// the TCP container ports of the pod.
	AnnotationPorts = "hms.dev/ports"
)

// Want is the membership decision for one pod.
type Want struct {
	Member    bool
	Service   string
	Namespace string
	Ports     []uint16
	// Reason says why a pod is out, for logs and CNI replies.
	Reason string
}

// Decide applies the labels of pod and its namespace (nil when unknown).
func Decide(pod *corev1.Pod, ns *corev1.Namespace) Want {
	var nsLabels map[string]string
	if ns != nil {
		nsLabels = ns.Labels
	}
	switch {
	case pod.Spec.HostNetwork:
		return Want{Reason: "host-network pods share the node's network namespace"}
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return Want{Reason: "pod has finished (" + string(pod.Status.Phase) + ")"}
	}
	mesh, onPod := pod.Labels[LabelMesh]
	if !onPod {
		mesh = nsLabels[LabelMesh]
	}
	switch {
	case onPod && mesh != "enabled":
		return Want{Reason: "the pod is labelled " + LabelMesh + "=" + mesh}
	case mesh != "enabled":
		return Want{Reason: "neither the pod nor its namespace is labelled " + LabelMesh + "=enabled"}
	}
	svc := firstOf(pod.Labels[LabelService], nsLabels[LabelService],
		pod.Labels["app.kubernetes.io/name"], pod.Labels["app"])
	if svc == "" {
		return Want{Reason: "in the mesh but no service name: label the pod " + LabelService + "=NAME"}
	}
	return Want{Member: true, Service: svc, Namespace: pod.Namespace, Ports: podPorts(pod)}
}

func firstOf(vals ...string) string {
	for _, v := range vals {
		if v != "" {
			return v
		}
	}
	return ""
}

// podPorts are the annotation's ports, else the pod's TCP container ports.
func podPorts(pod *corev1.Pod) []uint16 {
	var ports []uint16
	if a, ok := pod.Annotations[AnnotationPorts]; ok {
		for _, f := range strings.Split(a, ",") {
			if n, err := strconv.ParseUint(strings.TrimSpace(f), 10, 16); err == nil && n > 0 {
				ports = append(ports, uint16(n))
			}
		}
		return sortedPorts(ports)
	}
	for _, c := range pod.Spec.Containers {
		for _, p := range c.Ports {
			if (p.Protocol == "" || p.Protocol == corev1.ProtocolTCP) && p.ContainerPort > 0 && p.ContainerPort < 65536 {
				ports = append(ports, uint16(p.ContainerPort))
			}
		}
	}
	return sortedPorts(ports)
}

// sortedPorts returns ports sorted, without duplicates, never nil.
func sortedPorts(ports []uint16) []uint16 {
	out := make([]uint16, 0, len(ports))
	seen := map[uint16]bool{}
	for _, p := range ports {
		if !seen[p] {
			seen[p] = true
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// same reports whether an enrollment already matches a decision, so a
// reconcile leaves it (and its connections) alone.
func (w Want) same(e Enrollment) bool {
	ports := sortedPorts(e.Ports)
	if e.Degraded || e.Service != w.Service || e.Namespace != w.Namespace || len(ports) != len(w.Ports) {
		return false
	}
	for i := range ports {
		if ports[i] != w.Ports[i] {
			return false
		}
	}
	return true
}
