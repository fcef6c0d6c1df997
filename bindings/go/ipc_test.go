package astrid

import (
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// collector receives a subscription's messages.
type collector struct {
	mu   sync.Mutex
	msgs []Message
	more chan struct{}
}

func newCollector() *collector { return &collector{more: make(chan struct{}, 1)} }

func (c *collector) add(m Message) {
	c.mu.Lock()
	c.msgs = append(c.msgs, m)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
}

// wait returns the messages once there are n of them (or fails the test).
func (c *collector) wait(t *testing.T, n int) []Message {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		c.mu.Lock()
		got := append([]Message(nil), c.msgs...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("received %d messages, want %d", len(got), n)
		}
	}
}

func TestSubscriptionReceivesHostPublishesInOrder(t *testing.T) {
	rt := newRuntime(t, nil)
	col := newCollector()
	sub, err := rt.Subscribe("test.*", col.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	other := newCollector()
	subOther, err := rt.Subscribe("other.topic", other.add)
	if err != nil {
		t.Fatal(err)
	}
	defer subOther.Close()

	const n = 200
	start := time.Now()
	for i := 0; i < n; i++ {
		topic := "test.a"
		if i%2 == 1 {
			topic = "test.b.deep"
		}
		if err := rt.Publish(topic, []byte(fmt.Sprintf(`{"i":%d}`, i))); err != nil {
			t.Fatalf("publish %d: %v", i, err)
		}
	}
	if err := rt.PublishAs("test.signed", []byte(`{"who":"me"}`), "alice"); err != nil {
		t.Fatal(err)
	}
	got := col.wait(t, n+1)
	var last uint64
	for i, m := range got[:n] {
		var body struct{ I int }
		if err := json.Unmarshal(m.Payload, &body); err != nil || body.I != i {
			t.Fatalf("message %d out of order: %s (%v)", i, m.Payload, err)
		}
		if m.Sequence <= last || m.Attribution != AttributionSystem || m.Principal != "" || m.Depth != 0 ||
			m.SourceID == "" || m.Dropped != 0 || m.Lagged != 0 {
			t.Fatalf("message %d: %+v", i, m)
		}
		if m.Timestamp.Before(start.Add(-time.Second)) || m.Timestamp.After(time.Now().Add(time.Second)) {
			t.Fatalf("message %d timestamp %v", i, m.Timestamp)
		}
		last = m.Sequence
	}
	if got[0].Topic != "test.a" || got[1].Topic != "test.b.deep" {
		t.Fatalf("topics: %q %q", got[0].Topic, got[1].Topic)
	}
	signed := got[n]
	if signed.Topic != "test.signed" || signed.Attribution != AttributionVerified || signed.Principal != "alice" ||
		signed.Attribution.String() != "verified" {
		t.Fatalf("PublishAs: %+v", signed)
	}
	other.mu.Lock()
	if len(other.msgs) != 0 {
		t.Fatalf("a non-matching subscription got %d messages", len(other.msgs))
	}
	other.mu.Unlock()

	// After Close, nothing more arrives; Close is idempotent.
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sub.Close(); err != nil {
		t.Fatal(err)
	}
	rt.Publish("test.a", []byte(`{"late":true}`))
	rt.Publish("other.topic", []byte(`{}`))
	other.wait(t, 1)
	col.mu.Lock()
	if len(col.msgs) != n+1 {
		t.Fatalf("delivered after Close: %d", len(col.msgs))
	}
	col.mu.Unlock()
}

func TestSubscriptionErrorsAndPanics(t *testing.T) {
	rt := newRuntime(t, nil)
	_, err := rt.Subscribe("bad pattern", func(Message) {})
	expectCode(t, err, ErrInvalidArgument)
	_, err = rt.Subscribe("a.*", nil)
	expectCode(t, err, ErrInvalidArgument)
	expectCode(t, rt.Publish("a.b", []byte("not json")), ErrInvalidArgument)
	expectCode(t, rt.Publish("a.*", []byte("{}")), ErrInvalidArgument)
	expectCode(t, rt.PublishAs("a.b", []byte("{}"), ""), ErrInvalidArgument)

	var reported atomic.Int32
	rt.SetPanicHandler(func(p *CallbackPanic) {
		if p.Callback == "subscription" {
			reported.Add(1)
		}
	})
	col := newCollector()
	sub, err := rt.Subscribe("p.*", func(m Message) {
		if string(m.Payload) == `"boom"` {
			panic("subscriber exploded")
		}
		col.add(m)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	rt.Publish("p.x", []byte(`"boom"`))
	rt.Publish("p.x", []byte(`"after"`))
	if got := col.wait(t, 1); string(got[0].Payload) != `"after"` {
		t.Fatalf("after the panic: %s", got[0].Payload)
	}
	if reported.Load() != 1 {
		t.Fatalf("panic reports: %d", reported.Load())
	}
}

func TestSubscriptionCallbackMayPublishAndClose(t *testing.T) {
	rt := newRuntime(t, nil)
	echoes := newCollector()
	echoSub, err := rt.Subscribe("echo.out", echoes.add)
	if err != nil {
		t.Fatal(err)
	}
	defer echoSub.Close()
	var self *Subscription
	var selfMu sync.Mutex
	var handled atomic.Int32
	sub, err := rt.Subscribe("echo.in", func(m Message) {
		handled.Add(1)
		if err := rt.Publish("echo.out", m.Payload); err != nil {
			t.Errorf("publish from a subscription: %v", err)
		}
		selfMu.Lock()
		s := self
		selfMu.Unlock()
		if err := s.Close(); err != nil { // from its own callback: returns at once
			t.Errorf("Close from the callback: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	selfMu.Lock()
	self = sub
	selfMu.Unlock()
	rt.Publish("echo.in", []byte(`1`))
	if got := echoes.wait(t, 1); string(got[0].Payload) != "1" {
		t.Fatalf("echo: %s", got[0].Payload)
	}
	rt.Publish("echo.in", []byte(`2`))
	rt.Publish("echo.out", []byte(`"marker"`))
	echoes.wait(t, 2)
	if handled.Load() != 1 {
		t.Fatalf("subscription closed from its callback handled %d messages", handled.Load())
	}
	if !errors.Is(closedError("x"), ErrClosed) {
		t.Fatal("closedError does not match ErrClosed")
	}
}

func TestCapsulePublishesAndInterceptorsReachTheHost(t *testing.T) {
	rt := newRuntime(t, nil)
	col := newCollector()
	sub, err := rt.Subscribe("out.*", col.add)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	probe := load(t, rt, "ipcprobe", nil)
	// A capsule's own publish, from a call.
	if got := fsAnswer(t, probe, "publish", "out.direct\n{\"from\":\"call\"}"); got != "ok:ok" {
		t.Fatal(got)
	}
	col.wait(t, 1)
	// A host publish on echo.in runs the capsule's interceptor, which republishes on out.echo.
	rt.Publish("echo.in", []byte(`{"n":1}`))
	col.wait(t, 2)
	// The interceptor runs as the message's verified principal.
	rt.PublishAs("who.x", []byte(`0`), "dave")
	got := col.wait(t, 3)
	if m := got[0]; m.Topic != "out.direct" || string(m.Payload) != `{"from":"call"}` || m.SourceID != probe.ID() {
		t.Fatalf("direct publish: %+v", m)
	}
	if m := got[1]; m.Topic != "out.echo" || string(m.Payload) != `{"n":1}` || m.SourceID != probe.ID() || m.Depth != 1 {
		t.Fatalf("interceptor publish: %+v", m)
	}
	if m := got[2]; m.Topic != "out.who" || string(m.Payload) != `"dave"` || m.Principal != "dave" {
		t.Fatalf("interceptor as dave: %+v", m)
	}
}

func TestPublishRateIsConfigurable(t *testing.T) {
	// 1000 bytes per second, one second deep: 200-byte publishes run out after about five.
	probe := load(t, newRuntime(t, &Config{IPCPublishBytesPerSec: 1000}), "ipcprobe", nil)
	got := fsAnswer(t, probe, "storm", "out.storm\n20\n200")
	var sent int
	var why string
	if _, err := fmt.Sscanf(got, "ok:%d then %s", &sent, &why); err != nil || sent < 4 || sent > 6 || why != "rate-limited" {
		t.Fatalf("storm at 1000 B/s: %s", got)
	}
	unlimited := load(t, newRuntime(t, nil), "ipcprobe", nil)
	if got := fsAnswer(t, unlimited, "storm", "out.storm\n20\n200"); got != "ok:20" {
		t.Fatalf("storm at the default 10 MiB/s: %s", got)
	}
}
