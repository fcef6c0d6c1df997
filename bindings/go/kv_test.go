package astrid

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// mapKV is a KV backend over one map per namespace, under one mutex
// (linearizable; Go string order is bytewise). It can be told to fail.
type mapKV struct {
	mu       sync.Mutex
	spaces   map[KVNamespace]map[string][]byte
	fail     error // returned by every method while set
	panicMsg string
	calls    atomic.Int32
	released atomic.Int32
}

func newMapKV() *mapKV { return &mapKV{spaces: map[KVNamespace]map[string][]byte{}} }

// space returns ns's map; the caller holds mu.
func (m *mapKV) space(ns KVNamespace) (map[string][]byte, error) {
	m.calls.Add(1)
	if m.panicMsg != "" {
		panic(m.panicMsg)
	}
	if m.fail != nil {
		return nil, m.fail
	}
	s := m.spaces[ns]
	if s == nil {
		s = map[string][]byte{}
		m.spaces[ns] = s
	}
	return s, nil
}

func (m *mapKV) Get(ns KVNamespace, key string) ([]byte, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.space(ns)
	if err != nil {
		return nil, false, err
	}
	v, ok := s[key]
	return v, ok, nil
}

func (m *mapKV) Set(ns KVNamespace, key string, value []byte) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.space(ns)
	if err == nil {
		s[key] = value // a copy the backend may keep
	}
	return err
}

func (m *mapKV) Remove(ns KVNamespace, key string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.space(ns)
	if err == nil {
		delete(s, key)
	}
	return err
}

func (m *mapKV) List(ns KVNamespace, prefix, after string, limit int, emit func(string) bool) error {
	keys, err := m.keys(ns, prefix, after)
	if err != nil {
		return err
	}
	for i, k := range keys { // emit runs without the lock held
		if i == limit || !emit(k) {
			break
		}
	}
	return nil
}

// keys returns ns's keys starting with prefix that sort after after, in order.
func (m *mapKV) keys(ns KVNamespace, prefix, after string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.space(ns)
	if err != nil {
		return nil, err
	}
	var keys []string
	for k := range s {
		if strings.HasPrefix(k, prefix) && k > after {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

func (m *mapKV) ClearPrefix(ns KVNamespace, prefix string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.space(ns)
	if err != nil {
		return 0, err
	}
	var n uint64
	for k := range s {
		if strings.HasPrefix(k, prefix) {
			delete(s, k)
			n++
		}
	}
	return n, nil
}

func (m *mapKV) CAS(ns KVNamespace, key string, expected []byte, hasExpected bool, value []byte) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s, err := m.space(ns)
	if err != nil {
		return false, err
	}
	current, present := s[key]
	if present != hasExpected || (present && !bytes.Equal(current, expected)) {
		return false, nil
	}
	s[key] = value
	return true, nil
}

func (m *mapKV) Release() { m.released.Add(1) }

func (m *mapKV) value(ns KVNamespace, key string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.spaces[ns][key]
	if !ok {
		return "<none>"
	}
	return string(v)
}

func (m *mapKV) setFailure(err error, panicMsg string) {
	m.mu.Lock()
	m.fail, m.panicMsg = err, panicMsg
	m.mu.Unlock()
}

// kvAnswer runs a kvprobe action and returns "ok:<data>" or "err:<case>".
func kvAnswer(t *testing.T, c *Capsule, action, payload string) string {
	t.Helper()
	return fsAnswer(t, c, action, payload)
}

func TestGoKVServesKvprobe(t *testing.T) {
	for _, mode := range []struct {
		name  string
		flags RuntimeFlag
	}{{"default", 0}, {"inline", FlagInlineCallbacks}} {
		t.Run(mode.name, func(t *testing.T) {
			backend := newMapKV()
			rt := newRuntime(t, &Config{Flags: mode.flags})
			if err := rt.SetKV(backend); err != nil {
				t.Fatal(err)
			}
			probe := load(t, rt, "kvprobe", &LoadOptions{Principal: "alice"})
			alice := KVNamespace{Scope: "alice", CapsuleID: probe.ID()}
			steps := []struct{ action, payload, want string }{
				{"get", "color", "ok:none"},
				{"set", "color\nblue", "ok:ok"},
				{"get", "color", "ok:some:blue"},
				{"fill", "k\n5", "ok:ok"},
				{"list", "k", "ok:k0000,k0001,k0002,k0003,k0004"},
				{"page", "k\n-\n2", "ok:k0000,k0001|k0001"},
				{"page", "k\nk0001\n2", "ok:k0002,k0003|k0003"},
				{"clear", "k", "ok:5"},
				{"list", "", "ok:color"},
				{"cas", "color\nred\ngreen", "err:cas-mismatch"},
				{"cas", "color\nblue\ngreen", "ok:ok"},
				{"cas", "fresh\n-\nnew", "ok:ok"},
				{"cas", "fresh\n-\nagain", "err:cas-mismatch"},
				{"delete", "color", "ok:ok"},
				{"get", "color", "ok:none"},
			}
			for _, s := range steps {
				if got := kvAnswer(t, probe, s.action, s.payload); got != s.want {
					t.Fatalf("%s(%q) = %s, want %s", s.action, s.payload, got, s.want)
				}
			}
			if got := backend.value(alice, "fresh"); got != "new" {
				t.Fatalf("backend holds fresh=%s", got)
			}
			// Another principal's calls live in another namespace.
			res, err := probe.CallWith(&CallOptions{Principal: "bob"}, "set", []byte("fresh\nbob's"))
			if err != nil || res.Action != "ok" {
				t.Fatalf("set as bob: %+v %v", res, err)
			}
			if got := backend.value(KVNamespace{Scope: "bob", CapsuleID: probe.ID()}, "fresh"); got != "bob's" {
				t.Fatalf("bob's namespace holds %s", got)
			}
			if got := backend.value(alice, "fresh"); got != "new" {
				t.Fatalf("alice's value changed to %s", got)
			}
		})
	}
}

func TestKVErrorsAndPanics(t *testing.T) {
	rt := newRuntime(t, nil)
	var mu sync.Mutex
	var panics []*CallbackPanic
	rt.SetPanicHandler(func(p *CallbackPanic) {
		mu.Lock()
		panics = append(panics, p)
		mu.Unlock()
	})
	backend := newMapKV()
	if err := rt.SetKV(backend); err != nil {
		t.Fatal(err)
	}
	probe := load(t, rt, "kvprobe", nil)

	// KVCode errors (wrapped too) reach the guest as the matching error.
	backend.setFailure(fmt.Errorf("budget: %w", KVQuota), "")
	if got := kvAnswer(t, probe, "set", "a\n1"); got != "err:quota" {
		t.Fatalf("quota: %s", got)
	}
	backend.setFailure(KVTooLarge, "")
	if got := kvAnswer(t, probe, "set", "a\n1"); got != "err:too-large" {
		t.Fatalf("too large: %s", got)
	}
	// Any other error, and a panic, is a storage failure.
	backend.setFailure(errors.New("disk full of sand"), "")
	if got := kvAnswer(t, probe, "get", "a"); got != "err:unknown(storage failed)" {
		t.Fatalf("plain error: %s", got)
	}
	mu.Lock()
	if len(panics) != 0 {
		t.Fatalf("errors were reported as panics: %v", panics)
	}
	mu.Unlock()
	backend.setFailure(nil, "backend exploded")
	for _, step := range []struct{ action, payload string }{
		{"get", "a"}, {"set", "a\n1"}, {"delete", "a"}, {"list", ""}, {"clear", ""}, {"cas", "a\n-\n1"},
	} {
		if got := kvAnswer(t, probe, step.action, step.payload); got != "err:unknown(storage failed)" {
			t.Fatalf("%s with a panicking backend: %s", step.action, got)
		}
	}
	mu.Lock()
	var callbacks []string
	for _, p := range panics {
		callbacks = append(callbacks, p.Callback)
		if !strings.Contains(p.Error(), "backend exploded") {
			t.Errorf("panic report: %v", p)
		}
	}
	mu.Unlock()
	if want := "kv.Get kv.Set kv.Remove kv.List kv.ClearPrefix kv.CAS"; strings.Join(callbacks, " ") != want {
		t.Fatalf("reported %v, want %s", callbacks, want)
	}
	// The runtime keeps serving from the same backend.
	backend.setFailure(nil, "")
	if got := kvAnswer(t, probe, "set", "a\n1"); got != "ok:ok" {
		t.Fatalf("after the panics: %s", got)
	}
	if got := kvAnswer(t, probe, "get", "a"); got != "ok:some:1" {
		t.Fatalf("after the panics: %s", got)
	}
}

func TestKVReleasedOnReplaceAndOnClose(t *testing.T) {
	rt, err := NewRuntime(&Config{UnloadGrace: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer rt.Close()
	first := newMapKV()
	if err := rt.SetKV(first); err != nil {
		t.Fatal(err)
	}
	probe, err := rt.Load(capsuleDir("kvprobe"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := kvAnswer(t, probe, "set", "k\nv"); got != "ok:ok" {
		t.Fatal(got)
	}
	// Back to the built-in store: empty, and the first backend is released.
	if err := rt.SetKV(nil); err != nil {
		t.Fatal(err)
	}
	if first.released.Load() != 1 {
		t.Fatalf("first backend released %d times", first.released.Load())
	}
	if got := kvAnswer(t, probe, "get", "k"); got != "ok:none" {
		t.Fatalf("built-in store after SetKV(nil): %s", got)
	}
	calls := first.calls.Load()
	second := newMapKV()
	if err := rt.SetKV(second); err != nil {
		t.Fatal(err)
	}
	if got := kvAnswer(t, probe, "set", "k\nv2"); got != "ok:ok" || second.value(KVNamespace{Scope: "system", CapsuleID: probe.ID()}, "k") != "v2" {
		t.Fatalf("second backend: %s", got)
	}
	if first.calls.Load() != calls {
		t.Fatal("a replaced backend was called")
	}
	probe.Close()
	rt.Close() // runs the finalizer of the installed backend
	if second.released.Load() != 1 || first.released.Load() != 1 {
		t.Fatalf("released: first %d, second %d", first.released.Load(), second.released.Load())
	}
	// A failed install keeps nothing: the backend is never released.
	third := newMapKV()
	expectCode(t, rt.SetKV(third), ErrClosed)
	if third.released.Load() != 0 {
		t.Fatal("a backend whose install failed was released")
	}
}

func TestKVQuotaConfig(t *testing.T) {
	rt := newRuntime(t, &Config{KVQuotaBytes: 300})
	probe := load(t, rt, "kvprobe", nil)
	if got := kvAnswer(t, probe, "set-size", "small\n40"); got != "ok:ok" {
		t.Fatal(got)
	}
	if got := kvAnswer(t, probe, "set-size", "big\n80"); got != "err:quota" { // (45 + 96) + (83 + 96) bytes > 300: 96 per entry
		t.Fatalf("beyond the quota: %s", got)
	}
	roomy := load(t, newRuntime(t, nil), "kvprobe", nil)
	if got := kvAnswer(t, roomy, "set-size", "big\n80"); got != "ok:ok" {
		t.Fatalf("default quota: %s", got)
	}
}

func TestKVCASFromEightGoroutines(t *testing.T) {
	rt := newRuntime(t, nil)
	if err := rt.SetKV(newMapKV()); err != nil {
		t.Fatal(err)
	}
	probe := load(t, rt, "kvprobe", &LoadOptions{Principal: "alice"})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := probe.Call("increment", []byte("counter\n10"))
			if err != nil || res.Action != "ok" {
				t.Errorf("increment: %+v %v", res, err)
			}
		}()
	}
	wg.Wait()
	if got := kvAnswer(t, probe, "get", "counter"); got != "ok:some:80" {
		t.Fatalf("counter: %s", got)
	}
}
