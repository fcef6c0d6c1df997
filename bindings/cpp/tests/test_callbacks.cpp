// Callbacks written in C++: gate (verdicts, reasons, deferred tickets), VFS,
// log, audit, secret; exceptions thrown inside them; reentrancy; and the
// finalizers freeing the callback state.
#include "support.hpp"

#include <gtest/gtest.h>

#include <cstdio>
#include <deque>
#include <unistd.h>

using namespace std::chrono_literals;
using astrid::Verdict;

namespace {

/// Calls fsprobe `action` with newline-separated `args`; returns `ok <data>` / `err <case>`.
std::string fs(const astrid::Capsule &probe, const char *action, const std::string &args) {
    return test::answer(probe.call(action, args));
}

struct AuditLog {
    std::mutex mu;
    std::vector<std::string> lines; // "call target outcome reason"

    astrid::AuditFn fn() {
        return [this](const astrid::AuditEvent &e) {
            std::lock_guard<std::mutex> lock(mu);
            lines.push_back(std::string(e.call) + " " + std::string(e.target) + " " +
                            std::to_string(static_cast<unsigned>(e.outcome)) + " " + std::string(e.reason));
        };
    }
    bool has(const std::string &needle) {
        std::lock_guard<std::mutex> lock(mu);
        for (auto &l : lines)
            if (l.find(needle) != std::string::npos) return true;
        return false;
    }
};

} // namespace

TEST(Callbacks, LogAndAuditReceiveEvents) {
    auto alive = std::make_shared<int>(0); // captured by both callbacks
    std::mutex mu;
    std::vector<std::string> lines;
    std::vector<std::string> principals;
    std::vector<std::string> calls;
    {
        astrid::Runtime rt(test::config());
        rt.set_log_callback([&, alive](const astrid::LogRecord &rec) {
            std::lock_guard<std::mutex> lock(mu);
            lines.push_back(std::string(astrid::to_string(rec.level)) + " " + std::string(rec.capsule) + ": " +
                            std::string(rec.message));
            principals.emplace_back(rec.principal);
        });
        rt.set_audit_callback([&, alive](const astrid::AuditEvent &e) {
            std::lock_guard<std::mutex> lock(mu);
            calls.push_back(std::string(e.capsule) + " " + std::string(e.call) + " " + std::string(e.target) +
                            " " + std::to_string(static_cast<unsigned>(e.outcome)) + " " + std::string(e.principal));
        });
        EXPECT_EQ(alive.use_count(), 3);
        astrid::Capsule hello = rt.load(test::capsule_dir("hello"), astrid::LoadOptions().principal("alice"));
        hello.call("greet", R"({"name":"tester"})");
        {
            std::lock_guard<std::mutex> lock(mu);
            ASSERT_EQ(lines.size(), 2u);
            EXPECT_EQ(lines[0], "info hello: greeting tester on behalf of alice");
            EXPECT_EQ(lines[1], "info hello: hello capsule wrote this line to stdout");
            EXPECT_EQ(principals[0], "alice");
        }
        hello.close();
        rt.close(); // flushes the audit queue, then runs the finalizers
        EXPECT_EQ(alive.use_count(), 1) << "the finalizers freed both callbacks";
    }
    bool saw_config = false;
    for (auto &c : calls) saw_config |= c.rfind("hello sys.get-config GREETING 0 alice", 0) == 0;
    EXPECT_TRUE(saw_config) << "no audit event for get-config; got " << calls.size() << " events";
    EXPECT_GE(calls.size(), 4u);
}

TEST(Callbacks, ReplacingOrRemovingACallbackFreesTheOldOne) {
    astrid::Runtime rt(test::config());
    auto first = std::make_shared<int>(1);
    auto second = std::make_shared<int>(2);
    std::atomic<int> first_lines{0}, second_lines{0};
    rt.set_log_callback([first, &first_lines](const astrid::LogRecord &) { first_lines++; });
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    hello.call("greet", "{}");
    rt.set_log_callback([second, &second_lines](const astrid::LogRecord &) { second_lines++; });
    EXPECT_EQ(first.use_count(), 1);
    hello.call("greet", "{}");
    EXPECT_EQ(first_lines.load(), 2);
    EXPECT_EQ(second_lines.load(), 2);
    rt.set_log_callback(nullptr); // removes it
    EXPECT_EQ(second.use_count(), 1);
    hello.call("greet", "{}");
    EXPECT_EQ(second_lines.load(), 2);
}

TEST(Callbacks, BlockingCallsInsideACallbackThrowReentrant) {
    astrid::Runtime rt(test::config());
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    std::atomic<int> reentrant{0};
    rt.set_log_callback([&](const astrid::LogRecord &) {
        try {
            hello.call("noop");
        } catch (const astrid::Error &e) {
            if (e.code() == astrid::Code::Reentrant) reentrant++;
        }
    });
    hello.call("greet", "{}");
    EXPECT_EQ(reentrant.load(), 2);
}

TEST(Callbacks, SecretProvider) {
    test::Failures failures; // outlives the runtime: its close may still report (audit flush)
    astrid::Runtime rt(test::config());
    rt.set_error_handler(failures.handler());
    rt.set_secret_callback([](const astrid::SecretRequest &req) -> std::optional<std::string> {
        if (req.key == "TOKEN" && req.capsule == "probe") return std::string("c++-secret");
        return std::nullopt;
    });
    astrid::Capsule probe = rt.load(test::capsule_dir("probe"), astrid::LoadOptions().config("REQUIRED", "yes"));
    EXPECT_EQ(probe.call("config:TOKEN").data(), "some:c++-secret");

    rt.set_secret_callback([](const astrid::SecretRequest &) -> std::optional<std::string> { return {}; });
    EXPECT_EQ(probe.call("config:TOKEN").data(), "none");

    rt.set_secret_callback([](const astrid::SecretRequest &) -> std::optional<std::string> {
        throw std::runtime_error("vault unreachable");
    });
    EXPECT_EQ(probe.call("config:TOKEN").data(), "err:unknown(secret provider failed)");
    EXPECT_EQ(failures.count("secret"), 1u);
    EXPECT_EQ(failures.last_message("secret"), "vault unreachable");
}

// ---- the gate ----

TEST(Gate, DeniesAWriteWithAReason) {
    AuditLog audit;
    std::mutex mu;
    std::vector<std::string> asked;
    astrid::Runtime rt(test::config());
    rt.set_audit_callback(audit.fn());
    rt.set_gate([&](astrid::GateRequest &req) {
        {
            std::lock_guard<std::mutex> lock(mu);
            asked.push_back(std::string(req.capsule()) + " " + std::to_string(static_cast<unsigned>(req.kind())) +
                            " " + std::string(req.path()));
        }
        bool scratch = req.path().rfind("cwd://scratch", 0) == 0;
        if (req.kind() == astrid::GateKind::FileWrite && scratch) {
            req.set_reason("no writes to scratch");
            return Verdict::Deny;
        }
        return Verdict::Allow;
    });
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
    EXPECT_EQ(fs(probe, "write-file", "ws\nallowed"), "ok ok");
    EXPECT_EQ(fs(probe, "write-file", "scratch\nrefused"), "err capability-denied");
    EXPECT_EQ(fs(probe, "read-file", "ws"), "ok allowed");
    {
        std::lock_guard<std::mutex> lock(mu);
        EXPECT_NE(std::find(asked.begin(), asked.end(), "fsprobe 2 cwd://ws"), asked.end());
        EXPECT_NE(std::find(asked.begin(), asked.end(), "fsprobe 2 cwd://scratch"), asked.end());
        EXPECT_NE(std::find(asked.begin(), asked.end(), "fsprobe 1 cwd://ws"), asked.end());
    }
    rt.close();
    EXPECT_TRUE(audit.has("fs.write-file cwd://scratch 1 gate: no writes to scratch")) << "audit misses the reason";
}

TEST(Gate, DeferredTicketsAnsweredFromAnotherThread) {
    astrid::Runtime rt(test::config());
    std::mutex mu;
    std::condition_variable cv;
    std::deque<astrid::GateTicket> tickets;
    rt.set_gate([&](astrid::GateRequest &req) {
        astrid::GateTicket t = req.defer();
        std::lock_guard<std::mutex> lock(mu);
        tickets.push_back(std::move(t));
        cv.notify_all();
        return Verdict::Pending;
    });
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));

    std::atomic<int> mode{0}; // 0 allow, 1 deny, 2 drop
    std::atomic<bool> stop{false};
    std::thread resolver([&] {
        std::unique_lock<std::mutex> lock(mu);
        while (!stop) {
            cv.wait_for(lock, 10ms, [&] { return !tickets.empty(); });
            while (!tickets.empty()) {
                astrid::GateTicket t = std::move(tickets.front());
                tickets.pop_front();
                if (mode == 0) t.allow("decided later");
                else if (mode == 1) t.deny("decided later");
                else t.reset(); // dropped unanswered: a denial
                EXPECT_FALSE(t.valid());
                EXPECT_THROW(t.allow(), astrid::Error); // answered tickets are gone
            }
        }
    });
    EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "ok ok");
    mode = 1;
    EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "err capability-denied");
    mode = 2;
    EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "err capability-denied");
    stop = true;
    resolver.join();
}

// The request handle is valid only on the thread running the gate callback:
// from another thread, even while the callback waits for it, the library
// refuses it and the wrapper throws Code::Closed with the library's message.
TEST(Gate, RequestIsRefusedOnAnotherThread) {
    astrid::Runtime rt(test::config());
    std::atomic<int> refused{0}, calls{0};
    std::string message;
    rt.set_gate([&](astrid::GateRequest &req) {
        if (calls++ == 0) {
            std::thread other([&] {
                try {
                    req.set_reason("from another thread");
                } catch (const astrid::Error &e) {
                    if (e.code() == astrid::Code::Closed) refused++;
                    message = e.what();
                }
                try {
                    (void)req.defer();
                } catch (const astrid::Error &e) {
                    if (e.code() == astrid::Code::Closed) refused++;
                }
            });
            other.join();
        }
        req.set_reason("on the callback's thread"); // still fine here
        return req.kind() == astrid::GateKind::FileWrite ? Verdict::Allow : Verdict::Deny;
    });
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
    EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "ok ok");
    EXPECT_EQ(refused.load(), 2);
    EXPECT_NE(message.find("not a live request on this thread"), std::string::npos) << message;
}

TEST(Gate, ThrowingGateDeniesAndTheRuntimeKeepsServing) {
    test::Failures failures; // outlives the runtime: its close may still report (audit flush)
    astrid::Runtime rt(test::config());
    rt.set_error_handler(failures.handler());
    std::atomic<int> mode{0};
    rt.set_gate([&](astrid::GateRequest &req) -> Verdict {
        if (mode == 1) throw std::runtime_error("gate exploded");
        if (mode == 2) throw 42; // not a std::exception
        if (mode == 3) {
            astrid::GateTicket t = req.defer(); // destroyed while unwinding: a denial
            throw std::logic_error("after defer");
        }
        return Verdict::Allow;
    });
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
    EXPECT_EQ(fs(probe, "write-file", "ws\n1"), "ok ok");
    mode = 1;
    EXPECT_EQ(fs(probe, "write-file", "ws\n2"), "err capability-denied");
    EXPECT_EQ(failures.last_message("gate"), "gate exploded");
    mode = 2;
    EXPECT_EQ(fs(probe, "write-file", "ws\n3"), "err capability-denied");
    EXPECT_EQ(failures.last_message("gate"), "unknown exception");
    mode = 3;
    EXPECT_EQ(fs(probe, "write-file", "ws\n4"), "err capability-denied");
    EXPECT_EQ(failures.last_message("gate"), "after defer");
    mode = 0;
    EXPECT_EQ(fs(probe, "write-file", "ws\n5"), "ok ok");
    EXPECT_EQ(fs(probe, "read-file", "ws"), "ok 5");
    EXPECT_EQ(failures.count("gate"), 3u);
}

TEST(Gate, ThrowingErrorHandlerIsContained) {
    astrid::Runtime rt(test::config());
    rt.set_error_handler([](const astrid::CallbackFailure &) { throw std::runtime_error("handler too"); });
    rt.set_gate([](astrid::GateRequest &) -> Verdict { throw std::runtime_error("gate"); });
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
    EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "err capability-denied");
    EXPECT_EQ(probe.call("noop").action(), "ok");
}

TEST(Gate, DefaultErrorHandlerWritesToStderr) {
    std::FILE *capture = std::tmpfile();
    ASSERT_NE(capture, nullptr);
    std::fflush(stderr);
    int saved = dup(2);
    dup2(fileno(capture), 2);
    {
        astrid::Runtime rt(test::config());
        rt.set_gate([](astrid::GateRequest &) -> Verdict { throw std::runtime_error("loud gate"); });
        astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
        EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "err capability-denied");
    }
    std::fflush(stderr);
    dup2(saved, 2);
    close(saved);
    std::rewind(capture);
    char buf[4096] = {0};
    size_t n = std::fread(buf, 1, sizeof buf - 1, capture);
    std::fclose(capture);
    std::string text(buf, n);
    EXPECT_NE(text.find("astrid: the gate callback threw: loud gate"), std::string::npos) << text;
}

// ---- the VFS ----

TEST(Vfs, OverriddenOperationsAreDetected) {
    constexpr astrid::VfsOps ops = astrid::VfsOps::overridden_by<test::MemFs>();
    static_assert(ops.has(astrid::VfsOp::Stat) && ops.has(astrid::VfsOp::ReadDir) && ops.has(astrid::VfsOp::Close));
    static_assert(!ops.has(astrid::VfsOp::ReadLink) && !ops.has(astrid::VfsOp::Rename));
    EXPECT_EQ(ops.bits(), (astrid::VfsOp::Stat | astrid::VfsOp::Open | astrid::VfsOp::ReadAt | astrid::VfsOp::WriteAt |
                           astrid::VfsOp::Close | astrid::VfsOp::SetLen | astrid::VfsOp::Fstat |
                           astrid::VfsOp::ReadDir | astrid::VfsOp::Mkdir | astrid::VfsOp::RemoveFile)
                              .bits());
}

TEST(Vfs, ServesTheFsprobeCapsule) {
    auto memfs = std::make_shared<test::MemFs>();
    memfs->add_dir("ws");
    memfs->add_dir("ws/public");
    memfs->add_file("ws/seed.txt", "planted by C++");
    {
        astrid::Runtime rt(test::config());
        rt.mount_vfs("cwd", memfs);
        EXPECT_EQ(memfs.use_count(), 2);
        astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
        EXPECT_EQ(fs(probe, "read-file", "ws/seed.txt"), "ok planted by C++");
        EXPECT_EQ(fs(probe, "write-file", "ws/public/hello.txt\nhello from the capsule"), "ok ok");
        EXPECT_EQ(memfs->contents("ws/public/hello.txt"), "hello from the capsule");
        EXPECT_EQ(fs(probe, "read-file", "ws/public/hello.txt"), "ok hello from the capsule");
        EXPECT_EQ(fs(probe, "append", "ws/public/hello.txt\n!"), "ok ok");
        EXPECT_EQ(memfs->contents("ws/public/hello.txt"), "hello from the capsule!");
        EXPECT_EQ(fs(probe, "stat", "ws/public/hello.txt"), "ok file:23");
        EXPECT_EQ(fs(probe, "stat-times", "ws/public/hello.txt"), "ok true");
        EXPECT_EQ(fs(probe, "readdir", "ws"), "ok public,seed.txt");
        EXPECT_EQ(fs(probe, "mkdir", "ws/new"), "ok ok");
        EXPECT_TRUE(memfs->is_dir("ws/new"));
        EXPECT_EQ(fs(probe, "mkdir", "ws/new"), "err already-exists");
        EXPECT_EQ(fs(probe, "read-file", "ws/missing"), "err not-found");
        EXPECT_EQ(fs(probe, "read-file", "ws"), "err is-directory");
        EXPECT_EQ(fs(probe, "handle", "ws/seed.txt\nread-write\nr:0:7;w:0:PLANTED;len:10;stat"),
                  "ok planted;7;ok;file:10");
        EXPECT_EQ(memfs->contents("ws/seed.txt"), "PLANTED by");
        EXPECT_EQ(fs(probe, "unlink", "ws/seed.txt"), "ok ok");
        EXPECT_EQ(memfs->contents("ws/seed.txt"), "<missing>");
        EXPECT_EQ(fs(probe, "rename", "ws/public/hello.txt\nws/moved.txt"), "err unknown(not supported)");
        EXPECT_GT(memfs->calls.load(), 10);
        probe.close();
        EXPECT_EQ(memfs->open_handles.load(), 0) << "every handle the guest opened was closed";
    }
    EXPECT_EQ(memfs.use_count(), 1) << "the runtime released the provider";
}

namespace {
/// A read-only provider without read_dir: the library sees NULL entries.
class ReadOnlyFs : public astrid::Vfs {
  public:
    astrid::VfsStatus stat(std::string_view path, bool, astrid::FileStat &out) override {
        if (path.empty()) {
            out.kind = astrid::FileKind::Directory;
            return astrid::VfsStatus::Ok;
        }
        if (path != "ws") return astrid::VfsStatus::NotFound;
        out.kind = astrid::FileKind::Regular;
        out.size = 5;
        return astrid::VfsStatus::Ok;
    }
    astrid::VfsStatus open(std::string_view path, astrid::OpenFlags flags, uint64_t &handle) override {
        if (path != "ws") return astrid::VfsStatus::NotFound;
        if (flags.write()) return astrid::VfsStatus::Access;
        handle = 7;
        return astrid::VfsStatus::Ok;
    }
    astrid::VfsStatus read_at(uint64_t handle, uint64_t offset, uint8_t *buf, size_t len, size_t &read) override {
        if (handle != 7) return astrid::VfsStatus::Closed;
        const std::string data = "fixed";
        if (offset < data.size()) {
            read = std::min(len, data.size() - static_cast<size_t>(offset));
            std::memcpy(buf, data.data() + offset, read);
        }
        return astrid::VfsStatus::Ok;
    }
    astrid::VfsStatus fstat(uint64_t handle, astrid::FileStat &out) override {
        if (handle != 7) return astrid::VfsStatus::Closed;
        out.kind = astrid::FileKind::Regular;
        out.size = 5;
        return astrid::VfsStatus::Ok;
    }
};
} // namespace

TEST(Vfs, OperationsNotOverriddenAreUnsupported) {
    static_assert(astrid::VfsOps::overridden_by<ReadOnlyFs>().bits() ==
                  (astrid::VfsOp::Stat | astrid::VfsOp::Open | astrid::VfsOp::ReadAt | astrid::VfsOp::Fstat).bits());
    astrid::Runtime rt(test::config());
    rt.mount_vfs("cwd", std::make_shared<ReadOnlyFs>());
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
    EXPECT_EQ(fs(probe, "read-file", "ws"), "ok fixed");
    EXPECT_EQ(fs(probe, "write-file", "ws\nx"), "err access");
    EXPECT_EQ(fs(probe, "readdir", ""), "err unknown(not supported)");
    EXPECT_EQ(fs(probe, "mkdir", "ws2"), "err capability-denied"); // outside the manifest: never reaches us

    // The explicit form mounts only what is named.
    rt.mount_vfs("cwd", std::make_shared<ReadOnlyFs>(), astrid::VfsOp::Stat | astrid::VfsOp::Open);
    astrid::Capsule probe2 = rt.load(test::capsule_dir("fsprobe"));
    EXPECT_EQ(fs(probe2, "read-file", "ws"), "err unknown(not supported)");
    EXPECT_EQ(fs(probe, "read-file", "ws"), "ok fixed") << "loaded capsules keep their provider";
    EXPECT_THROW(rt.mount_vfs("nope", std::make_shared<ReadOnlyFs>()), astrid::Error);
    EXPECT_THROW(rt.mount_vfs("cwd", std::shared_ptr<astrid::Vfs>(), astrid::VfsOps::all()), astrid::Error);
    rt.unmount_vfs("cwd");
}

TEST(Vfs, ThrowingProviderIsAnIoErrorAndKeepsServing) {
    auto memfs = std::make_shared<test::MemFs>();
    memfs->add_file("ws", "content");
    test::Failures failures; // outlives the runtime: its close may still report (audit flush)
    astrid::Runtime rt(test::config());
    rt.set_error_handler(failures.handler());
    rt.mount_vfs("cwd", memfs);
    astrid::Capsule probe = rt.load(test::capsule_dir("fsprobe"));
    memfs->throw_on_read = true;
    std::string failed = fs(probe, "read-file", "ws");
    EXPECT_EQ(failed.rfind("err unknown(", 0), 0u) << failed;
    EXPECT_EQ(failures.count("vfs.read_at"), 1u);
    EXPECT_EQ(failures.last_message("vfs.read_at"), "injected read failure");
    memfs->throw_on_read = false;
    EXPECT_EQ(fs(probe, "read-file", "ws"), "ok content");
}

TEST(Callbacks, ThrowingLogAndAuditCallbacksAreReportedNotFatal) {
    test::Failures failures; // outlives the runtime: its close may still report (audit flush)
    astrid::Runtime rt(test::config());
    rt.set_error_handler(failures.handler());
    rt.set_log_callback([](const astrid::LogRecord &) { throw std::runtime_error("log sink down"); });
    rt.set_audit_callback([](const astrid::AuditEvent &) { throw std::runtime_error("audit sink down"); });
    astrid::Capsule hello = rt.load(test::capsule_dir("hello"));
    EXPECT_EQ(hello.call("greet", R"({"name":"x"})").action(), "final");
    EXPECT_EQ(hello.call("greet", R"({"name":"y"})").action(), "final");
    EXPECT_EQ(failures.count("log"), 4u);
    EXPECT_EQ(failures.last_message("log"), "log sink down");
    EXPECT_TRUE(test::eventually([&] { return failures.count("audit") >= 2; }));
    EXPECT_EQ(failures.last_message("audit"), "audit sink down");
}
