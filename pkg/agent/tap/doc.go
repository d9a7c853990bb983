// Package tap keeps an agent's bounded rings of recent HTTP calls, per
// local workload, for `hms-node tap` and `tail`, and feeds live followers
// without ever letting a slow one hold the proxy back.
package tap
