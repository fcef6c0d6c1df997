package astrid

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestVersionAndABI(t *testing.T) {
	if Version() == "" {
		t.Fatal("empty library version")
	}
	if got := LibraryABIVersion(); got != ABIVersion {
		t.Fatalf("library ABI %d, binding %d", got, ABIVersion)
	}
	if err := CheckABI(); err != nil {
		t.Fatalf("CheckABI: %v", err)
	}
	err := checkABI(ABIVersion + 1)
	if !errors.Is(err, ErrABIMismatch) {
		t.Fatalf("checkABI(%d) = %v, want ErrABIMismatch", ABIVersion+1, err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(ABIVersion+1)) {
		t.Fatalf("mismatch error does not name the library's version: %v", err)
	}
	if checkABI(ABIVersion) != nil {
		t.Fatal("checkABI refused the matching version")
	}
}

// TestABIMismatchRefused runs this test binary again with a library whose
// astrid_abi_version() answers another version (interposed with
// LD_PRELOAD), and expects NewRuntime to refuse it.
func TestABIMismatchRefused(t *testing.T) {
	cc := os.Getenv("CC")
	if cc == "" {
		cc = "cc"
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "abi.c")
	lib := filepath.Join(dir, "libabi_override.so")
	code := "unsigned astrid_abi_version(void) { return " + strconv.Itoa(ABIVersion+41) + "; }\n"
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command(cc, "-shared", "-fPIC", "-o", lib, src).CombinedOutput(); err != nil {
		t.Fatalf("building the override library: %v\n%s", err, out)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	child := exec.Command(self, "-test.run=^$")
	child.Env = append(os.Environ(), "ASTRID_GO_ABI_CHILD=1", "LD_PRELOAD="+lib)
	out, err := child.CombinedOutput()
	if err != nil {
		t.Fatalf("child with ABI %d: %v\n%s", ABIVersion+41, err, out)
	}
	if !strings.Contains(string(out), "abi-child: refused:") || !strings.Contains(string(out), strconv.Itoa(ABIVersion+41)) {
		t.Fatalf("child output does not show the refusal: %s", out)
	}
	// The same binary without the override accepts the library.
	child = exec.Command(self, "-test.run=^TestVersionAndABI$")
	child.Env = os.Environ()
	if out, err := child.CombinedOutput(); err != nil {
		t.Fatalf("child without override: %v\n%s", err, out)
	}
}

func TestLoadAndCall(t *testing.T) {
	rt := newRuntime(t, nil)
	hello := load(t, rt, "hello", &LoadOptions{Principal: "alice"})
	if hello.Name() != "hello" || len(hello.ID()) != 36 {
		t.Fatalf("name %q id %q", hello.Name(), hello.ID())
	}
	if hello.Runtime() != rt {
		t.Fatal("Runtime() is not the loading runtime")
	}
	res := call(t, hello, "greet", `{"name":"Go"}`)
	if res.Action != "final" || !res.HasData || !strings.Contains(res.Data, `"message":"Hello, Go!"`) ||
		!strings.Contains(res.Data, `"principal":"alice"`) {
		t.Fatalf("greet: %+v", res)
	}
	res = call(t, hello, "noop", "")
	if res.Action != "continue" || res.HasData || res.Data != "" {
		t.Fatalf("noop: %+v", res)
	}
	res = call(t, hello, "echo", "payload with \x00 inside")
	if res.Data != "payload with \x00 inside" {
		t.Fatalf("echo: %q", res.Data)
	}
	res = call(t, hello, "made-up", "")
	if res.Action != "deny" || !strings.Contains(res.Data, "made-up") {
		t.Fatalf("unknown action: %+v", res)
	}

	res, err := hello.CallWith(&CallOptions{Principal: "dora", Config: map[string]string{"GREETING": "Howdy"}},
		"greet", []byte(`{"name":"Go"}`))
	if err != nil || !strings.Contains(res.Data, `"Howdy, Go!"`) || !strings.Contains(res.Data, `"principal":"dora"`) {
		t.Fatalf("CallWith: %+v, %v", res, err)
	}
	if res, err = hello.CallWith(nil, "noop", nil); err != nil || res.Action != "continue" {
		t.Fatalf("CallWith(nil): %+v, %v", res, err)
	}
	if hello.HasCapability("net") {
		t.Fatal("hello claims net")
	}

	withConfig := load(t, rt, "hello", &LoadOptions{Config: map[string]string{"GREETING": "Hi", "UNDECLARED": ""}})
	if res := call(t, withConfig, "greet", `{"name":"x"}`); !strings.Contains(res.Data, `"Hi, x!"`) {
		t.Fatalf("load-time config: %+v", res)
	}
}

func TestLoadBytes(t *testing.T) {
	rt := newRuntime(t, nil)
	wasm, err := os.ReadFile(capsuleDir("hello") + "/hello.wasm")
	if err != nil {
		t.Fatal(err)
	}
	manifest := "[package]\nname = \"from-bytes\"\nversion = \"1.0.0\"\n"
	c, err := rt.LoadBytes(wasm, manifest, nil)
	if err != nil {
		t.Fatalf("LoadBytes: %v", err)
	}
	defer c.Close()
	if c.Name() != "from-bytes" {
		t.Fatalf("name %q", c.Name())
	}
	if res := call(t, c, "echo-len", "12345"); res.Data != "5" {
		t.Fatalf("echo-len: %+v", res)
	}
}

func TestErrors(t *testing.T) {
	rt := newRuntime(t, nil)
	manifest := "[package]\nname = \"b\"\nversion = \"1.0.0\"\n"

	_, err := rt.LoadBytes([]byte("definitely not wasm"), "[package", nil)
	expectCode(t, err, ErrManifest)
	var e *Error
	errors.As(err, &e)
	if e.Message == "" || !strings.HasPrefix(err.Error(), "astrid: ") {
		t.Fatalf("manifest error without a message: %q", err)
	}
	if errors.Is(err, ErrCompile) {
		t.Fatal("a manifest error matches ErrCompile")
	}

	_, err = rt.LoadBytes([]byte("definitely not wasm"), manifest, nil)
	expectCode(t, err, ErrCompile)
	_, err = rt.LoadBytes(nil, manifest, nil)
	expectCode(t, err, ErrCompile)
	_, err = rt.LoadBytes([]byte("x"), "", nil)
	expectCode(t, err, ErrInvalidArgument)
	_, err = rt.Load("/nonexistent/capsule", nil)
	expectCode(t, err, ErrNotFound)
	_, err = rt.Load(capsuleDir("bad-import"), nil)
	expectCode(t, err, ErrLink)
	_, err = rt.Load("\xc3\x28", nil)
	expectCode(t, err, ErrUTF8)
	_, err = rt.Load(capsuleDir("hello"), &LoadOptions{Principal: "bad\x01principal"})
	expectCode(t, err, ErrInvalidArgument)

	hello := load(t, rt, "hello", nil)
	_, err = hello.Call("gr\xffet", nil)
	expectCode(t, err, ErrUTF8)

	_, err = NewRuntime(&Config{Flags: 0x80})
	expectCode(t, err, ErrInvalidArgument)

	// Sentinels print their code; errors.Is needs the same code.
	if ErrClosed.Error() != "astrid: closed" || errors.Is(ErrClosed, ErrTrap) {
		t.Fatalf("sentinel: %q", ErrClosed.Error())
	}
	if Code(-999).String() != "code -999" {
		t.Fatal(Code(-999).String())
	}
}

func TestHostileGuests(t *testing.T) {
	rt := newRuntime(t, &Config{Timeout: 400 * time.Millisecond, Fuel: 1 << 50})
	hostile := load(t, rt, "hostile", nil)
	_, err := hostile.Call("trap", nil)
	expectCode(t, err, ErrTrap)
	_, err = hostile.Call("panic", nil)
	expectCode(t, err, ErrTrap)
	start := time.Now()
	_, err = hostile.Call("loop", nil)
	expectCode(t, err, ErrTimeout)
	if time.Since(start) > 5*time.Second {
		t.Fatalf("timeout took %v", time.Since(start))
	}
	if res := call(t, hostile, "ok", ""); res.Data != "harmless" {
		t.Fatalf("after the failures: %+v", res)
	}

	rt2 := newRuntime(t, &Config{Timeout: 20 * time.Second, Fuel: 1 << 50})
	looper := load(t, rt2, "hostile", nil)
	go func() {
		time.Sleep(200 * time.Millisecond)
		looper.Cancel()
	}()
	_, err = looper.Call("loop", nil)
	expectCode(t, err, ErrCancelled)
	call(t, looper, "ok", "") // the cancel did not leak into the next call
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	rt, err := NewRuntime(nil)
	if err != nil {
		t.Fatal(err)
	}
	hello, err := rt.Load(capsuleDir("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	other, err := rt.Load(capsuleDir("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := hello.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := hello.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = hello.Call("noop", nil)
	expectCode(t, err, ErrClosed)
	_, err = hello.CallWith(&CallOptions{Principal: "p"}, "noop", nil)
	expectCode(t, err, ErrClosed)
	expectCode(t, hello.Cancel(), ErrClosed)
	if hello.HasCapability("fs_read") {
		t.Fatal("closed capsule has a capability")
	}
	if hello.Name() != "hello" {
		t.Fatal("name lost on close")
	}

	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
	// A capsule of a closed runtime: the library answers closed, and it
	// still closes cleanly.
	_, err = other.Call("noop", nil)
	expectCode(t, err, ErrClosed)
	if err := other.Close(); err != nil {
		t.Fatalf("closing a capsule of a closed runtime: %v", err)
	}

	_, err = rt.Load(capsuleDir("hello"), nil)
	expectCode(t, err, ErrClosed)
	_, err = rt.LoadBytes([]byte("x"), "y", nil)
	expectCode(t, err, ErrClosed)
	expectCode(t, rt.SetGate(func(*GateRequest) Verdict { return Allow }), ErrClosed)
	expectCode(t, rt.SetLogger(func(LogRecord) {}), ErrClosed)
	expectCode(t, rt.SetAuditor(func(AuditEvent) {}), ErrClosed)
	expectCode(t, rt.SetSecretProvider(func(SecretRequest) (string, bool, error) { return "", false, nil }), ErrClosed)
	expectCode(t, rt.MountVFS("cwd", newMemFS()), ErrClosed)
	expectCode(t, rt.SetKV(newMapKV()), ErrClosed)
	expectCode(t, rt.Publish("a.b", []byte("{}")), ErrClosed)
	_, err = rt.Subscribe("a.*", func(Message) {})
	expectCode(t, err, ErrClosed)
}

func TestConcurrentCloseAndCall(t *testing.T) {
	rt := newRuntime(t, nil)
	hello := load(t, rt, "hello", nil)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < 200; j++ {
				if _, err := hello.Call("noop", nil); err != nil {
					if !errors.Is(err, ErrClosed) && !errors.Is(err, ErrCancelled) {
						t.Errorf("call racing Close: %v", err)
					}
					return
				}
			}
		}()
	}
	time.Sleep(5 * time.Millisecond)
	hello.Close()
	wg.Wait()
}
