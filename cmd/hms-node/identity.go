package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/hms-node/hms-node/pkg/api"
)

func tokenCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Bootstrap tokens for joining nodes"}
	var ttl time.Duration
	create := &cobra.Command{
		Use:   "create [--ttl D]",
		Short: "Print a one-use join token (alone on one line) that pins this mesh's CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			ic := c.identity
			resp, err := ic.CreateToken(ctx, &api.CreateTokenRequest{TtlMs: ttl.Milliseconds()})
			if err != nil {
				return rpcError(c.to, "token create", err)
			}
			fmt.Println(resp.Token)
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", time.Hour, "how long the token may be used")
	controlFlags(create)
	cmd.AddCommand(create)
	return cmd
}

func nodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Nodes of the mesh"}
	revoke := &cobra.Command{
		Use:   "revoke NODE",
		Short: "Cut a node off: its stream ends and every peer refuses its certificates",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx, c, done, err := dialCall(cmd)
			if err != nil {
				return err
			}
			defer done()
			ic := c.identity
			if _, err := ic.RevokeNode(ctx, &api.RevokeNodeRequest{Node: args[0]}); err != nil {
				return rpcError(c.to, "node revoke "+args[0], err)
			}
			fmt.Printf("✓ Node %q revoked: its certificates are refused mesh-wide\n", args[0])
			return nil
		},
	}
	controlFlags(revoke)
	cmd.AddCommand(revoke)
	return cmd
}
