// Package doctor checks a node before and after the agent is installed:
// kernel, mounts, privileges, the local agent, its pins and the control
// plane, each check one OK or FAIL with the fix to apply.
package doctor
