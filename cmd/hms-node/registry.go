package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/api"
	"github.com/hms-node/hms-node/pkg/manifest"
)

func applyCmd() *cobra.Command {
	var file string
	cmd := &cobra.Command{
		Use:   "apply -f FILE",
		Short: "Create or update the services of a manifest (all or nothing)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			svcs, err := manifest.ParseFile(file)
			if err != nil {
				return err
			}
			// A large manifest is one all-or-nothing call: its bound grows
			// with it.
			ctx, c, done, err := dialCallTimeout(cmd, rpcTimeout+time.Duration(len(svcs))*applyPerService)
			if err != nil {
				return err
			}
			defer done()
			tty := isTerminal(os.Stderr)
			p := startProgress(os.Stderr, tty, tty || len(svcs) >= manyDocuments,
				fmt.Sprintf("applying %d services from %s (all or nothing)", len(svcs), file))
			resp, err := c.registry.Apply(ctx, &api.ApplyRequest{Services: svcs})
			if err != nil {
				p.done("")
				return rpcError(c.to, "apply "+file, err)
			}
			p.done(applied(resp))
			for _, r := range resp.Results {
				verb := "updated"
				if r.Created {
					verb = "registered"
				}
				fmt.Printf("✓ Service %q %s (VIP %s, ports %s)\n", r.Service.Name, verb, r.Service.Vip, portList(r.Service))
				if r.Identity != "" {
					fmt.Printf("  identity %s, certificates valid %s (rotated at half-life)\n", r.Identity, time.Duration(r.CertTtlMs)*time.Millisecond)
				}
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&file, "file", "f", "", "manifest file (YAML, several documents allowed)")
	cmd.MarkFlagRequired("file")
	controlFlags(cmd)
	return cmd
}

// applyPerService is how much longer than rpcTimeout apply waits per
// service of the manifest.
const applyPerService = 20 * time.Millisecond

// applied sums up an apply for the progress line: "applied 500 services
// (498 registered, 2 updated)".
func applied(resp *api.ApplyResponse) string {
	created := 0
	for _, r := range resp.Results {
		if r.Created {
			created++
		}
	}
	return fmt.Sprintf("applied %d services (%d registered, %d updated)", len(resp.Results), created, len(resp.Results)-created)
}

// portList names the ports a service answers on: its declared ones, and
// 80 for HTTP services.
func portList(s *api.Service) string {
	var ps []string
	for _, p := range s.Ports {
		ps = append(ps, fmt.Sprint(p))
	}
	if s.Protocol == "http" && !containsPort(s.Ports, 80) {
		ps = append(ps, "80")
	}
	return strings.Join(ps, ", ")
}

func containsPort(ports []uint32, p uint32) bool {
	for _, q := range ports {
		if q == p {
			return true
		}
	}
	return false
}

func deleteCmd() *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "delete SVC",
		Short: "Remove a service (its VIP is released)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			reg := c.registry
			if _, err := reg.Delete(ctx, &api.DeleteRequest{Namespace: ns, Name: args[0]}); err != nil {
				return rpcError(c.to, "delete "+args[0], err)
			}
			fmt.Printf("✓ Service %q deleted\n", args[0])
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the service")
	controlFlags(cmd)
	return cmd
}

func addCmd() *cobra.Command {
	var ns, url string
	cmd := &cobra.Command{
		Use:   "add NAME --external-url URL",
		Short: "Register a service outside the mesh under a mesh name and VIP",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			reg := c.registry
			resp, err := reg.AddExternal(ctx, &api.AddExternalRequest{External: &api.ExternalService{Namespace: ns, Name: args[0], Url: url}})
			if err != nil {
				return rpcError(c.to, "add "+args[0], err)
			}
			fmt.Printf("✓ External service %q registered (VIP %s -> %s)\n", resp.External.Name, resp.External.Vip, resp.External.Url)
			return nil
		},
	}
	cmd.Flags().StringVar(&url, "external-url", "", "where the service lives, e.g. https://api.example.com")
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the name")
	cmd.MarkFlagRequired("external-url")
	controlFlags(cmd)
	return cmd
}

// listed is `list -o json` (DESIGN §7).
type listed struct {
	Services  []listedService  `json:"services"`
	Externals []listedExternal `json:"externals"`
}

type listedService struct {
	Name      string           `json:"name"`
	Namespace string           `json:"namespace"`
	VIP       string           `json:"vip"`
	Ports     []uint32         `json:"ports"`
	Protocol  string           `json:"protocol"`
	Instances []listedInstance `json:"instances"`
}

type listedInstance struct {
	Node    string `json:"node"`
	IP      string `json:"ip"`
	Port    uint32 `json:"port"`
	Healthy bool   `json:"healthy"`
}

type listedExternal struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	VIP       string `json:"vip"`
	URL       string `json:"url"`
}

func toListed(r *api.ListResponse) listed {
	out := listed{Services: []listedService{}, Externals: []listedExternal{}}
	byKey := map[string]int{}
	for _, s := range r.Services {
		byKey[s.Namespace+"/"+s.Name] = len(out.Services)
		out.Services = append(out.Services, listedService{Name: s.Name, Namespace: s.Namespace, VIP: s.Vip,
			Ports: s.Ports, Protocol: s.Protocol, Instances: []listedInstance{}})
	}
	for _, in := range r.Instances {
		if i, ok := byKey[in.Namespace+"/"+in.Service]; ok {
			out.Services[i].Instances = append(out.Services[i].Instances, listedInstance{in.Node, in.Ip, in.Port, in.Healthy})
		}
	}
	for i := range out.Services {
		ins := out.Services[i].Instances
		sort.Slice(ins, func(a, b int) bool { return ins[a].Node+ins[a].IP < ins[b].Node+ins[b].IP })
	}
	for _, e := range r.Externals {
		out.Externals = append(out.Externals, listedExternal{e.Name, e.Namespace, e.Vip, e.Url})
	}
	return out
}

func listCmd() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List services, VIPs, instances and their health",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			reg := c.registry
			resp, err := reg.List(ctx, &api.ListRequest{})
			if err != nil {
				return rpcError(c.to, "list", err)
			}
			l := toListed(resp)
			if output == "json" {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(l)
			}
			printList(l)
			return nil
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: text or json")
	controlFlags(cmd)
	return cmd
}

func printList(l listed) {
	tw := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVICE\tVIP\tPORTS\tPROTOCOL\tHEALTHY\tINSTANCES")
	for _, s := range l.Services {
		healthy, eps := 0, []string{}
		for _, in := range s.Instances {
			mark := "✗"
			if in.Healthy {
				healthy++
				mark = "✓"
			}
			eps = append(eps, fmt.Sprintf("%s %s:%d@%s", mark, in.IP, in.Port, in.Node))
		}
		fmt.Fprintf(tw, "%s/%s\t%s\t%v\t%s\t%d/%d\t%s\n", s.Namespace, s.Name, s.VIP, s.Ports, s.Protocol, healthy, len(s.Instances), strings.Join(eps, ", "))
	}
	for _, e := range l.Externals {
		fmt.Fprintf(tw, "%s/%s\t%s\t-\texternal\t-\t%s\n", e.Namespace, e.Name, e.VIP, e.URL)
	}
	tw.Flush()
}
