// Helpers shared by the tests: capsule paths, a runtime configuration for
// tests, an in-memory Vfs, and small synchronisation utilities.
#pragma once

#include "astrid.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace test {

using namespace std::chrono_literals;

/// The built capsules: $ASTRID_CAPSULES, else the directory CMake was given.
inline std::string capsule_dir(const std::string &name) {
    const char *env = std::getenv("ASTRID_CAPSULES");
    std::string root = env && *env ? env : ASTRID_TEST_CAPSULES;
    return root + "/" + name;
}

inline std::string read_file(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    std::ostringstream out;
    out << in.rdbuf();
    return out.str();
}

/// Deadlines, not fuel, stop loops; short unload grace so tests stay quick.
inline astrid::RuntimeConfig config() {
    return astrid::RuntimeConfig().timeout(10s).unload_grace(2s).fuel(uint64_t(1) << 50);
}

/// fsprobe answers `ok <data>` or `err <case>`; this returns that text.
inline std::string answer(const astrid::Result &r) {
    return std::string(r.action()) + " " + std::string(r.data());
}

/// Polls `pred` until it holds or `timeout` passes.
template <class Pred> bool eventually(Pred pred, std::chrono::milliseconds timeout = 5000ms) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > until) return false;
        std::this_thread::sleep_for(1ms);
    }
    return true;
}

/// Collects the failures a runtime's error handler receives.
struct Failures {
    std::mutex mu;
    std::vector<std::pair<std::string, std::string>> seen; // (callback, message)

    astrid::ErrorHandler handler() {
        return [this](const astrid::CallbackFailure &f) {
            std::lock_guard<std::mutex> lock(mu);
            seen.emplace_back(std::string(f.callback), std::string(f.message));
        };
    }
    size_t count(const std::string &callback) {
        std::lock_guard<std::mutex> lock(mu);
        size_t n = 0;
        for (auto &s : seen) n += s.first == callback;
        return n;
    }
    std::string last_message(const std::string &callback) {
        std::lock_guard<std::mutex> lock(mu);
        for (auto it = seen.rbegin(); it != seen.rend(); ++it)
            if (it->first == callback) return it->second;
        return {};
    }
};

/// A thread-safe in-memory filesystem: directories and regular files.
/// Failures can be injected to test exception handling.
class MemFs : public astrid::Vfs {
  public:
    MemFs() { nodes_[""] = Node{true, {}}; }

    // ---- test controls ----
    void add_dir(const std::string &path) {
        std::lock_guard<std::mutex> lock(mu_);
        nodes_[path] = Node{true, {}};
    }
    void add_file(const std::string &path, const std::string &data) {
        std::lock_guard<std::mutex> lock(mu_);
        nodes_[path] = Node{false, data};
    }
    /// The file's contents, or "<missing>".
    std::string contents(const std::string &path) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = nodes_.find(path);
        return it == nodes_.end() || it->second.dir ? "<missing>" : it->second.data;
    }
    bool is_dir(const std::string &path) {
        std::lock_guard<std::mutex> lock(mu_);
        auto it = nodes_.find(path);
        return it != nodes_.end() && it->second.dir;
    }
    std::atomic<bool> throw_on_read{false};
    std::atomic<int> calls{0};
    std::atomic<int> open_handles{0};

    // ---- astrid::Vfs ----
    astrid::VfsStatus stat(std::string_view path, bool, astrid::FileStat &out) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        auto it = nodes_.find(std::string(path));
        if (it == nodes_.end()) return astrid::VfsStatus::NotFound;
        describe(it->second, out);
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus open(std::string_view path, astrid::OpenFlags flags, uint64_t &handle) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        std::string p(path);
        auto it = nodes_.find(p);
        if (it != nodes_.end() && it->second.dir) return astrid::VfsStatus::IsDirectory;
        if (it == nodes_.end()) {
            if (!flags.create()) return astrid::VfsStatus::NotFound;
            auto parent = nodes_.find(parent_of(p));
            if (parent == nodes_.end() || !parent->second.dir) return astrid::VfsStatus::NotFound;
            it = nodes_.emplace(p, Node{false, {}}).first;
        } else if (flags.create() && flags.exclusive()) {
            return astrid::VfsStatus::AlreadyExists;
        }
        if (flags.truncate()) it->second.data.clear();
        handle = next_handle_++;
        handles_[handle] = Handle{p, flags.append()};
        open_handles++;
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus read_at(uint64_t handle, uint64_t offset, uint8_t *buf, size_t len, size_t &read) override {
        calls++;
        if (throw_on_read) throw std::runtime_error("injected read failure");
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return astrid::VfsStatus::Closed;
        if (offset < n->data.size()) {
            read = std::min(len, n->data.size() - static_cast<size_t>(offset));
            std::memcpy(buf, n->data.data() + offset, read);
        }
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus write_at(uint64_t handle, uint64_t offset, const uint8_t *data, size_t len,
                               size_t &written) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return astrid::VfsStatus::Closed;
        if (handles_[handle].append) offset = n->data.size();
        if (offset + len > n->data.size()) n->data.resize(static_cast<size_t>(offset) + len, '\0');
        std::memcpy(&n->data[static_cast<size_t>(offset)], data, len);
        written = len;
        return astrid::VfsStatus::Ok;
    }

    void close(uint64_t handle) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        if (handles_.erase(handle)) open_handles--;
    }

    astrid::VfsStatus set_len(uint64_t handle, uint64_t len) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return astrid::VfsStatus::Closed;
        n->data.resize(static_cast<size_t>(len), '\0');
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus fstat(uint64_t handle, astrid::FileStat &out) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return astrid::VfsStatus::Closed;
        describe(*n, out);
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus read_dir(std::string_view path, astrid::DirSink &sink) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        std::string dir(path);
        auto it = nodes_.find(dir);
        if (it == nodes_.end()) return astrid::VfsStatus::NotFound;
        if (!it->second.dir) return astrid::VfsStatus::NotDirectory;
        for (auto &entry : nodes_) {
            const std::string &p = entry.first;
            if (p.empty() || parent_of(p) != dir) continue;
            std::string name = dir.empty() ? p : p.substr(dir.size() + 1);
            if (!sink.add(name, entry.second.dir ? astrid::FileKind::Directory : astrid::FileKind::Regular)) break;
        }
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus mkdir(std::string_view path) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        std::string p(path);
        if (nodes_.count(p)) return astrid::VfsStatus::AlreadyExists;
        auto parent = nodes_.find(parent_of(p));
        if (parent == nodes_.end() || !parent->second.dir) return astrid::VfsStatus::NotFound;
        nodes_[p] = Node{true, {}};
        return astrid::VfsStatus::Ok;
    }

    astrid::VfsStatus remove_file(std::string_view path) override {
        calls++;
        std::lock_guard<std::mutex> lock(mu_);
        auto it = nodes_.find(std::string(path));
        if (it == nodes_.end()) return astrid::VfsStatus::NotFound;
        if (it->second.dir) return astrid::VfsStatus::IsDirectory;
        nodes_.erase(it);
        return astrid::VfsStatus::Ok;
    }

  private:
    struct Node {
        bool dir;
        std::string data;
    };
    struct Handle {
        std::string path;
        bool append;
    };

    static std::string parent_of(const std::string &p) {
        size_t cut = p.rfind('/');
        return cut == std::string::npos ? std::string() : p.substr(0, cut);
    }
    static void describe(const Node &n, astrid::FileStat &out) {
        out.kind = n.dir ? astrid::FileKind::Directory : astrid::FileKind::Regular;
        out.size = n.dir ? 0 : n.data.size();
        out.mode = n.dir ? 0755 : 0644;
        out.modified = astrid::Timestamp{1700000000, 5};
    }
    Node *by_handle(uint64_t h) {
        auto it = handles_.find(h);
        if (it == handles_.end()) return nullptr;
        auto node = nodes_.find(it->second.path);
        return node == nodes_.end() ? nullptr : &node->second;
    }

    std::mutex mu_;
    std::map<std::string, Node> nodes_;
    std::map<uint64_t, Handle> handles_;
    uint64_t next_handle_ = 1;
};

} // namespace test
