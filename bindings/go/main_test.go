package astrid

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// capsules is the directory of the built test capsules: $ASTRID_CAPSULES,
// else build/capsules of the repository this package sits in.
var capsules string

func TestMain(m *testing.M) {
	if os.Getenv("ASTRID_GO_ABI_CHILD") == "1" {
		os.Exit(abiChild())
	}
	capsules = os.Getenv("ASTRID_CAPSULES")
	if capsules == "" {
		capsules = filepath.Join("..", "..", "build", "capsules")
	}
	if _, err := os.Stat(filepath.Join(capsules, "hello", "Capsule.toml")); err != nil {
		fmt.Fprintf(os.Stderr, "astrid tests need the built capsules (set ASTRID_CAPSULES): %v\n", err)
		os.Exit(2)
	}
	os.Exit(m.Run())
}

// abiChild runs in a copy of the test binary whose astrid_abi_version is
// replaced (LD_PRELOAD) by one answering a different version.
func abiChild() int {
	rt, err := NewRuntime(nil)
	if err == nil {
		rt.Close()
		fmt.Println("abi-child: accepted a library of ABI", LibraryABIVersion())
		return 3
	}
	if !errors.Is(err, ErrABIMismatch) {
		fmt.Println("abi-child: unexpected error:", err)
		return 4
	}
	if _, err := NewRuntime(nil); !errors.Is(err, ErrABIMismatch) {
		fmt.Println("abi-child: second NewRuntime was not refused:", err)
		return 5
	}
	fmt.Println("abi-child: refused:", err)
	return 0
}

func capsuleDir(name string) string { return filepath.Join(capsules, name) }

func newRuntime(t testing.TB, cfg *Config) *Runtime {
	t.Helper()
	if cfg == nil {
		cfg = &Config{}
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.UnloadGrace == 0 {
		cfg.UnloadGrace = 2 * time.Second
	}
	rt, err := NewRuntime(cfg)
	if err != nil {
		t.Fatalf("NewRuntime: %v", err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

func load(t testing.TB, rt *Runtime, name string, opts *LoadOptions) *Capsule {
	t.Helper()
	c, err := rt.Load(capsuleDir(name), opts)
	if err != nil {
		t.Fatalf("Load %s: %v", name, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func call(t testing.TB, c *Capsule, action, payload string) Result {
	t.Helper()
	res, err := c.Call(action, []byte(payload))
	if err != nil {
		t.Fatalf("Call %s(%q): %v", action, payload, err)
	}
	return res
}

// fsAnswer runs an fsprobe action and returns "ok:<data>" or "err:<case>".
func fsAnswer(t testing.TB, c *Capsule, action, payload string) string {
	t.Helper()
	res := call(t, c, action, payload)
	return res.Action + ":" + res.Data
}

func expectCode(t *testing.T, err error, sentinel *Error) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v does not match %v", err, sentinel)
	}
	var e *Error
	if !errors.As(err, &e) || e.Code != sentinel.Code {
		t.Fatalf("error %v: want an *Error with code %d", err, sentinel.Code)
	}
}
