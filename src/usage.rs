//! Usage counters: what a capsule's calls cost and did (the figures of
//! `Capsule::stats`, `Runtime::stats` and the metrics text).
//!
//! The figures touched on every call live in each store ([`StoreUsage`]):
//! a store is leased by one thread at a time, so its counters have a
//! single writer and an increment is a plain load and store (no locked
//! instruction, no cache line shared between threads calling the same
//! capsule). Readers sum them with relaxed loads. A store's counters are
//! folded into its capsule's retired totals when the store goes, under
//! the lock readers take, so nothing is counted twice or lost.
//! Rare events (a memory grow, a call refused before it started, bytes
//! moved by I/O that takes microseconds anyway) use shared atomics on the
//! capsule ([`CapsuleUsage`]).

use crate::signal::MutexExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// How a call ended, in the order of `astrid_capsule_stats_t.calls`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(usize)]
pub enum CallEnd {
    Ok = 0,
    Trap = 1,
    Timeout = 2,
    OutOfFuel = 3,
    Cancelled = 4,
    ResourceLimit = 5,
    /// Any other failure (closed, not found, internal).
    Other = 6,
}

pub const CALL_ENDS: usize = 7;
/// Names of [`CallEnd`] as metrics label them.
pub const CALL_END_NAMES: [&str; CALL_ENDS] = [
    "ok",
    "trap",
    "timeout",
    "out_of_fuel",
    "cancelled",
    "resource_limit",
    "other",
];

/// The interfaces whose host calls are counted, in the order of
/// `astrid_capsule_stats_t.host_calls`.
pub const INTERFACES: [&str; 8] = ["sys", "fs", "kv", "io", "ipc", "net", "http", "wasi"];
/// Slots reserved per interface in the C structs (room for new packages).
pub const INTERFACE_SLOTS: usize = 16;

/// The interface a host call belongs to, from its audited name
/// (`fs.read-file` → fs; `request-context.*` counts as net).
pub fn interface_of(call: &str) -> usize {
    let prefix = call.split('.').next().unwrap_or("");
    match prefix {
        "sys" => 0,
        "fs" => 1,
        "kv" => 2,
        "io" => 3,
        "ipc" => 4,
        "net" | "request-context" => 5,
        "http" => 6,
        _ => 7,
    }
}

/// Where bytes moved, in the order of `astrid_capsule_stats_t.read_bytes`.
#[derive(Clone, Copy, Debug)]
#[repr(usize)]
pub enum Channel {
    Fs = 0,
    Net = 1,
    Http = 2,
}

pub const CHANNELS: usize = 3;
pub const CHANNEL_NAMES: [&str; CHANNELS] = ["fs", "net", "http"];

/// Adds `n` to a counter only one thread writes (see the module doc).
#[inline]
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// One store's counters (single writer: the thread holding the store).
#[derive(Default)]
pub struct StoreUsage {
    calls: [AtomicU64; CALL_ENDS],
    fuel: AtomicU64,
    guest_ns: AtomicU64,
    host_calls: [AtomicU64; INTERFACES.len()],
    host_ns: [AtomicU64; INTERFACES.len()],
    gate_asks: AtomicU64,
    gate_denials: AtomicU64,
    bus_published: AtomicU64,
    bus_delivered: AtomicU64,
    bus_dropped: AtomicU64,
    bus_lagged: AtomicU64,
    /// Whether a call runs on the store now (for the busy / idle gauge).
    busy: AtomicBool,
}

impl StoreUsage {
    pub fn call_started(&self) {
        self.busy.store(true, Ordering::Relaxed);
    }

    /// A call ended: how, the fuel it used and (when measured) its wall time.
    pub fn call_ended(&self, end: CallEnd, fuel: u64, guest_ns: u64) {
        bump(&self.calls[end as usize], 1);
        bump(&self.fuel, fuel);
        bump(&self.guest_ns, guest_ns);
        self.busy.store(false, Ordering::Relaxed);
    }

    pub fn host_call(&self, interface: usize, ns: u64) {
        bump(&self.host_calls[interface], 1);
        bump(&self.host_ns[interface], ns);
    }

    pub fn gate_asked(&self, denied: bool) {
        bump(&self.gate_asks, 1);
        if denied {
            bump(&self.gate_denials, 1);
        }
    }

    pub fn published(&self) {
        bump(&self.bus_published, 1);
    }

    /// A message the guest took, with the drops and lag reported with it.
    pub fn delivered(&self, messages: u64, dropped: u64, lagged: u64) {
        bump(&self.bus_delivered, messages);
        bump(&self.bus_dropped, dropped);
        bump(&self.bus_lagged, lagged);
    }

    fn add_to(&self, totals: &mut UsageTotals) {
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (sum, c) in totals.calls.iter_mut().zip(&self.calls) {
            *sum += read(c);
        }
        totals.fuel += read(&self.fuel);
        totals.guest_ns += read(&self.guest_ns);
        for (sum, c) in totals.host_calls.iter_mut().zip(&self.host_calls) {
            *sum += read(c);
        }
        for (sum, c) in totals.host_ns.iter_mut().zip(&self.host_ns) {
            *sum += read(c);
        }
        totals.gate_asks += read(&self.gate_asks);
        totals.gate_denials += read(&self.gate_denials);
        totals.bus_published += read(&self.bus_published);
        totals.bus_delivered += read(&self.bus_delivered);
        totals.bus_dropped += read(&self.bus_dropped);
        totals.bus_lagged += read(&self.bus_lagged);
    }
}

/// Counters summed over stores, capsules or a runtime: monotonic, plain.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UsageTotals {
    /// Calls by how they ended ([`CallEnd`] order).
    pub calls: [u64; CALL_ENDS],
    /// Fuel the calls consumed.
    pub fuel: u64,
    /// Wall time spent in guest calls (ns).
    pub guest_ns: u64,
    /// Host calls by interface ([`INTERFACES`] order).
    pub host_calls: [u64; INTERFACES.len()],
    /// Time spent in host calls by interface (ns).
    pub host_ns: [u64; INTERFACES.len()],
    pub gate_asks: u64,
    pub gate_denials: u64,
    /// Bytes the guest read and wrote, by [`Channel`].
    pub read_bytes: [u64; CHANNELS],
    pub written_bytes: [u64; CHANNELS],
    /// Bus messages the guest published, took, and was told were dropped
    /// or lagged for it.
    pub bus_published: u64,
    pub bus_delivered: u64,
    pub bus_dropped: u64,
    pub bus_lagged: u64,
    /// Bus-dispatched invocations dropped because the capsule's lane was full.
    pub dispatch_dropped: u64,
}

impl UsageTotals {
    pub fn add(&mut self, other: &UsageTotals) {
        let sum = |a: &mut [u64], b: &[u64]| a.iter_mut().zip(b).for_each(|(a, b)| *a += b);
        sum(&mut self.calls, &other.calls);
        self.fuel += other.fuel;
        self.guest_ns += other.guest_ns;
        sum(&mut self.host_calls, &other.host_calls);
        sum(&mut self.host_ns, &other.host_ns);
        self.gate_asks += other.gate_asks;
        self.gate_denials += other.gate_denials;
        sum(&mut self.read_bytes, &other.read_bytes);
        sum(&mut self.written_bytes, &other.written_bytes);
        self.bus_published += other.bus_published;
        self.bus_delivered += other.bus_delivered;
        self.bus_dropped += other.bus_dropped;
        self.bus_lagged += other.bus_lagged;
        self.dispatch_dropped += other.dispatch_dropped;
    }
}

/// A capsule's usage: its live stores' counters, the totals of stores that
/// are gone, and the rare-event counters.
#[derive(Default)]
pub struct CapsuleUsage {
    stores: Mutex<Stores>,
    /// Calls that ended before they ran (cancelled, no free instance in
    /// time, unloaded), by [`CallEnd`].
    unstarted: [AtomicU64; CALL_ENDS],
    read_bytes: [AtomicU64; CHANNELS],
    written_bytes: [AtomicU64; CHANNELS],
    dispatch_dropped: AtomicU64,
    /// Linear memory of the live stores, and its highest value.
    memory: AtomicU64,
    memory_peak: AtomicU64,
}

#[derive(Default)]
struct Stores {
    live: Vec<Arc<StoreUsage>>,
    retired: UsageTotals,
}

impl CapsuleUsage {
    /// Counters for a new store, counted until [`retire`](Self::retire).
    pub fn register(&self) -> Arc<StoreUsage> {
        let usage = Arc::new(StoreUsage::default());
        self.stores.locked().live.push(usage.clone());
        usage
    }

    /// A store is gone: its counters join the retired totals.
    pub fn retire(&self, usage: &Arc<StoreUsage>) {
        let mut stores = self.stores.locked();
        if let Some(i) = stores.live.iter().position(|u| Arc::ptr_eq(u, usage)) {
            stores.live.swap_remove(i);
            usage.add_to(&mut stores.retired);
        }
    }

    pub fn unstarted(&self, end: CallEnd) {
        self.unstarted[end as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn moved(&self, channel: Channel, read: u64, written: u64) {
        if read > 0 {
            self.read_bytes[channel as usize].fetch_add(read, Ordering::Relaxed);
        }
        if written > 0 {
            self.written_bytes[channel as usize].fetch_add(written, Ordering::Relaxed);
        }
    }

    pub fn dispatch_dropped(&self) {
        self.dispatch_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// A store's linear memory changed by `delta` bytes (grown or freed).
    pub fn memory_changed(&self, grown: u64, freed: u64) {
        if grown > 0 {
            let now = self.memory.fetch_add(grown, Ordering::Relaxed) + grown;
            self.memory_peak.fetch_max(now, Ordering::Relaxed);
        }
        if freed > 0 {
            self.memory.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// The totals now, with the number of live stores and of those
    /// running a call.
    pub fn snapshot(&self) -> (UsageTotals, u64, u64) {
        let stores = self.stores.locked();
        let mut totals = stores.retired;
        let mut busy = 0;
        for usage in &stores.live {
            usage.add_to(&mut totals);
            busy += u64::from(usage.busy.load(Ordering::Relaxed));
        }
        let live = stores.live.len() as u64;
        drop(stores);
        let read = |c: &AtomicU64| c.load(Ordering::Relaxed);
        for (sum, c) in totals.calls.iter_mut().zip(&self.unstarted) {
            *sum += read(c);
        }
        for (sum, c) in totals.read_bytes.iter_mut().zip(&self.read_bytes) {
            *sum += read(c);
        }
        for (sum, c) in totals.written_bytes.iter_mut().zip(&self.written_bytes) {
            *sum += read(c);
        }
        totals.dispatch_dropped += read(&self.dispatch_dropped);
        (totals, live, busy)
    }

    /// Linear memory of the live stores now, and the highest it has been.
    pub fn memory(&self) -> (u64, u64) {
        (
            self.memory.load(Ordering::Relaxed),
            self.memory_peak.load(Ordering::Relaxed),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retired_stores_keep_their_counts_and_live_ones_are_summed() {
        let usage = CapsuleUsage::default();
        let a = usage.register();
        let b = usage.register();
        a.call_ended(CallEnd::Ok, 10, 100);
        b.call_ended(CallEnd::Trap, 5, 50);
        b.host_call(interface_of("fs.read-file"), 7);
        usage.unstarted(CallEnd::Cancelled);
        usage.moved(Channel::Net, 3, 4);
        usage.retire(&a);
        usage.retire(&a); // twice is harmless
        let (totals, live, busy) = usage.snapshot();
        assert_eq!((live, busy), (1, 0));
        assert_eq!(totals.calls[CallEnd::Ok as usize], 1);
        assert_eq!(totals.calls[CallEnd::Trap as usize], 1);
        assert_eq!(totals.calls[CallEnd::Cancelled as usize], 1);
        assert_eq!((totals.fuel, totals.guest_ns), (15, 150));
        assert_eq!((totals.host_calls[1], totals.host_ns[1]), (1, 7));
        assert_eq!((totals.read_bytes[1], totals.written_bytes[1]), (3, 4));
        b.call_started();
        assert_eq!(usage.snapshot().2, 1);
    }

    #[test]
    fn memory_peak_follows_the_sum_of_stores() {
        let usage = CapsuleUsage::default();
        usage.memory_changed(100, 0);
        usage.memory_changed(50, 0);
        usage.memory_changed(0, 100);
        assert_eq!(usage.memory(), (50, 150));
    }

    #[test]
    fn host_calls_are_sorted_by_interface() {
        assert_eq!(INTERFACES[interface_of("kv.kv-get")], "kv");
        assert_eq!(
            INTERFACES[interface_of("request-context.connection-owner")],
            "net"
        );
        assert_eq!(INTERFACES[interface_of("wasi:sockets.connect")], "wasi");
        assert_eq!(INTERFACES[interface_of("http.http-request")], "http");
    }
}
