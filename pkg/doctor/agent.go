package doctor

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/hms-node/hms-node/pkg/agent/localapi"
)

// agentStatus is the part of the agent's GET /v1/status (`status -o
// json`, DESIGN §7) that the checks read.
type agentStatus struct {
	Node      string `json:"node"`
	Version   string `json:"version"`
	Uptime    int64  `json:"uptime_seconds"`
	Workloads []struct {
		Netns string `json:"netns"`
	} `json:"workloads"`
	Registry *struct {
		Address   string `json:"address"`
		Connected bool   `json:"connected"`
		LastError string `json:"last_error"`
	} `json:"registry"`
	Datapath struct {
		PinPath string `json:"pin_path"`
	} `json:"datapath"`
}

// checkAgent asks the local agent for its status; the status is nil when
// it does not answer.
func checkAgent(ctx context.Context, cfg Config) (*agentStatus, Result) {
	const name = "agent socket"
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	st := &agentStatus{}
	if err := localapi.NewClient(cfg.Socket).Do(ctx, "GET", "/v1/status", nil, st); err != nil {
		return nil, fail(name, err.Error(),
			"start the agent (hms-node agent --node NAME --control HOST:9090 --token-file FILE), or pass --socket the path it listens on")
	}
	reg := "standalone"
	if st.Registry != nil {
		reg = "registry connected"
		if !st.Registry.Connected {
			reg = "registry disconnected"
		}
	}
	return st, pass(name, fmt.Sprintf("%s answers: node %s, agent %s, up %s, %s, %s",
		cfg.Socket, st.Node, st.Version, time.Duration(st.Uptime)*time.Second, plural(len(st.Workloads), "workload"), reg))
}

// pins lists the agent's pins in dir: links (link_*) and maps (hms_*).
func pins(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "link_") || strings.HasPrefix(e.Name(), "hms_") {
			out = append(out, e.Name())
		}
	}
	sort.Strings(out)
	return out, nil
}

// checkPins finds pins that no running agent owns: an agent that stopped
// (or an older one moved elsewhere) left its programs attached and its
// maps pinned, and pods keep failing closed on them.
func checkPins(cfg Config, agent *agentStatus) Result {
	const name = "leftover pins"
	dir := filepath.Clean(cfg.BPFFS)
	found, err := pins(dir)
	if err != nil {
		return fail(name, fmt.Sprintf("read pin dir %s: %v", dir, err), "run doctor as root")
	}
	if len(found) == 0 {
		return pass(name, "none under "+dir)
	}
	owned := agent != nil && filepath.Clean(agent.Datapath.PinPath) == dir
	if owned {
		return pass(name, fmt.Sprintf("%s under %s, in use by the running agent (node %s)", plural(len(found), "pin"), dir, agent.Node))
	}
	who := "no agent answers on " + cfg.Socket
	if agent != nil {
		who = fmt.Sprintf("the running agent pins under %s instead", agent.Datapath.PinPath)
	}
	return fail(name, fmt.Sprintf("%s under %s (%s) and %s: left by an agent that stopped or moved",
		plural(len(found), "pin"), dir, sample(found, 3), who),
		fmt.Sprintf("start the agent with --bpffs %s (it takes them over), or remove them: hms-node agent --cleanup --bpffs %s", dir, dir))
}

func sample(names []string, n int) string {
	if len(names) <= n {
		return strings.Join(names, ", ")
	}
	return fmt.Sprintf("%s, and %d more", strings.Join(names[:n], ", "), len(names)-n)
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
