package doctor

import (
	"errors"
	"testing"

	"github.com/hms-node/hms-node/pkg/datapath"
)

// doctor looks where the agent pins by default.
func TestDefaultsMatchTheAgent(t *testing.T) {
	if DefaultBPFFS != datapath.DefaultBPFFS {
		t.Errorf("DefaultBPFFS %q, the datapath pins under %q", DefaultBPFFS, datapath.DefaultBPFFS)
	}
}

func TestClassifyProbe(t *testing.T) {
	if r := classifyProbe(nil); r.Skipped != "" || len(r.Missing) != 0 {
		t.Errorf("nil: %+v", r)
	}
	noPriv := errors.Join(&datapath.MissingError{Feature: "privilege CAP_BPF", Fix: "run as root"},
		errors.New("the agent is not running as root"))
	if r := classifyProbe(noPriv); r.Skipped != "needs CAP_BPF, the agent is not running as root" || len(r.Missing) != 0 {
		t.Errorf("no privileges: %+v", r)
	}
	old := errors.Join(&datapath.MissingError{Feature: "sk_lookup programs (kernel 5.9+)", Fix: "upgrade"},
		&datapath.MissingError{Feature: "sockhash maps (CONFIG_BPF_STREAM_PARSER)", Fix: "rebuild"})
	r := classifyProbe(old)
	if r.Skipped != "" || len(r.Missing) != 2 || r.Missing[0].Feature != "sk_lookup programs (kernel 5.9+)" || r.Missing[1].Fix != "rebuild" {
		t.Errorf("old kernel: %+v", r)
	}
}
