package doctor

import (
	"errors"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/hms-node/hms-node/pkg/datapath"
)

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return ""
	}
	return unix.ByteSliceToString(u.Release[:])
}

func statfsType(path string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return 0, err
	}
	return int64(st.Type), nil
}

// probeDatapath runs the datapath's start-up probe. It checks privileges
// first and stops there when they are missing: then nothing was probed.
func probeDatapath() ProbeResult { return classifyProbe(datapath.Probe()) }

// classifyProbe sorts the probe's errors: missing kernel features, or
// missing privileges that kept it from probing.
func classifyProbe(err error) ProbeResult {
	if err == nil {
		return ProbeResult{}
	}
	var res ProbeResult
	var privs []string
	for _, e := range leaves(err) {
		var m *datapath.MissingError
		switch {
		case errors.As(e, &m) && !strings.HasPrefix(m.Feature, "privilege "):
			res.Missing = append(res.Missing, Missing{Feature: m.Feature, Fix: m.Fix})
		case errors.As(e, &m):
			privs = append(privs, strings.TrimPrefix(m.Feature, "privilege "))
		default:
			privs = append(privs, e.Error())
		}
	}
	if len(privs) > 0 && len(res.Missing) == 0 {
		res.Skipped = "needs " + strings.Join(privs, ", ")
	}
	return res
}

// leaves flattens errors.Join trees.
func leaves(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}
