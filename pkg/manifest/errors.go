package manifest

import (
	"fmt"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Error is one problem in a manifest. It prints as "FILE:LINE: FIELD: MSG";
// FIELD is the dotted path of the offending key as written in the file
// (e.g. mesh.circuit_breaker.max_failures, mesh.routes[0].path) and is
// empty for problems of the file or document as a whole (a YAML syntax
// error, a document that is not a mapping), which print as "FILE:LINE: MSG".
type Error struct {
	File  string
	Line  int // 1-based
	Field string
	Msg   string
}

func (e *Error) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("%s:%d: %s", e.File, e.Line, e.Msg)
	}
	return fmt.Sprintf("%s:%d: %s: %s", e.File, e.Line, e.Field, e.Msg)
}

// Errors is every problem found in one file, in file order. Parse returns
// it (never an empty one) whenever the file cannot be applied.
type Errors []*Error

// Error prints one problem per line.
func (es Errors) Error() string {
	lines := make([]string, len(es))
	for i, e := range es {
		lines[i] = e.Error()
	}
	return strings.Join(lines, "\n")
}

// maxShown bounds how much of a user's value is echoed back in a message,
// so that one error stays one readable line.
const maxShown = 40

// show quotes a value for a message: escaped, so it never breaks the line,
// and shortened.
func show(s string) string {
	if len(s) > maxShown {
		s = s[:maxShown] + "..."
	}
	return strconv.Quote(s)
}

// describe names what a node is, for "expected X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.DocumentNode:
		return "a document"
	}
	switch n.ShortTag() {
	case "!!null":
		return "no value"
	case "!!str":
		return "the string " + show(n.Value)
	case "!!int":
		return "the integer " + show(n.Value)
	case "!!float":
		return "the number " + show(n.Value)
	case "!!bool":
		return "the boolean " + n.Value
	}
	return fmt.Sprintf("a %s value %s", n.ShortTag(), show(n.Value))
}

// parserProblems are the messages of libyaml's parser (as opposed to its
// scanner). yaml.v3 reports the line of a parser error 0-based, one less
// than the line the problem is on; see decode.go's (*parser).fail.
var parserProblems = []string{
	"did not find expected",
	"found duplicate %",
	"found incompatible YAML document",
	"found undefined tag handle",
	"while parsing",
}

// syntaxError turns a yaml.v3 error into an Error on its (corrected) line.
func syntaxError(file string, err error, lines int) *Error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, tail, ok := strings.Cut(rest, ": "); ok {
			if n, err := strconv.Atoi(num); err == nil {
				line, msg = n, tail
			}
		}
	}
	for _, p := range parserProblems {
		if strings.HasPrefix(msg, p) {
			line++
			break
		}
	}
	line = max(1, min(line, lines))
	msg = strings.ReplaceAll(msg, "\n", " ")
	return &Error{File: file, Line: line, Msg: "invalid YAML: " + msg}
}
