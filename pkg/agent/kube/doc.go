// Package kube decides which pods of a node are in the mesh, from their
// Kubernetes labels (read through client-go informers restricted to the
// node) or the CNI plugin's arguments, and keeps the agent's enrollments
// in step with that decision.
package kube
