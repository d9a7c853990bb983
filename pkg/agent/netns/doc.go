// Package netns does socket work inside a pod's network namespace from the
// one agent process, which itself stays in the root network namespace.
//
// A network namespace is chosen when a socket is created, not when it is
// used: a listener or a dialled connection made here belongs to the pod for
// its whole life, and the goroutines serving it run on ordinary threads of
// the host namespace. Only the short stretch that creates the socket runs on
// a locked OS thread switched into the pod with setns(2), on a goroutine of
// its own, so that a thread which cannot switch back is discarded by the
// runtime instead of being reused in the wrong namespace.
//
// Entering a namespace needs CAP_SYS_ADMIN; setting SO_MARK needs
// CAP_NET_ADMIN.
package netns
