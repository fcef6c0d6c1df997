"""Usage figures, and the metrics text read by a real Prometheus parser."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

import astrid


def test_stats_follow_what_the_capsules_did(capsules) -> None:
    with astrid.Runtime(timeout_ms=5000) as rt:
        with rt.load(capsules / "hello", principal="alice") as hello, rt.load(capsules / "hostile") as hostile:
            hello.call("greet", b'{"name":"one"}')
            hello.call("greet", b'{"name":"two"}')
            with pytest.raises(astrid.TrapError):
                hostile.call("trap")
            s = hello.stats()
            assert s.usage.calls["ok"] == 2 and s.usage.calls["trap"] == 0
            assert s.usage.fuel_consumed > 0
            assert s.usage.host_calls["sys"] >= 4 and s.usage.host_seconds["sys"] > 0
            assert s.instances_live >= 1 and s.memory_peak_bytes > 0 and s.kv_bytes == 0
            assert hostile.stats().usage.calls["trap"] == 1
            r = rt.stats()
            assert r.capsules_loaded == 2
            assert r.usage.calls["ok"] == 2 and r.usage.calls["trap"] == 1
            text = rt.metrics_text()
            families = {f.name: f for f in text_string_to_metric_families(text)}
            # The parser strips the _total suffix from counter family names.
            calls = families["astrid_capsule_calls"]
            assert calls.type == "counter"
            by_label = {
                (s.labels["capsule"], s.labels["outcome"]): s.value for s in calls.samples if s.name.endswith("_total")
            }
            assert by_label[("hello", "ok")] == 2.0
            assert by_label[("hostile", "trap")] == 1.0
            assert all(len(s.labels["capsule_id"]) == 36 for s in calls.samples)
            assert families["astrid_capsule_memory_bytes"].type == "gauge"
            host = {
                s.labels["interface"]: s.value
                for s in families["astrid_capsule_host_calls"].samples
                if s.labels["capsule"] == "hello" and s.name.endswith("_total")
            }
            assert host["sys"] == s.usage.host_calls["sys"]
            loaded = families["astrid_runtime_capsules_loaded"].samples[0].value
            assert loaded == 2.0
        # Both unloaded: the runtime's counters keep their calls.
        after = rt.stats()
        assert after.capsules_loaded == 0 and after.usage.calls["ok"] == 2
    with pytest.raises(astrid.ClosedError):
        hello.stats()
