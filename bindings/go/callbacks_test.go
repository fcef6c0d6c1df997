package astrid

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// publicOnly is the gate of the VFS example: reads anywhere, writes only
// under cwd://ws/public.
func publicOnly(req *GateRequest) Verdict {
	if req.Kind != GateFileWrite || req.Path == "cwd://ws/public" || strings.HasPrefix(req.Path, "cwd://ws/public/") {
		return Allow
	}
	if err := req.SetReason("writes only under ws/public"); err != nil {
		panic(err)
	}
	return Deny
}

// auditLog collects audit events.
type auditLog struct {
	mu     sync.Mutex
	events []AuditEvent
}

func (a *auditLog) add(e AuditEvent) {
	a.mu.Lock()
	a.events = append(a.events, e)
	a.mu.Unlock()
}

func (a *auditLog) find(call string, outcome AuditOutcome) (AuditEvent, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, e := range a.events {
		if e.Call == call && e.Outcome == outcome {
			return e, true
		}
	}
	return AuditEvent{}, false
}

func TestGateDeniesWrite(t *testing.T) {
	rt := newRuntime(t, nil)
	var seen []GateRequest
	var mu sync.Mutex
	if err := rt.SetGate(func(req *GateRequest) Verdict {
		mu.Lock()
		seen = append(seen, *req)
		mu.Unlock()
		return publicOnly(req)
	}); err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	if err := rt.SetAuditor(audit.add); err != nil {
		t.Fatal(err)
	}
	m := newMemFS()
	m.addDir("ws")
	m.addDir("ws/public")
	if err := rt.MountVFS("cwd", m); err != nil {
		t.Fatal(err)
	}
	fsprobe := load(t, rt, "fsprobe", &LoadOptions{Principal: "erin"})
	if got := fsAnswer(t, fsprobe, "write-file", "ws/public/a.txt\nallowed"); got != "ok:ok" {
		t.Fatalf("allowed write: %s", got)
	}
	if got := fsAnswer(t, fsprobe, "write-file", "ws/secret.txt\nrefused"); got != "err:capability-denied" {
		t.Fatalf("denied write: %s", got)
	}
	if got := fsAnswer(t, fsprobe, "read-file", "ws/public/a.txt"); got != "ok:allowed" {
		t.Fatalf("read back: %s", got)
	}
	if got := fsAnswer(t, fsprobe, "exists", "ws/secret.txt"); got != "ok:false" {
		t.Fatalf("the denied write happened: %s", got)
	}
	mu.Lock()
	var denied *GateRequest
	for i := range seen {
		if seen[i].Path == "cwd://ws/secret.txt" && seen[i].Kind == GateFileWrite {
			denied = &seen[i]
		}
	}
	mu.Unlock()
	if denied == nil || denied.Kind != GateFileWrite || denied.Capsule != "fsprobe" || denied.Principal != "erin" {
		t.Fatalf("gate request: %+v", denied)
	}
	if err := denied.SetReason("too late"); err == nil {
		t.Fatal("SetReason worked after the callback returned")
	}
	rt.Close() // flushes the audit queue
	ev, ok := audit.find("fs.write-file", AuditDenied)
	if !ok || !strings.HasSuffix(ev.Reason, "writes only under ws/public") || ev.Target != "cwd://ws/secret.txt" {
		t.Fatalf("denied audit event: %+v (found %v)", ev, ok)
	}

	// Without a gate, the manifest alone decides.
	rt2 := newRuntime(t, nil)
	rt2.SetGate(func(*GateRequest) Verdict { return Deny })
	if err := rt2.SetGate(nil); err != nil {
		t.Fatal(err)
	}
	c := load(t, rt2, "fsprobe", nil)
	if got := fsAnswer(t, c, "write-file", "ws\nx"); got != "ok:ok" {
		t.Fatalf("after removing the gate: %s", got)
	}
}

func TestDeferredGate(t *testing.T) {
	rt := newRuntime(t, nil)
	tickets := make(chan *GateTicket, 1)
	rt.SetGate(func(req *GateRequest) Verdict {
		ticket, err := req.Defer()
		if err != nil {
			t.Errorf("Defer: %v", err)
			return Deny
		}
		tickets <- ticket
		return Pending
	})
	c := load(t, rt, "fsprobe", nil)
	for _, tc := range []struct {
		verdict Verdict
		want    string
	}{{Allow, "ok:ok"}, {Deny, "err:capability-denied"}} {
		go func(v Verdict) {
			ticket := <-tickets
			if err := ticket.Resolve(v, "decided later"); err != nil {
				t.Errorf("Resolve: %v", err)
			}
			if err := ticket.Resolve(v, ""); !errors.Is(err, ErrClosed) {
				t.Errorf("second Resolve: %v", err)
			}
			ticket.Close() // after Resolve: nothing left to do
		}(tc.verdict)
		if got := fsAnswer(t, c, "write-file", "ws\nx"); got != tc.want {
			t.Fatalf("deferred %v: %s", tc.verdict, got)
		}
	}
	// A ticket closed without an answer denies.
	go func() { (<-tickets).Close() }()
	if got := fsAnswer(t, c, "write-file", "ws\nx"); got != "err:capability-denied" {
		t.Fatalf("closed ticket: %s", got)
	}
}

func TestGoVFSServesFsprobe(t *testing.T) {
	rt := newRuntime(t, nil)
	m := newMemFS()
	m.addDir("ws")
	m.addFile("ws/hello.txt", "hello from Go")
	m.nodes["ws/link"] = &memNode{link: "hello.txt"}
	if err := rt.MountVFS("cwd", m); err != nil {
		t.Fatal(err)
	}
	c := load(t, rt, "fsprobe", nil)
	steps := []struct{ action, payload, want string }{
		{"read-file", "ws/hello.txt", "ok:hello from Go"},
		{"read-file", "ws/missing", "err:not-found"},
		{"stat", "ws/hello.txt", "ok:file:13"},
		{"stat-times", "ws/hello.txt", "ok:true"},
		{"stat", "ws", "ok:dir:0"},
		{"read-file", "ws/link", "ok:hello from Go"},
		{"stat-symlink", "ws/link", "ok:symlink:9"},
		{"read-link", "ws/link", "ok:hello.txt"},
		{"write-file", "ws/new.txt\nwritten by the guest", "ok:ok"},
		{"append", "ws/new.txt\n, appended", "ok:ok"},
		{"read-file", "ws/new.txt", "ok:written by the guest, appended"},
		{"mkdir", "ws/sub", "ok:ok"},
		{"mkdir", "ws/sub", "err:already-exists"},
		{"readdir", "ws", "ok:hello.txt,link,new.txt,sub"},
		{"rename", "ws/new.txt\nws/sub/moved.txt", "ok:ok"},
		{"hard-link", "ws/sub/moved.txt\nws/second-name.txt", "ok:ok"},
		{"read-file", "ws/second-name.txt", "ok:written by the guest, appended"},
		{"unlink", "ws/second-name.txt", "ok:ok"},
		{"exists", "ws/second-name.txt", "ok:false"},
		{"handle", "ws/sub/moved.txt\nread-write\nr:0:7;w:0:WRITTEN;len:4;stat;sync;r:0:99", "ok:written;7;ok;file:4;ok;WRIT"},
		{"remove-dir-all", "ws/sub", "ok:2"},
		{"exists", "ws/sub", "ok:false"},
	}
	for _, s := range steps {
		if got := fsAnswer(t, c, s.action, s.payload); got != s.want {
			t.Fatalf("%s(%q) = %s, want %s", s.action, s.payload, got, s.want)
		}
	}
	if m.calls.Load() == 0 {
		t.Fatal("the Go provider was never called")
	}
	// Unmounted, the provider stays in use by the capsule loaded before;
	// it is released once that capsule is gone.
	if err := rt.MountVFS("cwd", nil); err != nil {
		t.Fatal(err)
	}
	if got := fsAnswer(t, c, "read-file", "ws/hello.txt"); got != "ok:hello from Go" || m.released.Load() != 0 {
		t.Fatalf("after unmount: %s, released %d", got, m.released.Load())
	}
	c.Close()
	if m.released.Load() != 1 {
		t.Fatalf("provider released %d times after its last capsule closed", m.released.Load())
	}

	// A provider with only the required methods: writes are not supported.
	rt2 := newRuntime(t, nil)
	ro := newMemFS()
	ro.addDir("ws")
	ro.addFile("ws/r.txt", "read only")
	if err := rt2.MountVFS("cwd", readOnlyFS{ro}); err != nil {
		t.Fatal(err)
	}
	c2 := load(t, rt2, "fsprobe", nil)
	if got := fsAnswer(t, c2, "read-file", "ws/r.txt"); got != "ok:read only" {
		t.Fatalf("read-only read: %s", got)
	}
	if got := fsAnswer(t, c2, "write-file", "ws/r.txt\nx"); got != "err:access" {
		t.Fatalf("read-only write: %s", got)
	}
	if got := fsAnswer(t, c2, "mkdir", "ws/d"); got != `err:unknown(not supported)` {
		t.Fatalf("read-only mkdir: %s", got)
	}
	if err := rt2.MountVFS("nope", ro); !errors.Is(err, ErrInvalidArgument) || !strings.Contains(err.Error(), "unknown mount `nope`") {
		t.Fatalf("unknown mount (the error carries the library's message): %v", err)
	}
	if err := rt2.MountVFS("cwd", nil); err != nil {
		t.Fatalf("unmount: %v", err)
	}
}

// TestGateRequestRefusedOffItsThread: the library accepts a request handle
// only on the OS thread running the callback. A goroutine started inside the
// callback runs on another thread (the callback's goroutine is locked to its
// C thread), so its SetReason and Defer are refused with the library's
// message, while the callback's own goroutine still answers.
func TestGateRequestRefusedOffItsThread(t *testing.T) {
	rt := newRuntime(t, nil)
	var once sync.Once
	var mu sync.Mutex // the race detector does not see the library's own synchronisation
	var offReason, offDefer, onReason error
	if err := rt.SetGate(func(req *GateRequest) Verdict {
		once.Do(func() {
			done := make(chan struct{})
			go func() {
				defer close(done)
				r := req.SetReason("from another goroutine")
				_, d := req.Defer()
				mu.Lock()
				offReason, offDefer = r, d
				mu.Unlock()
			}()
			<-done
			r := req.SetReason("on the callback's goroutine")
			mu.Lock()
			onReason = r
			mu.Unlock()
		})
		return Allow
	}); err != nil {
		t.Fatal(err)
	}
	fsprobe := load(t, rt, "fsprobe", nil)
	if got := fsAnswer(t, fsprobe, "write-file", "ws\nx"); got != "ok:ok" {
		t.Fatalf("write: %s", got)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, err := range []error{offReason, offDefer} {
		if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "not a live request on this thread") {
			t.Fatalf("off-thread use of the request: %v", err)
		}
	}
	if onReason != nil {
		t.Fatalf("SetReason on the callback's goroutine: %v", onReason)
	}
}

// TestErrorsCarryTheLibraryMessage: calls that used to report a bare status
// (installing callbacks, cancel, resolving tickets) now return the
// library's message.
func TestErrorsCarryTheLibraryMessage(t *testing.T) {
	rt := newRuntime(t, nil)
	hello := load(t, rt, "hello", nil)
	p := hello.ptr.Load()
	if status := libraryUnload(p); status != 0 {
		t.Fatalf("unload behind the binding's back: %d", status)
	}
	err := hello.Cancel()
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "capsule") {
		t.Fatalf("cancel of a capsule the library unloaded: %v", err)
	}
	if err := hello.Close(); err != nil {
		t.Fatalf("close after the library unloaded: %v", err)
	}
	forged := &GateTicket{}
	forged.ptr.Store(forgedTicket())
	err = forged.Resolve(Allow, "")
	if !errors.Is(err, ErrClosed) || !strings.Contains(err.Error(), "already resolved or freed") {
		t.Fatalf("resolve of a ticket the library never issued: %v", err)
	}
}

func TestLogAndAuditCallbacks(t *testing.T) {
	rt := newRuntime(t, nil)
	var mu sync.Mutex
	var lines []LogRecord
	if err := rt.SetLogger(func(r LogRecord) {
		mu.Lock()
		lines = append(lines, r)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	audit := &auditLog{}
	rt.SetAuditor(audit.add)
	hello := load(t, rt, "hello", &LoadOptions{Principal: "alice"})
	call(t, hello, "greet", `{"name":"logs"}`)
	mu.Lock()
	got := append([]LogRecord(nil), lines...)
	mu.Unlock()
	if len(got) != 2 {
		t.Fatalf("log lines: %+v", got)
	}
	if got[0].Level != LogInfo || got[0].Capsule != "hello" || got[0].Principal != "alice" ||
		got[0].Message != "greeting logs on behalf of alice" {
		t.Fatalf("first line: %+v", got[0])
	}
	if got[1].Message != "hello capsule wrote this line to stdout" || got[1].Level.String() != "info" {
		t.Fatalf("stdout line: %+v", got[1])
	}
	// Replacing the logger: the old one gets nothing more.
	var second atomic.Int32
	rt.SetLogger(func(LogRecord) { second.Add(1) })
	call(t, hello, "greet", `{"name":"again"}`)
	mu.Lock()
	if len(lines) != 2 {
		t.Fatalf("replaced logger still called: %d", len(lines))
	}
	mu.Unlock()
	if second.Load() != 2 {
		t.Fatalf("new logger: %d lines", second.Load())
	}
	rt.SetLogger(nil)
	call(t, hello, "greet", `{"name":"silent"}`)
	if second.Load() != 2 {
		t.Fatal("removed logger still called")
	}
	rt.Close() // drains the audit queue
	ev, ok := audit.find("sys.get-config", AuditAllowed)
	if !ok || ev.Capsule != "hello" || ev.CapsuleID != hello.ID() || ev.Target != "GREETING" || ev.Principal != "alice" {
		t.Fatalf("get-config audit: %+v (found %v)", ev, ok)
	}
	if _, ok := audit.find("sys.log", AuditAllowed); !ok {
		t.Fatal("no sys.log audit event")
	}
}

func TestSecretProvider(t *testing.T) {
	rt := newRuntime(t, nil)
	var asked atomic.Int32
	rt.SetSecretProvider(func(req SecretRequest) (string, bool, error) {
		asked.Add(1)
		switch {
		case req.Capsule != "probe" || req.Key != "TOKEN":
			return "", false, fmt.Errorf("unexpected request %+v", req)
		case req.Principal == "nobody-special":
			return "", false, nil
		case req.Principal == "failing":
			return "", false, errors.New("vault unreachable")
		}
		return "go-secret", true, nil
	})
	probe := load(t, rt, "probe", &LoadOptions{Config: map[string]string{"REQUIRED": "yes"}})
	if res := call(t, probe, "config:TOKEN", ""); res.Data != "some:go-secret" {
		t.Fatalf("secret: %+v", res)
	}
	res, _ := probe.CallWith(&CallOptions{Principal: "nobody-special"}, "config:TOKEN", nil)
	if res.Data != "none" {
		t.Fatalf("no value: %+v", res)
	}
	res, _ = probe.CallWith(&CallOptions{Principal: "failing"}, "config:TOKEN", nil)
	if !strings.HasPrefix(res.Data, "err:unknown(") {
		t.Fatalf("failing provider: %+v", res)
	}
	if asked.Load() != 3 {
		t.Fatalf("provider asked %d times", asked.Load())
	}
	rt.SetSecretProvider(nil)
	if res := call(t, probe, "config:TOKEN", ""); res.Data != "none" {
		t.Fatalf("without a provider: %+v", res)
	}
	// A declared key without a value fails the load.
	_, err := rt.Load(capsuleDir("probe"), nil)
	if err == nil {
		t.Fatal("probe loaded without its REQUIRED config")
	}
}

// TestCallbacksFromWorkerThreads runs 8 goroutines calling at once through
// a Go gate, a Go VFS and a Go logger, in both callback modes, and checks
// that two gate callbacks were in flight at the same time.
func TestCallbacksFromWorkerThreads(t *testing.T) {
	for _, mode := range []struct {
		name  string
		flags RuntimeFlag
	}{{"default", 0}, {"inline", FlagInlineCallbacks}} {
		t.Run(mode.name, func(t *testing.T) {
			rt := newRuntime(t, &Config{Flags: mode.flags, WorkerThreads: 4, GateTimeout: 20 * time.Second})
			m := newMemFS()
			m.addDir("ws")
			for i := 0; i < 8; i++ {
				m.addFile(fmt.Sprintf("ws/f%d", i), strings.Repeat(digit(i), 100+i))
			}
			rt.MountVFS("cwd", m)
			var gates, inFlight, overlapped atomic.Int32
			var logs atomic.Int32
			meet := make(chan struct{})
			var meetOnce sync.Once
			rt.SetGate(func(req *GateRequest) Verdict {
				gates.Add(1)
				if inFlight.Add(1) >= 2 {
					overlapped.Store(1)
					meetOnce.Do(func() { close(meet) })
				}
				if overlapped.Load() == 0 {
					// Hold the first callbacks a little so that a second one can
					// arrive while this one runs.
					select {
					case <-meet:
					case <-time.After(2 * time.Second):
					}
				}
				inFlight.Add(-1)
				return Allow
			})
			rt.SetLogger(func(LogRecord) { logs.Add(1) })
			fsprobe := load(t, rt, "fsprobe", nil)
			hello := load(t, rt, "hello", nil)
			const perGoroutine = 10
			var wg sync.WaitGroup
			errs := make(chan error, 8)
			for g := 0; g < 8; g++ {
				wg.Add(1)
				go func(g int) {
					defer wg.Done()
					want := strings.Repeat(digit(g), 100+g)
					for i := 0; i < perGoroutine; i++ {
						res, err := fsprobe.Call("read-file", []byte(fmt.Sprintf("ws/f%d", g)))
						if err != nil || res.Action != "ok" || res.Data != want {
							errs <- fmt.Errorf("goroutine %d read %d: %+v %v", g, i, res, err)
							return
						}
						res, err = hello.Call("greet", []byte(fmt.Sprintf(`{"name":"g%d"}`, g)))
						if err != nil || !strings.Contains(res.Data, fmt.Sprintf("Hello, g%d!", g)) {
							errs <- fmt.Errorf("goroutine %d greet %d: %+v %v", g, i, res, err)
							return
						}
					}
				}(g)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if gates.Load() != 8*perGoroutine {
				t.Fatalf("gate called %d times, want %d", gates.Load(), 8*perGoroutine)
			}
			if logs.Load() != 2*8*perGoroutine {
				t.Fatalf("logger called %d times, want %d", logs.Load(), 2*8*perGoroutine)
			}
			if m.reads.Load() < 8*perGoroutine {
				t.Fatalf("VFS reads: %d", m.reads.Load())
			}
			if overlapped.Load() != 1 {
				t.Fatal("no two gate callbacks ever ran at the same time")
			}
		})
	}
}

func digit(i int) string { return fmt.Sprint(i % 10) }

func TestPanicsInCallbacks(t *testing.T) {
	for _, mode := range []struct {
		name  string
		flags RuntimeFlag
	}{{"default", 0}, {"inline", FlagInlineCallbacks}} {
		t.Run(mode.name, func(t *testing.T) { testPanics(t, mode.flags) })
	}
}

func testPanics(t *testing.T, flags RuntimeFlag) {
	rt := newRuntime(t, &Config{Flags: flags})
	var mu sync.Mutex
	var panics []*CallbackPanic
	rt.SetPanicHandler(func(p *CallbackPanic) {
		mu.Lock()
		panics = append(panics, p)
		mu.Unlock()
	})
	taken := func() []*CallbackPanic {
		mu.Lock()
		defer mu.Unlock()
		out := panics
		panics = nil
		return out
	}
	m := newMemFS()
	m.addDir("ws")
	m.addFile("ws/ok.txt", "fine")
	m.addFile("ws/boom.txt", "never read")
	m.panicRead = "ws/boom.txt"
	rt.MountVFS("cwd", m)
	rt.SetGate(func(req *GateRequest) Verdict {
		if strings.Contains(req.Path, "gate-boom") {
			panic(fmt.Errorf("gate exploded on %s", req.Path))
		}
		return Allow
	})
	c := load(t, rt, "fsprobe", nil)

	if got := fsAnswer(t, c, "write-file", "ws/gate-boom\nx"); got != "err:capability-denied" {
		t.Fatalf("gate panic: %s", got)
	}
	p := taken()
	if len(p) != 1 || p[0].Callback != "gate" || !strings.Contains(p[0].Error(), "gate exploded on cwd://ws/gate-boom") ||
		!bytes.Contains(p[0].Stack, []byte("panic")) || p[0].Unwrap() == nil {
		t.Fatalf("gate panic report: %+v", p)
	}
	if got := fsAnswer(t, c, "read-file", "ws/boom.txt"); !strings.HasPrefix(got, "err:unknown(") {
		t.Fatalf("VFS panic: %s", got)
	}
	p = taken()
	if len(p) != 1 || p[0].Callback != "vfs.ReadAt" || p[0].Value != "memfs: read of ws/boom.txt panics on purpose" {
		t.Fatalf("VFS panic report: %+v", p)
	}
	// The runtime keeps serving.
	if got := fsAnswer(t, c, "read-file", "ws/ok.txt"); got != "ok:fine" {
		t.Fatalf("after the panics: %s", got)
	}
	if got := fsAnswer(t, c, "write-file", "ws/fine\nx"); got != "ok:ok" {
		t.Fatalf("write after the panics: %s", got)
	}

	// Log and secret callbacks: the call goes on; the secret read fails.
	rt.SetLogger(func(LogRecord) { panic("logger down") })
	rt.SetSecretProvider(func(SecretRequest) (string, bool, error) { panic("vault down") })
	hello := load(t, rt, "hello", nil)
	if res := call(t, hello, "greet", `{"name":"p"}`); !strings.Contains(res.Data, "Hello, p!") {
		t.Fatalf("greet with a panicking logger: %+v", res)
	}
	probe := load(t, rt, "probe", &LoadOptions{Config: map[string]string{"REQUIRED": "y"}})
	if res := call(t, probe, "config:TOKEN", ""); !strings.HasPrefix(res.Data, "err:unknown(") {
		t.Fatalf("secret provider panic: %+v", res)
	}
	kinds := map[string]int{}
	for _, p := range taken() {
		kinds[p.Callback]++
	}
	if kinds["log"] < 2 || kinds["secret"] != 1 {
		t.Fatalf("panic reports: %v", kinds)
	}

	// Without a handler, the report goes to the standard logger; a panicking
	// handler falls back to it too.
	var buf syncBuffer
	log.SetOutput(&buf)
	defer log.SetOutput(logOutput)
	rt.SetPanicHandler(nil)
	call(t, hello, "greet", `{"name":"q"}`)
	rt.SetPanicHandler(func(*CallbackPanic) { panic("handler down") })
	call(t, hello, "greet", `{"name":"r"}`)
	out := buf.String()
	if !strings.Contains(out, "astrid: log callback panicked: logger down") || !strings.Contains(out, "handler down") {
		t.Fatalf("standard logger got: %s", out)
	}
}

var logOutput = log.Writer()

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestReentrantCallsFromCallbacks(t *testing.T) {
	rt := newRuntime(t, nil)
	hello := load(t, rt, "hello", nil)
	var reentrant, cancelOK, closeRefused atomic.Int32
	rt.SetLogger(func(LogRecord) {
		if _, err := hello.Call("noop", nil); errors.Is(err, ErrReentrant) {
			reentrant.Add(1)
		}
		if _, err := rt.Load(capsuleDir("hello"), nil); !errors.Is(err, ErrReentrant) {
			t.Errorf("Load from a callback: %v", err)
		}
		if errors.Is(hello.Close(), ErrReentrant) {
			closeRefused.Add(1)
		}
	})
	call(t, hello, "greet", `{"name":"re"}`)
	if reentrant.Load() != 2 || closeRefused.Load() != 2 {
		t.Fatalf("re-entrant calls: %d, refused closes: %d", reentrant.Load(), closeRefused.Load())
	}
	// The refused Close left the capsule usable.
	rt.SetLogger(func(LogRecord) {
		if hello.Cancel() == nil {
			cancelOK.Add(1)
		}
	})
	if _, err := hello.Call("greet", nil); err != nil && !errors.Is(err, ErrCancelled) {
		t.Fatalf("greet: %v", err)
	}
	if cancelOK.Load() == 0 {
		t.Fatal("Cancel from a callback failed")
	}
	rt.SetLogger(nil)
	call(t, hello, "noop", "")
}

// TestFinalizersReleaseCallbacks drops a runtime without closing it: its
// finalizer must free it, the library must run the callbacks' finalizers
// (deleting their cgo.Handles), and the Go funcs must become garbage.
func TestFinalizersReleaseCallbacks(t *testing.T) {
	released := make(chan string, 8)
	func() {
		rt, err := NewRuntime(nil)
		if err != nil {
			t.Fatal(err)
		}
		capsule, err := rt.Load(capsuleDir("hello"), nil)
		if err != nil {
			t.Fatal(err)
		}
		gateMarker, logMarker := new([16]byte), new([16]byte)
		runtime.SetFinalizer(gateMarker, func(*[16]byte) { released <- "gate" })
		runtime.SetFinalizer(logMarker, func(*[16]byte) { released <- "log" })
		rt.SetGate(func(*GateRequest) Verdict { _ = gateMarker[0]; return Allow })
		rt.SetLogger(func(LogRecord) { _ = logMarker[0] })
		rt.MountVFS("tmp", newMemFS())
		call(t, capsule, "greet", `{"name":"gc"}`)
	}()
	got := map[string]bool{}
	deadline := time.Now().Add(20 * time.Second)
	for len(got) < 2 && time.Now().Before(deadline) {
		runtime.GC()
		select {
		case name := <-released:
			got[name] = true
		case <-time.After(50 * time.Millisecond):
		}
	}
	if !got["gate"] || !got["log"] {
		t.Fatalf("callbacks released: %v", got)
	}
}

func TestVFSErrorMapping(t *testing.T) {
	dir := t.TempDir()
	os.Mkdir(dir+"/full", 0o755)
	os.WriteFile(dir+"/full/f", nil, 0o644)
	_, openErr := os.Open(dir + "/missing")
	removeErr := os.Remove(dir + "/full")
	for _, tc := range []struct {
		err  error
		want VFSCode
	}{
		{nil, VFSOK},
		{fs.ErrNotExist, VFSNotFound},
		{openErr, VFSNotFound},
		{removeErr, VFSNotEmpty},
		{fs.ErrExist, VFSAlreadyExists},
		{fs.ErrPermission, VFSAccess},
		{fs.ErrClosed, VFSClosed},
		{errors.ErrUnsupported, VFSNotSupported},
		{fmt.Errorf("quota of %s: %w", "x", VFSQuota), VFSQuota},
		{&os.PathError{Op: "rename", Path: "a", Err: syscall.EXDEV}, VFSCrossVFS},
		{syscall.EISDIR, VFSIsDirectory},
		{VFSOK, VFSIO}, // an error claiming success is a failure
		{errors.New("disk on fire"), VFSIO},
	} {
		if got := VFSCode(vfsCodeOf(tc.err)); got != tc.want {
			t.Errorf("vfsCodeOf(%v) = %v, want %v", tc.err, got, tc.want)
		}
	}
	if VFSNotEmpty.Error() != "astrid vfs: not-empty" || VFSCode(99).Error() != "astrid vfs: code 99" {
		t.Fatalf("VFSCode text: %q %q", VFSNotEmpty.Error(), VFSCode(99).Error())
	}
}
