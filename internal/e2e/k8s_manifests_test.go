package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/kustomize/api/krusty"
	ktypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"
)

// deployDir is the kustomize base, relative to this package.
const deployDir = "../../deploy/daemonset"

// agentCaps are the capabilities the agent needs, no more: the DaemonSet
// must list exactly these, and TestPrivilegedImageRunsAsTheDaemonSetSays
// shows that the agent works with them and fails without any one.
var agentCaps = []corev1.Capability{"BPF", "NET_ADMIN", "SYS_ADMIN"}

// newObject returns the k8s.io/api type of each kind the base may hold.
func newObject(kind string) (any, bool) {
	switch kind {
	case "Namespace":
		return &corev1.Namespace{}, true
	case "ServiceAccount":
		return &corev1.ServiceAccount{}, true
	case "ConfigMap":
		return &corev1.ConfigMap{}, true
	case "Secret":
		return &corev1.Secret{}, true
	case "Service":
		return &corev1.Service{}, true
	case "DaemonSet":
		return &appsv1.DaemonSet{}, true
	case "StatefulSet":
		return &appsv1.StatefulSet{}, true
	case "ClusterRole":
		return &rbacv1.ClusterRole{}, true
	case "ClusterRoleBinding":
		return &rbacv1.ClusterRoleBinding{}, true
	}
	return nil, false
}

// decodeStrict decodes one YAML document into the type of its kind;
// unknown or duplicate fields are errors.
func decodeStrict(doc []byte) (any, error) {
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &head); err != nil {
		return nil, err
	}
	var obj any
	if head.Kind == "Kustomization" {
		obj = &ktypes.Kustomization{}
	} else if o, ok := newObject(head.Kind); ok {
		obj = o
	} else {
		return nil, fmt.Errorf("kind %q (%s) is not one the base may hold", head.Kind, head.APIVersion)
	}
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", head.Kind, err)
	}
	return obj, nil
}

func splitDocs(b []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// manifestObjects decodes every YAML file under deploy/daemonset.
func manifestObjects(t testing.TB) map[string][]any {
	t.Helper()
	out := map[string][]any{}
	err := filepath.Walk(deployDir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() || !strings.HasSuffix(path, ".yaml") {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for i, doc := range splitDocs(b) {
			obj, err := decodeStrict(doc)
			if err != nil {
				return fmt.Errorf("%s, document %d: %w", path, i+1, err)
			}
			out[path] = append(out[path], obj)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestK8sManifestsDecodeStrictly(t *testing.T) {
	files := manifestObjects(t)
	if len(files) < 10 {
		t.Fatalf("only %d manifest files found under %s", len(files), deployDir)
	}
	// Strictness itself: a misspelt field is refused.
	bad := []byte("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: x}\nspec:\n  updateStrategy: {rollingUpdate: {maxSurj: 1}}\n")
	if _, err := decodeStrict(bad); err == nil || !strings.Contains(err.Error(), "maxSurj") {
		t.Fatalf("a misspelt field decoded: %v", err)
	}
}

// render runs kustomize (the Go library kubectl embeds) over dir.
func render(t testing.TB, dir string) map[string]any {
	t.Helper()
	res, err := krusty.MakeKustomizer(krusty.MakeDefaultOptions()).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	out := map[string]any{}
	for _, r := range res.Resources() {
		b, err := r.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decodeStrict(b)
		if err != nil {
			t.Fatalf("rendered %s/%s: %v", r.GetKind(), r.GetName(), err)
		}
		if ns := r.GetNamespace(); ns != "" && ns != "hms-system" {
			t.Errorf("%s/%s rendered into namespace %s", r.GetKind(), r.GetName(), ns)
		}
		out[r.GetKind()+"/"+r.GetName()] = obj
	}
	return out
}

func TestK8sKustomizeBuildRendersTheBase(t *testing.T) {
	got := render(t, deployDir)
	var names []string
	for k := range got {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, want := range []string{"Namespace/hms-system", "DaemonSet/hms-agent", "StatefulSet/hms-control",
		"Service/hms-control", "Service/hms-control-http", "ServiceAccount/hms-agent", "ServiceAccount/hms-control",
		"ClusterRole/hms-agent", "ClusterRoleBinding/hms-agent", "ClusterRole/hms-control", "ClusterRoleBinding/hms-control",
		"ConfigMap/hms-agent", "ConfigMap/hms-control", "Secret/hms-join-tokens"} {
		if _, ok := got[want]; !ok {
			t.Errorf("kustomize build lacks %s; it rendered %v", want, names)
		}
	}
	ds := got["DaemonSet/hms-agent"].(*appsv1.DaemonSet)
	for _, c := range append(ds.Spec.Template.Spec.InitContainers, ds.Spec.Template.Spec.Containers...) {
		if c.Image != "localhost/hms-node:latest" {
			t.Errorf("container %s image %q: the kustomization's images: did not apply", c.Name, c.Image)
		}
	}
	cleanup := render(t, filepath.Join(deployDir, "uninstall"))
	if _, ok := cleanup["DaemonSet/hms-cleanup"]; !ok {
		t.Errorf("the uninstall kustomization rendered %v", cleanup)
	}
	// The observability work's dashboards ship with the base, as a
	// ConfigMap holding each file (deploy/grafana's own kustomization).
	for _, g := range grafanaDashboards() {
		found := false
		for _, obj := range got {
			if cm, ok := obj.(*corev1.ConfigMap); ok && cm.Data[filepath.Base(g)] != "" {
				found = true
			}
		}
		if !found {
			t.Errorf("%s is in no ConfigMap of the base: add ../grafana to its resources", g)
		}
	}
}

func grafanaDashboards() []string {
	m, _ := filepath.Glob(filepath.Join(deployDir, "..", "grafana", "*.json"))
	return m
}

// agentDaemonSet is the rendered agent DaemonSet and its flags ConfigMap.
func agentDaemonSet(t testing.TB) (*appsv1.DaemonSet, *corev1.ConfigMap) {
	t.Helper()
	got := render(t, deployDir)
	return got["DaemonSet/hms-agent"].(*appsv1.DaemonSet), got["ConfigMap/hms-agent"].(*corev1.ConfigMap)
}

func container(t testing.TB, cs []corev1.Container, name string) corev1.Container {
	t.Helper()
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// expandArgs expands $(VAR) as the kubelet does, from the container's env
// (literal values and fieldRefs given in fields) and its ConfigMap.
func expandArgs(c corev1.Container, cm *corev1.ConfigMap, fields map[string]string) ([]string, error) {
	env := map[string]string{}
	for k, v := range cm.Data {
		env[k] = v
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.FieldRef != nil:
			env[e.Name] = fields[e.ValueFrom.FieldRef.FieldPath]
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		}
	}
	var out []string
	var missing error
	re := regexp.MustCompile(`\$\(([A-Z_]+)\)`)
	for _, a := range append(append([]string{}, c.Command[1:]...), c.Args...) {
		out = append(out, re.ReplaceAllStringFunc(a, func(m string) string {
			v, ok := env[m[2:len(m)-1]]
			if !ok {
				missing = fmt.Errorf("%s: no such variable", m)
			}
			return v
		}))
	}
	return out, missing
}

func hasArg(args []string, prefix string) bool {
	for _, a := range args {
		if strings.HasPrefix(a, prefix) {
			return true
		}
	}
	return false
}

func TestK8sAgentDaemonSetContract(t *testing.T) {
	ds, cm := agentDaemonSet(t)
	spec := ds.Spec.Template.Spec
	agent := container(t, spec.Containers, "agent")
	sc := agent.SecurityContext
	if sc == nil || sc.Capabilities == nil || sc.Privileged != nil && *sc.Privileged {
		t.Fatalf("agent security context %+v: want named capabilities, not privileged", sc)
	}
	if fmt.Sprint(sc.Capabilities.Drop) != "[ALL]" || fmt.Sprint(sc.Capabilities.Add) != fmt.Sprint(agentCaps) {
		t.Errorf("capabilities drop %v add %v; want drop [ALL] add %v", sc.Capabilities.Drop, sc.Capabilities.Add, agentCaps)
	}
	if p := spec.SecurityContext; p == nil || p.SeccompProfile == nil || p.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod seccomp profile %+v: want RuntimeDefault, set explicitly", p)
	}
	if !spec.HostNetwork || spec.PriorityClassName != "system-node-critical" || len(spec.Tolerations) != 1 ||
		spec.Tolerations[0].Operator != corev1.TolerationOpExists || spec.Tolerations[0].Key != "" {
		t.Errorf("hostNetwork %v, priority %q, tolerations %+v", spec.HostNetwork, spec.PriorityClassName, spec.Tolerations)
	}
	ru := ds.Spec.UpdateStrategy.RollingUpdate
	if ru == nil || ru.MaxSurge.String() != "1" || ru.MaxUnavailable.String() != "0" {
		t.Errorf("rolling update %+v: want maxSurge 1, maxUnavailable 0", ru)
	}
	if len(agent.Ports) != 0 {
		t.Errorf("container ports %v would be hostPorts and block the surge pod", agent.Ports)
	}
	for name, p := range map[string]*corev1.Probe{"readiness": agent.ReadinessProbe, "liveness": agent.LivenessProbe} {
		if p == nil || p.HTTPGet == nil || p.HTTPGet.Host != "127.0.0.1" || p.HTTPGet.Port.IntValue() != 15020 {
			t.Errorf("%s probe %+v: want HTTP on 127.0.0.1:15020", name, p)
		}
	}
	r := agent.Resources
	if r.Requests.Cpu().IsZero() || r.Requests.Memory().IsZero() || r.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want CPU and memory requests and a memory limit", r)
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, m := range agent.VolumeMounts {
		mounts[m.Name] = m
	}
	hostPaths := map[string]string{}
	for _, v := range spec.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	for vol, host := range map[string]string{"bpffs": "/sys/fs/bpf", "cgroup": "/sys/fs/cgroup", "netns": "/var/run/netns",
		"run-hms": "/var/run/hms", "state": "/var/lib/hms", "cni-bin": "/opt/cni/bin", "cni-conf": "/etc/cni/net.d"} {
		if hostPaths[vol] != host {
			t.Errorf("volume %s: hostPath %q, want %q", vol, hostPaths[vol], host)
		}
	}
	if m := mounts["netns"]; m.MountPropagation == nil || *m.MountPropagation != corev1.MountPropagationHostToContainer {
		t.Errorf("netns mount %+v: want HostToContainer, so pods created later are visible", m)
	}
	args, err := expandArgs(agent, cm, map[string]string{"spec.nodeName": "node-1"})
	if err != nil {
		t.Fatal(err)
	}
	if !hasArg(args, "--node=node-1") || !hasArg(args, "--cgroup-root="+mounts["cgroup"].MountPath) ||
		!hasArg(args, "--metrics-addr=127.0.0.1:15020") || !hasArg(args, "--linger-after-handover") {
		t.Errorf("agent args %v: want --node from NODE_NAME, an explicit --cgroup-root at the cgroup mount, 15020 on loopback", args)
	}
	var nodeEnv bool
	for _, e := range agent.Env {
		nodeEnv = nodeEnv || e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName"
	}
	if !nodeEnv {
		t.Error("NODE_NAME does not come from the downward API (spec.nodeName)")
	}
	install := container(t, spec.InitContainers, "install-cni")
	if a, err := expandArgs(install, cm, nil); err != nil || a[0] != "cni" || a[1] != "install" {
		t.Errorf("install-cni runs %v (%v)", a, err)
	}
	if c := install.SecurityContext.Capabilities; c == nil || len(c.Add) != 0 {
		t.Errorf("install-cni capabilities %+v: it writes files only", c)
	}
}

// The splitter the tests above rely on drops comment-only documents.
func TestSplitDocs(t *testing.T) {
	if n := len(splitDocs([]byte("# c\n---\na: 1\n---\n# only a comment\n---\nb: 2\n"))); n != 2 {
		t.Fatalf("split into %d documents, want 2", n)
	}
}
