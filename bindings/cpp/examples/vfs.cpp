// An embedder that supplies the filesystem a capsule sees and decides what
// it may change: the workspace (`cwd`) mount is served from this program's
// own in-memory files through an astrid::Vfs, and the gate logs every
// request and refuses writes outside `cwd://ws/public`. Mirrors examples/c/vfs.c.
//
//   usage: vfs [CAPSULE_DIR]   (default: build/capsules/fsprobe)
#include "astrid.hpp"

#include <algorithm>
#include <cstring>
#include <iostream>
#include <map>
#include <mutex>
#include <string>

namespace {

// Callbacks print from library threads while main prints too: each line
// goes out in one write so lines never interleave.
void say(const std::string &line) {
    std::cout << line << std::flush;
}

using astrid::VfsStatus;

// ---- a tiny in-memory filesystem: a map of paths to files and directories ----

class MemFs : public astrid::Vfs {
  public:
    MemFs() {
        nodes_["ws"] = Node{true, {}};
        nodes_["ws/public"] = Node{true, {}};
    }
    ~MemFs() override { std::cout << "memfs finalized" << std::endl; }

    // Only the operations overridden here are offered to astrid; the others
    // (rename, read_link, ...) are "not supported".
    VfsStatus stat(std::string_view path, bool /*follow: no symlinks here*/, astrid::FileStat &out) override {
        std::lock_guard<std::mutex> lock(mu_); // callbacks may run concurrently
        if (path.empty()) {
            out.kind = astrid::FileKind::Directory; // the root
            return VfsStatus::Ok;
        }
        auto it = nodes_.find(std::string(path));
        if (it == nodes_.end()) return VfsStatus::NotFound;
        describe(it->second, out);
        return VfsStatus::Ok;
    }

    VfsStatus open(std::string_view path, astrid::OpenFlags flags, uint64_t &handle) override {
        std::lock_guard<std::mutex> lock(mu_);
        std::string p(path);
        auto it = nodes_.find(p);
        if (p.empty() || (it != nodes_.end() && it->second.dir)) return VfsStatus::IsDirectory;
        if (it == nodes_.end()) {
            if (!flags.create() || !parent_ok(p)) return VfsStatus::NotFound;
            it = nodes_.emplace(p, Node{false, {}}).first;
        }
        if (flags.truncate()) it->second.data.clear();
        handle = next_handle_++;
        handles_[handle] = p;
        return VfsStatus::Ok;
    }

    VfsStatus read_at(uint64_t handle, uint64_t offset, uint8_t *buf, size_t len, size_t &read) override {
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return VfsStatus::Closed;
        if (offset < n->data.size()) {
            read = std::min(len, n->data.size() - static_cast<size_t>(offset));
            std::memcpy(buf, n->data.data() + offset, read);
        }
        return VfsStatus::Ok;
    }

    VfsStatus write_at(uint64_t handle, uint64_t offset, const uint8_t *data, size_t len,
                       size_t &written) override {
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return VfsStatus::Closed;
        if (offset + len > n->data.size()) n->data.resize(static_cast<size_t>(offset) + len, '\0');
        std::memcpy(&n->data[static_cast<size_t>(offset)], data, len);
        written = len;
        return VfsStatus::Ok;
    }

    void close(uint64_t handle) override {
        std::lock_guard<std::mutex> lock(mu_);
        handles_.erase(handle);
    }

    VfsStatus fstat(uint64_t handle, astrid::FileStat &out) override {
        std::lock_guard<std::mutex> lock(mu_);
        Node *n = by_handle(handle);
        if (!n) return VfsStatus::Closed;
        describe(*n, out);
        return VfsStatus::Ok;
    }

    VfsStatus read_dir(std::string_view path, astrid::DirSink &sink) override {
        std::lock_guard<std::mutex> lock(mu_);
        std::string dir(path);
        auto it = nodes_.find(dir);
        if (!dir.empty() && it == nodes_.end()) return VfsStatus::NotFound;
        if (!dir.empty() && !it->second.dir) return VfsStatus::NotDirectory;
        for (const auto &[p, node] : nodes_) {
            if (parent_of(p) != dir) continue; // only one level deep
            std::string name = dir.empty() ? p : p.substr(dir.size() + 1);
            if (!sink.add(name, node.dir ? astrid::FileKind::Directory : astrid::FileKind::Regular)) break;
        }
        return VfsStatus::Ok;
    }

    VfsStatus mkdir(std::string_view path) override {
        std::lock_guard<std::mutex> lock(mu_);
        std::string p(path);
        if (nodes_.count(p)) return VfsStatus::AlreadyExists;
        if (!parent_ok(p)) return VfsStatus::NotFound;
        nodes_[p] = Node{true, {}};
        return VfsStatus::Ok;
    }

  private:
    struct Node {
        bool dir;
        std::string data;
    };

    static std::string parent_of(const std::string &p) {
        size_t cut = p.rfind('/');
        return cut == std::string::npos ? std::string() : p.substr(0, cut);
    }
    /// The parent of `p` must exist and be a directory.
    bool parent_ok(const std::string &p) const {
        std::string parent = parent_of(p);
        if (parent.empty()) return true; // a child of the root
        auto it = nodes_.find(parent);
        return it != nodes_.end() && it->second.dir;
    }
    static void describe(const Node &n, astrid::FileStat &out) {
        out.kind = n.dir ? astrid::FileKind::Directory : astrid::FileKind::Regular;
        out.size = n.data.size();
    }
    Node *by_handle(uint64_t handle) {
        auto h = handles_.find(handle);
        if (h == handles_.end()) return nullptr;
        auto n = nodes_.find(h->second);
        return n == nodes_.end() ? nullptr : &n->second;
    }

    std::mutex mu_;
    std::map<std::string, Node> nodes_;    // mount-relative paths, as astrid hands them over
    std::map<uint64_t, std::string> handles_;
    uint64_t next_handle_ = 1;
};

// ---- the gate: log everything, refuse writes outside cwd://ws/public ----

astrid::Verdict gate(astrid::GateRequest &req) {
    constexpr std::string_view allowed = "cwd://ws/public";
    std::string_view path = req.path();
    bool inside = path.substr(0, allowed.size()) == allowed && (path.size() == allowed.size() || path[allowed.size()] == '/');
    bool write = req.kind() == astrid::GateKind::FileWrite;
    bool allow = !write || inside;
    say("  gate: " + std::string(req.capsule()) + " asks to " + (write ? "write" : "read") + " " +
        std::string(path) + " -> " + (allow ? "allow" : "deny") + "\n");
    if (!allow) req.set_reason("writes only under ws/public");
    return allow ? astrid::Verdict::Allow : astrid::Verdict::Deny;
}

void on_audit(const astrid::AuditEvent &e) {
    if (e.outcome != astrid::AuditOutcome::Denied) return;
    say("  audit: " + std::string(e.call) + " " + std::string(e.target) + " denied (" + std::string(e.reason) +
        ")\n");
}

void call(const astrid::Capsule &capsule, const char *action, const std::string &args) {
    astrid::Result r = capsule.call(action, args);
    say(std::string(action) + "(" + args + ") -> " + std::string(r.action()) + " " + std::string(r.data()) + "\n");
}

} // namespace

int main(int argc, char **argv) {
    const std::string dir = argc > 1 ? argv[1] : "build/capsules/fsprobe";
    try {
        astrid::Runtime rt;
        // The runtime shares ownership of the provider; its destructor runs
        // when the runtime and the last capsule using it are gone.
        rt.mount_vfs("cwd", std::make_shared<MemFs>());
        rt.set_gate(gate);
        rt.set_audit_callback(on_audit);

        astrid::Capsule capsule = rt.load(dir);
        call(capsule, "write-file", "ws/public/hello.txt\nhello from the capsule");
        call(capsule, "read-file", "ws/public/hello.txt");
        call(capsule, "write-file", "ws/secret.txt\nnot allowed");
        call(capsule, "readdir", "ws");
        capsule.close();
        rt.close(); // flushes the audit queue and frees the provider
    } catch (const astrid::Error &e) {
        std::cerr << "failed (" << e.status() << "): " << e.what() << "\n";
        return 1;
    }
    return 0;
}
