package astrid

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

func loadMode(t *testing.T, rt *Runtime, mode string, watchdog time.Duration) *Capsule {
	t.Helper()
	return load(t, rt, "runloop", &LoadOptions{Config: map[string]string{"MODE": mode}, Watchdog: watchdog})
}

func TestRunLoopServiceIsReadyAndAnswersHostPublishes(t *testing.T) {
	rt := newRuntime(t, nil)
	service := load(t, rt, "runloop", nil)
	if !service.RunsLoop() {
		t.Fatal("runloop does not run a loop")
	}
	if err := service.WaitReady(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := service.WaitReady(0); err != nil {
		t.Fatalf("ready stays ready: %v", err)
	}
	replies := newCollector()
	sub, err := rt.Subscribe("svc.out", replies.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rt.Publish("svc.in", []byte(`{"n":1}`))
	replies.wait(t, 1)
	rt.PublishAs("svc.in", []byte(`2`), "alice")
	got := replies.wait(t, 2)
	var decoded []any
	for _, m := range got {
		var v any
		if err := json.Unmarshal(m.Payload, &v); err != nil {
			t.Fatal(err)
		}
		decoded = append(decoded, v)
	}
	want := []any{
		map[string]any{"echo": map[string]any{"n": 1.0}, "as": "-"},
		map[string]any{"echo": 2.0, "as": "alice"}, // the loop runs as the message's principal
	}
	if !reflect.DeepEqual(decoded, want) {
		t.Fatalf("replies %v, want %v", decoded, want)
	}
}

func TestCapsuleWithoutALoopIsReadyAtOnce(t *testing.T) {
	hello := load(t, newRuntime(t, nil), "hello", nil)
	if hello.RunsLoop() {
		t.Fatal("hello runs a loop")
	}
	started := time.Now()
	if err := hello.WaitReady(0); err != nil {
		t.Fatal(err)
	}
	if err := hello.WaitReady(10 * time.Second); err != nil {
		t.Fatal(err)
	}
	if time.Since(started) > time.Second {
		t.Fatal("WaitReady waited for a capsule without a loop")
	}
}

func TestALoopThatReturnsFailsWaitReadyWithTrap(t *testing.T) {
	rt := newRuntime(t, nil)
	broken := loadMode(t, rt, "return", 0)
	if !broken.RunsLoop() {
		t.Fatal("runloop does not run a loop")
	}
	err := broken.WaitReady(5 * time.Second)
	expectCode(t, err, ErrTrap)
	if !strings.Contains(err.Error(), "run loop") {
		t.Fatalf("message: %v", err)
	}
	expectCode(t, broken.WaitReady(0), ErrTrap) // not restarted
	if res := call(t, broken, "anything", ""); res.Action != "ok" {
		t.Fatalf("direct call after the loop failed: %+v", res)
	}
}

func TestWaitReadyTimesOutAndClosedCapsulesSayClosed(t *testing.T) {
	rt := newRuntime(t, nil)
	late := loadMode(t, rt, "late-ready", 0)
	expectCode(t, late.WaitReady(100*time.Millisecond), ErrTimeout)
	late.Close()
	expectCode(t, late.WaitReady(0), ErrClosed)
}

func TestWatchdogOptionStopsASpinningLoopUnlessOff(t *testing.T) {
	rt := newRuntime(t, nil)
	spinning := loadMode(t, rt, "spin", 100*time.Millisecond)
	if err := spinning.WaitReady(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	// Three 100 ms windows without a waiting host call: interrupted, failed.
	deadline := time.Now().Add(5 * time.Second)
	for spinning.WaitReady(0) == nil {
		if time.Now().After(deadline) {
			t.Fatal("the watchdog never fired")
		}
		time.Sleep(20 * time.Millisecond)
	}
	expectCode(t, spinning.WaitReady(0), ErrTimeout)
	spinning.Close()

	exempt := loadMode(t, rt, "spin", WatchdogOff)
	if err := exempt.WaitReady(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(600 * time.Millisecond) // twice what stopped the loop above
	if err := exempt.WaitReady(0); err != nil {
		t.Fatalf("an exempt loop was stopped: %v", err)
	}
	started := time.Now()
	exempt.Close()
	if time.Since(started) > 2*time.Second {
		t.Fatal("unload did not stop the exempt loop promptly")
	}
}
