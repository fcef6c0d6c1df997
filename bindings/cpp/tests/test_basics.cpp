// Loading, calling, options, errors mapped to astrid::Error, and object
// lifetimes (close twice, use after close, moved-from objects).
#include "support.hpp"

#include <gtest/gtest.h>

using namespace std::chrono_literals;
using astrid::Code;

namespace {

/// Runs `f`, expecting an astrid::Error with `code`; returns its message.
template <class F> std::string error_of(F &&f, Code code) {
    try {
        f();
    } catch (const astrid::Error &e) {
        EXPECT_EQ(e.code(), code) << e.what();
        EXPECT_EQ(e.status(), static_cast<int32_t>(code));
        // The library's own message, not the binding's fallback for a missing error object.
        std::string fallback = std::string(astrid::code_name(code)) + ": astrid_";
        EXPECT_NE(std::string(e.what()).rfind(fallback, 0), 0u) << e.what();
        return e.what();
    }
    ADD_FAILURE() << "no astrid::Error thrown, expected " << astrid::code_name(code);
    return {};
}

} // namespace

TEST(Basics, VersionsAndAbi) {
    EXPECT_EQ(astrid::library_abi_version(), astrid::header_abi_version);
    EXPECT_FALSE(astrid::library_version().empty());
    EXPECT_NO_THROW(astrid::check_abi(ASTRID_ABI_VERSION));
    try {
        astrid::check_abi(ASTRID_ABI_VERSION + 1);
        FAIL() << "check_abi accepted a different ABI";
    } catch (const astrid::AbiError &e) {
        EXPECT_EQ(e.library_version(), ASTRID_ABI_VERSION + 1u);
        EXPECT_EQ(e.header_version(), ASTRID_ABI_VERSION);
        EXPECT_EQ(e.code(), Code::Internal);
        EXPECT_NE(std::string(e.what()).find("ABI"), std::string::npos);
    }
}

TEST(Basics, LoadAndCall) {
    astrid::Runtime rt(test::config());
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"), astrid::LoadOptions().principal("alice"));
    EXPECT_TRUE(hello.is_open());
    EXPECT_EQ(hello.name(), "hello");
    EXPECT_EQ(hello.id().size(), 36u);
    EXPECT_FALSE(hello.has_capability("net"));

    astrid::Result r = hello.call("greet", R"({"name":"C++"})");
    EXPECT_EQ(r.action(), "final");
    ASSERT_TRUE(r.has_data());
    EXPECT_NE(r.data().find(R"("message":"Hello, C++!")"), std::string_view::npos) << r.data();
    EXPECT_NE(r.data().find(R"("principal":"alice")"), std::string_view::npos) << r.data();

    astrid::Result noop = hello.call("noop");
    EXPECT_EQ(noop.action(), "continue");
    EXPECT_FALSE(noop.has_data());
    EXPECT_TRUE(noop.data().empty());

    // Results own their data: it outlives later calls.
    std::string_view first = r.data();
    astrid::Result again = hello.call("greet", R"({"name":"again"})");
    EXPECT_NE(first.find("Hello, C++!"), std::string_view::npos);
    EXPECT_NE(again.data().find("Hello, again!"), std::string_view::npos);
}

TEST(Basics, LoadAndCallOptions) {
    astrid::Runtime rt(test::config());
    astrid::Capsule hello =
        rt.load(test::capsule_dir("hello"), astrid::LoadOptions().principal("alice").config("GREETING", "Hi"));
    EXPECT_NE(hello.call("greet", R"({"name":"x"})").data().find("Hi, x!"), std::string_view::npos);

    astrid::CallOptions opts;
    opts.principal("dora").config("GREETING", "Howdy");
    astrid::Result r = hello.call("greet", R"({"name":"y"})", opts);
    EXPECT_NE(r.data().find("Howdy, y!"), std::string_view::npos) << r.data();
    EXPECT_NE(r.data().find(R"("principal":"dora")"), std::string_view::npos) << r.data();
}

TEST(Basics, OptionsSurviveCopyAndMove) {
    // The option objects hold the strings the C structs point at: copies and
    // moves must re-point them (the originals are destroyed here first).
    astrid::Runtime rt(test::config());
    auto make_load = [] {
        astrid::LoadOptions o;
        o.principal("a-principal-long-enough-to-live-on-the-heap-not-in-sso").config("GREETING", "Moved");
        return o;
    };
    astrid::LoadOptions load_copy;
    {
        astrid::LoadOptions original = make_load();
        load_copy = original;
        original.config("GREETING", "Changed after the copy");
    }
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"), load_copy);
    astrid::Result r = hello.call("greet", R"({"name":"z"})");
    EXPECT_NE(r.data().find("Moved, z!"), std::string_view::npos) << r.data();
    EXPECT_NE(r.data().find("a-principal-long-enough"), std::string_view::npos) << r.data();

    std::vector<astrid::CallOptions> many;
    for (int i = 0; i < 20; i++) { // vector growth moves the elements
        astrid::CallOptions o;
        o.principal("p" + std::to_string(i)).config("GREETING", "G" + std::to_string(i));
        many.push_back(std::move(o));
    }
    astrid::CallOptions copied = many[7];
    many.clear();
    astrid::Result r7 = hello.call("greet", R"({"name":"n"})", copied);
    EXPECT_NE(r7.data().find("G7, n!"), std::string_view::npos) << r7.data();
    EXPECT_NE(r7.data().find(R"("principal":"p7")"), std::string_view::npos) << r7.data();
}

TEST(Basics, LoadBytes) {
    astrid::Runtime rt(test::config());
    std::string wasm = test::read_file(test::capsule_dir("hello") + "/hello.wasm");
    std::string manifest = test::read_file(test::capsule_dir("hello") + "/Capsule.toml");
    ASSERT_FALSE(wasm.empty());
    astrid::Capsule hello = rt.load_bytes(wasm, manifest);
    EXPECT_EQ(hello.name(), "hello");
    EXPECT_EQ(hello.call("noop").action(), "continue");
    std::vector<uint8_t> bytes(wasm.begin(), wasm.end());
    EXPECT_EQ(rt.load_bytes(bytes, manifest).call("noop").action(), "continue");
}

TEST(Basics, BadManifestIsManifestError) {
    astrid::Runtime rt(test::config());
    std::string msg = error_of([&] { rt.load_bytes(std::string("\0asm", 4), "[package"); }, Code::Manifest);
    EXPECT_NE(msg.find("manifest"), std::string::npos) << msg;
    error_of([&] { rt.load_bytes(std::string_view(), "[package]\nversion = 3\n"); }, Code::Manifest);
}

TEST(Basics, GarbageWasmIsCompileError) {
    astrid::Runtime rt(test::config());
    const char manifest[] = "[package]\nname = \"garbage\"\nversion = \"1.0.0\"\n";
    std::string msg = error_of([&] { rt.load_bytes(std::string("definitely not wasm"), manifest); }, Code::Compile);
    EXPECT_NE(msg.find("compile"), std::string::npos) << msg;
    const uint8_t truncated[] = {0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0x07};
    error_of([&] { rt.load_bytes(truncated, sizeof truncated, manifest); }, Code::Compile);
}

TEST(Basics, LoadErrors) {
    astrid::Runtime rt(test::config());
    std::string msg = error_of([&] { rt.load("/nonexistent/capsule"); }, Code::NotFound);
    EXPECT_NE(msg.find("/nonexistent/capsule"), std::string::npos) << msg;
    error_of([&] { rt.load(test::capsule_dir("bad-import")); }, Code::Link);
    error_of([&] { rt.load(std::string("\xc3\x28")); }, Code::Utf8);
    error_of([&] { rt.load(test::capsule_dir("hello"), astrid::LoadOptions().principal("")); },
             Code::InvalidArgument);
}

TEST(Basics, RuntimeConfigErrors) {
    std::string msg = error_of([] { astrid::Runtime rt(astrid::RuntimeConfig().flags(0x80)); }, Code::InvalidArgument);
    EXPECT_NE(msg.find("flag"), std::string::npos) << msg;
    error_of([] { astrid::Runtime rt(astrid::RuntimeConfig().cache_dir("\xff\xfe")); }, Code::Utf8);
    astrid::Runtime fine(astrid::RuntimeConfig().inline_callbacks().allow_loopback().allow_loopback(false));
    EXPECT_TRUE(fine.is_open());
}

TEST(Basics, GuestFailuresKeepTheCapsuleServing) {
    astrid::Runtime rt(astrid::RuntimeConfig().timeout(300ms).unload_grace(2s).fuel(uint64_t(1) << 50));
    astrid::Capsule hostile = rt.load(test::capsule_dir("hostile"));
    error_of([&] { hostile.call("trap"); }, Code::Trap);
    error_of([&] { hostile.call("loop"); }, Code::Timeout);
    EXPECT_EQ(hostile.call("ok").data(), "harmless");

    astrid::Runtime slow(astrid::RuntimeConfig().timeout(10s).fuel(uint64_t(1) << 50));
    astrid::Capsule looping = slow.load(test::capsule_dir("hostile"));
    std::thread canceller([&] {
        std::this_thread::sleep_for(150ms);
        looping.cancel();
    });
    error_of([&] { looping.call("loop"); }, Code::Cancelled);
    canceller.join();
    EXPECT_EQ(looping.call("ok").data(), "harmless");
}

TEST(CallControl, TokenEndsItsCallOnly) {
    astrid::Runtime rt(astrid::RuntimeConfig().timeout(20s).fuel(uint64_t(1) << 50));
    astrid::Capsule hostile = rt.load(test::capsule_dir("hostile"));
    astrid::Cancel token;
    EXPECT_FALSE(token.fired());
    auto other_started = std::chrono::steady_clock::now();
    std::chrono::steady_clock::duration other_took{};
    Code other_code = Code::Ok;
    std::thread other([&] {
        try {
            (void)hostile.call("sleep", {}, astrid::CallOptions().timeout(1500ms));
        } catch (const astrid::Error &e) {
            other_code = e.code();
        }
        other_took = std::chrono::steady_clock::now() - other_started;
    });
    std::thread firer([&] {
        std::this_thread::sleep_for(200ms);
        token.fire();
    });
    auto started = std::chrono::steady_clock::now();
    error_of([&] { (void)hostile.call("loop", {}, astrid::CallOptions().cancel(token)); }, Code::Cancelled);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 1s);
    firer.join();
    other.join();
    EXPECT_GE(other_took, 1400ms);
    EXPECT_NE(other_code, Code::Cancelled);
    EXPECT_TRUE(token.fired());
    std::string msg =
        error_of([&] { (void)hostile.call("ok", {}, astrid::CallOptions().cancel(token)); }, Code::Cancelled);
    EXPECT_NE(msg.find("before it started"), std::string::npos) << msg;
    EXPECT_EQ(hostile.call("ok").data(), "harmless");

    astrid::Cancel moved = std::move(token);
    EXPECT_TRUE(moved.fired());
    EXPECT_FALSE(token.fired()); // NOLINT(bugprone-use-after-move): moved-from is defined
    error_of([&] { token.fire(); }, Code::Closed);
}

TEST(CallControl, DeadlineAndFuel) {
    astrid::Runtime rt(astrid::RuntimeConfig().timeout(30s).fuel(uint64_t(1) << 50));
    astrid::Capsule hostile = rt.load(test::capsule_dir("hostile"));
    auto started = std::chrono::steady_clock::now();
    std::string msg = error_of([&] { (void)hostile.call("loop", {}, astrid::CallOptions().timeout(200ms)); },
                               Code::Timeout);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 700ms);
    EXPECT_NE(msg.find("200 ms"), std::string::npos) << msg;
    msg = error_of([&] { (void)hostile.call("loop", {}, astrid::CallOptions().fuel(2000000)); }, Code::OutOfFuel);
    EXPECT_NE(msg.find("2000000 units"), std::string::npos) << msg;
    error_of([&] { astrid::CallOptions().timeout(0ms); }, Code::InvalidArgument);
    EXPECT_EQ(hostile.call("ok", {}, astrid::CallOptions().timeout(5s).fuel(10000000)).data(), "harmless");
}

TEST(CallControl, CallIdsTieResultsLogsAuditAndErrors) {
    astrid::Runtime rt(astrid::RuntimeConfig().timeout(5s).fuel(uint64_t(1) << 50));
    std::mutex mu;
    std::vector<std::pair<std::string, uint64_t>> lines;
    std::vector<std::tuple<std::string, astrid::AuditOutcome, std::string, uint64_t>> events;
    rt.set_log_callback([&](const astrid::LogRecord &r) {
        std::lock_guard<std::mutex> g(mu);
        lines.emplace_back(std::string(r.message), r.call_id);
    });
    rt.set_audit_callback([&](const astrid::AuditEvent &e) {
        std::lock_guard<std::mutex> g(mu);
        events.emplace_back(std::string(e.call), e.outcome, std::string(e.reason), e.call_id);
    });
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    astrid::Result first = hello.call("greet", R"({"name":"one"})");
    astrid::Result second = hello.call("greet", R"({"name":"two"})");
    EXPECT_NE(first.call_id(), 0u);
    EXPECT_NE(first.call_id(), second.call_id());
    astrid::Capsule hostile = rt.load(test::capsule_dir("hostile"));
    try {
        (void)hostile.call("trap");
        ADD_FAILURE() << "the trap returned";
    } catch (const astrid::Error &e) {
        EXPECT_EQ(e.code(), Code::Trap);
        EXPECT_NE(e.call_id(), 0u);
        EXPECT_NE(e.call_id(), first.call_id());
    }
    astrid::Capsule ipc = rt.load(test::capsule_dir("ipcprobe"));
    rt.publish("deny.in", R"("d")");
    bool denied = false;
    for (int i = 0; i < 1000 && !denied; i++) {
        {
            std::lock_guard<std::mutex> g(mu);
            for (auto &[call, outcome, reason, id] : events)
                if (call == "guest.deny" && outcome == astrid::AuditOutcome::Denied && reason == "nope" && id != 0)
                    denied = true;
        }
        std::this_thread::sleep_for(10ms);
    }
    EXPECT_TRUE(denied);
    std::lock_guard<std::mutex> g(mu);
    int tied = 0;
    for (auto &[message, id] : lines)
        if (message.find("greeting") != std::string::npos) {
            EXPECT_TRUE(id == first.call_id() || id == second.call_id()) << message;
            tied++;
        }
    EXPECT_EQ(tied, 2);
    EXPECT_EQ(astrid::callback_call_id(), 0u);
}

TEST(Metrics, StatsAndText) {
    astrid::Runtime rt(test::config());
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    (void)hello.call("greet", R"({"name":"one"})");
    (void)hello.call("greet", R"({"name":"two"})");
    astrid_capsule_stats_t s = hello.stats();
    EXPECT_EQ(s.usage.calls[ASTRID_CALLS_OK], 2u);
    EXPECT_GT(s.usage.fuel_consumed, 0u);
    EXPECT_GE(s.usage.host_calls[ASTRID_IFACE_SYS], 4u);
    astrid_runtime_stats_t r = rt.stats();
    EXPECT_EQ(r.capsules_loaded, 1u);
    std::string text = rt.metrics_text();
    EXPECT_NE(text.find("astrid_capsule_calls_total{capsule=\"hello\",capsule_id=\"" + std::string(hello.id()) +
                        "\",outcome=\"ok\"} 2\n"),
              std::string::npos)
        << text;
    hello.close();
    error_of([&] { (void)hello.stats(); }, Code::Closed);
}

TEST(LoadPolicy, NetFlagsPerCapsule) {
    astrid::Runtime rt(test::config());
    astrid::Capsule open = rt.load(test::capsule_dir("netprobe"),
                                   astrid::LoadOptions().net_flags(ASTRID_RUNTIME_ALLOW_LOOPBACK));
    EXPECT_TRUE(open.is_open());
    error_of([&] {
        (void)rt.load(test::capsule_dir("netprobe"), astrid::LoadOptions().net_flags(ASTRID_RUNTIME_INLINE_CALLBACKS));
    },
             Code::InvalidArgument);
}

TEST(Lifetime, CloseTwiceAndUseAfterClose) {
    astrid::Runtime rt(test::config());
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    hello.close();
    EXPECT_FALSE(hello.is_open());
    EXPECT_NO_THROW(hello.close()); // closing twice does nothing
    std::string msg = error_of([&] { hello.call("noop"); }, Code::Closed);
    EXPECT_NE(msg.find("astrid::Capsule"), std::string::npos) << msg;
    error_of([&] { (void)hello.name(); }, Code::Closed);
    error_of([&] { hello.cancel(); }, Code::Closed);

    rt.close();
    EXPECT_FALSE(rt.is_open());
    EXPECT_NO_THROW(rt.close());
    msg = error_of([&] { rt.load(test::capsule_dir("hello")); }, Code::Closed);
    EXPECT_NE(msg.find("astrid::Runtime"), std::string::npos) << msg;
    error_of([&] { rt.set_gate([](astrid::GateRequest &) { return astrid::Verdict::Allow; }); }, Code::Closed);
    error_of([&] { rt.set_log_callback([](const astrid::LogRecord &) {}); }, Code::Closed);
    error_of([&] { rt.mount_vfs("cwd", std::make_shared<test::MemFs>()); }, Code::Closed);
}

// Calls that used to report a bare status (ABI 1) now carry the library's
// message: error_of checks it is not the wrapper's fallback text.
TEST(Lifetime, FormerlySilentCallsCarryTheLibraryMessage) {
    astrid::Runtime rt(test::config());
    std::string msg = error_of([&] { rt.unmount_vfs("nope"); }, Code::InvalidArgument);
    EXPECT_NE(msg.find("unknown mount `nope`"), std::string::npos) << msg;
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    // Unloaded behind the wrapper's back: cancel is refused by the library itself.
    ASSERT_EQ(astrid_capsule_unload(hello.native(), nullptr), ASTRID_OK);
    msg = error_of([&] { hello.cancel(); }, Code::Closed);
    EXPECT_NE(msg.find("capsule"), std::string::npos) << msg;
    EXPECT_NO_THROW(hello.close()); // already unloaded: close stays quiet
}

TEST(Lifetime, CapsuleOutlivesRuntime) {
    astrid::Capsule hello;
    {
        astrid::Runtime rt(test::config());
        hello = rt.load(test::capsule_dir("hello"));
        EXPECT_EQ(hello.call("noop").action(), "continue");
    } // the runtime is freed here; the capsule handle stays safe
    EXPECT_TRUE(hello.is_open());
    std::string msg = error_of([&] { hello.call("noop"); }, Code::Closed);
    EXPECT_FALSE(msg.empty());
    EXPECT_NO_THROW(hello.close());
}

TEST(Lifetime, MovedFromObjectsAreClosed) {
    astrid::Runtime rt(test::config());
    astrid::Runtime rt2 = std::move(rt);
    EXPECT_FALSE(rt.is_open());
    error_of([&] { rt.load(test::capsule_dir("hello")); }, Code::Closed);
    error_of([&] { rt.set_error_handler(nullptr); }, Code::Closed);

    astrid::Capsule a = rt2.load(test::capsule_dir("hello"));
    astrid::Capsule b = std::move(a);
    error_of([&] { a.call("noop"); }, Code::Closed);
    EXPECT_EQ(b.call("noop").action(), "continue");
    EXPECT_NO_THROW(a.close());

    astrid::Result r = b.call("noop");
    astrid::Result r2 = std::move(r);
    error_of([&] { (void)r.action(); }, Code::Closed);
    error_of([&] { (void)r.has_data(); }, Code::Closed);
    EXPECT_EQ(r2.action(), "continue");

    astrid::GateTicket empty;
    error_of([&] { empty.allow(); }, Code::Closed);
    EXPECT_NO_THROW(empty.reset());

    // Move-assignment unloads what the target held.
    astrid::Capsule c = rt2.load(test::capsule_dir("hello"));
    astrid_capsule_t *old = c.native();
    c = rt2.load(test::capsule_dir("hello"));
    astrid_result_t *raw = nullptr;
    EXPECT_EQ(astrid_capsule_call(old, "noop", ASTRID_NTS, nullptr, 0, &raw, nullptr), ASTRID_E_CLOSED);
    EXPECT_EQ(c.call("noop").action(), "continue");
}
