// Capsules with a `run` loop: Capsule::wait_ready / runs_loop, a failed
// loop, the run-loop watchdog load options, and the runloop service
// answering host publishes.
#include "support.hpp"

#include <gtest/gtest.h>

using namespace std::chrono_literals;

namespace {

/// Runs `f` and returns the code of the astrid::Error it throws (Ok when none).
template <class F> astrid::Code code_of(F &&f, std::string *message = nullptr) {
    try {
        f();
    } catch (const astrid::Error &e) {
        if (message) *message = e.what();
        return e.code();
    }
    return astrid::Code::Ok;
}

astrid::LoadOptions mode(const std::string &m) { return astrid::LoadOptions().config("MODE", m); }

} // namespace

TEST(RunLoop, ServiceIsReadyAndAnswersHostPublishes) {
    astrid::Runtime rt(test::config());
    astrid::Capsule service = rt.load(test::capsule_dir("runloop"));
    EXPECT_TRUE(service.runs_loop());
    EXPECT_NO_THROW(service.wait_ready(5s));
    EXPECT_NO_THROW(service.wait_ready(0ms)) << "ready stays ready";

    std::mutex mu;
    std::vector<std::string> replies;
    astrid::Subscription sub = rt.subscribe("svc.out", [&](const astrid::Message &m) {
        std::lock_guard<std::mutex> lock(mu);
        replies.emplace_back(m.payload);
    });
    rt.publish("svc.in", R"({"n":1})");
    ASSERT_TRUE(test::eventually([&] {
        std::lock_guard<std::mutex> lock(mu);
        return replies.size() == 1;
    }));
    rt.publish_as("svc.in", "2", "alice");
    ASSERT_TRUE(test::eventually([&] {
        std::lock_guard<std::mutex> lock(mu);
        return replies.size() == 2;
    }));
    std::lock_guard<std::mutex> lock(mu);
    EXPECT_EQ(replies[0], R"({"echo":{"n":1},"as":"-"})");
    EXPECT_EQ(replies[1], R"({"echo":2,"as":"alice"})") << "the loop runs as the message's principal";
}

TEST(RunLoop, CapsuleWithoutALoopIsReadyAtOnce) {
    astrid::Runtime rt(test::config());
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    EXPECT_FALSE(hello.runs_loop());
    auto started = std::chrono::steady_clock::now();
    EXPECT_NO_THROW(hello.wait_ready(0ms));
    EXPECT_NO_THROW(hello.wait_ready(10s));
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
}

TEST(RunLoop, ALoopThatReturnsFailsWaitReadyWithTrap) {
    astrid::Runtime rt(test::config());
    astrid::Capsule broken = rt.load(test::capsule_dir("runloop"), mode("return"));
    EXPECT_TRUE(broken.runs_loop());
    std::string message;
    EXPECT_EQ(code_of([&] { broken.wait_ready(5s); }, &message), astrid::Code::Trap);
    EXPECT_NE(message.find("run loop"), std::string::npos) << message;
    // It is not restarted: the failure stays.
    EXPECT_EQ(code_of([&] { broken.wait_ready(0ms); }), astrid::Code::Trap);
    // Direct calls of the capsule still work.
    EXPECT_EQ(broken.call("anything").action(), "ok");
}

TEST(RunLoop, WaitReadyTimesOutAndClosedCapsulesSayClosed) {
    astrid::Runtime rt(test::config());
    astrid::Capsule late = rt.load(test::capsule_dir("runloop"), mode("late-ready"));
    EXPECT_EQ(code_of([&] { late.wait_ready(100ms); }), astrid::Code::Timeout);
    late.close();
    EXPECT_EQ(code_of([&] { late.wait_ready(0ms); }), astrid::Code::Closed);
    EXPECT_EQ(code_of([&] { (void)late.runs_loop(); }), astrid::Code::Closed);
}

TEST(RunLoop, WatchdogStopsASpinningLoopUnlessDisabled) {
    astrid::Runtime rt(test::config());
    astrid::Capsule spinning = rt.load(test::capsule_dir("runloop"), mode("spin").watchdog(100ms));
    ASSERT_NO_THROW(spinning.wait_ready(5s));
    // Three 100 ms windows without a waiting host call: interrupted and failed.
    EXPECT_TRUE(test::eventually([&] { return code_of([&] { spinning.wait_ready(0ms); }) != astrid::Code::Ok; }));
    EXPECT_EQ(code_of([&] { spinning.wait_ready(0ms); }), astrid::Code::Timeout);
    spinning.close();

    astrid::LoadOptions off = mode("spin").watchdog(100ms).disable_watchdog(); // the last setting wins
    EXPECT_EQ(off.native().watchdog_ms, ASTRID_WATCHDOG_OFF);
    EXPECT_EQ(astrid::LoadOptions().watchdog(-5ms).native().watchdog_ms, 0u) << "not positive: the default";
    astrid::Capsule exempt = rt.load(test::capsule_dir("runloop"), off);
    ASSERT_NO_THROW(exempt.wait_ready(5s));
    std::this_thread::sleep_for(600ms); // twice what failed the 100 ms loop above
    EXPECT_NO_THROW(exempt.wait_ready(0ms)) << "an exempt loop keeps running";
    auto started = std::chrono::steady_clock::now();
    exempt.close();
    EXPECT_LT(std::chrono::steady_clock::now() - started, 2s) << "unload still stops it";
}
