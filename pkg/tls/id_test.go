package mtls

import (
	"strings"
	"testing"
)

func TestIDRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want ID
	}{
		{WorkloadID(td, "default", "notify-svc"), ID{TrustDomain: td, Namespace: "default", Service: "notify-svc"}},
		{NodeID(td, "node-1"), ID{TrustDomain: td, Node: "node-1"}},
		{"spiffe://example.org/ns/kube_system/sa/A.b-c", ID{TrustDomain: "example.org", Namespace: "kube_system", Service: "A.b-c"}},
	} {
		got, err := ParseID(tc.uri)
		if err != nil {
			t.Fatalf("ParseID(%q): %v", tc.uri, err)
		}
		if got != tc.want {
			t.Fatalf("ParseID(%q) = %+v, want %+v", tc.uri, got, tc.want)
		}
		if got.String() != tc.uri {
			t.Fatalf("String() = %q, want %q", got.String(), tc.uri)
		}
		if got.IsNode() != (tc.want.Node != "") {
			t.Fatalf("IsNode wrong for %q", tc.uri)
		}
		if err := got.Validate(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseIDRejects(t *testing.T) {
	for uri, want := range map[string]string{
		"":                                                                 "empty",
		"https://cluster.local/ns/a/sa/b":                                  "scheme",
		"SPIFFE://cluster.local/ns/a/sa/b":                                 "scheme",
		"spiffe://Cluster.local/ns/a/sa/b":                                 "lowercase",
		"spiffe://cluster.local:8080/ns/a/sa/b":                            "invalid character ':'",
		"spiffe://user@cluster.local/ns/a/sa/b":                            "invalid character '@'",
		"spiffe:///ns/a/sa/b":                                              "empty trust domain",
		"spiffe://cluster.local":                                           "missing path",
		"spiffe://cluster.local/":                                          "missing path",
		"spiffe://cluster.local/ns/a/sa/b/":                                "empty path segment",
		"spiffe://cluster.local/ns//sa/b":                                  "empty path segment",
		"spiffe://cluster.local/ns/a/sa/b?x=1":                             "query",
		"spiffe://cluster.local/ns/a/sa/b#f":                               "fragment",
		"spiffe://cluster.local/ns/a%2f/sa/b":                              "percent",
		"spiffe://cluster.local/ns/../sa/b":                                `segment ".."`,
		"spiffe://cluster.local/ns/a/svc/b":                                "want /ns/<namespace>/sa/<service>",
		"spiffe://cluster.local/node":                                      "want /ns/<namespace>/sa/<service>",
		"spiffe://cluster.local/node/a/b":                                  "want /ns/<namespace>/sa/<service>",
		"spiffe://cluster.local/ns/a b/sa/b":                               "invalid character ' '",
		"spiffe://cluster.local/ns/" + strings.Repeat("a", 2048) + "/sa/b": "longer than",
	} {
		_, err := ParseID(uri)
		if err == nil {
			t.Errorf("ParseID(%q) succeeded, want error containing %q", uri, want)
			continue
		}
		if !strings.Contains(err.Error(), want) {
			t.Errorf("ParseID(%q) = %v, want it to mention %q", uri, err, want)
		}
	}
	if err := (ID{TrustDomain: td, Node: "n", Service: "s"}).Validate(); err == nil {
		t.Error("ID with both node and service validated")
	}
}
