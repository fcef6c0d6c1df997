package astrid

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestCancelTokenEndsItsCallOnly(t *testing.T) {
	rt := newRuntime(t, &Config{Timeout: 20 * time.Second, Fuel: 1 << 50})
	hostile := load(t, rt, "hostile", nil)
	token, err := NewCancel()
	if err != nil {
		t.Fatal(err)
	}
	defer token.Close()
	var wg sync.WaitGroup
	var otherTook time.Duration
	var otherErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		start := time.Now()
		_, otherErr = hostile.CallWith(&CallOptions{Timeout: 1500 * time.Millisecond}, "sleep", nil)
		otherTook = time.Since(start)
	}()
	time.AfterFunc(200*time.Millisecond, func() { _ = token.Fire() })
	start := time.Now()
	_, err = hostile.CallWith(&CallOptions{Cancel: token}, "loop", nil)
	expectCode(t, err, ErrCancelled)
	if took := time.Since(start); took > time.Second {
		t.Fatalf("the fire took %v to end the call", took)
	}
	wg.Wait()
	if otherTook < 1400*time.Millisecond || errors.Is(otherErr, ErrCancelled) {
		t.Fatalf("the concurrent call was touched: %v after %v", otherErr, otherTook)
	}
	if !token.Fired() {
		t.Fatal("Fired() is false after Fire")
	}
	_, err = hostile.CallWith(&CallOptions{Cancel: token}, "ok", nil)
	expectCode(t, err, ErrCancelled)
	call(t, hostile, "ok", "")
	token.Close()
	token.Close()
	if err := token.Fire(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Fire after Close: %v", err)
	}
	_, err = hostile.CallWith(&CallOptions{Cancel: token}, "ok", nil)
	expectCode(t, err, ErrClosed)
}

func TestCallDeadlineAndFuel(t *testing.T) {
	rt := newRuntime(t, &Config{Timeout: 30 * time.Second, Fuel: 1 << 50})
	hostile := load(t, rt, "hostile", nil)
	start := time.Now()
	_, err := hostile.CallWith(&CallOptions{Timeout: 200 * time.Millisecond}, "loop", nil)
	expectCode(t, err, ErrTimeout)
	if took := time.Since(start); took > 700*time.Millisecond || !strings.Contains(err.Error(), "200 ms") {
		t.Fatalf("%v after %v", err, took)
	}
	_, err = hostile.CallWith(&CallOptions{Fuel: 2_000_000}, "loop", nil)
	expectCode(t, err, ErrOutOfFuel)
	_, err = hostile.CallWith(&CallOptions{Timeout: -time.Second}, "ok", nil)
	expectCode(t, err, ErrInvalidArgument)
}

func TestCallContext(t *testing.T) {
	rt := newRuntime(t, &Config{Timeout: 30 * time.Second, Fuel: 1 << 50})
	hostile := load(t, rt, "hostile", nil)

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(200*time.Millisecond, cancel)
	start := time.Now()
	_, err := hostile.CallContext(ctx, "loop", nil, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("cancelled context: %v", err)
	}
	var ce *ContextError
	if !errors.As(err, &ce) || time.Since(start) > time.Second {
		t.Fatalf("%T after %v", err, time.Since(start))
	}

	ctx, stop := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer stop()
	start = time.Now()
	_, err = hostile.CallContext(ctx, "loop", nil, nil)
	if !errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, ErrTimeout) {
		t.Fatalf("deadline: %v", err)
	}
	if took := time.Since(start); took > 600*time.Millisecond {
		t.Fatalf("the deadline took %v", took)
	}

	// Already done: the guest does not run.
	done, cancelDone := context.WithCancel(context.Background())
	cancelDone()
	_, err = hostile.CallContext(done, "ok", nil, nil)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, ErrCancelled) {
		t.Fatalf("done context: %v", err)
	}

	// A live context: the call runs normally, and its pooled token is reused.
	for i := 0; i < 3; i++ {
		live, stopLive := context.WithCancel(context.Background())
		res, err := hostile.CallContext(live, "ok", nil, &CallOptions{Principal: "dora"})
		stopLive()
		if err != nil || res.Data != "harmless" {
			t.Fatalf("live context: %+v %v", res, err)
		}
	}
	res, err := hostile.CallContext(context.Background(), "ok", nil, nil)
	if err != nil || res.Data != "harmless" {
		t.Fatalf("background context: %+v %v", res, err)
	}
	token, _ := NewCancel()
	defer token.Close()
	_, err = hostile.CallContext(context.Background(), "ok", nil, &CallOptions{Cancel: token})
	expectCode(t, err, ErrInvalidArgument)
}

func TestCallIDsTieResultsLogsAuditAndErrors(t *testing.T) {
	rt := newRuntime(t, &Config{Timeout: 5 * time.Second, Fuel: 1 << 50})
	var mu sync.Mutex
	var logs []LogRecord
	var events []AuditEvent
	if err := rt.SetLogger(func(r LogRecord) { mu.Lock(); logs = append(logs, r); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	if err := rt.SetAuditor(func(e AuditEvent) { mu.Lock(); events = append(events, e); mu.Unlock() }); err != nil {
		t.Fatal(err)
	}
	hello := load(t, rt, "hello", nil)
	first := call(t, hello, "greet", `{"name":"one"}`)
	second := call(t, hello, "greet", `{"name":"two"}`)
	if first.CallID == 0 || second.CallID == 0 || first.CallID == second.CallID {
		t.Fatalf("call ids %d, %d", first.CallID, second.CallID)
	}
	hostile := load(t, rt, "hostile", nil)
	_, err := hostile.Call("trap", nil)
	var e *Error
	if !errors.As(err, &e) || e.CallID == 0 || e.CallID == first.CallID {
		t.Fatalf("trap error %#v", err)
	}
	load(t, rt, "ipcprobe", nil)
	if err := rt.Publish("deny.in", []byte(`"d"`)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var deny *AuditEvent
	for deny == nil && time.Now().Before(deadline) {
		mu.Lock()
		for i := range events {
			if events[i].Call == "guest.deny" {
				ev := events[i]
				deny = &ev
			}
		}
		mu.Unlock()
		time.Sleep(10 * time.Millisecond)
	}
	if deny == nil || deny.Outcome != AuditDenied || deny.Reason != "nope" || deny.CallID == 0 {
		t.Fatalf("dispatched deny: %+v", deny)
	}
	mu.Lock()
	defer mu.Unlock()
	ids := map[uint64]bool{}
	for _, r := range logs {
		if strings.Contains(r.Message, "greeting") {
			ids[r.CallID] = true
		}
	}
	if len(ids) != 2 || !ids[first.CallID] || !ids[second.CallID] {
		t.Fatalf("log call ids %v, want %d and %d", ids, first.CallID, second.CallID)
	}
	if CallbackCallID() != 0 {
		t.Fatal("CallbackCallID outside a callback")
	}
}

func TestStatsAndMetricsText(t *testing.T) {
	rt := newRuntime(t, &Config{Timeout: 5 * time.Second, Fuel: 1 << 50})
	hello := load(t, rt, "hello", nil)
	call(t, hello, "greet", `{"name":"one"}`)
	call(t, hello, "greet", `{"name":"two"}`)
	s, err := hello.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s.Usage.Calls[0] != 2 || s.Usage.FuelConsumed == 0 || s.Usage.HostCalls[0] < 4 || !s.HasKVBytes || s.InstancesLive < 1 {
		t.Fatalf("capsule stats %+v", s)
	}
	r, err := rt.Stats()
	if err != nil || r.CapsulesLoaded != 1 || r.Usage.Calls[0] != 2 {
		t.Fatalf("runtime stats %+v %v", r, err)
	}
	text, err := rt.MetricsText()
	if err != nil || !strings.Contains(text, `astrid_capsule_calls_total{capsule="hello",capsule_id="`+hello.ID()+`",outcome="ok"} 2`) {
		t.Fatalf("metrics text: %v\n%s", err, text)
	}
}

func TestLoadPolicyPerCapsule(t *testing.T) {
	rt := newRuntime(t, nil)
	first, second := newMemFS(), newMemFS()
	first.addDir("ws")
	first.addFile("ws/who.txt", "first")
	second.addDir("ws")
	second.addFile("ws/who.txt", "second")
	a := load(t, rt, "fsprobe", &LoadOptions{CwdVFS: first})
	b := load(t, rt, "fsprobe", &LoadOptions{CwdVFS: second})
	if got := call(t, a, "read-file", "ws/who.txt"); got.Data != "first" {
		t.Fatalf("first: %+v", got)
	}
	if got := call(t, b, "read-file", "ws/who.txt"); got.Data != "second" {
		t.Fatalf("second: %+v", got)
	}
	refused := newMemFS()
	_, err := rt.Load(capsuleDir("fsprobe"), &LoadOptions{CwdVFS: refused, WorkspaceRoot: capsuleDir("fsprobe")})
	expectCode(t, err, ErrInvalidArgument)
	_, err = rt.Load(capsuleDir("netprobe"), &LoadOptions{NetFlags: FlagInlineCallbacks})
	expectCode(t, err, ErrInvalidArgument)
	if refused.released.Load() != 0 {
		t.Fatal("a refused load released the provider")
	}
	loop := load(t, rt, "netprobe", &LoadOptions{NetFlags: FlagAllowLoopback})
	loop.Close()
	a.Close()
	b.Close()
}
