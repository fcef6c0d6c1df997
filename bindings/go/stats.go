package astrid

// #include "shim.h"
// #include <stdlib.h>
import "C"

import (
	"runtime"
	"time"
	"unsafe"
)

// CallOutcomes names Usage.Calls' indices (ASTRID_CALLS_*).
var CallOutcomes = [...]string{"ok", "trap", "timeout", "out_of_fuel", "cancelled", "resource_limit", "other"}

// Interfaces names Usage.HostCalls' indices (ASTRID_IFACE_*).
var Interfaces = [...]string{"sys", "fs", "kv", "io", "ipc", "net", "http", "wasi"}

// Channels names Usage.ReadBytes' indices (ASTRID_CHANNEL_*).
var Channels = [...]string{"fs", "net", "http"}

// Usage holds monotonic counters of what calls cost and did.
type Usage struct {
	// Calls by how they ended (CallOutcomes order), refused ones included.
	Calls        [len(CallOutcomes)]uint64
	FuelConsumed uint64
	// GuestTime is wall time in guest calls, on the runtime's 100 ms tick
	// (right in sum over many calls, not per call).
	GuestTime time.Duration
	// HostCalls and HostTime by interface (Interfaces order).
	HostCalls                                                          [len(Interfaces)]uint64
	HostTime                                                           [len(Interfaces)]time.Duration
	GateAsks, GateDenials                                              uint64
	ReadBytes, WrittenBytes                                            [len(Channels)]uint64
	BusPublished, BusDelivered, BusDropped, BusLagged, DispatchDropped uint64
}

// CapsuleStats are a capsule's figures since it was loaded.
type CapsuleStats struct {
	Usage                        Usage
	InstancesLive, InstancesIdle uint64
	MemoryBytes, MemoryPeakBytes uint64
	// KVBytes is what its KV namespaces hold in the built-in store; HasKVBytes
	// is false with a KV backend of the embedder's.
	KVBytes    uint64
	HasKVBytes bool
}

// RuntimeStats are a runtime's figures over every capsule it has loaded
// (unloaded ones included: counters never go down).
type RuntimeStats struct {
	Usage                        Usage
	CapsulesLoaded               uint64
	InstancesLive, InstancesIdle uint64
	MemoryBytes                  uint64
}

func usageFrom(u *C.astrid_usage_t) Usage {
	var out Usage
	for i := range out.Calls {
		out.Calls[i] = uint64(u.calls[i])
	}
	out.FuelConsumed = uint64(u.fuel_consumed)
	out.GuestTime = time.Duration(u.guest_ns)
	for i := range out.HostCalls {
		out.HostCalls[i] = uint64(u.host_calls[i])
		out.HostTime[i] = time.Duration(u.host_ns[i])
	}
	out.GateAsks, out.GateDenials = uint64(u.gate_asks), uint64(u.gate_denials)
	for i := range out.ReadBytes {
		out.ReadBytes[i] = uint64(u.read_bytes[i])
		out.WrittenBytes[i] = uint64(u.written_bytes[i])
	}
	out.BusPublished, out.BusDelivered = uint64(u.bus_published), uint64(u.bus_delivered)
	out.BusDropped, out.BusLagged = uint64(u.bus_dropped), uint64(u.bus_lagged)
	out.DispatchDropped = uint64(u.dispatch_dropped)
	return out
}

// Stats reports what the capsule's calls cost and did since it was loaded.
func (c *Capsule) Stats() (CapsuleStats, error) {
	p := capPtr(c.ptr.Load())
	if p == nil {
		return CapsuleStats{}, closedError("the capsule")
	}
	var s C.astrid_capsule_stats_t
	s.size = C.size_t(unsafe.Sizeof(s))
	var cerr *C.astrid_error_t
	status := C.astrid_capsule_stats(p, &s, &cerr)
	runtime.KeepAlive(c)
	if status != C.ASTRID_OK {
		return CapsuleStats{}, takeError(status, cerr)
	}
	out := CapsuleStats{
		Usage:           usageFrom(&s.usage),
		InstancesLive:   uint64(s.instances_live),
		InstancesIdle:   uint64(s.instances_idle),
		MemoryBytes:     uint64(s.memory_bytes),
		MemoryPeakBytes: uint64(s.memory_peak_bytes),
	}
	if uint64(s.kv_bytes) != ^uint64(0) {
		out.KVBytes, out.HasKVBytes = uint64(s.kv_bytes), true
	}
	return out, nil
}

// Stats reports the runtime's figures.
func (r *Runtime) Stats() (RuntimeStats, error) {
	p, err := r.handle()
	if err != nil {
		return RuntimeStats{}, err
	}
	var s C.astrid_runtime_stats_t
	s.size = C.size_t(unsafe.Sizeof(s))
	var cerr *C.astrid_error_t
	status := C.astrid_runtime_stats(p, &s, &cerr)
	runtime.KeepAlive(r)
	if status != C.ASTRID_OK {
		return RuntimeStats{}, takeError(status, cerr)
	}
	return RuntimeStats{
		Usage:          usageFrom(&s.usage),
		CapsulesLoaded: uint64(s.capsules_loaded),
		InstancesLive:  uint64(s.instances_live),
		InstancesIdle:  uint64(s.instances_idle),
		MemoryBytes:    uint64(s.memory_bytes),
	}, nil
}

// MetricsText renders the runtime's and each loaded capsule's figures in
// the Prometheus text exposition format (labels capsule, capsule_id),
// ready to serve as /metrics.
func (r *Runtime) MetricsText() (string, error) {
	p, err := r.handle()
	if err != nil {
		return "", err
	}
	var text *C.char
	var n C.size_t
	var cerr *C.astrid_error_t
	status := C.astrid_runtime_metrics_text(p, &text, &n, &cerr)
	runtime.KeepAlive(r)
	if status != C.ASTRID_OK {
		return "", takeError(status, cerr)
	}
	defer C.astrid_text_free(text)
	return C.GoStringN(text, C.int(n)), nil
}
