// Package metrics is the agent's Prometheus registry: Istio's standard
// request and TCP metrics (DESIGN §9) and the agent's own hms_* metrics,
// served on the agent's :15020/metrics.
package metrics
