// Capsule::call (C++) vs astrid_capsule_call + astrid_result_free (C): the
// same capsule, action and 64-byte payload, in one process, interleaved
// round-robin, each batch calibrated to a few tens of milliseconds
// (performance.md). Prints min / median ns per call and the median of the
// per-round ratios; plus the same for a gate callback (std::function through
// the C++ trampoline vs a plain C function), which the guest's deny-loop
// drives 1000 times per call.
//
//   usage: astrid_cpp_bench CAPSULES_DIR [ROUNDS]
#include "astrid.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

double seconds_of(const std::function<void(long)> &batch, long n) {
    auto t0 = Clock::now();
    batch(n);
    return std::chrono::duration<double>(Clock::now() - t0).count();
}

/// Iterations making one batch last about `target` seconds.
long calibrate(const std::function<void(long)> &batch, double target) {
    long n = 1;
    for (;;) {
        double s = seconds_of(batch, n);
        if (s >= target / 4) return std::max(1L, static_cast<long>(n * target / s));
        n *= 4;
    }
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    size_t m = v.size() / 2;
    return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

struct Row {
    Row(const char *row_name, std::function<void(long)> row_batch, double ops = 1)
        : name(row_name), batch(std::move(row_batch)), ops_per_iteration(ops) {}
    const char *name;
    std::function<void(long)> batch;
    double ops_per_iteration; // operations measured per batch iteration
    long n = 0;
    std::vector<double> ns; // per round, ns per operation
};

/// Runs the rows round-robin; the first row is the comparator of the others.
void run(const char *title, std::vector<Row> &rows, int rounds, const char *target) {
    for (auto &r : rows) r.n = calibrate(r.batch, 0.03);
    for (int round = 0; round < rounds; round++) {
        // Round-robin, in reverse order every other round so no row always runs first.
        for (size_t k = 0; k < rows.size(); k++) {
            Row &r = rows[round % 2 ? rows.size() - 1 - k : k];
            r.ns.push_back(seconds_of(r.batch, r.n) * 1e9 / (static_cast<double>(r.n) * r.ops_per_iteration));
        }
    }
    std::printf("\n%s (%d rounds)\n", title, rounds);
    std::printf("  %-52s %10s %10s %14s\n", "row", "min ns", "median ns", "ratio vs C");
    for (auto &r : rows) {
        std::vector<double> ratios;
        for (int i = 0; i < rounds; i++) ratios.push_back(r.ns[i] / rows[0].ns[i]);
        std::printf("  %-52s %10.1f %10.1f %13.3fx\n", r.name, *std::min_element(r.ns.begin(), r.ns.end()),
                    median(r.ns), median(ratios));
    }
    std::vector<double> ratios;
    for (int i = 0; i < rounds; i++) ratios.push_back(rows[1].ns[i] / rows[0].ns[i]);
    std::printf("  => median ratio %.3fx (target %s)\n", median(ratios), target);
}

astrid_verdict_t deny_all_c(void *, astrid_gate_request_t *) { return ASTRID_DENY; }

} // namespace

int main(int argc, char **argv) {
    if (argc < 2) {
        std::fprintf(stderr, "usage: %s CAPSULES_DIR [ROUNDS]\n", argv[0]);
        return 2;
    }
    const std::string capsules = argv[1];
    const int rounds = argc > 2 ? std::max(11, std::atoi(argv[2])) : 15;
    std::printf("astrid %s, C++ binding benchmark\n", std::string(astrid::library_version()).c_str());

    // ---- call 64 B ----
    astrid::Runtime rt;
    astrid::Capsule hello = rt.load(capsules + "/hello");
    const std::string payload(64, 'x');
    astrid_capsule_t *raw = hello.native();
    volatile size_t sink = 0;
    auto raw_c = [&](long n) {
        for (long i = 0; i < n; i++) {
            astrid_result_t *r = nullptr;
            astrid_error_t *err = nullptr;
            if (astrid_capsule_call(raw, "noop", 4, reinterpret_cast<const uint8_t *>(payload.data()), payload.size(),
                                    &r, &err) != ASTRID_OK) {
                std::fprintf(stderr, "call failed: %s\n", astrid_error_message(err));
                std::exit(1);
            }
            astrid_result_free(r);
        }
    };
    std::vector<Row> calls{
        {"C   astrid_capsule_call + astrid_result_free", raw_c},
        {"C++ astrid::Capsule::call (Result destroyed)",
         [&](long n) {
             for (long i = 0; i < n; i++) sink = sink + hello.call("noop", payload).valid();
         }},
        {"C   the same C row again (noise floor)", raw_c},
    };
    run("call noop with a 64-byte payload", calls, rounds, "<= 1.1x");

    // ---- gate callback: C++ std::function trampoline vs a C function ----
    // Inline callbacks, so the callback cost is not hidden behind a thread hand-off.
    astrid::Runtime rt_c(astrid::RuntimeConfig().inline_callbacks());
    astrid::Runtime rt_cpp(astrid::RuntimeConfig().inline_callbacks());
    if (astrid_runtime_set_gate(rt_c.native(), deny_all_c, nullptr, nullptr, nullptr) != ASTRID_OK) return 1;
    rt_cpp.set_gate([](astrid::GateRequest &) { return astrid::Verdict::Deny; });
    astrid::Capsule probe_c = rt_c.load(capsules + "/fsprobe");
    astrid::Capsule probe_cpp = rt_cpp.load(capsules + "/fsprobe");
    const std::string loop = "ws\n1000";
    if (probe_cpp.call("deny-loop", loop).data() != "1000" || probe_c.call("deny-loop", loop).data() != "1000") {
        std::fprintf(stderr, "deny-loop did not deny 1000 writes\n");
        return 1;
    }
    std::vector<Row> gates{
        {"C   gate function (guest write denied, per write)",
         [&](long n) {
             for (long i = 0; i < n; i++) probe_c.call("deny-loop", loop);
         },
         1000},
        {"C++ std::function gate via trampoline (per write)",
         [&](long n) {
             for (long i = 0; i < n; i++) probe_cpp.call("deny-loop", loop);
         },
         1000},
    };
    run("gate callback denying a guest write (inline callbacks)", gates, rounds, "close to 1x");
    return 0;
}
