package astrid

import (
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// socketPath is a socket path in a fresh short directory (a unix socket
// path has at most 107 bytes; t.TempDir can be longer).
func socketPath(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/tmp", "astrid-go-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return filepath.Join(dir, "netprobe.sock")
}

// dialUnix connects to path, retrying while the capsule has not bound it yet.
func dialUnix(path string) (net.Conn, error) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		conn, err := net.Dial("unix", path)
		if err == nil {
			// A broken runtime must not hang the test.
			return conn, conn.SetDeadline(time.Now().Add(10 * time.Second))
		}
		if time.Now().After(deadline) {
			return nil, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// readToEnd reads until EOF; a reset by the peer counts as EOF.
func readToEnd(conn net.Conn) (string, error) {
	data, err := io.ReadAll(conn)
	if errors.Is(err, syscall.ECONNRESET) {
		err = nil
	}
	return string(data), err
}

// clientLog is what the client side saw.
type clientLog struct {
	refused []string // what each refused connection read ("" = closed without data)
	reply   string   // what the accepted connection read
	err     error
}

// runClients connects refusals times expecting to be closed unheard, then
// once more sending "hello" and reading the answer.
func runClients(path string, refusals int) (log clientLog) {
	for i := 0; i < refusals; i++ {
		conn, err := dialUnix(path)
		if err != nil {
			log.err = err
			return log
		}
		conn.Write([]byte("x")) // may already fail: the refusal is what is checked
		got, err := readToEnd(conn)
		conn.Close()
		if err != nil {
			log.err = err
			return log
		}
		log.refused = append(log.refused, got)
	}
	conn, err := dialUnix(path)
	if err != nil {
		log.err = err
		return log
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("hello")); err != nil {
		log.err = err
		return log
	}
	log.reply, log.err = readToEnd(conn)
	return log
}

// serveUnix calls netprobe's unix-serve while the clients connect from a goroutine.
func serveUnix(t *testing.T, c *Capsule, path string, refusals int) (Result, clientLog) {
	t.Helper()
	done := make(chan clientLog, 1)
	go func() { done <- runClients(path, refusals) }()
	res, callErr := c.Call("unix-serve", []byte("5000"))
	log := <-done
	if callErr != nil {
		t.Fatalf("unix-serve: %v", callErr)
	}
	if log.err != nil {
		t.Fatalf("clients: %v", log.err)
	}
	return res, log
}

func TestAcceptVerifierRefusesThenAllowsWithAPrincipal(t *testing.T) {
	path := socketPath(t)
	rt := newRuntime(t, &Config{Flags: FlagAllowLoopback})
	var mu sync.Mutex
	var seen []AcceptRequest
	var kept *AcceptRequest
	if err := rt.SetAcceptVerifier(func(req *AcceptRequest) Verdict {
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, *req)
		kept = req
		if len(seen) == 1 {
			return Deny // the first peer is refused
		}
		if err := req.SetPrincipal("carol"); err != nil {
			t.Errorf("SetPrincipal: %v", err)
		}
		return Allow
	}); err != nil {
		t.Fatal(err)
	}
	if err := rt.AssignUnixSocket("netprobe", path); err != nil {
		t.Fatal(err)
	}
	c := load(t, rt, "netprobe", nil)
	res, log := serveUnix(t, c, path, 1)
	if res.Action != "ok" || res.Data != "got:hello|principal=carol|owner=none" {
		t.Fatalf("unix-serve answered %s %q", res.Action, res.Data)
	}
	if len(log.refused) != 1 || log.refused[0] != "" {
		t.Fatalf("the refused peer read %q", log.refused)
	}
	if log.reply != "hi" {
		t.Fatalf("the accepted peer read %q", log.reply)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 2 {
		t.Fatalf("the verifier ran %d times", len(seen))
	}
	for _, req := range seen {
		// The peer is this process.
		if req.Capsule != "netprobe" || req.PID != int64(os.Getpid()) ||
			req.UID != uint32(os.Getuid()) || req.GID != uint32(os.Getgid()) {
			t.Fatalf("verifier saw %+v", req)
		}
	}
	// After its callback a request is dead.
	if err := kept.SetPrincipal("late"); !errors.Is(err, ErrClosed) { // a dead request, as the library says
		t.Fatalf("SetPrincipal after the callback: %v", err)
	}
	if err := rt.SetAcceptVerifier(nil); err != nil {
		t.Fatal(err)
	}
}

func TestAcceptVerifierPanicsRefuseAndAreReported(t *testing.T) {
	path := socketPath(t)
	rt := newRuntime(t, &Config{Flags: FlagAllowLoopback})
	var mu sync.Mutex
	var panics []*CallbackPanic
	rt.SetPanicHandler(func(p *CallbackPanic) {
		mu.Lock()
		panics = append(panics, p)
		mu.Unlock()
	})
	var calls int
	var badPrincipal error
	rt.SetAcceptVerifier(func(req *AcceptRequest) Verdict {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		switch n {
		case 1:
			panic("verifier exploded")
		case 2:
			return Pending // anything but Allow refuses
		}
		err := req.SetPrincipal("bad\ncontrol") // refused by the library; the verdict still stands
		mu.Lock()
		badPrincipal = err
		mu.Unlock()
		return Allow // without a principal
	})
	rt.AssignUnixSocket("netprobe", path)
	c := load(t, rt, "netprobe", nil)
	res, log := serveUnix(t, c, path, 2)
	if res.Action != "ok" || res.Data != "got:hello|principal=none|owner=none" {
		t.Fatalf("unix-serve answered %s %q", res.Action, res.Data)
	}
	if strings.Join(log.refused, ",") != "," || log.reply != "hi" {
		t.Fatalf("clients read %q then %q", log.refused, log.reply)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 {
		t.Fatalf("the verifier ran %d times", calls)
	}
	if !errors.Is(badPrincipal, ErrInvalidArgument) {
		t.Fatalf("SetPrincipal(bad) = %v", badPrincipal)
	}
	if len(panics) != 1 || panics[0].Callback != "accept" || panics[0].Value != "verifier exploded" {
		t.Fatalf("panic reports: %+v", panics)
	}
}

func TestUnixSocketAssignment(t *testing.T) {
	rt := newRuntime(t, &Config{Flags: FlagAllowLoopback})
	unassigned := func() {
		t.Helper()
		c := load(t, rt, "netprobe", nil)
		if got := fsAnswer(t, c, "unix-serve", "10"); got != "err:address-not-available" {
			t.Fatalf("unix-serve without a path: %s", got)
		}
		c.Close()
	}
	unassigned()
	// Assigned, then removed again: capsules loaded afterwards have no path.
	if err := rt.AssignUnixSocket("netprobe", socketPath(t)); err != nil {
		t.Fatal(err)
	}
	if err := rt.UnassignUnixSocket("netprobe"); err != nil {
		t.Fatal(err)
	}
	unassigned()

	expectCode(t, rt.AssignUnixSocket("netprobe", "/tmp/"+strings.Repeat("x", 200)), ErrInvalidArgument)
	expectCode(t, rt.AssignUnixSocket("", "/tmp/astrid-go.sock"), ErrInvalidArgument)
	rt.Close()
	expectCode(t, rt.AssignUnixSocket("netprobe", "/tmp/astrid-go.sock"), ErrClosed)
	expectCode(t, rt.UnassignUnixSocket("netprobe"), ErrClosed)
	expectCode(t, rt.SetAcceptVerifier(func(*AcceptRequest) Verdict { return Allow }), ErrClosed)
}

func TestAllowAnyBindFlag(t *testing.T) {
	if FlagAllowAnyBind != 8 || FlagWASISockets != 16 {
		t.Fatalf("flag values %d %d", FlagAllowAnyBind, FlagWASISockets)
	}
	c := load(t, newRuntime(t, &Config{Flags: FlagAllowLoopback}), "netprobe", nil)
	if got := fsAnswer(t, c, "bind", "0.0.0.0\n0"); got != "err:airlock-rejected" {
		t.Fatalf("wildcard bind without the flag: %s", got)
	}
	if got := fsAnswer(t, c, "bind", "127.0.0.1\n0"); got != "ok:ok" {
		t.Fatalf("loopback bind: %s", got)
	}
	c = load(t, newRuntime(t, &Config{Flags: FlagAllowLoopback | FlagAllowAnyBind}), "netprobe", nil)
	if got := fsAnswer(t, c, "bind", "0.0.0.0\n0"); got != "ok:ok" {
		t.Fatalf("wildcard bind with the flag: %s", got)
	}
}

func TestWASISocketsFlag(t *testing.T) {
	c := load(t, newRuntime(t, &Config{Flags: FlagAllowLoopback}), "wasisock", nil)
	// Without the flag every WASI socket operation is refused.
	if res := call(t, c, "bind", "127.0.0.1:0"); res.Action != "err" {
		t.Fatalf("WASI bind without the flag: %s %s", res.Action, res.Data)
	}
	c = load(t, newRuntime(t, &Config{Flags: FlagAllowLoopback | FlagWASISockets}), "wasisock", nil)
	if res := call(t, c, "bind", "127.0.0.1:0"); res.Action != "ok" || !strings.HasPrefix(res.Data, "127.0.0.1:") {
		t.Fatalf("WASI bind with the flag: %s %s", res.Action, res.Data)
	}
}
