// Package layering checks, in tests, that a package imports only what its
// place in the layering allows (STYLE.md: checked, not hoped for).
package layering

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// StdlibOnly fails t when a non-test Go file of the current directory
// imports anything outside the standard library but the paths allowed.
func StdlibOnly(t *testing.T, allowed ...string) {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(fset, f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range af.Imports {
			p, _ := strconv.Unquote(imp.Path.Value)
			if first, _, _ := strings.Cut(p, "/"); strings.Contains(first, ".") && !slices.Contains(allowed, p) {
				t.Errorf("%s imports %s: only the standard library and %v are allowed", f, p, allowed)
			}
		}
	}
}
