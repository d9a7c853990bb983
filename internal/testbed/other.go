//go:build !linux

package testbed

import (
	"context"
	"errors"
	"os/exec"
	"testing"
)

var errNotLinux = errors.New("testbed: needs Linux network namespaces and cgroup v2")

// New skips t: the bed needs Linux.
func New(t testing.TB) *Bed {
	t.Helper()
	t.Skip(errNotLinux.Error())
	return nil
}

// Open fails: the bed needs Linux.
func Open(prefix string) (*Bed, error) { return nil, errNotLinux }

// Sweep does nothing off Linux.
func Sweep(prefix string) error { return nil }

// Close does nothing off Linux.
func (b *Bed) Close() error { return nil }

// AddNode fails off Linux.
func (b *Bed) AddNode(name string) (*Node, error) { return nil, errNotLinux }

// AddPod fails off Linux.
func (n *Node) AddPod(name string) (*Pod, error) { return nil, errNotLinux }

// Command returns a command that fails to start off Linux.
func (p *Pod) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Err = errNotLinux
	return cmd
}

// Run fails off Linux.
func (p *Pod) Run(ctx context.Context, name string, args ...string) (string, error) {
	return "", errNotLinux
}

// Start fails off Linux.
func (p *Pod) Start(ctx context.Context, name string, args ...string) (*exec.Cmd, error) {
	return nil, errNotLinux
}
