package cni

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
	current "github.com/containernetworking/cni/pkg/types/100"
	"github.com/containernetworking/cni/pkg/version"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

// PluginType is the plugin's "type" in a conflist and its file name in the
// CNI bin dir.
const PluginType = "hms-cni"

// Conf is the plugin's entry in a conflist. Its zero-value fields have the
// defaults below.
type Conf struct {
	types.PluginConf
	// Socket is the agent's local API; default /var/run/hms/agent.sock.
	Socket string `json:"socket,omitempty"`
	// FailClosed makes an ADD fail (so the pod is not created) when the
	// agent cannot be told or refuses the pod; default false: the pod
	// starts, outside the mesh until the agent enrolls it.
	FailClosed bool `json:"failClosed,omitempty"`
	// Timeout bounds each call to the agent; default 10s.
	Timeout string `json:"timeout,omitempty"`
	// LogFile receives one line per failure the runtime would not show
	// (fail-open ADD, DEL); default none (stderr only).
	LogFile string `json:"logFile,omitempty"`
}

// Main runs the plugin: it reads CNI_COMMAND and the rest of the CNI
// environment, and exits the process as the CNI spec says.
func Main(about string) {
	skel.PluginMainFuncs(skel.CNIFuncs{Add: cmdAdd, Del: cmdDel, Check: cmdCheck, Status: cmdStatus, GC: cmdGC},
		version.All, about)
}

func parseConf(data []byte) (*Conf, error) {
	c := &Conf{}
	if err := json.Unmarshal(data, c); err != nil {
		return nil, fmt.Errorf("hms-cni: parse config: %w", err)
	}
	if c.Socket == "" {
		c.Socket = "/var/run/hms/agent.sock"
	}
	if err := version.ParsePrevResult(&c.PluginConf); err != nil {
		return nil, fmt.Errorf("hms-cni: %w", err)
	}
	return c, nil
}

func (c *Conf) timeout() time.Duration {
	if d, err := time.ParseDuration(c.Timeout); err == nil && d > 0 {
		return d
	}
	return 10 * time.Second
}

// call sends req to the agent. A reply the agent refused is a
// *localapi.StatusError; anything else means the agent was not reached.
func (c *Conf) call(path string, req Request, out *Reply) error {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout())
	defer cancel()
	return localapi.NewClient(c.Socket).Do(ctx, "POST", path, req, out)
}

// logf appends a line to LogFile (if set) and writes it to stderr, which
// runtimes keep in their own logs.
func (c *Conf) logf(format string, args ...any) {
	line := time.Now().UTC().Format(time.RFC3339) + " hms-cni: " + fmt.Sprintf(format, args...) + "\n"
	fmt.Fprint(os.Stderr, line)
	if c.LogFile == "" {
		return
	}
	if f, err := os.OpenFile(c.LogFile, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600); err == nil {
		f.WriteString(line)
		f.Close()
	}
}

func cmdAdd(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if c.PrevResult == nil {
		return types.NewError(types.ErrInvalidNetworkConfig, "hms-cni must be chained after the plugin that creates the pod's interface",
			"no prevResult in the configuration")
	}
	prev, err := current.NewResultFromResult(c.PrevResult)
	if err != nil {
		return fmt.Errorf("hms-cni: prevResult: %w", err)
	}
	req := requestOf(args)
	req.IP = podIPv4(prev)
	var reply Reply
	if err := c.call(PathAdd, req, &reply); err != nil {
		if c.FailClosed {
			return types.NewError(types.ErrTryAgainLater, "hms-cni: the mesh could not take the pod (fail-closed)", err.Error())
		}
		c.logf("ADD %s (%s/%s): %v; the pod starts outside the mesh (fail-open)", args.Netns, req.PodNS, req.PodName, err)
	} else if !reply.Member && reply.Reason != "" {
		c.logf("ADD %s (%s/%s): not in the mesh: %s", args.Netns, req.PodNS, req.PodName, reply.Reason)
	}
	return types.PrintResult(c.PrevResult, c.CNIVersion)
}

// cmdDel never fails: a failing DEL blocks the pod's removal forever, and
// an agent that missed a DEL drops the pod itself (its netns is gone, or
// the pod is no longer in the API).
func cmdDel(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := requestOf(args)
	if err := c.call(PathDel, req, nil); err != nil {
		c.logf("DEL %s (%s): %v; the agent drops the pod when it next reconciles", args.Netns, args.ContainerID, err)
	}
	return nil
}

// cmdCheck reports a broken enrollment as the agent found it. An agent
// that cannot be reached fails the check only when fail-closed.
func cmdCheck(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	req := requestOf(args)
	if c.PrevResult != nil {
		if prev, err := current.NewResultFromResult(c.PrevResult); err == nil {
			req.IP = podIPv4(prev)
		}
	}
	var reply Reply
	err = c.call(PathCheck, req, &reply)
	var se *localapi.StatusError
	switch {
	case errors.As(err, &se):
		return types.NewError(types.ErrInternal, "hms-cni: broken mesh enrollment: "+se.Message, "")
	case err != nil && c.FailClosed:
		return types.NewError(types.ErrTryAgainLater, "hms-cni: agent unreachable (fail-closed)", err.Error())
	}
	return nil
}

// cmdStatus says the plugin cannot take pods only when fail-closed and the
// agent is not answering.
func cmdStatus(args *skel.CmdArgs) error {
	c, err := parseConf(args.StdinData)
	if err != nil {
		return err
	}
	if !c.FailClosed {
		return nil
	}
	conn, err := net.DialTimeout("unix", c.Socket, c.timeout())
	if err != nil {
		return types.NewError(errPluginNotAvailable, "hms-cni: agent not answering (fail-closed)", err.Error())
	}
	return conn.Close()
}

// cmdGC has nothing to collect: the agent reconciles its own pods.
func cmdGC(*skel.CmdArgs) error { return nil }

func requestOf(args *skel.CmdArgs) Request {
	kv := parseArgs(args.Args)
	req := Request{ContainerID: args.ContainerID, Netns: args.Netns, IfName: args.IfName,
		PodName: kv["K8S_POD_NAME"], PodNS: kv["K8S_POD_NAMESPACE"], PodUID: kv["K8S_POD_UID"],
		Service: kv["HMS_SERVICE"]}
	for _, p := range strings.Split(kv["HMS_PORTS"], ",") {
		if n, err := strconv.ParseUint(strings.TrimSpace(p), 10, 16); err == nil {
			req.Ports = append(req.Ports, uint16(n))
		}
	}
	return req
}

// parseArgs reads CNI_ARGS ("K=V;K=V"). Unlike types.LoadArgs it ignores
// keys it does not know, whatever IgnoreUnknown says: runtimes add their
// own.
func parseArgs(s string) map[string]string {
	out := map[string]string{}
	for _, kv := range strings.Split(s, ";") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			out[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	return out
}

// podIPv4 is the first IPv4 address of the result on an interface inside
// the sandbox (or on no interface at all).
func podIPv4(r *current.Result) string {
	for _, ip := range r.IPs {
		if ip.Address.IP.To4() == nil {
			continue
		}
		if ip.Interface != nil && *ip.Interface < len(r.Interfaces) && r.Interfaces[*ip.Interface].Sandbox == "" {
			continue // the host side of the link
		}
		return ip.Address.IP.String()
	}
	return ""
}

// errPluginNotAvailable is CNI 1.1's STATUS code for "cannot take pods now"
// (the library names no constant for it).
const errPluginNotAvailable = 50
