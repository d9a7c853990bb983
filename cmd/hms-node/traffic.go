package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/api"
	"github.com/hms-node/hms-node/pkg/manifest"
)

// The traffic-rule verbs (DESIGN §3, §7): `limit set|clear` and `route
// set`. Rates and timeouts are read by the manifest's own parsers, so the
// CLI accepts what mesh.rate_limit and mesh.routes accept; the control
// plane checks the rest (path, retries) as it does for every route.

func limitCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "limit",
		Short: "Set or clear the rate limit of a service",
	}
	cmd.AddCommand(limitSetCmd(), limitClearCmd())
	return cmd
}

func limitSetCmd() *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "set SVC RATE",
		Short: "Cap the requests per second a service accepts, e.g. 50rps",
		Long: "limit set caps the requests per second SVC accepts, written like the manifest's\n" +
			"mesh.rate_limit (e.g. 50rps or 2.5rps). The limit is enforced at the service's\n" +
			"inbound side, split evenly across its ready instances; a request over it waits\n" +
			"up to 100ms for its turn, then gets 429 Too Many Requests with Retry-After.\n" +
			"It wins over the manifest's mesh.rate_limit until `limit clear`.",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, what := args[0], "limit set "+args[0]
			rps, err := manifest.ParseRate(args[1])
			if err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.registry.SetLimit(ctx, &api.SetLimitRequest{Limit: &api.RateLimit{Namespace: ns, Service: svc, Rps: rps}})
			if err != nil {
				return rpcError(c.to, what, err)
			}
			l := resp.GetLimit()
			fmt.Printf("✓ Rate limit of %s/%s set to %g rps (split across its ready instances; excess waits ≤100ms, then 429)\n",
				l.GetNamespace(), l.GetService(), l.GetRps())
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the service")
	controlFlags(cmd)
	return cmd
}

func limitClearCmd() *cobra.Command {
	var ns string
	cmd := &cobra.Command{
		Use:   "clear SVC",
		Short: "Remove the rate limit set with `limit set` (the manifest's mesh.rate_limit applies again)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			if _, err := c.registry.ClearLimit(ctx, &api.ClearLimitRequest{Namespace: ns, Service: args[0]}); err != nil {
				return rpcError(c.to, "limit clear "+args[0], err)
			}
			fmt.Printf("✓ Rate limit of %s/%s cleared\n", ns, args[0])
			return nil
		},
	}
	cmd.Flags().StringVarP(&ns, "namespace", "n", "default", "namespace of the service")
	controlFlags(cmd)
	return cmd
}

func routeCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "route",
		Short: "Override timeout and retries for one path of a service",
	}
	cmd.AddCommand(routeSetCmd())
	return cmd
}

func routeSetCmd() *cobra.Command {
	var ns, path, timeout string
	var retries int
	cmd := &cobra.Command{
		Use:   "set SVC --path P [--timeout D] [--retries N]",
		Short: "Create or update the timeout and retries of the requests to SVC under path P",
		Long: "route set overrides the service's timeout and retries for the requests whose path\n" +
			"starts with P (the longest matching route wins), like an entry of the manifest's\n" +
			"mesh.routes, which it wins over for the same path. Setting the same path again\n" +
			"updates it. A route needs --timeout (e.g. 800ms, 3s) or --retries of 1 to 10:\n" +
			"retries 0 cannot be told from \"not set\", so --retries 0 alone is refused.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			svc, what := args[0], "route set "+args[0]
			if !cmd.Flags().Changed("timeout") && !cmd.Flags().Changed("retries") {
				return fmt.Errorf("%s: a route must set a timeout or retries: give --timeout D (e.g. 800ms) or --retries N (1..10)", what)
			}
			if retries < 0 {
				return fmt.Errorf("%s: --retries %d: give 0..10", what, retries)
			}
			rt := &api.Route{Namespace: ns, Service: svc, Path: path, Retries: uint32(retries)}
			if cmd.Flags().Changed("timeout") {
				ms, err := manifest.ParseTimeout(timeout)
				if err != nil {
					return fmt.Errorf("%s: --timeout: %w", what, err)
				}
				rt.TimeoutMs = ms
			}
			if rt.TimeoutMs == 0 && rt.Retries == 0 {
				return fmt.Errorf("%s: route %s sets neither a timeout nor retries: give --timeout D or --retries N (1..10); "+
					"retries 0 alone cannot be stored, it reads as \"not set\"", what, rt.Path)
			}
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			resp, err := c.registry.SetRoute(ctx, &api.SetRouteRequest{Route: rt})
			if err != nil {
				return rpcError(c.to, what, err)
			}
			r := resp.GetRoute()
			fmt.Printf("✓ Route %s/%s %s set: %s\n", r.GetNamespace(), r.GetService(), r.GetPath(), routeSummary(r))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&path, "path", "", "path prefix the route applies to, e.g. /delay")
	f.StringVar(&timeout, "timeout", "", "timeout of one request under the path, e.g. 800ms or 3s")
	f.IntVar(&retries, "retries", 0, "retries of a failed request under the path (0..10)")
	f.StringVarP(&ns, "namespace", "n", "default", "namespace of the service")
	cmd.MarkFlagRequired("path")
	controlFlags(cmd)
	return cmd
}

// routeSummary is what a stored route sets; what it leaves at 0 is the
// service's.
func routeSummary(r *api.Route) string {
	timeout, retries := "timeout of the service", "retries of the service"
	if r.GetTimeoutMs() > 0 {
		timeout = "timeout " + (time.Duration(r.GetTimeoutMs()) * time.Millisecond).String()
	}
	if r.GetRetries() > 0 {
		retries = fmt.Sprintf("retries %d", r.GetRetries())
	}
	return timeout + ", " + retries
}
