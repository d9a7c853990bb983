package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/agent"
)

func curlCmd() *cobra.Command {
	var req agent.CurlRequest
	var headers []string
	var output string
	var include, fail bool
	cmd := &cobra.Command{
		Use:   "curl SVC PATH",
		Short: "Call a service through the mesh from this host, as one of this node's workloads",
		Long: "curl sends one HTTP request to SVC through the local agent, exactly as a workload\n" +
			"of this node would (its identity, retries, timeouts, circuit breaker), and prints\n" +
			"the answer. --from picks the workload; default the first one enrolled.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			req.Service, req.Path = args[0], args[1]
			req.Headers = map[string]string{}
			for _, h := range headers {
				k, v, ok := strings.Cut(h, ":")
				if !ok {
					return fmt.Errorf("-H %q: want \"Name: value\"", h)
				}
				req.Headers[strings.TrimSpace(k)] = strings.TrimSpace(v)
			}
			var res agent.CurlResult
			if err := callAgent(*socket(cmd), "POST", "/v1/curl", req, &res); err != nil {
				return err
			}
			switch output {
			case "json":
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				if err := enc.Encode(res); err != nil {
					return err
				}
			case "", "text":
				printCurl(res, include)
			default:
				return fmt.Errorf("-o %s: want json or text", output)
			}
			if fail && res.Status >= 400 {
				return fmt.Errorf("%s answered %d (flags %s, endpoint %s)", req.Service, res.Status, res.Flags, res.Endpoint)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVarP(&req.Method, "request", "X", "GET", "HTTP method")
	f.StringArrayVarP(&headers, "header", "H", nil, `request header "Name: value" (repeatable)`)
	f.StringVarP(&req.Body, "data", "d", "", "request body")
	f.StringVar(&req.From, "from", "", "calling workload's service (svc or ns/svc); default the first enrolled")
	f.StringVar(&req.Namespace, "namespace", "default", "namespace of SVC")
	f.BoolVarP(&include, "include", "i", false, "print the status line and response headers")
	f.BoolVarP(&fail, "fail", "f", false, "exit non-zero when the answer is 400 or above")
	f.StringVarP(&output, "output", "o", "", "output format: text or json")
	socketFlag(cmd)
	return cmd
}

func printCurl(res agent.CurlResult, include bool) {
	if include {
		fmt.Printf("HTTP %d (from %s, endpoint %s, %.2f ms, retries %d, flags %s, trace %s)\n",
			res.Status, res.From, res.Endpoint, res.Latency, res.Retries, res.Flags, res.TraceID)
		keys := make([]string, 0, len(res.Headers))
		for k := range res.Headers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			for _, v := range res.Headers[k] {
				fmt.Printf("%s: %s\n", k, v)
			}
		}
		fmt.Println()
	}
	fmt.Print(res.Body)
}
