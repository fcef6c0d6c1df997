// Callbacks invoked from library threads, concurrently, while 8 threads call
// at once — with callbacks handed to worker threads (default) and run inline
// (ASTRID_RUNTIME_INLINE_CALLBACKS).
#include "support.hpp"

#include <gtest/gtest.h>

using namespace std::chrono_literals;

namespace {

constexpr int kThreads = 8;
constexpr int kRounds = 10;

/// Watches how many gate callbacks run at the same time. The first ones wait
/// (up to 2 s) for a second to arrive, which proves the calls overlap.
struct Overlap {
    std::mutex mu;
    std::condition_variable cv;
    int in_flight = 0;
    int max_in_flight = 0;
    bool gave_up = false; // waited once in vain: do not slow every call down
    std::set<std::thread::id> threads;

    void enter() {
        std::unique_lock<std::mutex> lock(mu);
        threads.insert(std::this_thread::get_id());
        max_in_flight = std::max(max_in_flight, ++in_flight);
        cv.notify_all();
        if (!gave_up && !cv.wait_for(lock, 2s, [&] { return max_in_flight >= 2; })) gave_up = true;
        --in_flight;
    }
};

class Concurrency : public ::testing::TestWithParam<bool> {};

} // namespace

TEST_P(Concurrency, EightThreadsThroughGateAndVfs) {
    const bool inline_callbacks = GetParam();
    auto memfs = std::make_shared<test::MemFs>();
    memfs->add_dir("ws");
    Overlap overlap;
    std::atomic<int> gate_calls{0}, throwing_left{3};
    test::Failures failures;

    astrid::Runtime rt(test::config().inline_callbacks(inline_callbacks));
    rt.set_error_handler(failures.handler());
    rt.mount_vfs("cwd", memfs);
    rt.set_gate([&](astrid::GateRequest &req) {
        gate_calls++;
        overlap.enter();
        // A few callbacks throw while the others run: denials, nothing else.
        if (req.path().find("/boom") != std::string_view::npos && throwing_left-- > 0)
            throw std::runtime_error("boom");
        return astrid::Verdict::Allow;
    });
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));

    std::set<std::thread::id> callers;
    std::mutex callers_mu;
    std::atomic<int> ok{0}, denied{0}, finished{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
        threads.emplace_back([&, t] {
            {
                std::lock_guard<std::mutex> lock(callers_mu);
                callers.insert(std::this_thread::get_id());
            }
            for (int i = 0; i < kRounds; i++) {
                std::string path = "ws/t" + std::to_string(t) + "-" + std::to_string(i);
                std::string text = "thread " + std::to_string(t) + " round " + std::to_string(i);
                if (test::answer(probe.call("write-file", path + "\n" + text)) == "ok ok" &&
                    test::answer(probe.call("read-file", path)) == "ok " + text)
                    ok++;
            }
            if (t < 3 && test::answer(probe.call("write-file", "ws/boom\nx")) == "err capability-denied") denied++;
            // Stay alive until every caller is done: a thread id is only
            // unique among live threads, and the check below compares ids.
            finished++;
            test::eventually([&] { return finished.load() == kThreads; }, 60000ms);
        });
    }
    for (auto &th : threads) th.join();

    EXPECT_EQ(ok.load(), kThreads * kRounds);
    EXPECT_EQ(denied.load(), 3);
    EXPECT_EQ(failures.count("gate"), 3u);
    EXPECT_GE(gate_calls.load(), 2 * kThreads * kRounds);
    EXPECT_GE(overlap.max_in_flight, 2) << "gate callbacks never overlapped";
    for (int t = 0; t < kThreads; t++)
        EXPECT_EQ(memfs->contents("ws/t" + std::to_string(t) + "-9"), "thread " + std::to_string(t) + " round 9");
    if (!inline_callbacks) {
        // Handed off: the callbacks ran on library worker threads, never on a caller.
        for (auto &id : overlap.threads) EXPECT_EQ(callers.count(id), 0u);
    }
    // The runtime still serves after the throwing callbacks.
    EXPECT_EQ(test::answer(probe.call("read-file", "ws/t0-0")), "ok thread 0 round 0");
}

TEST_P(Concurrency, EightThreadsWithLogCallbacks) {
    astrid::Runtime rt(test::config().inline_callbacks(GetParam()));
    std::atomic<int> lines{0};
    std::mutex mu;
    std::set<std::thread::id> log_threads;
    rt.set_log_callback([&](const astrid::LogRecord &rec) {
        if (rec.message.find("greeting thread") == 0) lines++;
        std::lock_guard<std::mutex> lock(mu);
        log_threads.insert(std::this_thread::get_id());
    });
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    std::atomic<int> ok{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < kThreads; t++) {
        threads.emplace_back([&] {
            for (int i = 0; i < 20; i++)
                if (hello.call("greet", R"({"name":"thread"})").data().find("Hello, thread!") != std::string_view::npos)
                    ok++;
        });
    }
    for (auto &th : threads) th.join();
    EXPECT_EQ(ok.load(), kThreads * 20);
    EXPECT_EQ(lines.load(), kThreads * 20);
    EXPECT_GE(log_threads.size(), 2u) << "log callbacks all ran on one thread";
}

INSTANTIATE_TEST_SUITE_P(Modes, Concurrency, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool> &info) {
                             return info.param ? "InlineCallbacks" : "WorkerThreads";
                         });
