package cni

// Paths of the agent's local API that the plugin calls.
const (
	PathAdd   = "/v1/cni/add"
	PathDel   = "/v1/cni/del"
	PathCheck = "/v1/cni/check"
)

// Request is what the plugin tells the agent about a pod sandbox. Pod
// name, namespace and UID come from the runtime's CNI_ARGS (K8S_POD_*);
// Service and Ports are the fallback membership for hosts without the
// Kubernetes API (HMS_SERVICE, HMS_PORTS in CNI_ARGS), ignored by an agent
// that reads pod labels.
type Request struct {
	ContainerID string   `json:"container_id"`
	Netns       string   `json:"netns"`
	IfName      string   `json:"ifname,omitempty"`
	IP          string   `json:"ip,omitempty"`
	PodName     string   `json:"pod_name,omitempty"`
	PodNS       string   `json:"pod_namespace,omitempty"`
	PodUID      string   `json:"pod_uid,omitempty"`
	Service     string   `json:"service,omitempty"`
	Ports       []uint16 `json:"ports,omitempty"`
}

// Reply is the agent's answer to an ADD or CHECK.
type Reply struct {
	// Member says whether the pod is (to be) in the mesh.
	Member bool `json:"member"`
	// Enrolled says whether the agent has enrolled it by now.
	Enrolled  bool   `json:"enrolled"`
	Service   string `json:"service,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	// Reason explains a pod left out, for the runtime's log.
	Reason string `json:"reason,omitempty"`
}
