package mtls

import (
	"crypto/tls"
	"fmt"
)

// The control plane's own identities live in a namespace no node may
// register in, on pseudo-node names no node may take ('_' is not allowed
// in node names), so that no node can be issued them.
const (
	SystemNamespace = "hms-system"
	AdminService    = "admin"   // spiffe://<td>/ns/hms-system/sa/admin: the CLI
	ControlService  = "control" // spiffe://<td>/ns/hms-system/sa/control: the API
	AdminNode       = "_admin"
	ControlNode     = "_control"
)

// VerifyControlPlane is a tls.Config.VerifyConnection check, after the
// chain (or pin) checks, that the server holds the control plane's own
// identity: every node holds a certificate of the mesh CA, so the chain
// alone proves nothing about who answers.
func VerifyControlPlane(cs tls.ConnectionState) error {
	id, err := PeerID(cs)
	if err != nil {
		return err
	}
	node, nerr := NodeOf(cs.PeerCertificates[0])
	if id.IsNode() || id.Namespace != SystemNamespace || id.Service != ControlService || nerr != nil || node != ControlNode {
		return fmt.Errorf("server %s (node %q) is not the control plane", id, node)
	}
	return nil
}
