// Package manifest parses the YAML service manifests of `hms-node apply -f`
// (DESIGN §6) into registry services, strictly: every unknown key, wrong
// type or out-of-range value is reported with its file, line and field, and
// a file with any problem yields no services at all.
package manifest
