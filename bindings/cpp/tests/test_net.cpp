// Networking pieces of the runtime: the bind flags (ALLOW_ANY_BIND,
// WASI_SOCKETS), unix socket paths assigned to capsules, and the accept
// verifier written in C++ (refusing, allowing with a principal, throwing).
#include "support.hpp"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <future>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

using namespace std::chrono_literals;
using astrid::Verdict;

namespace {

/// A fresh directory under /tmp (short: a unix socket path has at most 107 bytes), removed with its socket.
class TempDir {
  public:
    TempDir() {
        char tmpl[] = "/tmp/astrid-cpp-XXXXXX";
        if (!mkdtemp(tmpl)) throw std::runtime_error("mkdtemp failed");
        dir_ = tmpl;
    }
    ~TempDir() {
        ::unlink(socket().c_str());
        ::rmdir(dir_.c_str());
    }
    std::string socket() const { return dir_ + "/netprobe.sock"; }

  private:
    std::string dir_;
};

/// An AF_UNIX stream socket, closed on destruction.
class UnixStream {
  public:
    /// Connects to `path`, retrying while the capsule has not bound it yet; -1 after 5 s.
    explicit UnixStream(const std::string &path) {
        sockaddr_un addr{};
        addr.sun_family = AF_UNIX;
        std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
        for (int i = 0; i < 500; i++) {
            fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd_ < 0) return;
            if (::connect(fd_, reinterpret_cast<sockaddr *>(&addr), sizeof addr) == 0) break;
            ::close(fd_);
            fd_ = -1;
            std::this_thread::sleep_for(10ms);
        }
        if (fd_ >= 0) {
            timeval tv{10, 0}; // a broken runtime must not hang the test
            ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
        }
    }
    ~UnixStream() {
        if (fd_ >= 0) ::close(fd_);
    }
    UnixStream(const UnixStream &) = delete;
    UnixStream &operator=(const UnixStream &) = delete;

    bool connected() const { return fd_ >= 0; }
    bool write_all(std::string_view data) {
        while (!data.empty()) {
            ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
            if (n <= 0) return false;
            data.remove_prefix(static_cast<size_t>(n));
        }
        return true;
    }
    /// Reads until EOF (or up to `max` bytes); "<error>" when the read failed or timed out.
    std::string read_to_end(size_t max = 64) {
        std::string out;
        char buf[64];
        while (out.size() < max) {
            ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
            if (n == 0) break;
            if (n < 0) {
                if (errno == EINTR) continue;
                if (errno == ECONNRESET) break; // closed by the peer, like EOF
                return "<error>";
            }
            out.append(buf, static_cast<size_t>(n));
        }
        return out;
    }

  private:
    int fd_ = -1;
};

/// What the client side saw: one line per connection.
struct ClientLog {
    std::vector<std::string> refused; // what each refused connection read ("" = closed without data)
    std::string reply;                // what the accepted connection read
};

/// Connects `refusals` times expecting to be closed unheard, then once more
/// sending "hello" and reading the answer.
ClientLog run_clients(const std::string &path, int refusals) {
    ClientLog log;
    for (int i = 0; i < refusals; i++) {
        UnixStream s(path);
        if (!s.connected()) {
            log.refused.push_back("<no connection>");
            continue;
        }
        s.write_all("x"); // may already fail: the refusal is what is checked
        log.refused.push_back(s.read_to_end());
    }
    UnixStream s(path);
    if (!s.connected()) {
        log.reply = "<no connection>";
    } else if (!s.write_all("hello")) {
        log.reply = "<write failed>";
    } else {
        log.reply = s.read_to_end();
    }
    return log;
}

astrid::RuntimeConfig net_config() { return test::config().allow_loopback(); }

} // namespace

TEST(Net, AcceptVerifierRefusesThenAllowsWithAPrincipal) {
    TempDir tmp;
    struct Seen {
        std::string capsule;
        std::optional<int64_t> pid;
        uint32_t uid, gid;
    };
    std::mutex mu; // the state the verifier uses outlives the runtime
    std::vector<Seen> seen;
    test::Failures failures;
    astrid::Runtime rt(net_config());
    rt.set_error_handler(failures.handler());
    auto alive = std::make_shared<int>(0); // captured: freed once the verifier is removed
    rt.set_accept_verifier([&, alive](astrid::AcceptRequest &req) -> Verdict {
        std::lock_guard<std::mutex> lock(mu);
        seen.push_back(Seen{std::string(req.capsule()), req.pid(), req.uid(), req.gid()});
        if (seen.size() == 1) return Verdict::Deny; // the first peer is refused
        req.set_principal("carol");
        return Verdict::Allow;
    });
    EXPECT_EQ(alive.use_count(), 2);

    rt.assign_unix_socket("netprobe", tmp.socket());
    astrid::Capsule probe = rt.load(test::capsule_dir("netprobe"));
    auto clients = std::async(std::launch::async, run_clients, tmp.socket(), 1);
    astrid::Result r = probe.call("unix-serve", "5000");
    ClientLog log = clients.get();
    EXPECT_EQ(r.action(), "ok");
    EXPECT_EQ(r.data(), "got:hello|principal=carol|owner=none");
    ASSERT_EQ(log.refused.size(), 1u);
    EXPECT_EQ(log.refused[0], ""); // closed without a byte
    EXPECT_EQ(log.reply, "hi");

    {
        std::lock_guard<std::mutex> lock(mu);
        ASSERT_EQ(seen.size(), 2u);
        for (const Seen &s : seen) {
            EXPECT_EQ(s.capsule, "netprobe");
            EXPECT_EQ(s.pid, std::optional<int64_t>(::getpid())); // the peer is this process
            EXPECT_EQ(s.uid, ::getuid());
            EXPECT_EQ(s.gid, ::getgid());
        }
    }
    EXPECT_EQ(failures.count("accept"), 0u);

    rt.set_accept_verifier(nullptr); // removed: the old one is freed once no call uses it
    EXPECT_TRUE(test::eventually([&] { return alive.use_count() == 1; }));
}

TEST(Net, WithoutAnAssignedPathBindUnixIsNotAvailable) {
    TempDir tmp;
    astrid::Runtime rt(net_config());
    {
        astrid::Capsule probe = rt.load(test::capsule_dir("netprobe"));
        astrid::Result r = probe.call("unix-serve", "10");
        EXPECT_EQ(r.action(), "err");
        EXPECT_EQ(r.data(), "address-not-available");
    }
    // Assigned, then removed again: capsules loaded afterwards have no path.
    rt.assign_unix_socket("netprobe", tmp.socket());
    rt.unassign_unix_socket("netprobe");
    astrid::Capsule probe = rt.load(test::capsule_dir("netprobe"));
    astrid::Result r = probe.call("unix-serve", "10");
    EXPECT_EQ(r.action(), "err");
    EXPECT_EQ(r.data(), "address-not-available");
}

TEST(Net, AssignUnixSocketRejectsBadArguments) {
    astrid::Runtime rt(net_config());
    try {
        rt.assign_unix_socket("netprobe", "/tmp/" + std::string(200, 'x'));
        ADD_FAILURE() << "a 205-byte socket path was accepted";
    } catch (const astrid::Error &e) {
        EXPECT_EQ(e.code(), astrid::Code::InvalidArgument) << e.what();
    }
    try {
        rt.assign_unix_socket("", "/tmp/astrid-cpp.sock");
        ADD_FAILURE() << "an empty capsule name was accepted";
    } catch (const astrid::Error &e) {
        EXPECT_EQ(e.code(), astrid::Code::InvalidArgument) << e.what();
    }
    rt.close();
    try {
        rt.assign_unix_socket("netprobe", "/tmp/astrid-cpp.sock");
        ADD_FAILURE() << "a closed runtime accepted an assignment";
    } catch (const astrid::Error &e) {
        EXPECT_EQ(e.code(), astrid::Code::Closed);
    }
    EXPECT_THROW(rt.set_accept_verifier([](astrid::AcceptRequest &) { return Verdict::Allow; }), astrid::Error);
}

TEST(Net, ThrowingVerifierRefusesAndIsReported) {
    TempDir tmp;
    std::atomic<int> calls{0}; // the state the verifier uses outlives the runtime
    std::atomic<bool> bad_principal_refused{false};
    test::Failures failures;
    astrid::Runtime rt(net_config());
    rt.set_error_handler(failures.handler());
    rt.set_accept_verifier([&](astrid::AcceptRequest &req) -> Verdict {
        int n = calls++;
        if (n == 0) throw std::runtime_error("verifier exploded");
        if (n == 1) {
            req.set_principal("bad\n"); // a control character: throws, which refuses this peer
            return Verdict::Allow;
        }
        try {
            req.set_principal(std::string(129, 'p')); // too long
        } catch (const astrid::Error &e) {
            bad_principal_refused = e.code() == astrid::Code::InvalidArgument;
        }
        return Verdict::Allow; // allowed without a principal
    });
    rt.assign_unix_socket("netprobe", tmp.socket());
    astrid::Capsule probe = rt.load(test::capsule_dir("netprobe"));
    auto clients = std::async(std::launch::async, run_clients, tmp.socket(), 2);
    astrid::Result r = probe.call("unix-serve", "5000");
    ClientLog log = clients.get();
    EXPECT_EQ(r.action(), "ok");
    EXPECT_EQ(r.data(), "got:hello|principal=none|owner=none");
    EXPECT_EQ(log.refused, (std::vector<std::string>{"", ""}));
    EXPECT_EQ(log.reply, "hi");
    EXPECT_EQ(calls.load(), 3);
    EXPECT_TRUE(bad_principal_refused.load());
    EXPECT_EQ(failures.count("accept"), 2u);
    std::lock_guard<std::mutex> lock(failures.mu);
    ASSERT_EQ(failures.seen.size(), 2u);
    EXPECT_EQ(failures.seen[0].second, "verifier exploded");
    EXPECT_NE(failures.seen[1].second.find("invalid argument"), std::string::npos) << failures.seen[1].second;
}

TEST(Net, AllowAnyBindFlagLetsCapsulesBindWildcardAddresses) {
    {
        astrid::Runtime rt(net_config());
        astrid::Capsule probe = rt.load(test::capsule_dir("netprobe"));
        EXPECT_EQ(test::answer(probe.call("bind", "0.0.0.0\n0")), "err airlock-rejected");
        EXPECT_EQ(test::answer(probe.call("bind", "127.0.0.1\n0")), "ok ok");
    }
    astrid::RuntimeConfig cfg = net_config().allow_any_bind();
    EXPECT_EQ(cfg.native().flags, unsigned(ASTRID_RUNTIME_ALLOW_LOOPBACK | ASTRID_RUNTIME_ALLOW_ANY_BIND));
    astrid::Runtime rt(cfg);
    astrid::Capsule probe = rt.load(test::capsule_dir("netprobe"));
    EXPECT_EQ(test::answer(probe.call("bind", "0.0.0.0\n0")), "ok ok");
    EXPECT_EQ(net_config().allow_any_bind().allow_any_bind(false).native().flags,
              unsigned(ASTRID_RUNTIME_ALLOW_LOOPBACK));
}

TEST(Net, WasiSocketsFlagRoutesStdNet) {
    {
        astrid::Runtime rt(net_config());
        astrid::Capsule sock = rt.load(test::capsule_dir("wasisock"));
        astrid::Result r = sock.call("bind", "127.0.0.1:0");
        EXPECT_EQ(r.action(), "err"); // without the flag every WASI socket operation is refused
    }
    astrid::RuntimeConfig cfg = net_config().wasi_sockets();
    EXPECT_EQ(cfg.native().flags, unsigned(ASTRID_RUNTIME_ALLOW_LOOPBACK | ASTRID_RUNTIME_WASI_SOCKETS));
    astrid::Runtime rt(cfg);
    astrid::Capsule sock = rt.load(test::capsule_dir("wasisock"));
    astrid::Result r = sock.call("bind", "127.0.0.1:0");
    EXPECT_EQ(r.action(), "ok");
    EXPECT_EQ(r.data().substr(0, 10), "127.0.0.1:") << r.data();
}
