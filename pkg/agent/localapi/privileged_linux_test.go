package localapi

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestPrivilegedRefusesOtherUID runs a client as uid 65534 in a child
// process and proves SO_PEERCRED refuses it before any request is read (the
// connection is closed with no reply, and a log line names the uid), while
// root is still served.
func TestPrivilegedRefusesOtherUID(t *testing.T) {
	if os.Getenv("HMS_TEST_PRIVILEGED") != "1" || os.Geteuid() != 0 {
		t.Skip("needs root and HMS_TEST_PRIVILEGED=1 (runs a child as uid 65534)")
	}
	// The go test binary and t.TempDir are 0700; the child needs a copy of
	// the binary and a socket it may open, so the SO_PEERCRED check, not file
	// permissions, is what refuses it.
	dir, err := os.MkdirTemp("", "hms-localapi-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "client.test")
	copyExecutable(t, bin)
	path := filepath.Join(dir, "agent.sock")
	logs := serve(t, path)
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}

	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v: %s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != "refused uid=65534" {
		t.Fatalf("child said %q, want it refused", got)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !strings.Contains(logs.String(), "refused caller") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if l := logs.String(); !strings.Contains(l, "refused caller") || !strings.Contains(l, "uid=65534") {
		t.Fatalf("no log line for the refused caller; log: %s", l)
	}

	cmd = exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+path)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.HasPrefix(string(out), "answered uid=0: HTTP/1.1 200") {
		t.Fatalf("root child: %v: %s", err, out)
	}
}

func copyExecutable(t *testing.T, dst string) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(f, src); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}
