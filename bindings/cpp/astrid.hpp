/*
 * astrid.hpp — the C++17 binding of astrid (header-only, over astrid.h).
 *
 *   astrid::Runtime rt;                                        // defaults
 *   astrid::Capsule hello = rt.load("build/capsules/hello");
 *   astrid::Result r = hello.call("greet", R"({"name":"C++"})"); // r.action(), r.data()
 *
 * Ownership
 * - Runtime, Capsule, Subscription, Result and GateTicket own one library
 *   handle each (a std::unique_ptr with the matching *_free / unload as its
 *   deleter). They are move-only. A moved-from or closed object is empty:
 *   close() on it does nothing, and every other use throws astrid::Error
 *   with Code::Closed. Destruction releases the handle.
 * - A Capsule or Subscription may outlive its Runtime: once the runtime is
 *   closed, calls on the capsule throw Code::Closed, and destroying it is safe.
 * - Callbacks (std::function) and providers (Vfs, KvBackend) are moved into a
 *   heap block the library owns; its finalizer deletes the block once no
 *   call can reach it any more (callback replaced or removed, VFS unmounted
 *   and its last capsule gone, KV backend replaced, subscription closed, or
 *   runtime closed). Anything a callback captures lives exactly that long.
 *
 * Threading
 * - Runtime, Capsule and Subscription: every member function may be called
 *   from any thread, concurrently, EXCEPT close(), move-assignment and
 *   destruction, which must not race with any other use of the same object.
 * - Result, GateTicket and the option builders (RuntimeConfig, LoadOptions,
 *   CallOptions) are values: const members may be used concurrently (one
 *   CallOptions can serve many concurrent calls); modify, resolve or move
 *   one object from one thread at a time.
 * - Callbacks run on library threads (worker threads, the audit thread, a
 *   subscription's thread, or the thread inside Capsule::call with
 *   RuntimeConfig::inline_callbacks), possibly concurrently: make them
 *   thread-safe. Inside a callback, blocking calls (load, call, close of a
 *   capsule or runtime) throw Code::Reentrant; Capsule::cancel() and
 *   Runtime::publish() are allowed.
 * - No exception ever leaves a trampoline: an exception thrown by a callback
 *   is caught, reported to the runtime's error handler (default: one line on
 *   stderr) and turned into a denial (gate), a refused connection (accept
 *   verifier), VfsStatus::Io (VFS),
 *   KvStatus::Io (KV), a failed lookup (secret), or dropped (log, audit,
 *   subscription).
 */
#ifndef ASTRID_HPP
#define ASTRID_HPP

#include "astrid.h"

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace astrid {

/// The ABI version this header was written against.
inline constexpr uint32_t header_abi_version = ASTRID_ABI_VERSION;

/// The loaded library's ABI version (`astrid_abi_version()`).
inline uint32_t library_abi_version() noexcept { return astrid_abi_version(); }

/// The loaded library's version text, e.g. "0.1.0".
inline std::string_view library_version() noexcept { return astrid_version(); }

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The library's status codes (`ASTRID_E_*`). Codes are stable; a code this
/// header does not know still round-trips through `Error::status()`.
enum class Code : int32_t {
    Ok = ASTRID_OK,
    InvalidArgument = ASTRID_E_INVALID_ARGUMENT,
    Utf8 = ASTRID_E_UTF8,
    Manifest = ASTRID_E_MANIFEST,
    Compile = ASTRID_E_COMPILE,
    Link = ASTRID_E_LINK,
    NotFound = ASTRID_E_NOT_FOUND,
    Denied = ASTRID_E_DENIED,
    Timeout = ASTRID_E_TIMEOUT,
    Cancelled = ASTRID_E_CANCELLED,
    OutOfFuel = ASTRID_E_OUT_OF_FUEL,
    ResourceLimit = ASTRID_E_RESOURCE_LIMIT,
    Trap = ASTRID_E_TRAP,
    Closed = ASTRID_E_CLOSED,
    Reentrant = ASTRID_E_REENTRANT,
    Io = ASTRID_E_IO,
    Panic = ASTRID_E_PANIC,
    Internal = ASTRID_E_INTERNAL,
};

/// The short lowercase name the library prefixes its messages with.
inline const char *code_name(Code code) noexcept {
    switch (code) {
    case Code::Ok: return "ok";
    case Code::InvalidArgument: return "invalid argument";
    case Code::Utf8: return "invalid utf-8";
    case Code::Manifest: return "manifest error";
    case Code::Compile: return "compile error";
    case Code::Link: return "link error";
    case Code::NotFound: return "not found";
    case Code::Denied: return "denied";
    case Code::Timeout: return "timeout";
    case Code::Cancelled: return "cancelled";
    case Code::OutOfFuel: return "out of fuel";
    case Code::ResourceLimit: return "resource limit";
    case Code::Trap: return "guest trap";
    case Code::Closed: return "closed";
    case Code::Reentrant: return "reentrant call";
    case Code::Io: return "i/o error";
    case Code::Panic: return "panic";
    case Code::Internal: return "internal error";
    }
    return "unknown error";
}

/// Every failure of the library, and every use of a closed / moved-from
/// object, is thrown as an astrid::Error: `code()` is the `ASTRID_E_*` code,
/// `what()` the library's message (`"<kind>: <what>: <cause>..."`).
class Error : public std::runtime_error {
  public:
    Error(Code code, const std::string &message, uint64_t call_id = 0)
        : std::runtime_error(message), code_(code), call_id_(call_id) {}

    Code code() const noexcept { return code_; }
    /// The raw status (equal to `static_cast<int32_t>(code())`).
    astrid_status_t status() const noexcept { return static_cast<astrid_status_t>(code_); }
    /// The failed guest call's id (the id its log records and audit events
    /// carry); 0 for errors of no call and calls that never started.
    uint64_t call_id() const noexcept { return call_id_; }

  private:
    Code code_;
    uint64_t call_id_;
};

/// The library does not implement the ABI this header was written for:
/// calling into it could corrupt memory, so nothing is called.
/// Its code is Code::Internal.
class AbiError : public Error {
  public:
    AbiError(uint32_t library, uint32_t header)
        : Error(Code::Internal, "internal error: astrid library implements ABI " + std::to_string(library) +
                                    ", but astrid.hpp was compiled against ABI " + std::to_string(header)),
          library_(library), header_(header) {}

    uint32_t library_version() const noexcept { return library_; }
    uint32_t header_version() const noexcept { return header_; }

  private:
    uint32_t library_;
    uint32_t header_;
};

/// Throws AbiError unless `library_version` equals the header's ABI version.
/// The Runtime constructor calls it with `astrid_abi_version()` before
/// touching anything else in the library.
/// The id of the guest call the calling thread serves: inside any callback
/// (gate, VFS, KV, secret, accept verifier, log), the call whose host call it
/// answers; 0 elsewhere. VFS and KV methods have no request object: this is
/// how they learn the call.
inline uint64_t callback_call_id() noexcept { return astrid_callback_call_id(); }

inline void check_abi(uint32_t library_version) {
    if (library_version != header_abi_version) throw AbiError(library_version, header_abi_version);
}

namespace detail {

/// Throws the error a failed call produced; takes ownership of `err`.
[[noreturn]] inline void throw_error(astrid_status_t status, astrid_error_t *err, const char *what) {
    Code code = static_cast<Code>(err ? astrid_error_code(err) : status);
    uint64_t call_id = astrid_error_call_id(err);
    std::string message;
    if (err) {
        try {
            message = astrid_error_message(err);
        } catch (...) {
            astrid_error_free(err);
            throw;
        }
        astrid_error_free(err);
    } else {
        message = std::string(code_name(code)) + ": " + what + " failed";
    }
    throw Error(code, message, call_id);
}

/// Checks a status; `err` (may be NULL) is owned and freed. Call it in a
/// statement of its own after the call that fills `err` (as an argument next
/// to that call, `err` could be read before the call writes it).
inline void check(astrid_status_t status, astrid_error_t *err, const char *what) {
    if (status != ASTRID_OK) throw_error(status, err, what);
}

[[noreturn]] inline void throw_closed(const char *type) {
    throw Error(Code::Closed, std::string("closed: ") + type + " is closed (or was moved from)");
}

/// A borrowed (ptr, len) string; (NULL, 0) is the empty view.
inline std::string_view view(const char *ptr, size_t len) noexcept {
    return ptr ? std::string_view(ptr, len) : std::string_view();
}

/// An optional owned string for the option builders ("not set" is distinct
/// from "set to empty"; the C structs then get NULL).
struct OptString {
    bool set = false;
    std::string value;

    OptString &operator=(std::string v) {
        value = std::move(v);
        set = true;
        return *this;
    }
};

struct ResultDeleter {
    void operator()(astrid_result_t *r) const noexcept { astrid_result_free(r); }
};
struct CapsuleDeleter {
    void operator()(astrid_capsule_t *c) const noexcept { astrid_capsule_unload(c, nullptr); }
};
struct RuntimeDeleter {
    void operator()(astrid_runtime_t *rt) const noexcept { astrid_runtime_free(rt); }
};
struct TicketDeleter {
    void operator()(astrid_gate_ticket_t *t) const noexcept { astrid_gate_ticket_free(t); }
};
struct SubscriptionDeleter {
    void operator()(astrid_subscription_t *s) const noexcept { astrid_subscription_free(s); }
};

} // namespace detail

// ---------------------------------------------------------------------------
// Options
// ---------------------------------------------------------------------------

/// Runtime configuration builder (astrid_runtime_config_t). Unset values
/// (zero) mean the library's defaults. Not thread-safe while being modified.
class RuntimeConfig {
  public:
    RuntimeConfig() noexcept { c_.size = sizeof c_; }
    RuntimeConfig(const RuntimeConfig &o) : c_(o.c_), cache_dir_(o.cache_dir_) { sync(); }
    RuntimeConfig(RuntimeConfig &&o) noexcept : c_(o.c_), cache_dir_(std::move(o.cache_dir_)) { sync(); }
    RuntimeConfig &operator=(RuntimeConfig o) noexcept {
        c_ = o.c_;
        cache_dir_ = std::move(o.cache_dir_);
        sync();
        return *this;
    }

    /// Async worker threads; 0 = one per core.
    RuntimeConfig &worker_threads(uint32_t n) noexcept { return set(c_.worker_threads, n); }
    /// Pooled instances per capsule (concurrent calls); 0 = clamp(2 × cores, 8, 64).
    RuntimeConfig &pool_size(uint32_t n) noexcept { return set(c_.pool_size, n); }
    /// Linear-memory ceiling per instance (default 64 MiB).
    RuntimeConfig &memory_limit_bytes(uint64_t bytes) noexcept { return set(c_.memory_limit_bytes, bytes); }
    /// Wall-clock deadline per call (default 30 s).
    RuntimeConfig &timeout(std::chrono::milliseconds t) noexcept { return set(c_.timeout_ms, ms(t)); }
    /// Instruction budget per call (default 500 000 000).
    RuntimeConfig &fuel(uint64_t fuel) noexcept { return set(c_.fuel, fuel); }
    /// Directory for compiled code (default: cache in memory only).
    RuntimeConfig &cache_dir(std::string dir) {
        cache_dir_ = std::move(dir);
        sync();
        return *this;
    }
    /// Raw `ASTRID_RUNTIME_*` flags (replaces all flags).
    RuntimeConfig &flags(uint32_t flags) noexcept { return set(c_.flags, flags); }
    /// Lets capsules reach loopback and private addresses.
    RuntimeConfig &allow_loopback(bool on = true) noexcept { return flag(ASTRID_RUNTIME_ALLOW_LOOPBACK, on); }
    /// `astrid:sys` capability lookups of other capsules answer `registry-unavailable`.
    RuntimeConfig &disable_capability_registry(bool on = true) noexcept {
        return flag(ASTRID_RUNTIME_DISABLE_CAPABILITY_REGISTRY, on);
    }
    /// Runs gate and VFS callbacks on the thread executing the guest (see astrid.h).
    RuntimeConfig &inline_callbacks(bool on = true) noexcept { return flag(ASTRID_RUNTIME_INLINE_CALLBACKS, on); }
    /// Lets `bind-tcp` and `udp-bind` use addresses other than loopback (the
    /// manifest's `net_bind` and the gate still decide which).
    RuntimeConfig &allow_any_bind(bool on = true) noexcept { return flag(ASTRID_RUNTIME_ALLOW_ANY_BIND, on); }
    /// Links `wasi:sockets` for real, behind the same manifest entries, gate
    /// kinds, airlock and quotas as `astrid:net` (without it every WASI socket
    /// operation is `access-denied`).
    RuntimeConfig &wasi_sockets(bool on = true) noexcept { return flag(ASTRID_RUNTIME_WASI_SOCKETS, on); }
    /// How long unload and shutdown wait for calls in flight (default 5 s).
    RuntimeConfig &unload_grace(std::chrono::milliseconds t) noexcept { return set(c_.unload_grace_ms, ms(t)); }
    /// How long the gate may take, deferred verdicts included (default 5 s).
    RuntimeConfig &gate_timeout(std::chrono::milliseconds t) noexcept { return set(c_.gate_timeout_ms, ms(t)); }
    /// How long one VFS or KV backend callback may take (default 10 s).
    RuntimeConfig &vfs_timeout(std::chrono::milliseconds t) noexcept { return set(c_.vfs_timeout_ms, ms(t)); }
    /// Messages a subscription may queue (default 1024).
    RuntimeConfig &ipc_queue_messages(uint32_t n) noexcept { return set(c_.ipc_queue_messages, n); }
    /// Bytes a subscription may queue (default 4 MiB).
    RuntimeConfig &ipc_queue_bytes(uint64_t n) noexcept { return set(c_.ipc_queue_bytes, n); }
    /// Byte budget of each namespace of the built-in KV store (default 64 MiB).
    RuntimeConfig &kv_quota_bytes(uint64_t n) noexcept { return set(c_.kv_quota_bytes, n); }
    /// Payload bytes per second each (capsule, principal) may publish on the
    /// bus; beyond it the guest's publish fails with `rate-limited` (default 10 MiB/s).
    RuntimeConfig &ipc_publish_bytes_per_sec(uint64_t n) noexcept { return set(c_.ipc_publish_bytes_per_sec, n); }
    /// Bytes each built-in in-memory mount (`tmp://`, `cwd://` without a
    /// workspace root) may commit, 128 bytes and the name per entry included
    /// (default 64 MiB); growth past it is `quota`.
    RuntimeConfig &memfs_quota_bytes(uint64_t n) noexcept { return set(c_.memfs_quota_bytes, n); }
    /// Directory entries each built-in in-memory mount may hold (default 65 536).
    RuntimeConfig &memfs_max_entries(uint64_t n) noexcept { return set(c_.memfs_max_entries, n); }
    /// Live instances over all capsules of the runtime; sizes its address-space
    /// reservation (default max(128, 4 x pool size), at most 1000).
    RuntimeConfig &max_instances(uint32_t n) noexcept { return set(c_.max_instances, n); }

    /// The C struct; its cache_dir points into this object (valid while it lives unmodified).
    const astrid_runtime_config_t &native() const noexcept { return c_; }

  private:
    template <class T, class V> RuntimeConfig &set(T &field, V value) noexcept {
        field = static_cast<T>(value);
        return *this;
    }
    RuntimeConfig &flag(uint32_t bit, bool on) noexcept {
        c_.flags = on ? (c_.flags | bit) : (c_.flags & ~bit);
        return *this;
    }
    static uint64_t ms(std::chrono::milliseconds t) noexcept {
        return t.count() > 0 ? static_cast<uint64_t>(t.count()) : 0;
    }
    void sync() noexcept {
        c_.cache_dir = cache_dir_.set ? cache_dir_.value.data() : nullptr;
        c_.cache_dir_len = cache_dir_.set ? cache_dir_.value.size() : 0;
    }

    astrid_runtime_config_t c_{};
    detail::OptString cache_dir_;
};

namespace detail {

/// `[env]` values as owned strings plus the C entry array pointing into them.
class ConfigEntries {
  public:
    ConfigEntries() = default;
    ConfigEntries(const ConfigEntries &o) : pairs_(o.pairs_) { rebuild(); }
    ConfigEntries(ConfigEntries &&o) noexcept : pairs_(std::move(o.pairs_)), entries_(std::move(o.entries_)) {
        repoint();
    }
    ConfigEntries &operator=(ConfigEntries o) noexcept {
        pairs_ = std::move(o.pairs_);
        entries_ = std::move(o.entries_);
        repoint();
        return *this;
    }

    /// Sets `key` (replacing an earlier value of the same key).
    void set(std::string key, std::string value) {
        for (auto &p : pairs_) {
            if (p.first == key) {
                p.second = std::move(value);
                repoint();
                return;
            }
        }
        entries_.reserve(pairs_.size() + 1); // so that the resize below cannot throw
        pairs_.emplace_back(std::move(key), std::move(value));
        rebuild();
    }
    const astrid_config_entry_t *data() const noexcept { return entries_.empty() ? nullptr : entries_.data(); }
    size_t size() const noexcept { return entries_.size(); }

  private:
    void rebuild() {
        entries_.resize(pairs_.size());
        repoint();
    }
    /// Points every entry at its strings again: moving a string may move its bytes.
    void repoint() noexcept {
        for (size_t i = 0; i < pairs_.size(); i++)
            entries_[i] = {pairs_[i].first.data(), pairs_[i].first.size(), pairs_[i].second.data(),
                           pairs_[i].second.size()};
    }

    std::vector<std::pair<std::string, std::string>> pairs_;
    std::vector<astrid_config_entry_t> entries_; // always as long as pairs_
};

inline void set_string(const OptString &s, const char *&ptr, size_t &len) noexcept {
    ptr = s.set ? s.value.data() : nullptr;
    len = s.set ? s.value.size() : 0;
}

} // namespace detail

/// Per-capsule load options (astrid_load_options_t). Unset = runtime default.
/// Not thread-safe while being modified; concurrent loads may share one.
class LoadOptions {
  public:
    LoadOptions() noexcept { c_.size = sizeof c_; }
    LoadOptions(const LoadOptions &o)
        : c_(o.c_), principal_(o.principal_), workspace_(o.workspace_), home_(o.home_), config_(o.config_) {
        sync();
    }
    LoadOptions(LoadOptions &&o) noexcept
        : c_(o.c_), principal_(std::move(o.principal_)), workspace_(std::move(o.workspace_)),
          home_(std::move(o.home_)), config_(std::move(o.config_)) {
        sync();
    }
    LoadOptions &operator=(LoadOptions o) noexcept {
        c_ = o.c_;
        principal_ = std::move(o.principal_);
        workspace_ = std::move(o.workspace_);
        home_ = std::move(o.home_);
        config_ = std::move(o.config_);
        sync();
        return *this;
    }

    /// The capsule's owner principal (1..=128 bytes, no control characters).
    LoadOptions &principal(std::string p) { return str(principal_, std::move(p)); }
    /// Host directory served as the workspace mount (`cwd://`).
    LoadOptions &workspace_root(std::string dir) { return str(workspace_, std::move(dir)); }
    /// Host directory served as the owner's `home://` mount.
    LoadOptions &home_root(std::string dir) { return str(home_, std::move(dir)); }
    LoadOptions &memory_limit_bytes(uint64_t bytes) noexcept {
        c_.memory_limit_bytes = bytes;
        return *this;
    }
    LoadOptions &timeout(std::chrono::milliseconds t) noexcept {
        c_.timeout_ms = t.count() > 0 ? static_cast<uint64_t>(t.count()) : 0;
        return *this;
    }
    LoadOptions &fuel(uint64_t fuel) noexcept {
        c_.fuel = fuel;
        return *this;
    }
    /// A value for one of the manifest's `[env]` keys.
    LoadOptions &config(std::string key, std::string value) {
        config_.set(std::move(key), std::move(value));
        sync();
        return *this;
    }
    /// Cumulative bytes the capsule may write through `astrid:fs`; 0 = unlimited.
    LoadOptions &fs_write_budget(uint64_t bytes) noexcept {
        c_.fs_write_budget = bytes;
        return *this;
    }
    /// Network flags for this capsule alone, on top of the runtime's:
    /// `ASTRID_RUNTIME_ALLOW_LOOPBACK`, `ASTRID_RUNTIME_ALLOW_ANY_BIND`,
    /// `ASTRID_RUNTIME_WASI_SOCKETS` (others make the load throw
    /// `Code::InvalidArgument`).
    LoadOptions &net_flags(astrid_runtime_flags_t flags) noexcept {
        c_.net_flags = flags;
        return *this;
    }
    /// Run-loop watchdog window: a `run` loop that goes three windows without
    /// a waiting host call (`recv`, `poll`, `sleep-ns`, blocking reads) is
    /// interrupted and marked failed. Zero (or less) = the default, 5 s.
    LoadOptions &watchdog(std::chrono::milliseconds window) noexcept {
        c_.watchdog_ms = window.count() > 0 ? static_cast<uint64_t>(window.count()) : 0;
        return *this;
    }
    /// Exempts the capsule's run loop from the watchdog (`ASTRID_WATCHDOG_OFF`).
    LoadOptions &disable_watchdog() noexcept {
        c_.watchdog_ms = ASTRID_WATCHDOG_OFF;
        return *this;
    }

    /// The C struct, pointing into this object (valid while it lives unmodified).
    const astrid_load_options_t &native() const noexcept { return c_; }

  private:
    LoadOptions &str(detail::OptString &field, std::string value) {
        field = std::move(value);
        sync();
        return *this;
    }
    void sync() noexcept {
        detail::set_string(principal_, c_.principal, c_.principal_len);
        detail::set_string(workspace_, c_.workspace_root, c_.workspace_root_len);
        detail::set_string(home_, c_.home_root, c_.home_root_len);
        c_.config = config_.data();
        c_.config_len = config_.size();
    }

    astrid_load_options_t c_{};
    detail::OptString principal_, workspace_, home_;
    detail::ConfigEntries config_;
};

/// Per-call options (astrid_call_options_t): the invoking principal and a
/// config overlay. Not thread-safe while being modified; any number of
/// concurrent calls may share one.
/// A token that ends the calls it governs when fired (pass it to
/// `CallOptions::cancel`). `fire()` may be called from any thread, any
/// number of times, and never waits for a call; a call started with a fired
/// token throws `Code::Cancelled` without running the guest. One token may
/// govern many calls on any capsules; other calls are untouched. Move-only;
/// the destructor frees it (calls it governs run on).
class Cancel {
  public:
    Cancel() {
        astrid_error_t *err = nullptr;
        detail::check(astrid_cancel_new(&h_, &err), err, "astrid_cancel_new");
    }
    ~Cancel() { astrid_cancel_free(h_); }
    Cancel(Cancel &&o) noexcept : h_(std::exchange(o.h_, nullptr)) {}
    Cancel &operator=(Cancel &&o) noexcept {
        if (this != &o) {
            astrid_cancel_free(h_);
            h_ = std::exchange(o.h_, nullptr);
        }
        return *this;
    }
    Cancel(const Cancel &) = delete;
    Cancel &operator=(const Cancel &) = delete;

    /// Fires the token (idempotent). Throws `Code::Closed` when moved from.
    void fire() const {
        if (!h_) detail::throw_closed("the cancel token");
        astrid_error_t *err = nullptr;
        detail::check(astrid_cancel_fire(h_, &err), err, "astrid_cancel_fire");
    }
    /// Whether the token has been fired (false when moved from).
    [[nodiscard]] bool fired() const noexcept { return h_ && astrid_cancel_is_fired(h_); }

    astrid_cancel_t *native() const noexcept { return h_; }

  private:
    astrid_cancel_t *h_ = nullptr;
};

class CallOptions {
  public:
    CallOptions() noexcept { c_.size = sizeof c_; }
    CallOptions(const CallOptions &o) : c_(o.c_), principal_(o.principal_), config_(o.config_) { sync(); }
    CallOptions(CallOptions &&o) noexcept
        : c_(o.c_), principal_(std::move(o.principal_)), config_(std::move(o.config_)) {
        sync();
    }
    CallOptions &operator=(CallOptions o) noexcept {
        c_ = o.c_;
        principal_ = std::move(o.principal_);
        config_ = std::move(o.config_);
        sync();
        return *this;
    }

    /// The invoking principal (default: the capsule's owner).
    CallOptions &principal(std::string p) {
        principal_ = std::move(p);
        sync();
        return *this;
    }
    /// A config value for this call only (takes precedence over load-time values).
    CallOptions &config(std::string key, std::string value) {
        config_.set(std::move(key), std::move(value));
        sync();
        return *this;
    }
    /// A deadline for this call; it can only shorten the capsule's timeout.
    /// Rounded up to whole milliseconds; zero or less throws
    /// `Code::InvalidArgument`.
    template <class Rep, class Period> CallOptions &timeout(std::chrono::duration<Rep, Period> t) {
        auto ms = std::chrono::ceil<std::chrono::milliseconds>(t).count();
        if (ms <= 0) throw Error(Code::InvalidArgument, "CallOptions::timeout must be positive");
        c_.timeout_ms = static_cast<uint64_t>(ms);
        return *this;
    }
    /// Fuel for this call in place of the capsule's (0 = the capsule's).
    CallOptions &fuel(uint64_t units) noexcept {
        c_.fuel = units;
        return *this;
    }
    /// A token whose `fire()` ends this call. The token must outlive the
    /// options' use in a call (it is looked up when the call starts).
    CallOptions &cancel(const Cancel &token) noexcept {
        c_.cancel = token.native();
        return *this;
    }

    const astrid_call_options_t &native() const noexcept { return c_; }

  private:
    void sync() noexcept {
        detail::set_string(principal_, c_.principal, c_.principal_len);
        c_.config = config_.data();
        c_.config_len = config_.size();
    }

    astrid_call_options_t c_{};
    detail::OptString principal_;
    detail::ConfigEntries config_;
};

// ---------------------------------------------------------------------------
// Callback views
// ---------------------------------------------------------------------------

/// What an exception escaping a callback looked like, for the error handler.
struct CallbackFailure {
    /// Which callback threw: "gate", "accept", "log", "audit", "secret", "subscription", "vfs.<op>",
    /// "kv.<op>".
    std::string_view callback;
    /// `what()` of the exception ("unknown exception" for non-std exceptions).
    std::string_view message;
    /// The exception itself (may be rethrown to inspect it).
    std::exception_ptr exception;
};

/// Receives callback failures. Runs on the thread that ran the callback; must
/// not throw (an exception from it is swallowed).
using ErrorHandler = std::function<void(const CallbackFailure &)>;

enum class LogLevel : uint32_t {
    Trace = ASTRID_LOG_TRACE,
    Debug = ASTRID_LOG_DEBUG,
    Info = ASTRID_LOG_INFO,
    Warn = ASTRID_LOG_WARN,
    Error = ASTRID_LOG_ERROR,
};

inline const char *to_string(LogLevel level) noexcept {
    switch (level) {
    case LogLevel::Trace: return "trace";
    case LogLevel::Debug: return "debug";
    case LogLevel::Info: return "info";
    case LogLevel::Warn: return "warn";
    case LogLevel::Error: return "error";
    }
    return "error";
}

/// One log line of a capsule. The views are valid during the callback only.
struct LogRecord {
    LogLevel level;
    std::string_view capsule;
    /// The call's principal; empty when there is none.
    std::string_view principal;
    std::string_view message;
    /// The call that wrote the line (Result::call_id()); 0 outside any call.
    uint64_t call_id;
};
using LogFn = std::function<void(const LogRecord &)>;

enum class AuditOutcome : uint32_t {
    Allowed = ASTRID_AUDIT_ALLOWED,
    /// A policy refusal, or a bus-dispatched handler's `deny` (the reason is its data).
    Denied = ASTRID_AUDIT_DENIED,
    /// A failed host call, or a failed dispatched handler.
    Failed = ASTRID_AUDIT_FAILED,
    /// A bus-dispatched handler (`guest.<action>`) answered `continue`.
    Continue = ASTRID_AUDIT_CONTINUE,
    /// A bus-dispatched handler answered `final`.
    Final = ASTRID_AUDIT_FINAL,
};

/// One host call of a capsule. The views are valid during the callback only.
struct AuditEvent {
    std::string_view capsule;
    std::string_view capsule_id;
    /// `p`, `system` or `claimed(p)`.
    std::string_view principal;
    /// `interface.function`, e.g. `sys.get-config`.
    std::string_view call;
    /// VFS path, `host:port`, URL without query, topic or config key; may be empty.
    std::string_view target;
    uint64_t bytes;
    AuditOutcome outcome;
    /// Why it was denied or failed; empty otherwise.
    std::string_view reason;
    std::chrono::microseconds elapsed;
    /// The call the event belongs to (Result::call_id()); 0 outside any call.
    uint64_t call_id;
};
using AuditFn = std::function<void(const AuditEvent &)>;

/// A request for a secret `[env]` value. Views valid during the callback only.
struct SecretRequest {
    std::string_view capsule;
    std::string_view capsule_id;
    /// Empty when the call has no principal.
    std::string_view principal;
    std::string_view key;
    /// The guest call asking (Result::call_id()).
    uint64_t call_id;
};
/// Returns the value, or std::nullopt (the guest reads `none`). Throwing
/// makes the guest's `get-config` fail.
using SecretFn = std::function<std::optional<std::string>(const SecretRequest &)>;

// ---------------------------------------------------------------------------
// The gate
// ---------------------------------------------------------------------------

enum class GateKind : uint32_t {
    FileRead = ASTRID_GATE_FILE_READ,
    FileWrite = ASTRID_GATE_FILE_WRITE,
    HttpRequest = ASTRID_GATE_HTTP_REQUEST,
    NetConnect = ASTRID_GATE_NET_CONNECT,
    NetBind = ASTRID_GATE_NET_BIND,
    DnsLookup = ASTRID_GATE_DNS_LOOKUP,
};

enum class Verdict : uint32_t {
    Allow = ASTRID_ALLOW,
    Deny = ASTRID_DENY,
    /// The answer comes later through the GateTicket taken with GateRequest::defer().
    Pending = ASTRID_PENDING,
};

/// A deferred gate verdict (astrid_gate_ticket_t). Move-only; answer it once
/// from any thread with resolve() / allow() / deny(). Destroying or reset()ing
/// an unanswered ticket denies the request. Resolving after the call gave up
/// (deadline, cancel, unload) is harmless.
class GateTicket {
  public:
    GateTicket() noexcept = default;
    /// Adopts a ticket from astrid_gate_request_defer.
    explicit GateTicket(astrid_gate_ticket_t *owned) noexcept : t_(owned) {}

    bool valid() const noexcept { return t_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }

    /// Answers the request and consumes the ticket. Throws Code::Closed when
    /// the ticket is empty (already answered, or moved from).
    void resolve(Verdict verdict, std::string_view reason = {}) {
        if (!t_) detail::throw_closed("astrid::GateTicket");
        astrid_gate_ticket_t *t = t_.release();
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_gate_ticket_resolve(t, static_cast<astrid_verdict_t>(verdict), reason.data(),
                                                       reason.size(), &err);
        detail::check(s, err, "astrid_gate_ticket_resolve");
    }
    void allow(std::string_view reason = {}) { resolve(Verdict::Allow, reason); }
    void deny(std::string_view reason = {}) { resolve(Verdict::Deny, reason); }
    /// Drops the ticket unanswered: a denial. No-op when empty.
    void reset() noexcept { t_.reset(); }

  private:
    std::unique_ptr<astrid_gate_ticket_t, detail::TicketDeleter> t_;
};

/// One gate question, borrowed for the duration of the gate callback (do not
/// keep it, nor the views it returns). Fields the kind does not use are empty.
/// It wraps the library's opaque request handle, which is valid only on the
/// thread running the gate callback: its accessors (which read the request
/// with astrid_gate_request_info on first use), set_reason() and defer()
/// called from another thread, or after the callback, throw
/// Error(Code::Closed). To answer from elsewhere, defer() on the callback's
/// thread and resolve the ticket from any thread.
class GateRequest {
  public:
    explicit GateRequest(astrid_gate_request_t *request) noexcept : r_(request) {}
    GateRequest(const GateRequest &) = delete;
    GateRequest &operator=(const GateRequest &) = delete;

    GateKind kind() const { return static_cast<GateKind>(info().kind); }
    /// The port for network kinds, else 0.
    uint16_t port() const { return info().port; }
    std::string_view capsule() const { return detail::view(info().capsule, info().capsule_len); }
    /// Empty for calls without a principal.
    std::string_view principal() const { return detail::view(info().principal, info().principal_len); }
    /// The VFS spelling, e.g. `cwd://a/b`.
    std::string_view path() const { return detail::view(info().path, info().path_len); }
    /// The resolved host path (host-directory mounts only).
    std::string_view host_path() const { return detail::view(info().host_path, info().host_path_len); }
    std::string_view method() const { return detail::view(info().method, info().method_len); }
    std::string_view url() const { return detail::view(info().url, info().url_len); }
    std::string_view host() const { return detail::view(info().host, info().host_len); }
    /// `tcp`, `udp` or `unix` for socket kinds.
    std::string_view transport() const { return detail::view(info().transport, info().transport_len); }
    /// The guest call asking (Result::call_id()); 0 outside any call.
    uint64_t call_id() const { return info().call_id; }

    /// Attaches a reason to the verdict (copied); it reaches the audit callback, never the guest.
    void set_reason(std::string_view reason) {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_gate_request_set_reason(r_, reason.data(), reason.size(), &err);
        detail::check(s, err, "astrid_gate_request_set_reason");
    }
    /// Defers the verdict: return Verdict::Pending and answer the ticket later.
    GateTicket defer() {
        astrid_gate_ticket_t *t = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_gate_request_defer(r_, &t, &err);
        detail::check(s, err, "astrid_gate_request_defer");
        return GateTicket(t);
    }

    astrid_gate_request_t *native() const noexcept { return r_; }

  private:
    /// The request's fields, read once, on first use.
    const astrid_gate_request_info_t &info() const {
        if (!loaded_) {
            astrid_gate_request_info_t fresh{};
            fresh.size = sizeof fresh;
            astrid_error_t *err = nullptr;
            astrid_status_t s = astrid_gate_request_info(r_, &fresh, &err);
            detail::check(s, err, "astrid_gate_request_info");
            info_ = fresh;
            loaded_ = true;
        }
        return info_;
    }

    astrid_gate_request_t *r_;
    mutable astrid_gate_request_info_t info_{};
    mutable bool loaded_ = false;
};

/// The gate. Asked only about requests the manifest allows.
using GateFn = std::function<Verdict(GateRequest &)>;

// ---------------------------------------------------------------------------
// Unix listeners: the accept verifier
// ---------------------------------------------------------------------------

/// A local peer connecting to a capsule's unix listener (one bound with
/// `bind-unix` at the path Runtime::assign_unix_socket gave it), borrowed for
/// the duration of the accept verifier (do not keep it, nor its views). The
/// peer already passed the OS check: it runs as this process's user. Like
/// GateRequest, it wraps a handle valid only on the verifier's thread: its
/// accessors (first use) and set_principal() from another thread, or after
/// the callback, throw Error(Code::Closed).
class AcceptRequest {
  public:
    explicit AcceptRequest(astrid_accept_request_t *request) noexcept : r_(request) {}
    AcceptRequest(const AcceptRequest &) = delete;
    AcceptRequest &operator=(const AcceptRequest &) = delete;

    /// The name of the capsule that accepts.
    std::string_view capsule() const { return detail::view(info().capsule, info().capsule_len); }
    /// The peer's process id; std::nullopt when the OS did not report it.
    std::optional<int64_t> pid() const {
        int64_t pid = info().pid;
        return pid < 0 ? std::nullopt : std::optional<int64_t>(pid);
    }
    /// The peer's user id.
    uint32_t uid() const { return info().uid; }
    /// The peer's group id.
    uint32_t gid() const { return info().gid; }
    /// The guest call that accepts (Result::call_id()).
    uint64_t call_id() const { return info().call_id; }

    /// Names the connection's verified principal (copied; 1..=128 bytes of
    /// UTF-8 without control characters), which the capsule reads with
    /// `connection-principal`. It counts only when the verifier then returns
    /// Verdict::Allow. Throws Error (Code::InvalidArgument, Code::Utf8) for a
    /// principal the library refuses; a verifier that lets that escape
    /// refuses the connection.
    void set_principal(std::string_view principal) {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_accept_request_set_principal(r_, principal.data(), principal.size(), &err);
        detail::check(s, err, "astrid_accept_request_set_principal");
    }

    astrid_accept_request_t *native() const noexcept { return r_; }

  private:
    /// The request's fields, read once, on first use.
    const astrid_accept_request_info_t &info() const {
        if (!loaded_) {
            astrid_accept_request_info_t fresh{};
            fresh.size = sizeof fresh;
            astrid_error_t *err = nullptr;
            astrid_status_t s = astrid_accept_request_info(r_, &fresh, &err);
            detail::check(s, err, "astrid_accept_request_info");
            info_ = fresh;
            loaded_ = true;
        }
        return info_;
    }

    astrid_accept_request_t *r_;
    mutable astrid_accept_request_info_t info_{};
    mutable bool loaded_ = false;
};

/// The accept verifier: returns Verdict::Allow to hand the connection to the
/// capsule (after AcceptRequest::set_principal to name its principal, or
/// without one); any other verdict, or an exception, closes the connection
/// before the guest sees it. Runs on the thread of the guest call that
/// accepts: answer quickly, and call no blocking astrid function.
using AcceptVerifierFn = std::function<Verdict(AcceptRequest &)>;

// ---------------------------------------------------------------------------
// The VFS
// ---------------------------------------------------------------------------

/// A provider's answer (`ASTRID_VFS_*`).
enum class VfsStatus : int32_t {
    Ok = ASTRID_VFS_OK,
    NotFound = ASTRID_VFS_NOT_FOUND,
    Access = ASTRID_VFS_ACCESS,
    AlreadyExists = ASTRID_VFS_ALREADY_EXISTS,
    NotDirectory = ASTRID_VFS_NOT_DIRECTORY,
    IsDirectory = ASTRID_VFS_IS_DIRECTORY,
    NotEmpty = ASTRID_VFS_NOT_EMPTY,
    BoundaryEscape = ASTRID_VFS_BOUNDARY_ESCAPE,
    InvalidPath = ASTRID_VFS_INVALID_PATH,
    Quota = ASTRID_VFS_QUOTA,
    WouldBlock = ASTRID_VFS_WOULD_BLOCK,
    CrossVfs = ASTRID_VFS_CROSS_VFS,
    TooLarge = ASTRID_VFS_TOO_LARGE,
    Closed = ASTRID_VFS_CLOSED,
    NotSupported = ASTRID_VFS_NOT_SUPPORTED,
    Io = ASTRID_VFS_IO,
};

enum class FileKind : uint32_t {
    Unknown = ASTRID_VFS_KIND_UNKNOWN,
    Regular = ASTRID_VFS_KIND_REGULAR,
    Directory = ASTRID_VFS_KIND_DIRECTORY,
    Symlink = ASTRID_VFS_KIND_SYMLINK,
    BlockDevice = ASTRID_VFS_KIND_BLOCK_DEVICE,
    CharacterDevice = ASTRID_VFS_KIND_CHARACTER_DEVICE,
    Fifo = ASTRID_VFS_KIND_FIFO,
    Socket = ASTRID_VFS_KIND_SOCKET,
};

struct Timestamp {
    int64_t seconds = 0;
    uint32_t nanoseconds = 0;
};

/// Metadata a provider reports (astrid_vfs_stat_t).
struct FileStat {
    uint64_t size = 0;
    FileKind kind = FileKind::Unknown;
    /// Permission bits; 0 when the provider has none.
    uint32_t mode = 0;
    std::optional<Timestamp> modified, created, accessed;
};

/// `ASTRID_VFS_OPEN_*` flags of Vfs::open.
class OpenFlags {
  public:
    constexpr explicit OpenFlags(uint32_t bits) noexcept : bits_(bits) {}
    constexpr uint32_t bits() const noexcept { return bits_; }
    constexpr bool read() const noexcept { return bits_ & ASTRID_VFS_OPEN_READ; }
    constexpr bool write() const noexcept { return bits_ & ASTRID_VFS_OPEN_WRITE; }
    /// Create when missing.
    constexpr bool create() const noexcept { return bits_ & ASTRID_VFS_OPEN_CREATE; }
    constexpr bool truncate() const noexcept { return bits_ & ASTRID_VFS_OPEN_TRUNCATE; }
    /// Every write goes to the end.
    constexpr bool append() const noexcept { return bits_ & ASTRID_VFS_OPEN_APPEND; }
    /// With create(): fail with AlreadyExists when the file exists.
    constexpr bool exclusive() const noexcept { return bits_ & ASTRID_VFS_OPEN_EXCLUSIVE; }

  private:
    uint32_t bits_;
};

/// Receives the entries of Vfs::read_dir; valid during that call only.
class DirSink {
  public:
    DirSink(astrid_vfs_dir_sink_fn fn, void *ctx) noexcept : fn_(fn), ctx_(ctx) {}
    DirSink(const DirSink &) = delete;
    DirSink &operator=(const DirSink &) = delete;

    /// Adds one entry (name copied). Returns false when the library wants no
    /// more entries: stop then.
    bool add(std::string_view name, FileKind kind) noexcept {
        return fn_(ctx_, name.data(), name.size(), static_cast<uint32_t>(kind)) == 0;
    }

  private:
    astrid_vfs_dir_sink_fn fn_;
    void *ctx_;
};

/// A filesystem provider for one mount (`cwd`, `home` or `tmp`), mounted with
/// Runtime::mount_vfs. Override the operations your provider supports (as
/// public members); the others are reported to astrid as unsupported (NULL
/// entries in astrid_vfs_ops_t), so a provider without read_link has no
/// symlinks. Paths are mount-relative (`a/b`, root = ""), already checked
/// against the manifest and the gate. Handles are the provider's own numbers.
/// The guest's whole-file calls need several operations: `read-file` is
/// open + fstat + read_at + close, `write-file` open + write_at + close.
///
/// Threading: methods are called from library threads, concurrently —
/// protect shared state. Ownership: the runtime keeps the provider (a
/// shared_ptr) until it is unmounted or replaced and the last capsule using
/// it is gone. An exception thrown by a method becomes VfsStatus::Io and is
/// reported to the runtime's error handler.
class Vfs {
  public:
    virtual ~Vfs() = default;

    /// Metadata of `path`; `follow` = false inspects a final symlink itself.
    virtual VfsStatus stat(std::string_view /*path*/, bool /*follow*/, FileStat & /*out*/) {
        return VfsStatus::NotSupported;
    }
    /// Opens a file; a directory is VfsStatus::IsDirectory.
    virtual VfsStatus open(std::string_view /*path*/, OpenFlags /*flags*/, uint64_t & /*handle*/) {
        return VfsStatus::NotSupported;
    }
    /// Reads up to `len` bytes at `offset`; `read` < `len` only at end of file.
    virtual VfsStatus read_at(uint64_t /*handle*/, uint64_t /*offset*/, uint8_t * /*buf*/, size_t /*len*/,
                              size_t & /*read*/) {
        return VfsStatus::NotSupported;
    }
    /// Writes `len` bytes at `offset` (append handles: at the end); `written` > 0 on success.
    virtual VfsStatus write_at(uint64_t /*handle*/, uint64_t /*offset*/, const uint8_t * /*data*/, size_t /*len*/,
                               size_t & /*written*/) {
        return VfsStatus::NotSupported;
    }
    /// Releases a handle.
    virtual void close(uint64_t /*handle*/) {}
    /// Flushes a handle (`data_only`: data without metadata).
    virtual VfsStatus sync(uint64_t /*handle*/, bool /*data_only*/) { return VfsStatus::NotSupported; }
    /// Truncates or zero-extends a file.
    virtual VfsStatus set_len(uint64_t /*handle*/, uint64_t /*len*/) { return VfsStatus::NotSupported; }
    /// Metadata of an open handle.
    virtual VfsStatus fstat(uint64_t /*handle*/, FileStat & /*out*/) { return VfsStatus::NotSupported; }
    /// Adds each entry of a directory (never `.` or `..`) to `sink`.
    virtual VfsStatus read_dir(std::string_view /*path*/, DirSink & /*sink*/) { return VfsStatus::NotSupported; }
    /// Creates one directory (its parent exists; it does not).
    virtual VfsStatus mkdir(std::string_view /*path*/) { return VfsStatus::NotSupported; }
    /// Removes a file or symlink.
    virtual VfsStatus remove_file(std::string_view /*path*/) { return VfsStatus::NotSupported; }
    /// Removes an empty directory.
    virtual VfsStatus remove_dir(std::string_view /*path*/) { return VfsStatus::NotSupported; }
    /// Moves `from` to `to`, replacing a file or an empty directory there.
    virtual VfsStatus rename(std::string_view /*from*/, std::string_view /*to*/) { return VfsStatus::NotSupported; }
    /// Adds the name `to` for the file `from`.
    virtual VfsStatus hard_link(std::string_view /*from*/, std::string_view /*to*/) {
        return VfsStatus::NotSupported;
    }
    /// A symlink's target (relative, or `/`-rooted relative to the mount
    /// root; at most 4096 bytes). Not a link: VfsStatus::InvalidPath.
    virtual VfsStatus read_link(std::string_view /*path*/, std::string & /*target*/) {
        return VfsStatus::NotSupported;
    }
};

/// One Vfs operation, for VfsOps.
enum class VfsOp : uint32_t {
    Stat = 1u << 0,
    Open = 1u << 1,
    ReadAt = 1u << 2,
    WriteAt = 1u << 3,
    Close = 1u << 4,
    Sync = 1u << 5,
    SetLen = 1u << 6,
    Fstat = 1u << 7,
    ReadDir = 1u << 8,
    Mkdir = 1u << 9,
    RemoveFile = 1u << 10,
    RemoveDir = 1u << 11,
    Rename = 1u << 12,
    HardLink = 1u << 13,
    ReadLink = 1u << 14,
};

/// The set of operations a provider supports.
class VfsOps {
  public:
    constexpr VfsOps() noexcept = default;
    constexpr VfsOps(VfsOp op) noexcept : bits_(static_cast<uint32_t>(op)) {}
    constexpr VfsOps operator|(VfsOps o) const noexcept { return from_bits(bits_ | o.bits_); }
    constexpr bool has(VfsOp op) const noexcept { return (bits_ & static_cast<uint32_t>(op)) != 0; }
    constexpr uint32_t bits() const noexcept { return bits_; }
    static constexpr VfsOps all() noexcept { return from_bits((1u << 15) - 1); }

    /// The operations `T` (a Vfs subclass) overrides, found at compile time.
    template <class T> static constexpr VfsOps overridden_by() noexcept;

  private:
    static constexpr VfsOps from_bits(uint32_t bits) noexcept {
        VfsOps o;
        o.bits_ = bits;
        return o;
    }
    uint32_t bits_ = 0;
};

constexpr VfsOps operator|(VfsOp a, VfsOp b) noexcept { return VfsOps(a) | VfsOps(b); }

template <class T> constexpr VfsOps VfsOps::overridden_by() noexcept {
    static_assert(std::is_base_of_v<Vfs, T>, "T must derive from astrid::Vfs");
    // `&T::m` names Vfs::m (type `R (Vfs::*)(...)`) unless T or a base
    // between T and Vfs declares its own `m`.
#define ASTRID_HPP_OVERRIDES(m) (!std::is_same_v<decltype(&T::m), decltype(&Vfs::m)>)
    uint32_t bits = 0;
    bits |= ASTRID_HPP_OVERRIDES(stat) ? static_cast<uint32_t>(VfsOp::Stat) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(open) ? static_cast<uint32_t>(VfsOp::Open) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(read_at) ? static_cast<uint32_t>(VfsOp::ReadAt) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(write_at) ? static_cast<uint32_t>(VfsOp::WriteAt) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(close) ? static_cast<uint32_t>(VfsOp::Close) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(sync) ? static_cast<uint32_t>(VfsOp::Sync) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(set_len) ? static_cast<uint32_t>(VfsOp::SetLen) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(fstat) ? static_cast<uint32_t>(VfsOp::Fstat) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(read_dir) ? static_cast<uint32_t>(VfsOp::ReadDir) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(mkdir) ? static_cast<uint32_t>(VfsOp::Mkdir) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(remove_file) ? static_cast<uint32_t>(VfsOp::RemoveFile) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(remove_dir) ? static_cast<uint32_t>(VfsOp::RemoveDir) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(rename) ? static_cast<uint32_t>(VfsOp::Rename) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(hard_link) ? static_cast<uint32_t>(VfsOp::HardLink) : 0u;
    bits |= ASTRID_HPP_OVERRIDES(read_link) ? static_cast<uint32_t>(VfsOp::ReadLink) : 0u;
#undef ASTRID_HPP_OVERRIDES
    return from_bits(bits);
}

// ---------------------------------------------------------------------------
// The KV backend
// ---------------------------------------------------------------------------

/// A backend's answer (`ASTRID_KV_*`).
enum class KvStatus : int32_t {
    Ok = ASTRID_KV_OK,
    /// `get`: the key has no value.
    NotFound = ASTRID_KV_NOT_FOUND,
    /// `cas`: the current value is not the expected one.
    CasMismatch = ASTRID_KV_CAS_MISMATCH,
    Quota = ASTRID_KV_QUOTA,
    TooLarge = ASTRID_KV_TOO_LARGE,
    Io = ASTRID_KV_IO,
};

/// Whose keys: the data scope (the call's principal, else the capsule's
/// owner, else `system`) and the capsule's id. Valid during the callback
/// only. Backends must keep namespaces apart.
struct KvNamespace {
    std::string_view scope;
    std::string_view capsule_id;
};

/// Receives the value of KvBackend::get (copied); valid during that call only.
class KvValueSink {
  public:
    KvValueSink(astrid_kv_value_sink_fn fn, void *ctx) noexcept : fn_(fn), ctx_(ctx) {}
    KvValueSink(const KvValueSink &) = delete;
    KvValueSink &operator=(const KvValueSink &) = delete;
    void put(std::string_view value) noexcept {
        fn_(ctx_, reinterpret_cast<const uint8_t *>(value.data()), value.size());
    }

  private:
    astrid_kv_value_sink_fn fn_;
    void *ctx_;
};

/// Receives the keys of KvBackend::list (copied); valid during that call only.
class KvKeySink {
  public:
    KvKeySink(astrid_kv_key_sink_fn fn, void *ctx) noexcept : fn_(fn), ctx_(ctx) {}
    KvKeySink(const KvKeySink &) = delete;
    KvKeySink &operator=(const KvKeySink &) = delete;
    /// Adds one key. Returns false when the library wants no more keys: stop then.
    bool add(std::string_view key) noexcept { return fn_(ctx_, key.data(), key.size()) == 0; }

  private:
    astrid_kv_key_sink_fn fn_;
    void *ctx_;
};

/// A storage backend for `astrid:kv`, installed with Runtime::set_kv. Every
/// operation is required. Keys arrive validated (UTF-8 NFC, 1..=256 bytes);
/// values are bytes (at most 1 MiB) carried in std::string_view; keys sort
/// bytewise.
///
/// Threading: methods run on library threads, concurrently — protect shared
/// state; `cas` must be linearizable per key. Ownership: the runtime keeps
/// the backend (a shared_ptr) until it is replaced or the runtime closed and
/// no call uses it. An exception thrown by a method becomes KvStatus::Io
/// (the guest sees `unknown("storage failed")`) and is reported to the
/// runtime's error handler.
class KvBackend {
  public:
    virtual ~KvBackend() = default;
    /// Puts the value of `key` into `out` and returns Ok, or returns NotFound.
    virtual KvStatus get(const KvNamespace &ns, std::string_view key, KvValueSink &out) = 0;
    /// Stores `value` under `key` (insert or replace).
    virtual KvStatus set(const KvNamespace &ns, std::string_view key, std::string_view value) = 0;
    /// Removes `key`; a missing key is Ok.
    virtual KvStatus remove(const KvNamespace &ns, std::string_view key) = 0;
    /// Adds, in bytewise order, the keys starting with `prefix` that sort
    /// after `after` (empty: from the first), at most `limit` of them.
    virtual KvStatus list(const KvNamespace &ns, std::string_view prefix, std::string_view after, uint32_t limit,
                          KvKeySink &out) = 0;
    /// Removes every key starting with `prefix` (all for an empty prefix); `removed` = how many.
    virtual KvStatus clear_prefix(const KvNamespace &ns, std::string_view prefix, uint64_t &removed) = 0;
    /// Atomically: if the value of `key` equals `expected` (std::nullopt: if
    /// the key is absent), stores `value` and returns Ok; else CasMismatch.
    virtual KvStatus cas(const KvNamespace &ns, std::string_view key, std::optional<std::string_view> expected,
                         std::string_view value) = 0;
};

// ---------------------------------------------------------------------------
// IPC messages
// ---------------------------------------------------------------------------

enum class Attribution : uint32_t {
    System = ASTRID_ATTRIBUTION_SYSTEM,
    Verified = ASTRID_ATTRIBUTION_VERIFIED,
    Claimed = ASTRID_ATTRIBUTION_CLAIMED,
};

/// One delivered bus message. The views are valid during the callback only.
struct Message {
    std::string_view topic;
    /// JSON text.
    std::string_view payload;
    /// The publishing capsule's id, or the embedder's id for Runtime::publish messages.
    std::string_view source_id;
    Attribution attribution;
    /// Empty for system attribution.
    std::string_view principal;
    /// Runtime-wide publish sequence number.
    uint64_t sequence;
    /// Unix milliseconds at publish.
    uint64_t timestamp_ms;
    /// 0 for host publishes.
    uint32_t depth;
    /// Messages this subscription missed (never queued) since the previous delivery.
    uint64_t dropped;
    /// Messages evicted from this subscription's full queue since the previous delivery.
    uint64_t lagged;
};
/// Runs on the subscription's own thread, one message at a time, in publish order.
using MessageFn = std::function<void(const Message &)>;

// ---------------------------------------------------------------------------
// Trampolines (nothing here lets an exception reach the library)
// ---------------------------------------------------------------------------

namespace detail {

/// Per-runtime state every callback block shares: the error handler.
class Shared {
  public:
    void set_handler(ErrorHandler handler) {
        auto next = handler ? std::make_shared<const ErrorHandler>(std::move(handler)) : nullptr;
        std::lock_guard<std::mutex> lock(mu_);
        handler_ = std::move(next);
    }

    /// Reports the exception being handled. Call only inside a catch block.
    void report(const char *callback) noexcept {
        try {
            std::exception_ptr ex = std::current_exception();
            std::string message;
            try {
                throw;
            } catch (const std::exception &e) {
                message = e.what();
            } catch (...) {
                message = "unknown exception";
            }
            std::shared_ptr<const ErrorHandler> handler;
            {
                std::lock_guard<std::mutex> lock(mu_);
                handler = handler_;
            }
            if (handler) {
                (*handler)(CallbackFailure{callback, message, ex});
            } else {
                std::fprintf(stderr, "astrid: the %s callback threw: %s\n", callback, message.c_str());
            }
        } catch (...) {
            std::fprintf(stderr, "astrid: the %s callback threw, and reporting it failed\n", callback);
        }
    }

  private:
    std::mutex mu_;
    std::shared_ptr<const ErrorHandler> handler_;
};

/// The heap block behind one registered callback; deleted by the finalizer.
template <class Fn> struct CallbackState {
    Fn fn;
    std::shared_ptr<Shared> shared;
};

template <class State> void finalize(void *user_data) noexcept { delete static_cast<State *>(user_data); }

using GateState = CallbackState<GateFn>;
using LogState = CallbackState<LogFn>;
using AuditState = CallbackState<AuditFn>;
using SecretState = CallbackState<SecretFn>;
using AcceptState = CallbackState<AcceptVerifierFn>;

inline astrid_verdict_t gate_trampoline(void *user_data, astrid_gate_request_t *request) noexcept {
    auto *st = static_cast<GateState *>(user_data);
    try {
        GateRequest view(request);
        return static_cast<astrid_verdict_t>(st->fn(view));
    } catch (...) {
        st->shared->report("gate");
        return ASTRID_DENY;
    }
}

inline astrid_verdict_t accept_trampoline(void *user_data, astrid_accept_request_t *request) noexcept {
    auto *st = static_cast<AcceptState *>(user_data);
    try {
        AcceptRequest view(request);
        return st->fn(view) == Verdict::Allow ? ASTRID_ALLOW : ASTRID_DENY;
    } catch (...) {
        st->shared->report("accept");
        return ASTRID_DENY;
    }
}

inline void log_trampoline(void *user_data, const astrid_log_record_t *r) noexcept {
    auto *st = static_cast<LogState *>(user_data);
    try {
        st->fn(LogRecord{static_cast<LogLevel>(r->level), view(r->capsule, r->capsule_len),
                         view(r->principal, r->principal_len), view(r->message, r->message_len), r->call_id});
    } catch (...) {
        st->shared->report("log");
    }
}

inline void audit_trampoline(void *user_data, const astrid_audit_event_t *e) noexcept {
    auto *st = static_cast<AuditState *>(user_data);
    try {
        st->fn(AuditEvent{view(e->capsule, e->capsule_len), view(e->capsule_id, e->capsule_id_len),
                          view(e->principal, e->principal_len), view(e->call, e->call_len),
                          view(e->target, e->target_len), e->bytes, static_cast<AuditOutcome>(e->outcome),
                          view(e->reason, e->reason_len),
                          std::chrono::microseconds(static_cast<std::chrono::microseconds::rep>(e->elapsed_us)),
                          e->call_id});
    } catch (...) {
        st->shared->report("audit");
    }
}

inline astrid_status_t secret_trampoline(void *user_data, astrid_secret_request_t *r) noexcept {
    auto *st = static_cast<SecretState *>(user_data);
    try {
        // The request is an opaque handle, readable on this thread until we return.
        astrid_secret_request_info_t info{};
        info.size = sizeof info;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_secret_request_info(r, &info, &err);
        check(s, err, "astrid_secret_request_info");
        std::optional<std::string> value =
            st->fn(SecretRequest{view(info.capsule, info.capsule_len), view(info.capsule_id, info.capsule_id_len),
                                 view(info.principal, info.principal_len), view(info.key, info.key_len),
                                 info.call_id});
        if (value) {
            err = nullptr;
            s = astrid_secret_request_set_value(r, value->data(), value->size(), &err);
            check(s, err, "astrid_secret_request_set_value");
        }
        return ASTRID_OK;
    } catch (...) {
        st->shared->report("secret");
        return ASTRID_E_INTERNAL;
    }
}

using MessageState = CallbackState<MessageFn>;

inline void message_trampoline(void *user_data, const astrid_message_t *m) noexcept {
    auto *st = static_cast<MessageState *>(user_data);
    try {
        st->fn(Message{view(m->topic, m->topic_len), view(m->payload, m->payload_len),
                       view(m->source_id, m->source_id_len), static_cast<Attribution>(m->attribution),
                       view(m->principal, m->principal_len), m->sequence, m->timestamp_ms, m->depth, m->dropped,
                       m->lagged});
    } catch (...) {
        st->shared->report("subscription");
    }
}

struct VfsState {
    std::shared_ptr<Vfs> vfs;
    std::shared_ptr<Shared> shared;
};

inline void fill_stat(astrid_vfs_stat_t *out, const FileStat &s) noexcept {
    out->size = s.size;
    out->kind = static_cast<uint32_t>(s.kind);
    out->mode = s.mode;
    out->has_times = 0;
    if (s.modified) {
        out->has_times |= ASTRID_VFS_HAS_MODIFIED;
        out->modified_sec = s.modified->seconds;
        out->modified_nsec = s.modified->nanoseconds;
    }
    if (s.created) {
        out->has_times |= ASTRID_VFS_HAS_CREATED;
        out->created_sec = s.created->seconds;
        out->created_nsec = s.created->nanoseconds;
    }
    if (s.accessed) {
        out->has_times |= ASTRID_VFS_HAS_ACCESSED;
        out->accessed_sec = s.accessed->seconds;
        out->accessed_nsec = s.accessed->nanoseconds;
    }
}

/// Runs one provider method; an exception becomes ASTRID_VFS_IO.
template <class F> int32_t vfs_guard(void *user_data, const char *op, F &&body) noexcept {
    auto *st = static_cast<VfsState *>(user_data);
    try {
        return static_cast<int32_t>(body(*st->vfs));
    } catch (...) {
        st->shared->report(op);
        return ASTRID_VFS_IO;
    }
}

inline int32_t vfs_stat(void *ud, const char *path, size_t len, uint32_t follow, astrid_vfs_stat_t *out) noexcept {
    return vfs_guard(ud, "vfs.stat", [&](Vfs &v) {
        FileStat s;
        VfsStatus r = v.stat(view(path, len), follow != 0, s);
        if (r == VfsStatus::Ok) fill_stat(out, s);
        return r;
    });
}
inline int32_t vfs_open(void *ud, const char *path, size_t len, uint32_t flags, uint64_t *out) noexcept {
    return vfs_guard(ud, "vfs.open", [&](Vfs &v) {
        uint64_t handle = 0;
        VfsStatus r = v.open(view(path, len), OpenFlags(flags), handle);
        if (r == VfsStatus::Ok) *out = handle;
        return r;
    });
}
inline int32_t vfs_read_at(void *ud, uint64_t handle, uint64_t offset, uint8_t *buf, size_t len,
                           size_t *out_read) noexcept {
    return vfs_guard(ud, "vfs.read_at", [&](Vfs &v) {
        size_t n = 0;
        VfsStatus r = v.read_at(handle, offset, buf, len, n);
        *out_read = n;
        return r;
    });
}
inline int32_t vfs_write_at(void *ud, uint64_t handle, uint64_t offset, const uint8_t *data, size_t len,
                            size_t *out_written) noexcept {
    return vfs_guard(ud, "vfs.write_at", [&](Vfs &v) {
        size_t n = 0;
        VfsStatus r = v.write_at(handle, offset, data, len, n);
        *out_written = n;
        return r;
    });
}
inline int32_t vfs_close(void *ud, uint64_t handle) noexcept {
    return vfs_guard(ud, "vfs.close", [&](Vfs &v) {
        v.close(handle);
        return VfsStatus::Ok;
    });
}
inline int32_t vfs_sync(void *ud, uint64_t handle, uint32_t data_only) noexcept {
    return vfs_guard(ud, "vfs.sync", [&](Vfs &v) { return v.sync(handle, data_only != 0); });
}
inline int32_t vfs_set_len(void *ud, uint64_t handle, uint64_t len) noexcept {
    return vfs_guard(ud, "vfs.set_len", [&](Vfs &v) { return v.set_len(handle, len); });
}
inline int32_t vfs_fstat(void *ud, uint64_t handle, astrid_vfs_stat_t *out) noexcept {
    return vfs_guard(ud, "vfs.fstat", [&](Vfs &v) {
        FileStat s;
        VfsStatus r = v.fstat(handle, s);
        if (r == VfsStatus::Ok) fill_stat(out, s);
        return r;
    });
}
inline int32_t vfs_read_dir(void *ud, const char *path, size_t len, astrid_vfs_dir_sink_fn sink,
                            void *ctx) noexcept {
    return vfs_guard(ud, "vfs.read_dir", [&](Vfs &v) {
        DirSink s(sink, ctx);
        return v.read_dir(view(path, len), s);
    });
}
inline int32_t vfs_mkdir(void *ud, const char *path, size_t len) noexcept {
    return vfs_guard(ud, "vfs.mkdir", [&](Vfs &v) { return v.mkdir(view(path, len)); });
}
inline int32_t vfs_remove_file(void *ud, const char *path, size_t len) noexcept {
    return vfs_guard(ud, "vfs.remove_file", [&](Vfs &v) { return v.remove_file(view(path, len)); });
}
inline int32_t vfs_remove_dir(void *ud, const char *path, size_t len) noexcept {
    return vfs_guard(ud, "vfs.remove_dir", [&](Vfs &v) { return v.remove_dir(view(path, len)); });
}
inline int32_t vfs_rename(void *ud, const char *src, size_t src_len, const char *dst, size_t dst_len) noexcept {
    return vfs_guard(ud, "vfs.rename", [&](Vfs &v) { return v.rename(view(src, src_len), view(dst, dst_len)); });
}
inline int32_t vfs_hard_link(void *ud, const char *src, size_t src_len, const char *dst, size_t dst_len) noexcept {
    return vfs_guard(ud, "vfs.hard_link",
                     [&](Vfs &v) { return v.hard_link(view(src, src_len), view(dst, dst_len)); });
}
inline int32_t vfs_read_link(void *ud, const char *path, size_t len, char *buf, size_t cap, size_t *out_len) noexcept {
    return vfs_guard(ud, "vfs.read_link", [&](Vfs &v) {
        std::string target;
        VfsStatus r = v.read_link(view(path, len), target);
        if (r != VfsStatus::Ok) return r;
        if (target.size() > cap) return VfsStatus::TooLarge;
        std::memcpy(buf, target.data(), target.size());
        *out_len = target.size();
        return VfsStatus::Ok;
    });
}

struct KvState {
    std::shared_ptr<KvBackend> kv;
    std::shared_ptr<Shared> shared;
};

inline KvNamespace kv_namespace(const astrid_kv_namespace_t *ns) noexcept {
    return KvNamespace{view(ns->scope, ns->scope_len), view(ns->capsule_id, ns->capsule_id_len)};
}

inline std::string_view bytes(const uint8_t *data, size_t len) noexcept {
    return data ? std::string_view(reinterpret_cast<const char *>(data), len) : std::string_view();
}

/// Runs one backend method; an exception becomes ASTRID_KV_IO.
template <class F> int32_t kv_guard(void *user_data, const char *op, F &&body) noexcept {
    auto *st = static_cast<KvState *>(user_data);
    try {
        return static_cast<int32_t>(body(*st->kv));
    } catch (...) {
        st->shared->report(op);
        return ASTRID_KV_IO;
    }
}

inline int32_t kv_get(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len,
                      astrid_kv_value_sink_fn sink, void *ctx) noexcept {
    return kv_guard(ud, "kv.get", [&](KvBackend &b) {
        KvValueSink out(sink, ctx);
        return b.get(kv_namespace(ns), view(key, key_len), out);
    });
}
inline int32_t kv_set(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len,
                      const uint8_t *value, size_t value_len) noexcept {
    return kv_guard(ud, "kv.set",
                    [&](KvBackend &b) { return b.set(kv_namespace(ns), view(key, key_len), bytes(value, value_len)); });
}
inline int32_t kv_remove(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len) noexcept {
    return kv_guard(ud, "kv.remove", [&](KvBackend &b) { return b.remove(kv_namespace(ns), view(key, key_len)); });
}
inline int32_t kv_list(void *ud, const astrid_kv_namespace_t *ns, const char *prefix, size_t prefix_len,
                       const char *after, size_t after_len, uint32_t limit, astrid_kv_key_sink_fn sink,
                       void *ctx) noexcept {
    return kv_guard(ud, "kv.list", [&](KvBackend &b) {
        KvKeySink out(sink, ctx);
        return b.list(kv_namespace(ns), view(prefix, prefix_len), view(after, after_len), limit, out);
    });
}
inline int32_t kv_clear_prefix(void *ud, const astrid_kv_namespace_t *ns, const char *prefix, size_t prefix_len,
                               uint64_t *out_count) noexcept {
    return kv_guard(ud, "kv.clear_prefix", [&](KvBackend &b) {
        uint64_t removed = 0;
        KvStatus r = b.clear_prefix(kv_namespace(ns), view(prefix, prefix_len), removed);
        *out_count = removed;
        return r;
    });
}
inline int32_t kv_cas(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len,
                      uint32_t has_expected, const uint8_t *expected, size_t expected_len, const uint8_t *value,
                      size_t value_len) noexcept {
    return kv_guard(ud, "kv.cas", [&](KvBackend &b) {
        std::optional<std::string_view> exp;
        if (has_expected) exp = bytes(expected, expected_len);
        return b.cas(kv_namespace(ns), view(key, key_len), exp, bytes(value, value_len));
    });
}

/// The C table with an entry for each supported operation.
inline astrid_vfs_ops_t vfs_table(VfsOps ops) noexcept {
    astrid_vfs_ops_t t{};
    t.size = sizeof t;
    if (ops.has(VfsOp::Stat)) t.stat = &vfs_stat;
    if (ops.has(VfsOp::Open)) t.open = &vfs_open;
    if (ops.has(VfsOp::ReadAt)) t.read_at = &vfs_read_at;
    if (ops.has(VfsOp::WriteAt)) t.write_at = &vfs_write_at;
    if (ops.has(VfsOp::Close)) t.close = &vfs_close;
    if (ops.has(VfsOp::Sync)) t.sync = &vfs_sync;
    if (ops.has(VfsOp::SetLen)) t.set_len = &vfs_set_len;
    if (ops.has(VfsOp::Fstat)) t.fstat = &vfs_fstat;
    if (ops.has(VfsOp::ReadDir)) t.read_dir = &vfs_read_dir;
    if (ops.has(VfsOp::Mkdir)) t.mkdir = &vfs_mkdir;
    if (ops.has(VfsOp::RemoveFile)) t.remove_file = &vfs_remove_file;
    if (ops.has(VfsOp::RemoveDir)) t.remove_dir = &vfs_remove_dir;
    if (ops.has(VfsOp::Rename)) t.rename = &vfs_rename;
    if (ops.has(VfsOp::HardLink)) t.hard_link = &vfs_hard_link;
    if (ops.has(VfsOp::ReadLink)) t.read_link = &vfs_read_link;
    return t;
}

} // namespace detail

// ---------------------------------------------------------------------------
// Result, Capsule, Subscription, Runtime
// ---------------------------------------------------------------------------

/// The result of a call (astrid_result_t): the interceptor's action and
/// optional data. Move-only; the views it returns are valid while it lives.
class Result {
  public:
    Result() noexcept = default;
    /// Adopts a result from astrid_capsule_call.
    explicit Result(astrid_result_t *owned) noexcept : r_(owned) {}

    /// `continue`, `final`, `deny`, ...
    std::string_view action() const {
        size_t len = 0;
        const char *a = astrid_result_action(get(), &len);
        return std::string_view(a, len);
    }
    bool has_data() const { return astrid_result_data(get(), nullptr, nullptr); }
    /// The id the call ran under, unique within the runtime: the id its log
    /// records, audit events and callback requests carry.
    uint64_t call_id() const { return astrid_result_call_id(get()); }
    /// The data, or an empty view when there is none (see has_data()).
    std::string_view data() const {
        const char *d = nullptr;
        size_t len = 0;
        return astrid_result_data(get(), &d, &len) ? std::string_view(d, len) : std::string_view();
    }

    bool valid() const noexcept { return r_ != nullptr; }
    explicit operator bool() const noexcept { return valid(); }
    astrid_result_t *native() const noexcept { return r_.get(); }

  private:
    astrid_result_t *get() const {
        if (!r_) detail::throw_closed("astrid::Result");
        return r_.get();
    }
    std::unique_ptr<astrid_result_t, detail::ResultDeleter> r_;
};

/// A loaded capsule (astrid_capsule_t). Move-only. Calls may run
/// concurrently from any number of threads (up to the runtime's pool size at
/// once; more wait). Destruction unloads it (cancels its calls and waits for
/// them, bounded by the runtime's unload grace).
class Capsule {
  public:
    Capsule() noexcept = default;
    /// Adopts a handle from astrid_capsule_load.
    explicit Capsule(astrid_capsule_t *owned) noexcept : c_(owned) {}

    /// Calls `astrid-hook-trigger(action, payload)` as the capsule's owner.
    /// Blocks until the guest returns. Throws Error (Timeout, Trap, Closed, ...).
    Result call(std::string_view action, std::string_view payload = {}) const {
        astrid_result_t *r = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_call(get(), action.data(), action.size(),
                                                reinterpret_cast<const uint8_t *>(payload.data()), payload.size(),
                                                &r, &err);
        if (s != ASTRID_OK) detail::throw_error(s, err, "astrid_capsule_call");
        return Result(r);
    }
    /// Same, with per-call options (principal, config overlay).
    Result call(std::string_view action, std::string_view payload, const CallOptions &options) const {
        astrid_result_t *r = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_call_with(get(), &options.native(), action.data(), action.size(),
                                                     reinterpret_cast<const uint8_t *>(payload.data()),
                                                     payload.size(), &r, &err);
        if (s != ASTRID_OK) detail::throw_error(s, err, "astrid_capsule_call_with");
        return Result(r);
    }

    /// What the capsule's calls cost and did since it was loaded (see
    /// astrid_capsule_stats_t; index the arrays with ASTRID_CALLS_*,
    /// ASTRID_IFACE_*, ASTRID_CHANNEL_*). Throws Code::Closed once unloaded.
    [[nodiscard]] astrid_capsule_stats_t stats() const {
        astrid_capsule_stats_t out{};
        out.size = sizeof out;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_stats(get(), &out, &err);
        detail::check(s, err, "astrid_capsule_stats");
        return out;
    }

    /// Cancels the calls running now (they throw Code::Cancelled). Non-blocking;
    /// allowed inside callbacks.
    void cancel() const {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_cancel(get(), &err);
        detail::check(s, err, "astrid_capsule_cancel");
    }

    /// The `[package] name`; valid while the capsule is loaded.
    std::string_view name() const {
        size_t len = 0;
        const char *n = astrid_capsule_name(get(), &len);
        if (!n) detail::throw_closed("astrid::Capsule");
        return std::string_view(n, len);
    }
    /// The capsule's id (UUIDv5); valid while the capsule is loaded.
    std::string_view id() const {
        size_t len = 0;
        const char *i = astrid_capsule_id(get(), &len);
        if (!i) detail::throw_closed("astrid::Capsule");
        return std::string_view(i, len);
    }
    /// Waits up to `timeout` until the capsule is ready: a capsule that runs a
    /// `run` loop is ready once the loop calls `astrid:sys` `signal-ready`; any
    /// other capsule is ready at once. Throws Code::Timeout when not ready in
    /// time, Code::Trap / Timeout / ResourceLimit when the run loop failed or
    /// returned (it is not restarted), Code::Closed, Code::Reentrant (inside a
    /// callback).
    void wait_ready(std::chrono::milliseconds timeout) const {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_wait_ready(
            get(), timeout.count() > 0 ? static_cast<uint64_t>(timeout.count()) : 0, &err);
        detail::check(s, err, "astrid_capsule_wait_ready");
    }
    /// Whether the capsule runs a `run` loop (it exports a real `run`, not a
    /// guest-SDK placeholder).
    bool runs_loop() const { return astrid_capsule_runs_loop(get()); }
    /// Whether it holds a capability (`net`, `net_connect`, `net_bind`, `fs_read`, `fs_write`, `uplink`).
    bool has_capability(std::string_view name) const {
        return astrid_capsule_has_capability(get(), name.data(), name.size());
    }

    /// Unloads the capsule (waits for its calls, bounded by the unload grace).
    /// No-op when already closed. Throws Code::Reentrant inside a callback
    /// (the capsule then stays loaded).
    void close() {
        if (!c_) return;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_unload(c_.get(), &err);
        if (s == ASTRID_E_REENTRANT) detail::check(s, err, "astrid_capsule_unload");
        c_.release(); // unloaded (or already gone: ASTRID_E_CLOSED)
        if (s == ASTRID_E_CLOSED) {
            astrid_error_free(err); // already unloaded: close() stays idempotent
            return;
        }
        detail::check(s, err, "astrid_capsule_unload");
    }

    bool is_open() const noexcept { return c_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }
    astrid_capsule_t *native() const noexcept { return c_.get(); }
    /// Gives up ownership of the handle (the caller unloads it).
    astrid_capsule_t *release() noexcept { return c_.release(); }

  private:
    astrid_capsule_t *get() const {
        if (!c_) detail::throw_closed("astrid::Capsule");
        return c_.get();
    }
    std::unique_ptr<astrid_capsule_t, detail::CapsuleDeleter> c_;
};

/// A bus subscription (astrid_subscription_t). Move-only. Its callback runs
/// on the subscription's own thread, one message at a time, in publish
/// order. close() (or destruction) stops delivery and returns once no
/// callback for it runs; called from inside its own callback it returns at
/// once and delivery stops after that callback. May outlive the Runtime.
class Subscription {
  public:
    Subscription() noexcept = default;
    explicit Subscription(astrid_subscription_t *owned) noexcept : s_(owned) {}

    /// Stops delivery and frees the callback. No-op when already closed.
    void close() noexcept { s_.reset(); }
    bool is_open() const noexcept { return s_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }
    astrid_subscription_t *native() const noexcept { return s_.get(); }

  private:
    std::unique_ptr<astrid_subscription_t, detail::SubscriptionDeleter> s_;
};

/// A runtime (astrid_runtime_t): engine, worker threads, callbacks. Move-only.
/// Destruction (or close()) cancels every capsule, waits for calls in flight
/// (bounded by the unload grace), flushes the audit queue, stops the threads
/// and frees every registered callback. Do not close or destroy a runtime
/// from inside one of its callbacks (the library ignores that).
class Runtime {
  public:
    /// Starts a runtime with the library's defaults.
    Runtime() : Runtime(RuntimeConfig()) {}
    /// Starts a runtime. Throws AbiError when the library's ABI differs from
    /// the header's (before calling anything else), Error otherwise.
    explicit Runtime(const RuntimeConfig &config) : shared_(std::make_shared<detail::Shared>()) {
        check_abi(astrid_abi_version());
        astrid_runtime_t *rt = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_new(&config.native(), &rt, &err);
        detail::check(s, err, "astrid_runtime_new");
        rt_.reset(rt);
    }

    /// Loads the capsule in directory `dir` (Capsule.toml + component).
    Capsule load(std::string_view dir) const { return load_impl(dir, nullptr); }
    Capsule load(std::string_view dir, const LoadOptions &options) const { return load_impl(dir, &options.native()); }

    /// Loads a capsule from memory: component bytes and Capsule.toml text (copied).
    Capsule load_bytes(const void *wasm, size_t wasm_len, std::string_view manifest) const {
        return load_bytes_impl(wasm, wasm_len, manifest, nullptr);
    }
    Capsule load_bytes(const void *wasm, size_t wasm_len, std::string_view manifest,
                       const LoadOptions &options) const {
        return load_bytes_impl(wasm, wasm_len, manifest, &options.native());
    }
    Capsule load_bytes(std::string_view wasm, std::string_view manifest) const {
        return load_bytes_impl(wasm.data(), wasm.size(), manifest, nullptr);
    }
    Capsule load_bytes(std::string_view wasm, std::string_view manifest, const LoadOptions &options) const {
        return load_bytes_impl(wasm.data(), wasm.size(), manifest, &options.native());
    }
    Capsule load_bytes(const std::vector<uint8_t> &wasm, std::string_view manifest) const {
        return load_bytes_impl(wasm.data(), wasm.size(), manifest, nullptr);
    }
    Capsule load_bytes(const std::vector<uint8_t> &wasm, std::string_view manifest,
                       const LoadOptions &options) const {
        return load_bytes_impl(wasm.data(), wasm.size(), manifest, &options.native());
    }

    /// Installs the gate (an empty function removes it: the manifest alone decides).
    void set_gate(GateFn gate) {
        install<detail::GateState>(std::move(gate), &detail::gate_trampoline, &astrid_runtime_set_gate,
                                   "astrid_runtime_set_gate");
    }
    /// Installs the accept verifier (an empty function removes it: local peers
    /// of the same OS user are then accepted without a principal).
    void set_accept_verifier(AcceptVerifierFn verifier) {
        install<detail::AcceptState>(std::move(verifier), &detail::accept_trampoline,
                                     &astrid_runtime_set_accept_verifier, "astrid_runtime_set_accept_verifier");
    }
    /// Assigns the socket path that `bind-unix` binds for capsules named
    /// `name` loaded afterwards (the guest never sees it). A stale socket file
    /// there is replaced when the capsule binds; any other file makes the bind
    /// fail with `address-in-use`. Throws Code::InvalidArgument (empty name,
    /// path longer than 107 bytes), Code::Utf8, Code::Closed.
    void assign_unix_socket(std::string_view name, std::string_view path) {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_assign_unix_socket(get(), name.data(), name.size(),
                                                              path.data() ? path.data() : "", path.size(), &err);
        detail::check(s, err, "astrid_runtime_assign_unix_socket");
    }
    /// Removes the socket path of capsules named `name` (those loaded
    /// afterwards get `address-not-available` from `bind-unix`).
    void unassign_unix_socket(std::string_view name) {
        astrid_error_t *err = nullptr;
        astrid_status_t s =
            astrid_runtime_assign_unix_socket(get(), name.data(), name.size(), nullptr, 0, &err);
        detail::check(s, err, "astrid_runtime_assign_unix_socket");
    }

    /// Installs the log callback (empty: removes it). Runs on the thread executing the guest.
    void set_log_callback(LogFn log) {
        install<detail::LogState>(std::move(log), &detail::log_trampoline, &astrid_runtime_set_log_callback,
                                  "astrid_runtime_set_log_callback");
    }
    /// Installs the audit callback (empty: removes it). Runs on the audit
    /// thread, one event at a time, in order; close() flushes the queue.
    void set_audit_callback(AuditFn audit) {
        install<detail::AuditState>(std::move(audit), &detail::audit_trampoline,
                                    &astrid_runtime_set_audit_callback, "astrid_runtime_set_audit_callback");
    }
    /// Installs the secret provider (empty: removes it; secrets then read as `none`).
    void set_secret_callback(SecretFn secret) {
        install<detail::SecretState>(std::move(secret), &detail::secret_trampoline,
                                     &astrid_runtime_set_secret_callback, "astrid_runtime_set_secret_callback");
    }

    /// Where exceptions thrown by this runtime's callbacks are reported
    /// (empty: the default, one line on stderr). Applies to callbacks
    /// installed before and after.
    void set_error_handler(ErrorHandler handler) {
        if (!shared_) detail::throw_closed("astrid::Runtime");
        shared_->set_handler(std::move(handler));
    }

    /// Serves `mount` (`cwd`, `home` or `tmp`) from `provider` for capsules
    /// loaded afterwards. The operations T overrides are the supported ones.
    template <class T, std::enable_if_t<std::is_base_of_v<Vfs, T>, int> = 0>
    void mount_vfs(std::string_view mount, std::shared_ptr<T> provider) {
        static_assert(!std::is_same_v<T, Vfs>,
                      "pass the provider's own type, or name its operations with mount_vfs(mount, provider, ops)");
        mount_vfs(mount, std::shared_ptr<Vfs>(std::move(provider)), VfsOps::overridden_by<T>());
    }
    /// Same, with the supported operations named explicitly.
    void mount_vfs(std::string_view mount, std::shared_ptr<Vfs> provider, VfsOps ops) {
        if (!provider) throw Error(Code::InvalidArgument, "invalid argument: mount_vfs needs a provider");
        astrid_runtime_t *rt = get();
        auto state = std::make_unique<detail::VfsState>(detail::VfsState{std::move(provider), shared_});
        astrid_vfs_ops_t table = detail::vfs_table(ops);
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_mount_vfs(rt, mount.data(), mount.size(), &table, state.get(),
                                                     &detail::finalize<detail::VfsState>, &err);
        detail::check(s, err, "astrid_runtime_mount_vfs");
        state.release(); // the library's finalizer owns it now
    }
    /// Unmounts `mount` (capsules already loaded keep their provider).
    void unmount_vfs(std::string_view mount) {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_mount_vfs(get(), mount.data(), mount.size(), nullptr, nullptr, nullptr, &err);
        detail::check(s, err, "astrid_runtime_mount_vfs");
    }

    /// Serves `astrid:kv` for every capsule of this runtime from `backend`,
    /// from the next KV call on.
    void set_kv(std::shared_ptr<KvBackend> backend) {
        if (!backend) throw Error(Code::InvalidArgument, "invalid argument: set_kv needs a backend");
        astrid_runtime_t *rt = get();
        auto state = std::make_unique<detail::KvState>(detail::KvState{std::move(backend), shared_});
        astrid_kv_ops_t ops{};
        ops.size = sizeof ops;
        ops.get = &detail::kv_get;
        ops.set = &detail::kv_set;
        ops.remove = &detail::kv_remove;
        ops.list = &detail::kv_list;
        ops.clear_prefix = &detail::kv_clear_prefix;
        ops.cas = &detail::kv_cas;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_set_kv(rt, &ops, state.get(), &detail::finalize<detail::KvState>, &err);
        detail::check(s, err, "astrid_runtime_set_kv");
        state.release(); // the library's finalizer owns it now
    }
    /// Goes back to a fresh, empty built-in in-memory store.
    void reset_kv() {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_set_kv(get(), nullptr, nullptr, nullptr, &err);
        detail::check(s, err, "astrid_runtime_set_kv");
    }

    /// Publishes JSON text on `topic` as the embedder (attribution system).
    void publish(std::string_view topic, std::string_view json) const {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_ipc_publish(get(), topic.data(), topic.size(), json.data(), json.size(), &err);
        detail::check(s, err, "astrid_ipc_publish");
    }
    /// Same, attributed verified(`principal`).
    void publish_as(std::string_view topic, std::string_view json, std::string_view principal) const {
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_ipc_publish_as(get(), topic.data(), topic.size(), json.data(), json.size(),
                                                  principal.data(), principal.size(), &err);
        detail::check(s, err, "astrid_ipc_publish_as");
    }
    /// Subscribes with a topic pattern (`a.*`, `*`, `a.*.c`).
    Subscription subscribe(std::string_view pattern, MessageFn fn) const {
        if (!fn) throw Error(Code::InvalidArgument, "invalid argument: subscribe needs a callback");
        astrid_runtime_t *rt = get();
        auto state = std::make_unique<detail::MessageState>(detail::MessageState{std::move(fn), shared_});
        astrid_subscription_t *sub = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_ipc_subscribe(rt, pattern.data(), pattern.size(), &detail::message_trampoline,
                                                 state.get(), &detail::finalize<detail::MessageState>, &sub, &err);
        detail::check(s, err, "astrid_ipc_subscribe");
        state.release(); // the library's finalizer owns it now
        return Subscription(sub);
    }

    /// Shuts the runtime down (see the class comment). No-op when already closed.
    void close() noexcept { rt_.reset(); }
    bool is_open() const noexcept { return rt_ != nullptr; }
    explicit operator bool() const noexcept { return is_open(); }
    astrid_runtime_t *native() const noexcept { return rt_.get(); }

    /// The runtime's figures over every capsule it has loaded (unloaded ones
    /// included: counters never go down).
    [[nodiscard]] astrid_runtime_stats_t stats() const {
        astrid_runtime_stats_t out{};
        out.size = sizeof out;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_stats(get(), &out, &err);
        detail::check(s, err, "astrid_runtime_stats");
        return out;
    }

    /// The figures in the Prometheus text exposition format (labels
    /// `capsule`, `capsule_id`), ready to serve as `/metrics`.
    [[nodiscard]] std::string metrics_text() const {
        char *text = nullptr;
        size_t len = 0;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_runtime_metrics_text(get(), &text, &len, &err);
        detail::check(s, err, "astrid_runtime_metrics_text");
        std::unique_ptr<char, void (*)(char *)> owned(text, astrid_text_free);
        return std::string(text, len);
    }

  private:
    astrid_runtime_t *get() const {
        if (!rt_) detail::throw_closed("astrid::Runtime");
        return rt_.get();
    }

    Capsule load_impl(std::string_view dir, const astrid_load_options_t *opts) const {
        astrid_capsule_t *c = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_load(get(), dir.data(), dir.size(), opts, &c, &err);
        detail::check(s, err, "astrid_capsule_load");
        return Capsule(c);
    }
    Capsule load_bytes_impl(const void *wasm, size_t wasm_len, std::string_view manifest,
                            const astrid_load_options_t *opts) const {
        astrid_capsule_t *c = nullptr;
        astrid_error_t *err = nullptr;
        astrid_status_t s = astrid_capsule_load_bytes(get(), static_cast<const uint8_t *>(wasm), wasm_len,
                                                      manifest.data(), manifest.size(), opts, &c, &err);
        detail::check(s, err, "astrid_capsule_load_bytes");
        return Capsule(c);
    }

    /// Registers `fn` through `set` (one of astrid_runtime_set_*); an empty
    /// function removes the callback.
    template <class State, class Fn, class Trampoline, class Setter>
    void install(Fn fn, Trampoline trampoline, Setter set, const char *what) {
        astrid_runtime_t *rt = get();
        astrid_error_t *err = nullptr;
        if (!fn) {
            astrid_status_t s = set(rt, nullptr, nullptr, nullptr, &err);
            detail::check(s, err, what);
            return;
        }
        auto state = std::make_unique<State>(State{std::move(fn), shared_});
        astrid_status_t s = set(rt, trampoline, state.get(), &detail::finalize<State>, &err);
        detail::check(s, err, what);
        state.release(); // the library's finalizer owns it now
    }

    std::shared_ptr<detail::Shared> shared_;
    std::unique_ptr<astrid_runtime_t, detail::RuntimeDeleter> rt_;
};

} // namespace astrid

#endif /* ASTRID_HPP */
