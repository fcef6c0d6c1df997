// A KV backend written in C++ serving the kvprobe capsule: namespaces,
// paging, clear, CAS under 8 threads, exceptions.
#include "support.hpp"

#include <gtest/gtest.h>

namespace {

/// A std::map per namespace, one mutex: linearizable, bytewise key order.
class MapKv : public astrid::KvBackend {
  public:
    std::atomic<bool> fail{false};
    std::atomic<int> calls{0};

    /// The namespaces seen so far, as "scope|capsule_id".
    std::set<std::string> namespaces() {
        std::lock_guard<std::mutex> lock(mu_);
        std::set<std::string> out;
        for (auto &ns : data_) out.insert(ns.first);
        return out;
    }
    std::string value(const std::string &ns, const std::string &key) {
        std::lock_guard<std::mutex> lock(mu_);
        auto n = data_.find(ns);
        if (n == data_.end()) return "<none>";
        auto v = n->second.find(key);
        return v == n->second.end() ? "<none>" : v->second;
    }

    astrid::KvStatus get(const astrid::KvNamespace &ns, std::string_view key, astrid::KvValueSink &out) override {
        enter();
        std::lock_guard<std::mutex> lock(mu_);
        auto &m = space(ns);
        auto it = m.find(std::string(key));
        if (it == m.end()) return astrid::KvStatus::NotFound;
        out.put(it->second);
        return astrid::KvStatus::Ok;
    }
    astrid::KvStatus set(const astrid::KvNamespace &ns, std::string_view key, std::string_view value) override {
        enter();
        std::lock_guard<std::mutex> lock(mu_);
        space(ns)[std::string(key)] = std::string(value);
        return astrid::KvStatus::Ok;
    }
    astrid::KvStatus remove(const astrid::KvNamespace &ns, std::string_view key) override {
        enter();
        std::lock_guard<std::mutex> lock(mu_);
        space(ns).erase(std::string(key));
        return astrid::KvStatus::Ok;
    }
    astrid::KvStatus list(const astrid::KvNamespace &ns, std::string_view prefix, std::string_view after,
                          uint32_t limit, astrid::KvKeySink &out) override {
        enter();
        std::lock_guard<std::mutex> lock(mu_);
        auto &m = space(ns);
        std::string first(prefix);
        auto it = !after.empty() && std::string(after) >= first ? m.upper_bound(std::string(after)) : m.lower_bound(first);
        for (uint32_t n = 0; it != m.end() && n < limit && it->first.compare(0, prefix.size(), prefix) == 0; ++it, ++n)
            if (!out.add(it->first)) break;
        return astrid::KvStatus::Ok;
    }
    astrid::KvStatus clear_prefix(const astrid::KvNamespace &ns, std::string_view prefix,
                                  uint64_t &removed) override {
        enter();
        std::lock_guard<std::mutex> lock(mu_);
        auto &m = space(ns);
        for (auto it = m.lower_bound(std::string(prefix));
             it != m.end() && it->first.compare(0, prefix.size(), prefix) == 0;) {
            it = m.erase(it);
            removed++;
        }
        return astrid::KvStatus::Ok;
    }
    astrid::KvStatus cas(const astrid::KvNamespace &ns, std::string_view key, std::optional<std::string_view> expected,
                         std::string_view value) override {
        enter();
        std::lock_guard<std::mutex> lock(mu_);
        auto &m = space(ns);
        auto it = m.find(std::string(key));
        bool matches = expected ? (it != m.end() && it->second == *expected) : it == m.end();
        if (!matches) return astrid::KvStatus::CasMismatch;
        m[std::string(key)] = std::string(value);
        return astrid::KvStatus::Ok;
    }

  private:
    void enter() {
        calls++;
        if (fail) throw std::runtime_error("disk on fire");
    }
    std::map<std::string, std::string> &space(const astrid::KvNamespace &ns) {
        return data_[std::string(ns.scope) + "|" + std::string(ns.capsule_id)];
    }

    std::mutex mu_;
    std::map<std::string, std::map<std::string, std::string>> data_;
};

std::string kv(const astrid::Capsule &c, const char *action, const std::string &args) {
    return test::answer(c.call(action, args));
}

} // namespace

TEST(Kv, BackendServesTheKvprobeCapsule) {
    auto backend = std::make_shared<MapKv>();
    {
        astrid::Runtime rt(test::config());
        rt.set_kv(backend);
        astrid::Capsule probe = rt.load(test::capsule_dir("kvprobe"), astrid::LoadOptions().principal("alice"));
        const std::string ns = "alice|" + std::string(probe.id());
        EXPECT_EQ(kv(probe, "get", "color"), "ok none");
        EXPECT_EQ(kv(probe, "set", "color\nblue"), "ok ok");
        EXPECT_EQ(backend->value(ns, "color"), "blue");
        EXPECT_EQ(kv(probe, "get", "color"), "ok some:blue");
        EXPECT_EQ(kv(probe, "fill", "k\n5"), "ok ok");
        EXPECT_EQ(kv(probe, "list", "k"), "ok k0000,k0001,k0002,k0003,k0004");
        EXPECT_EQ(kv(probe, "page", "k\n-\n2"), "ok k0000,k0001|k0001");
        EXPECT_EQ(kv(probe, "page", "k\nk0001\n2"), "ok k0002,k0003|k0003");
        EXPECT_EQ(kv(probe, "clear", "k"), "ok 5");
        EXPECT_EQ(kv(probe, "list", ""), "ok color");
        EXPECT_EQ(kv(probe, "cas", "color\nred\ngreen"), "err cas-mismatch");
        EXPECT_EQ(kv(probe, "cas", "color\nblue\ngreen"), "ok ok");
        EXPECT_EQ(kv(probe, "cas", "fresh\n-\nnew"), "ok ok");
        EXPECT_EQ(kv(probe, "cas", "fresh\n-\nagain"), "err cas-mismatch");
        EXPECT_EQ(kv(probe, "delete", "color"), "ok ok");
        EXPECT_EQ(kv(probe, "get", "color"), "ok none");

        // Another principal's calls live in another namespace.
        astrid::Result bob = probe.call("get", "fresh", astrid::CallOptions().principal("bob"));
        EXPECT_EQ(test::answer(bob), "ok none");
        EXPECT_EQ(test::answer(probe.call("set", "fresh\nbob's", astrid::CallOptions().principal("bob"))), "ok ok");
        EXPECT_EQ(backend->value(ns, "fresh"), "new");
        EXPECT_EQ(backend->value("bob|" + std::string(probe.id()), "fresh"), "bob's");
        EXPECT_EQ(backend->namespaces().size(), 2u);
    }
    EXPECT_EQ(backend.use_count(), 1) << "the runtime released the backend";
}

TEST(Kv, CasIsAtomicUnderEightThreads) {
    auto backend = std::make_shared<MapKv>();
    astrid::Runtime rt(test::config());
    rt.set_kv(backend);
    astrid::Capsule probe = rt.load(test::capsule_dir("kvprobe"), astrid::LoadOptions().principal("alice"));
    std::vector<std::thread> threads;
    std::atomic<int> ok{0};
    for (int t = 0; t < 8; t++)
        threads.emplace_back([&] { ok += probe.call("increment", "counter\n25").action() == "ok"; });
    for (auto &th : threads) th.join();
    EXPECT_EQ(ok.load(), 8);
    EXPECT_EQ(kv(probe, "get", "counter"), "ok some:200");
}

TEST(Kv, ThrowingBackendIsAStorageFailure) {
    auto backend = std::make_shared<MapKv>();
    test::Failures failures; // outlives the runtime: its close may still report (audit flush)
    astrid::Runtime rt(test::config());
    rt.set_error_handler(failures.handler());
    rt.set_kv(backend);
    astrid::Capsule probe = rt.load(test::capsule_dir("kvprobe"));
    backend->fail = true;
    EXPECT_EQ(kv(probe, "set", "a\n1"), "err unknown(storage failed)");
    EXPECT_EQ(failures.count("kv.set"), 1u);
    EXPECT_EQ(failures.last_message("kv.set"), "disk on fire");
    backend->fail = false;
    EXPECT_EQ(kv(probe, "set", "a\n1"), "ok ok");

    // Back to the built-in store: empty, and our backend is no longer asked.
    rt.reset_kv();
    int before = backend->calls.load();
    EXPECT_EQ(kv(probe, "get", "a"), "ok none");
    EXPECT_EQ(backend->calls.load(), before);
    EXPECT_EQ(backend.use_count(), 1);
    EXPECT_THROW(rt.set_kv(nullptr), astrid::Error);
}

TEST(Kv, BuiltInStoreHonoursTheConfiguredQuota) {
    astrid::Runtime rt(test::config().kv_quota_bytes(300));
    astrid::Capsule probe = rt.load(test::capsule_dir("kvprobe"));
    EXPECT_EQ(kv(probe, "set-size", "small\n40"), "ok ok");
    EXPECT_EQ(kv(probe, "set-size", "big\n80"), "err quota") << "(45 + 96) + (83 + 96) bytes exceed 300: each entry also costs 96";
    EXPECT_EQ(kv(probe, "get", "big"), "ok none");

    astrid::Runtime roomy(test::config());
    astrid::Capsule other = roomy.load(test::capsule_dir("kvprobe"));
    EXPECT_EQ(kv(other, "set-size", "big\n80"), "ok ok") << "the default quota is 64 MiB";
}
