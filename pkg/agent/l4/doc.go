// Package l4 relays bytes between two connections for the shared proxy,
// without splice(2) or sendfile(2), and contains a connection's panics.
package l4
