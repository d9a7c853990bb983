//go:build !linux

package doctor

import "errors"

var errNotLinux = errors.New("hms-node runs on Linux only")

func kernelRelease() string { return "" }

func statfsType(string) (int64, error) { return 0, errNotLinux }

func probeDatapath() ProbeResult { return ProbeResult{Skipped: errNotLinux.Error()} }
