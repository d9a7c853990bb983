// Package testapp holds the small servers and clients the privileged tests,
// benchmarks and the demo run inside pods: plain applications that know
// nothing of the mesh. The binary is cmd/hms-testapp.
package testapp
