package manifest

import (
	"errors"
	"strings"
	"testing"
)

var fuzzSeeds = []string{
	designExample,
	"name: a\nports: [7000, 7001]\nnamespace: b\nprotocol: http\nhealth: {path: /h, interval: 2s}\n",
	"name: a\nport: 7000\nmesh:\n  rate_limit: 50rps\n  routes: [{path: /x, timeout: 1s, retries: 2}]\n",
	"name: a\nport: 7000\npolicy: {allow_from: [a, ns/b, ns/*], mTLS: permissive}\nplacement: {nodes: [n1]}\n",
	"name: a\nport: &p 7000\n---\nname: b\nport: *p\n---\n",
	"name: Notify_Svc\nport: 15001\nmesh: {retries: [1], timeout: x, mtls: maybe}\n",
	"name: a\n  port: 7000\n",
	"- [}\n",
	"",
	"---\n---\n~\n",
}

// FuzzParse checks that Parse never panics and always answers with either
// services or a non-empty Errors of one-line messages.
func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		svcs, err := Parse("f.yaml", data)
		if err == nil {
			if len(svcs) == 0 {
				t.Fatal("no services and no error")
			}
			for _, s := range svcs {
				if s.Name == "" || len(s.Ports) == 0 || s.Namespace == "" || s.Mesh.GetMtls() == "" {
					t.Fatalf("incomplete service %v", s)
				}
			}
			return
		}
		var errs Errors
		if svcs != nil || !errors.As(err, &errs) || len(errs) == 0 {
			t.Fatalf("got %d services and error %v", len(svcs), err)
		}
		for _, e := range errs {
			if strings.Contains(e.Error(), "\n") || e.Line < 1 {
				t.Fatalf("malformed error %q", e.Error())
			}
		}
	})
}
