//! The runtime's usage figures: summed over its capsules ([`RuntimeStats`])
//! and rendered in the Prometheus text exposition format (version 0.0.4),
//! so an embedder can serve `/metrics` with them as they are.

use super::Runtime;
use crate::capsule::CapsuleStats;
use crate::error::Result;
use crate::usage::{UsageTotals, CALL_END_NAMES, CHANNEL_NAMES, INTERFACES};
use std::fmt::Write;

/// A runtime's usage figures: counters over every capsule it has loaded
/// (those unloaded since included, so they never go down) and gauges.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuntimeStats {
    pub totals: UsageTotals,
    pub capsules_loaded: u64,
    pub instances_live: u64,
    pub instances_idle: u64,
    pub memory_bytes: u64,
}

impl Runtime {
    /// The runtime's usage figures. Errors: `Closed` after `close`.
    pub fn stats(&self) -> Result<RuntimeStats> {
        self.inner.services.check_open()?;
        Ok(self.collect().0)
    }

    /// The figures of the runtime and of each loaded capsule (name, id,
    /// figures) in the Prometheus text exposition format: one family per
    /// figure, labelled `capsule` and `capsule_id`.
    pub fn metrics_text(&self) -> Result<String> {
        self.inner.services.check_open()?;
        let (runtime, capsules) = self.collect();
        Ok(render(&runtime, &capsules))
    }

    fn collect(&self) -> (RuntimeStats, Vec<(String, String, CapsuleStats)>) {
        let mut runtime = RuntimeStats {
            totals: self.inner.services.usage_totals(),
            ..RuntimeStats::default()
        };
        let mut capsules: Vec<(String, String, CapsuleStats)> = Vec::new();
        for capsule in self.inner.platform.held_capsules() {
            if capsule.is_loaded() {
                let stats = capsule.stats();
                runtime.capsules_loaded += 1;
                runtime.instances_live += stats.instances_live;
                runtime.instances_idle += stats.instances_idle;
                runtime.memory_bytes += stats.memory_bytes;
                capsules.push((
                    capsule.shared.name.to_string(),
                    capsule.shared.id.clone(),
                    stats,
                ));
            }
        }
        capsules.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        // The same component loaded twice has one id: its loads are one
        // sample set (a scrape with two identical label sets is refused).
        capsules.dedup_by(|later, kept| {
            let same = (&later.0, &later.1) == (&kept.0, &kept.1);
            if same {
                let (a, b) = (&mut kept.2, &later.2);
                a.totals.add(&b.totals);
                a.instances_live += b.instances_live;
                a.instances_idle += b.instances_idle;
                a.memory_bytes += b.memory_bytes;
                a.memory_peak_bytes = a.memory_peak_bytes.max(b.memory_peak_bytes);
            }
            same
        });
        (runtime, capsules)
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Writes families one at a time: a family's samples must stand together.
struct Text {
    out: String,
    capsules: Vec<(String, String, CapsuleStats)>,
}

impl Text {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    /// One sample per capsule, with an optional extra label.
    fn per_capsule(
        &mut self,
        name: &str,
        extra: Option<(&str, &str)>,
        value: impl Fn(&CapsuleStats) -> Option<f64>,
    ) {
        for (capsule, id, stats) in &self.capsules {
            let Some(v) = value(stats) else { continue };
            let extra = extra.map_or(String::new(), |(k, val)| {
                format!(",{k}=\"{}\"", escape(val))
            });
            let _ = writeln!(
                self.out,
                "{name}{{capsule=\"{}\",capsule_id=\"{}\"{extra}}} {v}",
                escape(capsule),
                escape(id)
            );
        }
    }

    /// A per-capsule family of one sample each.
    fn scalar(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl Fn(&CapsuleStats) -> Option<f64>,
    ) {
        self.family(name, kind, help);
        self.per_capsule(name, None, value);
    }

    fn sample(&mut self, name: &str, label: Option<(&str, &str)>, value: f64) {
        let labels = label.map_or(String::new(), |(k, v)| format!("{{{k}=\"{}\"}}", escape(v)));
        let _ = writeln!(self.out, "{name}{labels} {value}");
    }

    /// A per-capsule family whose samples are split by one label.
    fn split(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        names: &[&str],
        value: impl Fn(&CapsuleStats, usize) -> f64,
    ) {
        self.family(name, kind, help);
        for (i, n) in names.iter().enumerate() {
            self.per_capsule(name, Some((label, n)), |s| Some(value(s, i)));
        }
    }
}

fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

fn render(runtime: &RuntimeStats, capsules: &[(String, String, CapsuleStats)]) -> String {
    let mut t = Text {
        out: String::new(),
        capsules: capsules.to_vec(),
    };
    t.split(
        "astrid_capsule_calls_total",
        "counter",
        "Guest calls by how they ended.",
        "outcome",
        &CALL_END_NAMES,
        |s, i| s.totals.calls[i] as f64,
    );
    t.scalar(
        "astrid_capsule_fuel_consumed_total",
        "counter",
        "Fuel the capsule's calls consumed.",
        |s| Some(s.totals.fuel as f64),
    );
    t.scalar(
        "astrid_capsule_guest_seconds_total",
        "counter",
        "Wall time in guest calls, on the runtime's 100 ms tick (right in sum, not per call).",
        |s| Some(seconds(s.totals.guest_ns)),
    );
    t.split(
        "astrid_capsule_host_calls_total",
        "counter",
        "Host calls by interface.",
        "interface",
        &INTERFACES,
        |s, i| s.totals.host_calls[i] as f64,
    );
    t.split(
        "astrid_capsule_host_seconds_total",
        "counter",
        "Time spent in host calls by interface.",
        "interface",
        &INTERFACES,
        |s, i| seconds(s.totals.host_ns[i]),
    );
    t.scalar(
        "astrid_capsule_gate_asks_total",
        "counter",
        "Questions put to the embedder's gate.",
        |s| Some(s.totals.gate_asks as f64),
    );
    t.scalar(
        "astrid_capsule_gate_denials_total",
        "counter",
        "Questions the gate denied.",
        |s| Some(s.totals.gate_denials as f64),
    );
    t.split(
        "astrid_capsule_read_bytes_total",
        "counter",
        "Bytes the guest read, by channel.",
        "channel",
        &CHANNEL_NAMES,
        |s, i| s.totals.read_bytes[i] as f64,
    );
    t.split(
        "astrid_capsule_written_bytes_total",
        "counter",
        "Bytes the guest wrote, by channel.",
        "channel",
        &CHANNEL_NAMES,
        |s, i| s.totals.written_bytes[i] as f64,
    );
    t.split(
        "astrid_capsule_bus_messages_total",
        "counter",
        "Bus messages the guest published and took, and those dropped or lagged for it.",
        "event",
        &[
            "published",
            "delivered",
            "dropped",
            "lagged",
            "dispatch_dropped",
        ],
        |s, i| {
            let t = &s.totals;
            [
                t.bus_published,
                t.bus_delivered,
                t.bus_dropped,
                t.bus_lagged,
                t.dispatch_dropped,
            ][i] as f64
        },
    );
    t.split(
        "astrid_capsule_instances",
        "gauge",
        "Instances alive now, busy with a call or idle.",
        "state",
        &["busy", "idle"],
        |s, i| match i {
            0 => s.instances_live.saturating_sub(s.instances_idle) as f64,
            _ => s.instances_idle as f64,
        },
    );
    t.scalar(
        "astrid_capsule_memory_bytes",
        "gauge",
        "Linear memory of the capsule's live instances.",
        |s| Some(s.memory_bytes as f64),
    );
    t.scalar(
        "astrid_capsule_memory_peak_bytes",
        "gauge",
        "The highest linear memory of the capsule's instances together.",
        |s| Some(s.memory_peak_bytes as f64),
    );
    t.scalar(
        "astrid_capsule_kv_bytes",
        "gauge",
        "Bytes the capsule's KV namespaces hold in the built-in store.",
        |s| s.kv_bytes.map(|b| b as f64),
    );
    t.family(
        "astrid_runtime_capsules_loaded",
        "gauge",
        "Capsules loaded now.",
    );
    t.sample(
        "astrid_runtime_capsules_loaded",
        None,
        runtime.capsules_loaded as f64,
    );
    t.family(
        "astrid_runtime_calls_total",
        "counter",
        "Guest calls of every capsule this runtime has loaded, by how they ended.",
    );
    for (i, name) in CALL_END_NAMES.iter().enumerate() {
        t.sample(
            "astrid_runtime_calls_total",
            Some(("outcome", name)),
            runtime.totals.calls[i] as f64,
        );
    }
    t.family(
        "astrid_runtime_memory_bytes",
        "gauge",
        "Linear memory of every live instance.",
    );
    t.sample(
        "astrid_runtime_memory_bytes",
        None,
        runtime.memory_bytes as f64,
    );
    t.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }

    #[test]
    fn families_stand_together_with_their_samples() {
        let mut stats = CapsuleStats::default();
        stats.totals.calls[0] = 3;
        let capsules = vec![
            ("a".to_string(), "1".to_string(), stats.clone()),
            ("b\"q".to_string(), "2".to_string(), stats),
        ];
        let text = render(&RuntimeStats::default(), &capsules);
        let ok: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("astrid_capsule_calls_total") && l.contains("\"ok\""))
            .collect();
        assert_eq!(ok.len(), 2, "{text}");
        assert!(ok[1].contains("capsule=\"b\\\"q\""), "{}", ok[1]);
        assert!(ok.iter().all(|l| l.ends_with(" 3")));
        // kv_bytes is None: no sample, but the family is declared.
        assert!(text.contains("# TYPE astrid_capsule_kv_bytes gauge"));
        assert!(!text.contains("astrid_capsule_kv_bytes{"));
    }
}
