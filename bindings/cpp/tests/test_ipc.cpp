// The host side of the IPC bus: Runtime::publish / publish_as and
// astrid::Subscription (ordering, attribution, close, exceptions).
#include "support.hpp"

#include <gtest/gtest.h>

using namespace std::chrono_literals;

namespace {

/// Collects delivered messages (copied out of the borrowed views).
struct Inbox {
    struct Copy {
        std::string topic, payload, source_id, principal;
        astrid::Attribution attribution;
        uint64_t sequence, timestamp_ms, dropped, lagged;
        uint32_t depth;
        std::thread::id thread;
    };
    std::mutex mu;
    std::vector<Copy> got;

    astrid::MessageFn fn() {
        return [this](const astrid::Message &m) {
            std::lock_guard<std::mutex> lock(mu);
            got.push_back(Copy{std::string(m.topic), std::string(m.payload), std::string(m.source_id),
                               std::string(m.principal), m.attribution, m.sequence, m.timestamp_ms, m.dropped,
                               m.lagged, m.depth, std::this_thread::get_id()});
        };
    }
    size_t size() {
        std::lock_guard<std::mutex> lock(mu);
        return got.size();
    }
    bool wait_for(size_t n) {
        return test::eventually([&] { return size() >= n; });
    }
};

} // namespace

TEST(Ipc, SubscriptionReceivesHostPublishesInOrder) {
    astrid::Runtime rt(test::config());
    Inbox inbox;
    astrid::Subscription sub = rt.subscribe("news.*", inbox.fn());
    EXPECT_TRUE(sub.is_open());
    const int n = 200;
    for (int i = 0; i < n; i++) rt.publish("news.local", R"({"n":)" + std::to_string(i) + "}");
    rt.publish("weather.today", R"({"ignored":true})"); // does not match the pattern
    rt.publish_as("news.signed", R"({"by":"alice"})", "alice");
    ASSERT_TRUE(inbox.wait_for(n + 1));
    std::this_thread::sleep_for(50ms); // nothing else may arrive
    std::lock_guard<std::mutex> lock(inbox.mu);
    ASSERT_EQ(inbox.got.size(), static_cast<size_t>(n + 1));
    uint64_t previous = 0;
    for (int i = 0; i < n; i++) {
        const auto &m = inbox.got[i];
        EXPECT_EQ(m.topic, "news.local");
        EXPECT_EQ(m.payload, R"({"n":)" + std::to_string(i) + "}");
        EXPECT_EQ(m.attribution, astrid::Attribution::System);
        EXPECT_TRUE(m.principal.empty());
        EXPECT_FALSE(m.source_id.empty());
        EXPECT_EQ(m.depth, 0u);
        EXPECT_EQ(m.dropped + m.lagged, 0u);
        EXPECT_GT(m.sequence, previous) << "publish order";
        EXPECT_GT(m.timestamp_ms, 1600000000000u);
        EXPECT_NE(m.thread, std::this_thread::get_id());
        previous = m.sequence;
    }
    const auto &signed_msg = inbox.got[n];
    EXPECT_EQ(signed_msg.topic, "news.signed");
    EXPECT_EQ(signed_msg.attribution, astrid::Attribution::Verified);
    EXPECT_EQ(signed_msg.principal, "alice");
    EXPECT_EQ(signed_msg.source_id, inbox.got[0].source_id) << "every host publish has the embedder's id";
}

TEST(Ipc, CloseStopsDeliveryAndFreesTheCallback) {
    astrid::Runtime rt(test::config());
    auto alive = std::make_shared<int>(0);
    std::atomic<int> count{0};
    astrid::Subscription sub = rt.subscribe("a.*", [alive, &count](const astrid::Message &) { count++; });
    EXPECT_EQ(alive.use_count(), 2);
    rt.publish("a.b", "1");
    ASSERT_TRUE(test::eventually([&] { return count.load() == 1; }));
    sub.close();
    EXPECT_FALSE(sub.is_open());
    EXPECT_EQ(alive.use_count(), 1) << "close() returns after the finalizer ran";
    EXPECT_NO_THROW(sub.close());
    rt.publish("a.b", "2");
    std::this_thread::sleep_for(50ms);
    EXPECT_EQ(count.load(), 1);

    // Moved-from subscriptions are empty; the target keeps delivering.
    astrid::Subscription one = rt.subscribe("c.*", [&count](const astrid::Message &) { count++; });
    astrid::Subscription two = std::move(one);
    EXPECT_FALSE(one.is_open());
    rt.publish("c.d", "3");
    ASSERT_TRUE(test::eventually([&] { return count.load() == 2; }));
}

TEST(Ipc, ThrowingSubscriberIsReportedAndKeepsReceiving) {
    test::Failures failures; // outlives the runtime: its close may still report (audit flush)
    astrid::Runtime rt(test::config());
    rt.set_error_handler(failures.handler());
    std::atomic<int> seen{0};
    astrid::Subscription sub = rt.subscribe("t.*", [&](const astrid::Message &m) {
        seen++;
        if (m.payload == "\"bad\"") throw std::runtime_error("subscriber failed");
    });
    rt.publish("t.x", "\"bad\"");
    rt.publish("t.x", "\"good\"");
    ASSERT_TRUE(test::eventually([&] { return seen.load() == 2; }));
    EXPECT_EQ(failures.count("subscription"), 1u);
    EXPECT_EQ(failures.last_message("subscription"), "subscriber failed");
}

TEST(Ipc, ArgumentErrors) {
    astrid::Runtime rt(test::config());
    auto code = [](auto &&f) {
        try {
            f();
        } catch (const astrid::Error &e) {
            return e.code();
        }
        return astrid::Code::Ok;
    };
    EXPECT_EQ(code([&] { rt.publish("has space", "{}"); }), astrid::Code::InvalidArgument);
    EXPECT_EQ(code([&] { rt.publish("a.*", "{}"); }), astrid::Code::InvalidArgument);
    EXPECT_EQ(code([&] { rt.publish("a.b", "not json"); }), astrid::Code::InvalidArgument);
    EXPECT_EQ(code([&] { rt.publish_as("a.b", "{}", ""); }), astrid::Code::InvalidArgument);
    EXPECT_EQ(code([&] { rt.subscribe("a..b", [](const astrid::Message &) {}); }), astrid::Code::InvalidArgument);
    EXPECT_EQ(code([&] { rt.subscribe("a.*", nullptr); }), astrid::Code::InvalidArgument);
    astrid::Subscription outlives = rt.subscribe("z.*", [](const astrid::Message &) {});
    rt.close();
    EXPECT_EQ(code([&] { rt.publish("a.b", "{}"); }), astrid::Code::Closed);
    EXPECT_NO_THROW(outlives.close()); // after the runtime: harmless
}

TEST(Ipc, PublishFromInsideACallbackIsAllowed) {
    astrid::Runtime rt(test::config());
    Inbox inbox;
    astrid::Subscription relay = rt.subscribe("in.*", [&rt](const astrid::Message &m) {
        rt.publish("out.copy", m.payload);
    });
    astrid::Subscription sink = rt.subscribe("out.*", inbox.fn());
    rt.publish("in.x", R"({"relayed":1})");
    ASSERT_TRUE(inbox.wait_for(1));
    std::lock_guard<std::mutex> lock(inbox.mu);
    EXPECT_EQ(inbox.got[0].payload, R"({"relayed":1})");
}

TEST(Ipc, CapsulePublishesAndInterceptorsReachTheHost) {
    astrid::Runtime rt(test::config());
    Inbox inbox;
    astrid::Subscription sub = rt.subscribe("out.*", inbox.fn());
    astrid::Capsule probe = rt.load(test::capsule_dir("ipcprobe"));

    // A capsule's own publish, from a call.
    EXPECT_EQ(test::answer(probe.call("publish", "out.direct\n{\"from\":\"call\"}")), "ok ok");
    ASSERT_TRUE(inbox.wait_for(1));
    // A host publish on echo.in runs the capsule's interceptor, which republishes.
    rt.publish("echo.in", R"({"n":1})");
    ASSERT_TRUE(inbox.wait_for(2));
    // The interceptor runs as the message's verified principal.
    rt.publish_as("who.x", "0", "dave");
    ASSERT_TRUE(inbox.wait_for(3));

    std::lock_guard<std::mutex> lock(inbox.mu);
    EXPECT_EQ(inbox.got[0].topic, "out.direct");
    EXPECT_EQ(inbox.got[0].payload, R"({"from":"call"})");
    EXPECT_EQ(inbox.got[0].source_id, probe.id());
    EXPECT_EQ(inbox.got[1].topic, "out.echo");
    EXPECT_EQ(inbox.got[1].payload, R"({"n":1})");
    EXPECT_EQ(inbox.got[1].source_id, probe.id());
    EXPECT_EQ(inbox.got[1].depth, 1u) << "one more than the host message it handled";
    EXPECT_EQ(inbox.got[2].topic, "out.who");
    EXPECT_EQ(inbox.got[2].payload, "\"dave\"");
    EXPECT_EQ(inbox.got[2].principal, "dave");
}

TEST(Ipc, PublishRateIsConfigurable) {
    // 1000 bytes per second, one second deep: 200-byte publishes run out after about five.
    astrid::Runtime rt(test::config().ipc_publish_bytes_per_sec(1000));
    astrid::Capsule probe = rt.load(test::capsule_dir("ipcprobe"));
    std::string storm = test::answer(probe.call("storm", "out.storm\n20\n200"));
    ASSERT_EQ(storm.rfind("ok ", 0), 0u) << storm;
    size_t then = storm.find(" then ");
    ASSERT_NE(then, std::string::npos) << storm;
    int sent = std::stoi(storm.substr(3, then - 3));
    EXPECT_GE(sent, 4);
    EXPECT_LE(sent, 6);
    EXPECT_EQ(storm.substr(then + 6), "rate-limited");

    astrid::Runtime fast(test::config());
    astrid::Capsule unlimited = fast.load(test::capsule_dir("ipcprobe"));
    EXPECT_EQ(test::answer(unlimited.call("storm", "out.storm\n20\n200")), "ok 20") << "default: 10 MiB/s";
}
