// Package health actively probes the local instances of a node, by TCP
// connect or HTTP GET through the agent's dialer into each pod's netns.
package health
