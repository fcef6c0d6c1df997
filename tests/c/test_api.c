/*
 * C tests of the astrid API: argument checking (NULL, UTF-8, sizes), error
 * objects (every fallible function fills `err`), ownership of callbacks,
 * calls after unload / runtime free, callback request handles (refused off
 * their callback's thread and after it returned), hostile guests,
 * cancellation and concurrency from C threads.
 *
 *   usage: test_api CAPSULES_DIR [lifetime]   (prints "N passed, N failed")
 *
 * With `lifetime`, only the argument and handle-lifetime tests run (the
 * subset run under valgrind, where timing-bound tests would be too slow).
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "astrid.h"

static int passed, failed;
static const char *capsules;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (cond) {                                                                                \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                        \
        }                                                                                          \
    } while (0)

/* Checks a status and, when an error object came back, that its code agrees. */
#define CHECK_STATUS(call, expected)                                                               \
    do {                                                                                           \
        astrid_error_t *e_ = NULL;                                                                 \
        astrid_error_t **err = &e_;                                                                \
        astrid_status_t s_ = (call);                                                               \
        (void)err;                                                                                 \
        if (s_ == (expected) && (s_ == ASTRID_OK || e_ == NULL || astrid_error_code(e_) == s_)) {  \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s -> %d (%s), expected %d\n", __FILE__, __LINE__, #call, \
                    s_, e_ ? astrid_error_message(e_) : "", (expected));                           \
        }                                                                                          \
        astrid_error_free(e_);                                                                     \
    } while (0)

/* Checks that `call` fails with `expected` and an error object of that code
 * whose message contains `needle`. */
#define CHECK_ERROR(call, expected, needle)                                                        \
    do {                                                                                           \
        astrid_error_t *e_ = NULL;                                                                 \
        astrid_error_t **err = &e_;                                                                \
        astrid_status_t s_ = (call);                                                               \
        (void)err;                                                                                 \
        if (s_ == (expected) && e_ && astrid_error_code(e_) == s_ &&                               \
            strstr(astrid_error_message(e_), (needle))) {                                          \
            passed++;                                                                              \
        } else {                                                                                   \
            failed++;                                                                              \
            fprintf(stderr, "FAIL %s:%d: %s -> %d (%s), expected %d with \"%s\"\n", __FILE__,     \
                    __LINE__, #call, s_, e_ ? astrid_error_message(e_) : "no error object",       \
                    (expected), (needle));                                                         \
        }                                                                                          \
        astrid_error_free(e_);                                                                     \
    } while (0)

static char *path_of(const char *name) {
    static char buf[8][1024];
    static int next;
    char *out = buf[next++ % 8];
    snprintf(out, 1024, "%s/%s", capsules, name);
    return out;
}

static astrid_runtime_t *new_runtime(uint64_t timeout_ms) {
    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, NULL);
    cfg.timeout_ms = timeout_ms;
    cfg.unload_grace_ms = 2000;
    cfg.fuel = UINT64_C(1) << 50; /* let deadlines, not fuel, stop the loops here */
    astrid_runtime_t *rt = NULL;
    astrid_error_t *err = NULL;
    if (astrid_runtime_new(&cfg, &rt, &err) != ASTRID_OK) {
        fprintf(stderr, "runtime: %s\n", astrid_error_message(err));
        exit(2);
    }
    return rt;
}

static astrid_capsule_t *load(astrid_runtime_t *rt, const char *name) {
    astrid_capsule_t *capsule = NULL;
    astrid_error_t *err = NULL;
    if (astrid_capsule_load(rt, path_of(name), ASTRID_NTS, NULL, &capsule, &err) != ASTRID_OK) {
        fprintf(stderr, "load %s: %s\n", name, astrid_error_message(err));
        exit(2);
    }
    return capsule;
}

static astrid_status_t call(astrid_capsule_t *capsule, const char *action, astrid_error_t **err) {
    astrid_result_t *result = NULL;
    astrid_status_t s = astrid_capsule_call(capsule, action, ASTRID_NTS, NULL, 0, &result, err);
    astrid_result_free(result);
    return s;
}

static void test_versions_and_errors(void) {
    CHECK(astrid_abi_version() == ASTRID_ABI_VERSION);
    CHECK(strlen(astrid_version()) > 0);
    CHECK(astrid_error_code(NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK(strcmp(astrid_error_message(NULL), "") == 0);
    astrid_error_free(NULL);
    CHECK(astrid_result_action(NULL, NULL) == NULL);
    CHECK(!astrid_result_data(NULL, NULL, NULL));
    astrid_result_free(NULL);
    astrid_runtime_free(NULL);
    CHECK_STATUS(astrid_capsule_unload(NULL, err), ASTRID_OK);
}

static void test_runtime_arguments(void) {
    astrid_runtime_config_t cfg;
    CHECK(astrid_runtime_config_init(NULL, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_runtime_config_init(NULL, err), ASTRID_E_INVALID_ARGUMENT, "`cfg` must not be NULL");
    CHECK_STATUS(astrid_runtime_config_init(&cfg, err), ASTRID_OK);
    CHECK(cfg.size == sizeof cfg && cfg.memory_limit_bytes == 64u << 20 && cfg.timeout_ms == 30000);
    CHECK_STATUS(astrid_runtime_new(&cfg, NULL, err), ASTRID_E_INVALID_ARGUMENT);
    astrid_runtime_t *rt = NULL;
    cfg.size = 8;
    astrid_error_t *e = NULL;
    CHECK(astrid_runtime_new(&cfg, &rt, &e) == ASTRID_E_INVALID_ARGUMENT && rt == NULL);
    CHECK(e && strstr(astrid_error_message(e), "size") != NULL);
    astrid_error_free(e);
    astrid_runtime_config_init(&cfg, NULL);
    cfg.flags = 0x80;
    CHECK_STATUS(astrid_runtime_new(&cfg, &rt, err), ASTRID_E_INVALID_ARGUMENT);
    astrid_runtime_config_init(&cfg, NULL);
    cfg.cache_dir = "\xff\xfe";
    cfg.cache_dir_len = 2;
    CHECK_STATUS(astrid_runtime_new(&cfg, &rt, err), ASTRID_E_UTF8);
    CHECK(rt == NULL);
    /* A caller built against the header before fields were appended. */
    astrid_runtime_config_init(&cfg, NULL);
    cfg.size = offsetof(astrid_runtime_config_t, memfs_quota_bytes);
    cfg.memfs_quota_bytes = 1;  /* beyond its size: never read */
    cfg.max_instances = 0xdead; /* (if read, no runtime would fit) */
    CHECK_STATUS(astrid_runtime_new(&cfg, &rt, err), ASTRID_OK);
    astrid_runtime_free(rt);
    rt = NULL;
    /* The instance pool holds max_instances over all capsules. */
    astrid_runtime_config_init(&cfg, NULL);
    cfg.max_instances = 1;
    CHECK_STATUS(astrid_runtime_new(&cfg, &rt, err), ASTRID_OK);
    astrid_capsule_t *one = NULL, *two = NULL;
    CHECK_STATUS(astrid_capsule_load(rt, path_of("hello"), ASTRID_NTS, NULL, &one, err), ASTRID_OK);
    astrid_error_t *full = NULL;
    CHECK(astrid_capsule_load(rt, path_of("hello"), ASTRID_NTS, NULL, &two, &full) == ASTRID_E_RESOURCE_LIMIT);
    CHECK(full && strstr(astrid_error_message(full), "max_instances") && two == NULL);
    astrid_error_free(full);
    astrid_capsule_unload(one, NULL);
    astrid_runtime_free(rt);
    rt = NULL;
    CHECK_STATUS(astrid_runtime_new(NULL, &rt, err), ASTRID_OK);
    CHECK(astrid_runtime_set_log_callback(NULL, NULL, NULL, NULL, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_runtime_set_log_callback(NULL, NULL, NULL, NULL, err), ASTRID_E_INVALID_ARGUMENT,
                "`rt` must not be NULL");
    CHECK_ERROR(astrid_runtime_set_log_callback((astrid_runtime_t *)0x1234, NULL, NULL, NULL, err), ASTRID_E_CLOSED,
                "already freed");
    CHECK_STATUS(astrid_runtime_set_secret_callback(rt, NULL, NULL, NULL, err), ASTRID_OK);
    astrid_runtime_free(rt);
    CHECK_ERROR(astrid_runtime_set_audit_callback(rt, NULL, NULL, NULL, err), ASTRID_E_CLOSED, "already freed");
    CHECK_ERROR(astrid_runtime_set_secret_callback(rt, NULL, NULL, NULL, err), ASTRID_E_CLOSED, "already freed");
    CHECK_ERROR(astrid_runtime_set_gate(rt, NULL, NULL, NULL, err), ASTRID_E_CLOSED, "already freed");
    CHECK_ERROR(astrid_runtime_set_accept_verifier(rt, NULL, NULL, NULL, err), ASTRID_E_CLOSED, "already freed");
    CHECK_ERROR(astrid_runtime_set_kv(rt, NULL, NULL, NULL, err), ASTRID_E_CLOSED, "already freed");
    CHECK_ERROR(astrid_runtime_mount_vfs(rt, "tmp", ASTRID_NTS, NULL, NULL, NULL, err), ASTRID_E_CLOSED,
                "already freed");
    astrid_runtime_free(rt); /* a second free of a dead handle is harmless */
}

static void test_load_arguments(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_capsule_t *c = NULL;
    const char *dir = path_of("hello");
    CHECK_STATUS(astrid_capsule_load(NULL, dir, ASTRID_NTS, NULL, &c, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_load(rt, NULL, 0, NULL, &c, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_load(rt, dir, ASTRID_NTS, NULL, NULL, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_load(rt, "\xc3\x28", 2, NULL, &c, err), ASTRID_E_UTF8);
    CHECK_STATUS(astrid_capsule_load(rt, "/nonexistent/capsule", ASTRID_NTS, NULL, &c, err), ASTRID_E_NOT_FOUND);
    CHECK_STATUS(astrid_capsule_load(rt, path_of("bad-import"), ASTRID_NTS, NULL, &c, err), ASTRID_E_LINK);
    astrid_load_options_t opts;
    CHECK_ERROR(astrid_load_options_init(NULL, err), ASTRID_E_INVALID_ARGUMENT, "`opts` must not be NULL");
    CHECK_STATUS(astrid_load_options_init(&opts, err), ASTRID_OK);
    opts.size = 4;
    CHECK_STATUS(astrid_capsule_load(rt, dir, ASTRID_NTS, &opts, &c, err), ASTRID_E_INVALID_ARGUMENT);
    astrid_load_options_init(&opts, NULL);
    opts.principal = "\xff";
    opts.principal_len = 1;
    CHECK_STATUS(astrid_capsule_load(rt, dir, ASTRID_NTS, &opts, &c, err), ASTRID_E_UTF8);
    astrid_load_options_init(&opts, NULL);
    opts.config_len = 3; /* NULL array with a length */
    CHECK_STATUS(astrid_capsule_load(rt, dir, ASTRID_NTS, &opts, &c, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK(c == NULL);

    const char *manifest = "[package]\nname = \"b\"\nversion = \"1.0.0\"\n";
    const uint8_t garbage[] = "definitely not wasm";
    CHECK_STATUS(astrid_capsule_load_bytes(rt, NULL, 5, manifest, ASTRID_NTS, NULL, &c, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_load_bytes(rt, NULL, 0, manifest, ASTRID_NTS, NULL, &c, err), ASTRID_E_COMPILE);
    CHECK_STATUS(astrid_capsule_load_bytes(rt, garbage, sizeof garbage, manifest, ASTRID_NTS, NULL, &c, err),
                 ASTRID_E_COMPILE);
    CHECK_STATUS(astrid_capsule_load_bytes(rt, garbage, sizeof garbage, NULL, 0, NULL, &c, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_load_bytes(rt, garbage, sizeof garbage, "[package]\nname=\"\xff\"", ASTRID_NTS, NULL, &c, err),
                 ASTRID_E_UTF8);
    CHECK_STATUS(astrid_capsule_load_bytes(rt, garbage, sizeof garbage, "[package", ASTRID_NTS, NULL, &c, err),
                 ASTRID_E_MANIFEST);
    CHECK(c == NULL);
    astrid_runtime_free(rt);
}

static void test_call_arguments_and_results(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_capsule_t *hello = load(rt, "hello");
    astrid_result_t *r = NULL;
    const uint8_t payload[] = "{\"name\":\"C tests\"}";
    CHECK_STATUS(astrid_capsule_call(NULL, "greet", ASTRID_NTS, payload, sizeof payload - 1, &r, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_call(hello, NULL, 0, payload, sizeof payload - 1, &r, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_call(hello, "greet", ASTRID_NTS, payload, sizeof payload - 1, NULL, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_capsule_call(hello, "gr\xff" "et", 5, payload, 3, &r, err), ASTRID_E_UTF8);
    CHECK_STATUS(astrid_capsule_call(hello, "greet", ASTRID_NTS, NULL, 7, &r, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK(r == NULL);
    astrid_call_options_t copts;
    CHECK_ERROR(astrid_call_options_init(NULL, err), ASTRID_E_INVALID_ARGUMENT, "`opts` must not be NULL");
    CHECK_STATUS(astrid_call_options_init(&copts, err), ASTRID_OK);
    copts.size = 1;
    CHECK_STATUS(astrid_capsule_call_with(hello, &copts, "noop", ASTRID_NTS, NULL, 0, &r, err), ASTRID_E_INVALID_ARGUMENT);

    /* Longer than a wasm32 guest can address: refused before the buffer is
     * read (it is inaccessible; reading it would crash the test). */
    size_t huge = (size_t)ASTRID_MAX_GUEST_BYTES + 1;
    void *big = mmap(NULL, huge, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (big != MAP_FAILED) {
        astrid_error_t *e = NULL;
        CHECK(astrid_capsule_call(hello, "greet", ASTRID_NTS, big, huge, &r, &e) == ASTRID_E_INVALID_ARGUMENT);
        CHECK(e && strstr(astrid_error_message(e), "payload") && strstr(astrid_error_message(e), "4294967295 bytes"));
        astrid_error_free(e);
        CHECK_STATUS(astrid_capsule_call(hello, big, huge, NULL, 0, &r, err), ASTRID_E_INVALID_ARGUMENT);
        CHECK(r == NULL);
        munmap(big, huge);
    } else {
        fprintf(stderr, "note: no room to map a 4 GiB PROT_NONE region; huge-payload check skipped\n");
    }

    /* Errors are optional: NULL err still returns the status. */
    CHECK(astrid_capsule_call(hello, NULL, 0, NULL, 0, &r, NULL) == ASTRID_E_INVALID_ARGUMENT);

    CHECK_STATUS(astrid_capsule_call(hello, "noop", ASTRID_NTS, NULL, 0, &r, err), ASTRID_OK);
    size_t len = 99;
    CHECK(strcmp(astrid_result_action(r, &len), "continue") == 0 && len == 8);
    CHECK(!astrid_result_data(r, NULL, NULL));
    astrid_result_free(r);
    r = NULL;

    astrid_call_options_init(&copts, NULL);
    copts.principal = "dora";
    copts.principal_len = ASTRID_NTS;
    CHECK_STATUS(astrid_capsule_call_with(hello, &copts, "greet", ASTRID_NTS, payload, sizeof payload - 1, &r, err),
                 ASTRID_OK);
    const char *data = NULL;
    CHECK(astrid_result_data(r, &data, &len));
    CHECK(data && strstr(data, "\"Hello, C tests!\"") && strstr(data, "\"principal\":\"dora\"") && strlen(data) == len);
    CHECK(strcmp(astrid_result_action(r, NULL), "final") == 0);

    /* Freed results lend their allocation to the next call on the thread:
       results held at once stay distinct, and a recycled one carries only
       its own call's texts. */
    astrid_result_t *noop = NULL, *again = NULL;
    CHECK_STATUS(astrid_capsule_call(hello, "noop", ASTRID_NTS, NULL, 0, &noop, err), ASTRID_OK);
    CHECK(noop != r);
    CHECK(astrid_result_data(r, &data, &len) && strstr(data, "\"principal\":\"dora\""));
    astrid_result_free(r);
    CHECK_STATUS(astrid_capsule_call(hello, "noop", ASTRID_NTS, NULL, 0, &again, err), ASTRID_OK);
    CHECK(again != noop);
    CHECK(strcmp(astrid_result_action(again, NULL), "continue") == 0 && !astrid_result_data(again, NULL, NULL));
    CHECK(strcmp(astrid_result_action(noop, NULL), "continue") == 0);
    astrid_result_free(noop);
    astrid_result_free(again);

    size_t name_len = 0;
    CHECK(strcmp(astrid_capsule_name(hello, &name_len), "hello") == 0 && name_len == 5);
    CHECK(strlen(astrid_capsule_id(hello, NULL)) == 36);
    CHECK(astrid_capsule_name(NULL, NULL) == NULL);
    CHECK(!astrid_capsule_has_capability(hello, "net", ASTRID_NTS));

    /* After unload the handle is dead, never dereferenced. */
    CHECK_STATUS(astrid_capsule_cancel(hello, err), ASTRID_OK);
    CHECK_STATUS(astrid_capsule_unload(hello, err), ASTRID_OK);
    CHECK_STATUS(astrid_capsule_call(hello, "noop", ASTRID_NTS, NULL, 0, &r, err), ASTRID_E_CLOSED);
    CHECK_ERROR(astrid_capsule_unload(hello, err), ASTRID_E_CLOSED, "already unloaded");
    CHECK(astrid_capsule_unload(hello, NULL) == ASTRID_E_CLOSED); /* err stays optional */
    CHECK_ERROR(astrid_capsule_cancel(hello, err), ASTRID_E_CLOSED, "capsule");
    CHECK(astrid_capsule_cancel(hello, NULL) == ASTRID_E_CLOSED);
    CHECK_ERROR(astrid_capsule_cancel(NULL, err), ASTRID_E_INVALID_ARGUMENT, "`capsule` must not be NULL");
    CHECK(astrid_capsule_name(hello, NULL) == NULL);
    CHECK_STATUS(astrid_capsule_call((astrid_capsule_t *)0xdeadbeef, "noop", ASTRID_NTS, NULL, 0, &r, err),
                 ASTRID_E_CLOSED);
    astrid_runtime_free(rt);
}

static void test_after_runtime_free(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_capsule_t *hello = load(rt, "hello");
    astrid_runtime_free(rt);
    CHECK_STATUS(call(hello, "noop", err), ASTRID_E_CLOSED);
    CHECK_ERROR(astrid_capsule_cancel(hello, err), ASTRID_E_CLOSED, "unloaded");
    CHECK(astrid_capsule_name(hello, NULL) == NULL);
    astrid_capsule_t *c = NULL;
    CHECK_STATUS(astrid_capsule_load(rt, path_of("hello"), ASTRID_NTS, NULL, &c, err), ASTRID_E_CLOSED);
    CHECK_STATUS(astrid_capsule_unload(hello, err), ASTRID_OK);
}

struct log_state {
    atomic_int lines;
    atomic_int finalized;
    atomic_int reentrant;
    astrid_capsule_t *target; /* called from inside the callback */
    _Atomic uint64_t last_call_id;
    atomic_int id_mismatches; /* lines whose call_id is not astrid_callback_call_id() */
};

static void count_log(void *user_data, const astrid_log_record_t *rec) {
    struct log_state *st = user_data;
    CHECK(rec->size >= sizeof *rec && rec->capsule_len > 0);
    atomic_fetch_add(&st->lines, 1);
    atomic_store(&st->last_call_id, rec->call_id);
    if (rec->call_id == 0 || rec->call_id != astrid_callback_call_id()) atomic_fetch_add(&st->id_mismatches, 1);
    if (st->target) {
        astrid_error_t *e = NULL;
        if (call(st->target, "noop", &e) == ASTRID_E_REENTRANT) atomic_fetch_add(&st->reentrant, 1);
        astrid_error_free(e);
    }
}

static void finalize(void *user_data) {
    struct log_state *st = user_data;
    atomic_fetch_add(&st->finalized, 1);
}

struct audit_state {
    atomic_int events;
    atomic_int config_calls;
    atomic_int without_call_id;
};

static void count_audit(void *user_data, const astrid_audit_event_t *ev) {
    struct audit_state *st = user_data;
    atomic_fetch_add(&st->events, 1);
    if (ev->size < sizeof *ev || ev->call_id == 0) atomic_fetch_add(&st->without_call_id, 1);
    if (ev->call_len == strlen("sys.get-config") && memcmp(ev->call, "sys.get-config", ev->call_len) == 0 &&
        ev->outcome == ASTRID_AUDIT_ALLOWED)
        atomic_fetch_add(&st->config_calls, 1);
}

static void test_callbacks(void) {
    static struct log_state first, second;
    static struct audit_state audit;
    astrid_runtime_t *rt = new_runtime(5000);
    CHECK_STATUS(astrid_runtime_set_log_callback(rt, count_log, &first, finalize, err), ASTRID_OK);
    CHECK_STATUS(astrid_runtime_set_audit_callback(rt, count_audit, &audit, NULL, err), ASTRID_OK);
    astrid_capsule_t *hello = load(rt, "hello");
    astrid_error_t *e = NULL;
    CHECK(call(hello, "greet", &e) == ASTRID_OK);
    CHECK(atomic_load(&first.lines) == 2);
    /* Replacing the callback runs the old finalizer exactly once. */
    CHECK_STATUS(astrid_runtime_set_log_callback(rt, count_log, &second, finalize, err), ASTRID_OK);
    CHECK(atomic_load(&first.finalized) == 1);
    second.target = hello;
    CHECK(call(hello, "greet", &e) == ASTRID_OK);
    CHECK(atomic_load(&second.lines) == 2 && atomic_load(&second.reentrant) == 2);
    second.target = NULL;
    /* The result's call id is the one its log lines carried. */
    astrid_result_t *r = NULL;
    CHECK_STATUS(astrid_capsule_call(hello, "greet", ASTRID_NTS, NULL, 0, &r, err), ASTRID_OK);
    uint64_t id = astrid_result_call_id(r);
    CHECK(id != 0 && atomic_load(&second.last_call_id) == id);
    astrid_result_free(r);
    CHECK_STATUS(astrid_capsule_call(hello, "greet", ASTRID_NTS, NULL, 0, &r, err), ASTRID_OK);
    CHECK(astrid_result_call_id(r) != id && atomic_load(&second.last_call_id) == astrid_result_call_id(r));
    astrid_result_free(r);
    CHECK(atomic_load(&first.id_mismatches) == 0 && atomic_load(&second.id_mismatches) == 0);
    CHECK(astrid_callback_call_id() == 0); /* outside any call */
    CHECK(astrid_result_call_id(NULL) == 0 && astrid_error_call_id(NULL) == 0);
    astrid_capsule_unload(hello, NULL);
    astrid_runtime_free(rt);
    CHECK(atomic_load(&second.finalized) == 1 && atomic_load(&first.finalized) == 1);
    CHECK(atomic_load(&audit.config_calls) == 4);
    CHECK(atomic_load(&audit.events) >= 16 && atomic_load(&audit.without_call_id) == 0);
}

/* A log callback that holds the call it runs in until released. */
struct held_log {
    atomic_int entered;
    atomic_int release;
};

static void hold_log(void *user_data, const astrid_log_record_t *rec) {
    (void)rec;
    struct held_log *h = user_data;
    atomic_fetch_add(&h->entered, 1);
    while (!atomic_load(&h->release)) usleep(1000);
}

static void *greet_once(void *arg) {
    astrid_error_t *e = NULL;
    call(arg, "greet", &e);
    astrid_error_free(e);
    return NULL;
}

/* A call that outlives the unload grace keeps the handle's memory alive;
 * it must not keep the handle usable, on this thread or any other. */
static void test_unload_with_call_in_flight(void) {
    static struct held_log held;
    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, NULL);
    cfg.unload_grace_ms = 100;
    astrid_runtime_t *rt = NULL;
    CHECK(astrid_runtime_new(&cfg, &rt, NULL) == ASTRID_OK);
    CHECK_STATUS(astrid_runtime_set_log_callback(rt, hold_log, &held, NULL, err), ASTRID_OK);
    astrid_capsule_t *hello = load(rt, "hello");
    /* This thread uses the handle first (the per-thread cache keeps it). */
    CHECK(astrid_capsule_name(hello, NULL) != NULL);
    pthread_t t;
    pthread_create(&t, NULL, greet_once, hello);
    while (!atomic_load(&held.entered)) usleep(1000);
    CHECK_STATUS(astrid_capsule_unload(hello, err), ASTRID_OK); /* returns after the grace */
    size_t len = 99;
    CHECK(astrid_capsule_name(hello, &len) == NULL && len == 99);
    CHECK(astrid_capsule_id(hello, NULL) == NULL);
    CHECK_STATUS(astrid_capsule_cancel(hello, err), ASTRID_E_CLOSED);
    CHECK(!astrid_capsule_runs_loop(hello));
    CHECK(!astrid_capsule_has_capability(hello, "net", ASTRID_NTS));
    CHECK_STATUS(call(hello, "noop", err), ASTRID_E_CLOSED);
    CHECK_STATUS(astrid_capsule_wait_ready(hello, 0, err), ASTRID_E_CLOSED);
    CHECK_STATUS(astrid_capsule_unload(hello, err), ASTRID_E_CLOSED);
    atomic_store(&held.release, 1);
    pthread_join(t, NULL);
    CHECK(astrid_capsule_name(hello, NULL) == NULL);
    astrid_runtime_free(rt);
}

/* ---- callback request handles: accessors, and the thread rule ---- */

/* What another thread got when it used a request handle it was given. */
struct off_thread {
    void *request;
    int kind; /* 0 gate, 1 accept, 2 secret */
    astrid_status_t info, set;
    int messages_ok; /* both error objects came back, with the right code and a message */
};

static void *use_request_off_thread(void *arg) {
    struct off_thread *o = arg;
    astrid_error_t *e1 = NULL, *e2 = NULL;
    if (o->kind == 0) {
        astrid_gate_request_info_t info = {.size = sizeof info};
        o->info = astrid_gate_request_info(o->request, &info, &e1);
        o->set = astrid_gate_request_set_reason(o->request, "from elsewhere", ASTRID_NTS, &e2);
    } else if (o->kind == 1) {
        astrid_accept_request_info_t info = {.size = sizeof info};
        o->info = astrid_accept_request_info(o->request, &info, &e1);
        o->set = astrid_accept_request_set_principal(o->request, "mallory", ASTRID_NTS, &e2);
    } else {
        astrid_secret_request_info_t info = {.size = sizeof info};
        o->info = astrid_secret_request_info(o->request, &info, &e1);
        o->set = astrid_secret_request_set_value(o->request, "stolen", ASTRID_NTS, &e2);
    }
    o->messages_ok = e1 && e2 && astrid_error_code(e1) == o->info && astrid_error_code(e2) == o->set &&
                     strstr(astrid_error_message(e1), "not a live request on this thread") &&
                     strstr(astrid_error_message(e2), "not a live request on this thread");
    astrid_error_free(e1);
    astrid_error_free(e2);
    return NULL;
}

/* Hands `request` to a new thread, which uses it while this callback runs. */
static void try_off_thread(void *request, int kind, struct off_thread *out) {
    out->request = request;
    out->kind = kind;
    pthread_t t;
    pthread_create(&t, NULL, use_request_off_thread, out);
    pthread_join(t, NULL);
}

static int secret_calls;
static struct off_thread secret_off_thread;
static astrid_secret_request_t *stale_secret_request;
static int secret_info_ok;

static astrid_status_t provide_secret(void *user_data, astrid_secret_request_t *req) {
    (void)user_data;
    secret_calls++;
    astrid_secret_request_info_t info = {.size = sizeof info};
    if (astrid_secret_request_info(req, &info, NULL) != ASTRID_OK) return ASTRID_E_INTERNAL;
    secret_info_ok = info.size == sizeof info && info.capsule_len == 5 && memcmp(info.capsule, "probe", 5) == 0 &&
                     info.capsule_id_len == 36;
    try_off_thread(req, 2, &secret_off_thread);
    stale_secret_request = req;
    if (info.key_len == 5 && memcmp(info.key, "TOKEN", 5) == 0)
        return astrid_secret_request_set_value(req, "c-secret", ASTRID_NTS, NULL);
    return ASTRID_E_NOT_FOUND;
}

static void test_secrets(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    CHECK(astrid_secret_request_set_value(NULL, "x", 1, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_secret_request_set_value(NULL, "x", 1, err), ASTRID_E_INVALID_ARGUMENT,
                "`request` must not be NULL");
    /* Never a request: refused without being read. */
    CHECK_ERROR(astrid_secret_request_set_value((astrid_secret_request_t *)(uintptr_t)0x7770, "x", 1, err),
                ASTRID_E_CLOSED, "not a live request");
    CHECK_STATUS(astrid_runtime_set_secret_callback(rt, provide_secret, NULL, NULL, err), ASTRID_OK);
    astrid_config_entry_t required = {"REQUIRED", ASTRID_NTS, "yes", ASTRID_NTS};
    astrid_load_options_t opts;
    astrid_load_options_init(&opts, NULL);
    opts.config = &required;
    opts.config_len = 1;
    astrid_capsule_t *probe = NULL;
    CHECK_STATUS(astrid_capsule_load(rt, path_of("probe"), ASTRID_NTS, &opts, &probe, err), ASTRID_OK);
    astrid_result_t *r = NULL;
    CHECK_STATUS(astrid_capsule_call(probe, "config:TOKEN", ASTRID_NTS, NULL, 0, &r, err), ASTRID_OK);
    const char *data = NULL;
    CHECK(astrid_result_data(r, &data, NULL) && strcmp(data, "some:c-secret") == 0);
    CHECK(secret_calls == 1 && secret_info_ok);
    /* Another thread was refused while the callback ran; the value it tried
     * to set did not reach the guest (above: "c-secret", not "stolen"). */
    CHECK(secret_off_thread.info == ASTRID_E_CLOSED && secret_off_thread.set == ASTRID_E_CLOSED);
    CHECK(secret_off_thread.messages_ok);
    /* After the callback returned, the handle is dead on every thread. */
    astrid_secret_request_info_t late = {.size = sizeof late};
    CHECK_ERROR(astrid_secret_request_info(stale_secret_request, &late, err), ASTRID_E_CLOSED, "not a live request");
    CHECK_ERROR(astrid_secret_request_set_value(stale_secret_request, "late", ASTRID_NTS, err), ASTRID_E_CLOSED,
                "not a live request");
    CHECK(late.capsule == NULL); /* nothing written on failure */
    astrid_result_free(r);
    CHECK_STATUS(astrid_runtime_set_secret_callback(rt, NULL, NULL, NULL, err), ASTRID_OK);
    CHECK_STATUS(astrid_capsule_call(probe, "config:TOKEN", ASTRID_NTS, NULL, 0, &r, err), ASTRID_OK);
    CHECK(astrid_result_data(r, &data, NULL) && strcmp(data, "none") == 0);
    astrid_result_free(r);
    astrid_capsule_unload(probe, NULL);
    astrid_runtime_free(rt);
}

struct canceller {
    astrid_capsule_t *capsule;
    int delay_ms;
};

static void *cancel_later(void *arg) {
    struct canceller *c = arg;
    usleep(c->delay_ms * 1000);
    astrid_capsule_cancel(c->capsule, NULL);
    return NULL;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

struct fire_later {
    astrid_cancel_t *cancel;
    int delay_ms;
    astrid_status_t status; /* checked by the main thread after the join */
};

static void *fire_later(void *arg) {
    struct fire_later *f = arg;
    usleep((useconds_t)f->delay_ms * 1000);
    f->status = astrid_cancel_fire(f->cancel, NULL);
    return NULL;
}

/* A call with its own deadline, timed. */
struct timed_call {
    astrid_capsule_t *capsule;
    const char *action;
    uint64_t timeout_ms;
    astrid_status_t status;
    double took_s;
};

static void *run_timed_call(void *arg) {
    struct timed_call *c = arg;
    astrid_call_options_t o;
    astrid_call_options_init(&o, NULL);
    o.timeout_ms = c->timeout_ms;
    astrid_result_t *r = NULL;
    double t0 = now_s();
    c->status = astrid_capsule_call_with(c->capsule, &o, c->action, ASTRID_NTS, NULL, 0, &r, NULL);
    c->took_s = now_s() - t0;
    astrid_result_free(r);
    return NULL;
}

static astrid_status_t call_with(astrid_capsule_t *capsule, const astrid_call_options_t *o, const char *action,
                                 astrid_error_t **e) {
    astrid_result_t *r = NULL;
    astrid_status_t s = astrid_capsule_call_with(capsule, o, action, ASTRID_NTS, NULL, 0, &r, e);
    astrid_result_free(r);
    return s;
}

static void test_call_control(void) {
    astrid_runtime_t *rt = new_runtime(20000);
    astrid_capsule_t *hostile = load(rt, "hostile");
    astrid_cancel_t *cancel = NULL;
    CHECK_ERROR(astrid_cancel_new(NULL, err), ASTRID_E_INVALID_ARGUMENT, "`out` must not be NULL");
    CHECK_STATUS(astrid_cancel_new(&cancel, err), ASTRID_OK);
    CHECK(cancel != NULL && !astrid_cancel_is_fired(cancel));
    astrid_call_options_t o;
    CHECK_STATUS(astrid_call_options_init(&o, err), ASTRID_OK);
    CHECK(o.size == sizeof o && o.timeout_ms == 0 && o.fuel == 0 && o.cancel == NULL);

    /* The token ends its own call; a concurrent call on the same capsule
     * runs on to its own deadline. */
    o.cancel = cancel;
    struct timed_call other = {hostile, "sleep", 1500, ASTRID_OK, 0};
    struct fire_later f = {cancel, 200, ASTRID_E_INTERNAL};
    pthread_t other_thread, firer;
    pthread_create(&other_thread, NULL, run_timed_call, &other);
    pthread_create(&firer, NULL, fire_later, &f);
    double t0 = now_s();
    CHECK_ERROR(call_with(hostile, &o, "loop", err), ASTRID_E_CANCELLED, "cancelled");
    CHECK(now_s() - t0 < 1.0);
    pthread_join(firer, NULL);
    CHECK(f.status == ASTRID_OK);
    pthread_join(other_thread, NULL);
    CHECK(other.took_s >= 1.4 && other.status != ASTRID_E_CANCELLED);
    CHECK(astrid_cancel_is_fired(cancel));
    CHECK_STATUS(astrid_cancel_fire(cancel, err), ASTRID_OK); /* idempotent */

    /* Started with a fired token: the guest does not run, and the call
     * never had an id. A call that ran and failed has one. */
    astrid_error_t *failure = NULL;
    CHECK(call_with(hostile, &o, "ok", &failure) == ASTRID_E_CANCELLED && astrid_error_call_id(failure) == 0);
    astrid_error_free(failure);
    failure = NULL;
    CHECK(call(hostile, "trap", &failure) == ASTRID_E_TRAP && astrid_error_call_id(failure) != 0);
    astrid_error_free(failure);
    CHECK_ERROR(call_with(hostile, &o, "ok", err), ASTRID_E_CANCELLED, "before it started");
    CHECK_STATUS(call(hostile, "ok", err), ASTRID_OK);

    /* A struct of the first published size (before timeout_ms): what
     * follows it is not read, whatever it holds. */
    o.size = offsetof(astrid_call_options_t, timeout_ms);
    o.timeout_ms = 1;
    CHECK_STATUS(call_with(hostile, &o, "ok", err), ASTRID_OK);
    o.size = offsetof(astrid_call_options_t, timeout_ms) - 1;
    CHECK_ERROR(call_with(hostile, &o, "ok", err), ASTRID_E_INVALID_ARGUMENT, "smaller than any version");
    /* Between two versions a size would cut a field in half: refused. */
    o.size = offsetof(astrid_call_options_t, cancel) + 4;
    CHECK_ERROR(call_with(hostile, &o, "ok", err), ASTRID_E_INVALID_ARGUMENT, "not the size of any version");

    /* A deadline shorter than the capsule's. */
    astrid_call_options_init(&o, NULL);
    o.timeout_ms = 200;
    t0 = now_s();
    CHECK_ERROR(call_with(hostile, &o, "loop", err), ASTRID_E_TIMEOUT, "200 ms");
    CHECK(now_s() - t0 < 0.7);
    /* Fuel for one call. */
    o.timeout_ms = 0;
    o.fuel = 2000000;
    CHECK_ERROR(call_with(hostile, &o, "loop", err), ASTRID_E_OUT_OF_FUEL, "2000000 units");
    CHECK_STATUS(call(hostile, "ok", err), ASTRID_OK);

    /* After free: refused, never undefined. */
    astrid_cancel_free(cancel);
    CHECK_ERROR(astrid_cancel_fire(cancel, err), ASTRID_E_CLOSED, "already freed");
    CHECK(!astrid_cancel_is_fired(cancel));
    astrid_call_options_init(&o, NULL);
    o.cancel = cancel;
    CHECK_ERROR(call_with(hostile, &o, "ok", err), ASTRID_E_CLOSED, "opts.cancel");
    astrid_cancel_free(cancel);
    astrid_cancel_free(NULL);
    CHECK_ERROR(astrid_cancel_fire(NULL, err), ASTRID_E_INVALID_ARGUMENT, "must not be NULL");
    CHECK(!astrid_cancel_is_fired(NULL));
    astrid_capsule_unload(hostile, NULL);
    astrid_runtime_free(rt);
}

static void test_stats(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_capsule_t *hello = load(rt, "hello");
    CHECK_STATUS(call(hello, "greet", err), ASTRID_OK);
    CHECK_STATUS(call(hello, "greet", err), ASTRID_OK);
    astrid_capsule_stats_t s;
    memset(&s, 0, sizeof s);
    s.size = sizeof s;
    CHECK_STATUS(astrid_capsule_stats(hello, &s, err), ASTRID_OK);
    CHECK(s.size == sizeof s && s.usage.calls[ASTRID_CALLS_OK] == 2 && s.usage.calls[ASTRID_CALLS_TRAP] == 0);
    CHECK(s.usage.fuel_consumed > 0 && s.usage.host_calls[ASTRID_IFACE_SYS] >= 4);
    CHECK(s.usage.host_calls[ASTRID_IFACE_FS] == 0 && s.usage.host_ns[ASTRID_IFACE_SYS] > 0);
    CHECK(s.instances_live >= 1 && s.instances_idle == s.instances_live && s.memory_peak_bytes > 0);
    CHECK(s.kv_bytes == 0);
    s.size = 8;
    CHECK_ERROR(astrid_capsule_stats(hello, &s, err), ASTRID_E_INVALID_ARGUMENT, "size");
    CHECK_ERROR(astrid_capsule_stats(hello, NULL, err), ASTRID_E_INVALID_ARGUMENT, "`out` must not be NULL");
    astrid_runtime_stats_t r;
    memset(&r, 0, sizeof r);
    r.size = sizeof r;
    CHECK_STATUS(astrid_runtime_stats(rt, &r, err), ASTRID_OK);
    CHECK(r.capsules_loaded == 1 && r.usage.calls[ASTRID_CALLS_OK] == 2 && r.instances_live >= 1);
    char *text = NULL;
    size_t len = 0;
    CHECK_STATUS(astrid_runtime_metrics_text(rt, &text, &len, err), ASTRID_OK);
    CHECK(text && strlen(text) == len);
    CHECK(text && strstr(text, "astrid_capsule_calls_total{capsule=\"hello\",capsule_id=\"") != NULL);
    CHECK(text && strstr(text, "astrid_runtime_capsules_loaded 1\n") != NULL);
    astrid_text_free(text);
    astrid_text_free(NULL);
    CHECK_ERROR(astrid_runtime_metrics_text(rt, NULL, NULL, err), ASTRID_E_INVALID_ARGUMENT, "`text`");
    astrid_capsule_unload(hello, NULL);
    s.size = sizeof s;
    CHECK_STATUS(astrid_capsule_stats(hello, &s, err), ASTRID_E_CLOSED);
    /* The unloaded capsule's calls stay in the runtime's totals. */
    CHECK_STATUS(astrid_runtime_stats(rt, &r, err), ASTRID_OK);
    CHECK(r.capsules_loaded == 0 && r.usage.calls[ASTRID_CALLS_OK] == 2);
    astrid_runtime_free(rt);
    CHECK_STATUS(astrid_runtime_stats(rt, &r, err), ASTRID_E_CLOSED);
}

static void test_hostile_guests(void) {
    astrid_runtime_t *rt = new_runtime(400);
    astrid_capsule_t *hostile = load(rt, "hostile");
    double t0 = now_s();
    CHECK_STATUS(call(hostile, "loop", err), ASTRID_E_TIMEOUT);
    CHECK(now_s() - t0 < 3.0);
    CHECK_STATUS(call(hostile, "ok", err), ASTRID_OK);
    CHECK_STATUS(call(hostile, "membomb", err), ASTRID_E_RESOURCE_LIMIT);
    CHECK_STATUS(call(hostile, "trap", err), ASTRID_E_TRAP);
    CHECK_STATUS(call(hostile, "panic", err), ASTRID_E_TRAP);
    CHECK_STATUS(call(hostile, "ok", err), ASTRID_OK);
    astrid_capsule_unload(hostile, NULL);
    astrid_runtime_free(rt);

    rt = new_runtime(20000);
    hostile = load(rt, "hostile");
    pthread_t t;
    struct canceller c = {hostile, 200};
    pthread_create(&t, NULL, cancel_later, &c);
    t0 = now_s();
    CHECK_STATUS(call(hostile, "loop", err), ASTRID_E_CANCELLED);
    CHECK(now_s() - t0 < 5.0);
    pthread_join(t, NULL);
    CHECK_STATUS(call(hostile, "ok", err), ASTRID_OK); /* the cancel did not leak */
    astrid_capsule_unload(hostile, NULL);
    astrid_runtime_free(rt);
}

static atomic_int concurrent_ok;

static void *call_many(void *arg) {
    astrid_capsule_t *hello = arg;
    for (int i = 0; i < 20; i++) {
        astrid_result_t *r = NULL;
        const uint8_t payload[] = "{\"name\":\"thread\"}";
        if (astrid_capsule_call(hello, "greet", ASTRID_NTS, payload, sizeof payload - 1, &r, NULL) == ASTRID_OK) {
            const char *data = NULL;
            if (astrid_result_data(r, &data, NULL) && strstr(data, "Hello, thread!")) atomic_fetch_add(&concurrent_ok, 1);
        }
        astrid_result_free(r);
    }
    return NULL;
}

static void test_eight_threads(void) {
    astrid_runtime_t *rt = new_runtime(10000);
    astrid_capsule_t *hello = load(rt, "hello");
    pthread_t threads[8];
    for (int i = 0; i < 8; i++) pthread_create(&threads[i], NULL, call_many, hello);
    for (int i = 0; i < 8; i++) pthread_join(threads[i], NULL);
    CHECK(atomic_load(&concurrent_ok) == 160);
    astrid_capsule_unload(hello, NULL);
    astrid_runtime_free(rt);
}


/* ---- the gate over C: garbage verdicts, deferred tickets, argument errors,
 *      the request handle and its thread rule ---- */

static astrid_verdict_t gate_answer;
static astrid_gate_ticket_t *_Atomic pending_ticket;
static atomic_int gate_calls;
static int gate_info_ok;            /* the first request read as expected */
static struct off_thread gate_off_thread;
static astrid_gate_request_t *stale_gate_request;
static astrid_status_t gate_small_info; /* info with a too-small size */

static astrid_verdict_t test_gate(void *user_data, astrid_gate_request_t *req) {
    (void)user_data;
    if (atomic_fetch_add(&gate_calls, 1) == 0) {
        /* The first question: read it, and let another thread try it. */
        astrid_gate_request_info_t info;
        memset(&info, 0, sizeof info);
        info.size = sizeof info;
        gate_info_ok = astrid_gate_request_info(req, &info, NULL) == ASTRID_OK && info.size == sizeof info &&
                       info.kind == ASTRID_GATE_FILE_WRITE && info.capsule_len == 7 &&
                       memcmp(info.capsule, "fsprobe", 7) == 0 && info.path_len == strlen("cwd://ws") &&
                       memcmp(info.path, "cwd://ws", info.path_len) == 0 && info.url == NULL && info.port == 0;
        astrid_gate_request_info_t small = {.size = 8};
        astrid_error_t *e = NULL;
        gate_small_info = astrid_gate_request_info(req, &small, &e);
        if (!e || !strstr(astrid_error_message(e), "size")) gate_small_info = 1;
        astrid_error_free(e);
        try_off_thread(req, 0, &gate_off_thread);
        stale_gate_request = req;
    }
    if (gate_answer == ASTRID_PENDING) {
        astrid_gate_ticket_t *ticket = NULL;
        if (astrid_gate_request_defer(req, &ticket, NULL) != ASTRID_OK) return ASTRID_DENY;
        pending_ticket = ticket;
    }
    return gate_answer;
}

static void *resolve_later(void *arg) {
    astrid_verdict_t verdict = *(astrid_verdict_t *)arg;
    while (!pending_ticket) usleep(1000);
    astrid_gate_ticket_t *ticket = pending_ticket;
    pending_ticket = NULL;
    astrid_gate_ticket_resolve(ticket, verdict, "decided later", ASTRID_NTS, NULL);
    return NULL;
}

/* The fsprobe answer: "ok" or the error case. */
static int fs_write(astrid_capsule_t *capsule, char *out, size_t cap) {
    astrid_result_t *r = NULL;
    const char *payload = "ws\nx";
    if (astrid_capsule_call(capsule, "write-file", ASTRID_NTS, (const uint8_t *)payload, strlen(payload), &r,
                            NULL) != ASTRID_OK)
        return -1;
    const char *data = NULL;
    size_t len = 0;
    astrid_result_data(r, &data, &len);
    snprintf(out, cap, "%.*s", (int)len, data);
    astrid_result_free(r);
    return 0;
}

static void test_gate_over_c(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    CHECK(astrid_runtime_set_gate(NULL, test_gate, NULL, NULL, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_runtime_set_gate(NULL, test_gate, NULL, NULL, err), ASTRID_E_INVALID_ARGUMENT,
                "`rt` must not be NULL");
    CHECK_STATUS(astrid_runtime_set_gate(rt, test_gate, NULL, NULL, err), ASTRID_OK);
    astrid_capsule_t *fsprobe = load(rt, "fsprobe");
    char out[64];
    gate_answer = ASTRID_ALLOW;
    CHECK(fs_write(fsprobe, out, sizeof out) == 0 && strcmp(out, "ok") == 0);
    /* The request read right on its own thread, and nowhere else. */
    CHECK(gate_info_ok);
    CHECK(gate_small_info == ASTRID_E_INVALID_ARGUMENT);
    CHECK(gate_off_thread.info == ASTRID_E_CLOSED && gate_off_thread.set == ASTRID_E_CLOSED);
    CHECK(gate_off_thread.messages_ok);
    astrid_gate_request_info_t late = {.size = sizeof late};
    CHECK_ERROR(astrid_gate_request_info(stale_gate_request, &late, err), ASTRID_E_CLOSED, "not a live request");
    CHECK(late.size == sizeof late && late.capsule == NULL); /* nothing written on failure */
    CHECK_ERROR(astrid_gate_request_set_reason(stale_gate_request, "late", ASTRID_NTS, err), ASTRID_E_CLOSED,
                "not a live request");
    astrid_gate_ticket_t *never = NULL;
    CHECK_ERROR(astrid_gate_request_defer(stale_gate_request, &never, err), ASTRID_E_CLOSED, "not a live request");
    CHECK(never == NULL);
    gate_answer = ASTRID_DENY;
    CHECK(fs_write(fsprobe, out, sizeof out) == 0 && strcmp(out, "capability-denied") == 0);
    gate_answer = 77; /* not a verdict: a denial */
    CHECK(fs_write(fsprobe, out, sizeof out) == 0 && strcmp(out, "capability-denied") == 0);
    astrid_verdict_t verdicts[2] = {ASTRID_ALLOW, ASTRID_DENY};
    const char *expected[2] = {"ok", "capability-denied"};
    for (int i = 0; i < 2; i++) {
        gate_answer = ASTRID_PENDING;
        pthread_t t;
        pthread_create(&t, NULL, resolve_later, &verdicts[i]);
        CHECK(fs_write(fsprobe, out, sizeof out) == 0 && strcmp(out, expected[i]) == 0);
        pthread_join(t, NULL);
    }
    /* A resolved ticket is gone: resolving it again is a clear error. */
    astrid_gate_ticket_t *stale = NULL;
    gate_answer = ASTRID_PENDING;
    pthread_t t;
    astrid_verdict_t allow = ASTRID_ALLOW;
    pthread_create(&t, NULL, resolve_later, &allow);
    CHECK(fs_write(fsprobe, out, sizeof out) == 0 && strcmp(out, "ok") == 0);
    pthread_join(t, NULL);
    CHECK(astrid_gate_ticket_resolve(stale, ASTRID_ALLOW, NULL, 0, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_gate_ticket_resolve(stale, ASTRID_ALLOW, NULL, 0, err), ASTRID_E_INVALID_ARGUMENT,
                "`ticket` must not be NULL");
    CHECK_ERROR(astrid_gate_ticket_resolve((astrid_gate_ticket_t *)(uintptr_t)0x12340, ASTRID_ALLOW, NULL, 0, err),
                ASTRID_E_CLOSED, "already resolved or freed");
    astrid_gate_ticket_free(NULL);
    CHECK(astrid_gate_request_set_reason(NULL, "x", 1, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_gate_request_set_reason(NULL, "x", 1, err), ASTRID_E_INVALID_ARGUMENT,
                "`request` must not be NULL");
    CHECK_ERROR(astrid_gate_request_info(NULL, &late, err), ASTRID_E_INVALID_ARGUMENT, "`request` must not be NULL");
    /* Mount arguments. */
    astrid_vfs_ops_t ops;
    memset(&ops, 0, sizeof ops);
    ops.size = sizeof ops;
    CHECK_ERROR(astrid_runtime_mount_vfs(rt, "nope", ASTRID_NTS, &ops, NULL, NULL, err), ASTRID_E_INVALID_ARGUMENT,
                "unknown mount `nope`");
    ops.size = 8;
    CHECK_ERROR(astrid_runtime_mount_vfs(rt, "cwd", ASTRID_NTS, &ops, NULL, NULL, err), ASTRID_E_INVALID_ARGUMENT,
                "`ops.size` is 8");
    CHECK_STATUS(astrid_runtime_mount_vfs(rt, "\xff", 1, NULL, NULL, NULL, err), ASTRID_E_UTF8);
    CHECK(astrid_runtime_mount_vfs(rt, "\xff", 1, NULL, NULL, NULL, NULL) == ASTRID_E_UTF8);
    CHECK_STATUS(astrid_runtime_mount_vfs(rt, "tmp", ASTRID_NTS, NULL, NULL, NULL, err), ASTRID_OK);
    astrid_capsule_unload(fsprobe, NULL);
    astrid_runtime_free(rt);
}


static void count_finalize(void *user_data) { atomic_fetch_add((atomic_int *)user_data, 1); }

/* Per-capsule policy at load: a provider per mount (finalized once the
 * capsule is gone, never after a failed load) and network flags. */
static void test_load_policy(void) {
    static atomic_int finalized;
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_vfs_ops_t ops;
    memset(&ops, 0, sizeof ops); /* every operation "not supported" */
    ops.size = sizeof ops;
    astrid_load_options_t o;
    astrid_load_options_init(&o, NULL);
    CHECK(o.net_flags == 0 && o.cwd.ops == NULL && o.home.ops == NULL && o.tmp.ops == NULL);
    o.cwd.ops = &ops;
    o.cwd.user_data = &finalized;
    o.cwd.finalizer = count_finalize;
    astrid_capsule_t *c = NULL;
    /* Refused loads leave user_data with the caller. */
    o.net_flags = ASTRID_RUNTIME_INLINE_CALLBACKS;
    CHECK_ERROR(astrid_capsule_load(rt, path_of("fsprobe"), ASTRID_NTS, &o, &c, err), ASTRID_E_INVALID_ARGUMENT,
                "net_flags");
    o.net_flags = 0;
    o.workspace_root = "/tmp";
    o.workspace_root_len = ASTRID_NTS;
    CHECK_ERROR(astrid_capsule_load(rt, path_of("fsprobe"), ASTRID_NTS, &o, &c, err), ASTRID_E_INVALID_ARGUMENT,
                "cwd");
    o.workspace_root = NULL;
    o.workspace_root_len = 0;
    CHECK_STATUS(astrid_capsule_load(rt, path_of("nope-no-such"), ASTRID_NTS, &o, &c, err), ASTRID_E_NOT_FOUND);
    ops.size = 8;
    o.home = o.cwd; /* a bad table refuses the load before any provider exists */
    CHECK_ERROR(astrid_capsule_load(rt, path_of("fsprobe"), ASTRID_NTS, &o, &c, err), ASTRID_E_INVALID_ARGUMENT,
                "ops.size");
    ops.size = sizeof ops;
    o.home.ops = NULL;
    CHECK(atomic_load(&finalized) == 0 && c == NULL);
    /* Loaded: the capsule's cwd is the provider (which supports nothing). */
    CHECK_STATUS(astrid_capsule_load(rt, path_of("fsprobe"), ASTRID_NTS, &o, &c, err), ASTRID_OK);
    astrid_result_t *r = NULL;
    const char *args = "ws/a.txt";
    CHECK_STATUS(astrid_capsule_call(c, "read-file", ASTRID_NTS, (const uint8_t *)args, strlen(args), &r, err),
                 ASTRID_OK);
    CHECK(r && strcmp(astrid_result_action(r, NULL), "err") == 0);
    astrid_result_free(r);
    CHECK(atomic_load(&finalized) == 0);
    CHECK_STATUS(astrid_capsule_unload(c, err), ASTRID_OK);
    astrid_runtime_free(rt);
    CHECK(atomic_load(&finalized) == 1);
}

/* ---- host side of the IPC bus ---- */

struct bus_state {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int received;
    int in_order;             /* every payload was the expected counter */
    uint64_t last_sequence;
    uint64_t lagged, dropped;
    int verified, system;
    int finalized;
    int hold_first;           /* the first callback waits until released */
    int released;
    int in_callback;          /* a callback is running now */
    int slow_ms;              /* each callback sleeps this long */
    int published;            /* publishes made from inside the callback */
    char source_id[64];
    astrid_runtime_t *rt;     /* publish from inside the callback */
    astrid_subscription_t *self; /* freed from inside its own callback */
};

static void bus_state_init(struct bus_state *st) {
    memset(st, 0, sizeof *st);
    pthread_mutex_init(&st->lock, NULL);
    pthread_cond_init(&st->changed, NULL);
    st->in_order = 1;
}

static void on_message(void *user_data, const astrid_message_t *msg) {
    struct bus_state *st = user_data;
    pthread_mutex_lock(&st->lock);
    st->in_callback = 1;
    int first = st->received == 0;
    if (st->hold_first && first)
        while (!st->released) pthread_cond_wait(&st->changed, &st->lock);
    if (msg->sequence <= st->last_sequence) st->in_order = 0;
    st->last_sequence = msg->sequence;
    char payload[32] = {0};
    memcpy(payload, msg->payload, msg->payload_len < 31 ? msg->payload_len : 31);
    if (!st->hold_first && atoi(payload) != st->received) st->in_order = 0;
    st->lagged += msg->lagged;
    st->dropped += msg->dropped;
    if (msg->attribution == ASTRID_ATTRIBUTION_VERIFIED && msg->principal_len == 5 &&
        memcmp(msg->principal, "alice", 5) == 0)
        st->verified++;
    if (msg->attribution == ASTRID_ATTRIBUTION_SYSTEM && msg->principal == NULL) st->system++;
    if (msg->source_id_len < sizeof st->source_id) {
        memcpy(st->source_id, msg->source_id, msg->source_id_len);
        st->source_id[msg->source_id_len] = 0;
    }
    pthread_mutex_unlock(&st->lock);
    if (st->slow_ms) usleep((useconds_t)st->slow_ms * 1000);
    if (st->rt) {
        astrid_runtime_free(st->rt); /* refused: returns without effect */
        astrid_error_t *e = NULL;
        if (astrid_ipc_publish(st->rt, "echo.back", ASTRID_NTS, "true", 4, &e) == ASTRID_OK) st->published++;
        astrid_error_free(e);
    }
    if (st->self) astrid_subscription_free(st->self);
    pthread_mutex_lock(&st->lock);
    st->received++;
    st->in_callback = 0;
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
}

static void on_bus_finalize(void *user_data) {
    struct bus_state *st = user_data;
    pthread_mutex_lock(&st->lock);
    st->finalized++;
    pthread_cond_broadcast(&st->changed);
    pthread_mutex_unlock(&st->lock);
}

/* Waits (up to 5 s) until `count` messages were received. */
static int wait_received(struct bus_state *st, int count) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    pthread_mutex_lock(&st->lock);
    while (st->received < count)
        if (pthread_cond_timedwait(&st->changed, &st->lock, &until) != 0) break;
    int ok = st->received >= count;
    pthread_mutex_unlock(&st->lock);
    return ok;
}

static void test_ipc_arguments(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_subscription_t *sub = NULL;
    static struct bus_state st;
    bus_state_init(&st);
    CHECK_STATUS(astrid_ipc_publish(NULL, "a", 1, "{}", 2, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish(rt, "a.*", ASTRID_NTS, "{}", 2, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish(rt, "a..b", ASTRID_NTS, "{}", 2, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish(rt, "a b", ASTRID_NTS, "{}", 2, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish(rt, "a", 1, "not json", ASTRID_NTS, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish(rt, "a", 1, NULL, 3, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish(rt, "\xff", 1, "{}", 2, err), ASTRID_E_UTF8);
    CHECK_STATUS(astrid_ipc_publish_as(rt, "a", 1, "{}", 2, NULL, 0, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_publish_as(rt, "a", 1, "{}", 2, "bad\nname", ASTRID_NTS, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_subscribe(rt, "a", 1, NULL, &st, on_bus_finalize, &sub, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_subscribe(rt, "a.b*", ASTRID_NTS, on_message, &st, on_bus_finalize, &sub, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_subscribe(rt, "a", 1, on_message, &st, on_bus_finalize, NULL, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_ipc_subscribe(NULL, "a", 1, on_message, &st, on_bus_finalize, &sub, err),
                 ASTRID_E_INVALID_ARGUMENT);
    /* A refused subscribe leaves user_data with the caller: no finalizer ran. */
    CHECK(st.finalized == 0 && sub == NULL);
    /* Freeing NULL, and a handle that never existed, is harmless. */
    astrid_subscription_free(NULL);
    astrid_subscription_free((astrid_subscription_t *)(uintptr_t)0x40);
    CHECK_STATUS(astrid_ipc_subscribe(rt, "a.*", ASTRID_NTS, on_message, &st, on_bus_finalize, &sub, err),
                 ASTRID_OK);
    CHECK_STATUS(astrid_ipc_publish(rt, "a.b", ASTRID_NTS, "0", 1, err), ASTRID_OK);
    CHECK(wait_received(&st, 1));
    /* Runtime free stops the subscription and runs its finalizer; the
     * handle stays safe to free afterwards, twice even. */
    astrid_runtime_free(rt);
    CHECK(st.finalized == 1);
    CHECK_STATUS(astrid_ipc_publish(rt, "a.b", ASTRID_NTS, "0", 1, err), ASTRID_E_CLOSED);
    CHECK_STATUS(astrid_ipc_subscribe(rt, "a", 1, on_message, &st, NULL, &sub, err), ASTRID_E_CLOSED);
    astrid_subscription_free(sub);
    astrid_subscription_free(sub);
    CHECK(st.finalized == 1);
}

static atomic_int runtime_freed;

static void *free_runtime(void *arg) {
    astrid_runtime_free(arg);
    atomic_store(&runtime_freed, 1);
    return NULL;
}

/* Polls (up to `seconds`) until `*flag == value` under `lock`. */
static int wait_flag(pthread_mutex_t *lock, const int *flag, int value, int seconds) {
    double until = now_s() + seconds;
    for (;;) {
        pthread_mutex_lock(lock);
        int ok = *flag == value;
        pthread_mutex_unlock(lock);
        if (ok || now_s() > until) return ok;
        usleep(2000);
    }
}

/* A subscription callback that never returns on its own cannot hold
 * astrid_runtime_free longer than the unload grace; its finalizer runs
 * once, later, when the callback returns. */
static void test_runtime_free_with_blocked_subscriber(void) {
    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, NULL);
    cfg.unload_grace_ms = 200;
    astrid_runtime_t *rt = NULL;
    CHECK(astrid_runtime_new(&cfg, &rt, NULL) == ASTRID_OK);
    static struct bus_state st;
    bus_state_init(&st);
    st.hold_first = 1;
    astrid_subscription_t *sub = NULL;
    CHECK_STATUS(astrid_ipc_subscribe(rt, "held", ASTRID_NTS, on_message, &st, on_bus_finalize, &sub, err),
                 ASTRID_OK);
    CHECK_STATUS(astrid_ipc_publish(rt, "held", ASTRID_NTS, "0", 1, err), ASTRID_OK);
    CHECK(wait_flag(&st.lock, &st.in_callback, 1, 5));

    /* Freed on another thread so that a free that never returns fails the
     * check instead of hanging the suite. */
    double t0 = now_s();
    pthread_t t;
    pthread_create(&t, NULL, free_runtime, rt);
    while (now_s() - t0 < 3.0 && !atomic_load(&runtime_freed)) usleep(5000);
    double took = now_s() - t0;
    CHECK(atomic_load(&runtime_freed) && took >= 0.15);
    pthread_mutex_lock(&st.lock);
    CHECK(st.finalized == 0 && st.in_callback == 1); /* the callback still runs */
    st.released = 1;
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
    pthread_join(t, NULL);
    CHECK(wait_flag(&st.lock, &st.finalized, 1, 5));
    astrid_subscription_free(sub); /* delivery already ended: returns at once */
    usleep(50 * 1000);
    CHECK(st.finalized == 1 && st.received == 1);
}

static void test_ipc_delivery(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    static struct bus_state ordered, other;
    bus_state_init(&ordered);
    bus_state_init(&other);
    astrid_subscription_t *sub = NULL, *other_sub = NULL;
    astrid_error_t *e = NULL;
    CHECK(astrid_ipc_subscribe(rt, "t.*", ASTRID_NTS, on_message, &ordered, on_bus_finalize, &sub, &e) ==
          ASTRID_OK);
    CHECK(astrid_ipc_subscribe(rt, "u", ASTRID_NTS, on_message, &other, on_bus_finalize, &other_sub, &e) ==
          ASTRID_OK);
    char payload[16];
    for (int i = 0; i < 300; i++) {
        snprintf(payload, sizeof payload, "%d", i);
        CHECK(astrid_ipc_publish(rt, i % 2 ? "t.odd" : "t.even.deep", ASTRID_NTS, payload, ASTRID_NTS, &e) ==
              ASTRID_OK);
    }
    CHECK(astrid_ipc_publish_as(rt, "t.who", ASTRID_NTS, "300", 3, "alice", 5, &e) == ASTRID_OK);
    CHECK(wait_received(&ordered, 301));
    CHECK(ordered.in_order && ordered.lagged == 0 && ordered.dropped == 0);
    CHECK(ordered.system == 300 && ordered.verified == 1);
    CHECK(strlen(ordered.source_id) == 36); /* the embedder's UUID */
    CHECK(other.received == 0);

    /* free waits for the callback that is running, then runs the finalizer. */
    other.slow_ms = 200;
    CHECK(astrid_ipc_publish(rt, "u", 1, "0", 1, &e) == ASTRID_OK);
    CHECK(wait_flag(&other.lock, &other.in_callback, 1, 5));
    astrid_subscription_free(other_sub);
    CHECK(other.received == 1 && other.in_callback == 0 && other.finalized == 1);

    /* A callback may publish; blocking calls from it are refused. */
    static struct bus_state echo, back;
    bus_state_init(&echo);
    bus_state_init(&back);
    echo.rt = rt;
    astrid_subscription_t *echo_sub = NULL, *back_sub = NULL;
    CHECK(astrid_ipc_subscribe(rt, "echo.back", ASTRID_NTS, on_message, &back, on_bus_finalize, &back_sub, &e) ==
          ASTRID_OK);
    CHECK(astrid_ipc_subscribe(rt, "echo", ASTRID_NTS, on_message, &echo, on_bus_finalize, &echo_sub, &e) ==
          ASTRID_OK);
    CHECK(astrid_ipc_publish(rt, "echo", ASTRID_NTS, "0", 1, &e) == ASTRID_OK);
    /* echo counts its publish before it counts the message it received. */
    CHECK(wait_received(&back, 1) && wait_received(&echo, 1) && echo.published == 1);
    CHECK(astrid_ipc_publish(rt, "echo.back", ASTRID_NTS, "1", 1, &e) == ASTRID_OK); /* runtime still serves */
    CHECK(wait_received(&back, 2));
    echo.rt = NULL;

    /* Freeing a subscription from its own callback: no deadlock, one finalizer. */
    static struct bus_state selfish;
    bus_state_init(&selfish);
    astrid_subscription_t *self_sub = NULL;
    CHECK(astrid_ipc_subscribe(rt, "self", ASTRID_NTS, on_message, &selfish, on_bus_finalize, &self_sub, &e) ==
          ASTRID_OK);
    selfish.self = self_sub;
    CHECK(astrid_ipc_publish(rt, "self", ASTRID_NTS, "0", 1, &e) == ASTRID_OK);
    CHECK(astrid_ipc_publish(rt, "self", ASTRID_NTS, "1", 1, &e) == ASTRID_OK);
    CHECK(wait_received(&selfish, 1));
    CHECK(wait_flag(&selfish.lock, &selfish.finalized, 1, 5));
    CHECK(selfish.finalized == 1 && selfish.received == 1);

    astrid_subscription_free(sub);
    astrid_subscription_free(echo_sub);
    astrid_subscription_free(back_sub);
    CHECK(ordered.finalized == 1 && echo.finalized == 1 && back.finalized == 1);
    astrid_runtime_free(rt);
}

static void test_ipc_queue_limits(void) {
    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, NULL);
    CHECK(cfg.ipc_queue_messages == 1024 && cfg.ipc_queue_bytes == 4u << 20);
    cfg.ipc_queue_messages = 4;
    cfg.ipc_queue_bytes = 64;
    astrid_runtime_t *rt = NULL;
    astrid_error_t *e = NULL;
    CHECK(astrid_runtime_new(&cfg, &rt, &e) == ASTRID_OK);
    static struct bus_state st;
    bus_state_init(&st);
    st.hold_first = 1;
    astrid_subscription_t *sub = NULL;
    CHECK(astrid_ipc_subscribe(rt, "q", 1, on_message, &st, on_bus_finalize, &sub, &e) == ASTRID_OK);
    CHECK(astrid_ipc_publish(rt, "q", 1, "0", 1, &e) == ASTRID_OK);
    CHECK(wait_flag(&st.lock, &st.in_callback, 1, 5)); /* the worker holds message 0 */
    /* 10 one-byte messages into a queue of 4: the 6 oldest are evicted (lagged). */
    for (int i = 1; i <= 10; i++) CHECK(astrid_ipc_publish(rt, "q", 1, "1", 1, &e) == ASTRID_OK);
    /* A 72-byte payload does not fit the 64-byte budget: dropped. */
    CHECK(astrid_ipc_publish(rt, "q", 1, "\"" "0123456789012345678901234567890123456789012345678901234567890123456789" "\"",
                             ASTRID_NTS, &e) == ASTRID_OK);
    pthread_mutex_lock(&st.lock);
    st.released = 1;
    pthread_cond_broadcast(&st.changed);
    pthread_mutex_unlock(&st.lock);
    CHECK(wait_received(&st, 5));
    usleep(50000);
    CHECK(st.received == 5 && st.lagged == 6 && st.dropped == 1);
    astrid_subscription_free(sub);
    astrid_runtime_free(rt);
}

/* ---- an embedder KV backend in C ---- */

#define CKV_MAX 64
struct ckv {
    pthread_mutex_t lock;
    int count;
    char keys[CKV_MAX][257];
    char values[CKV_MAX][64];
    size_t value_lens[CKV_MAX];
    int failing;   /* answer every call with a garbage code */
    int calls;
    int finalized;
    char last_scope[129];
    int without_call_id; /* calls whose namespace named no call, or not this thread's */
};

static int ckv_find(struct ckv *kv, const char *key, size_t len) {
    for (int i = 0; i < kv->count; i++)
        if (strlen(kv->keys[i]) == len && memcmp(kv->keys[i], key, len) == 0) return i;
    return -1;
}

static int ckv_enter(struct ckv *kv, const astrid_kv_namespace_t *ns) {
    pthread_mutex_lock(&kv->lock);
    kv->calls++;
    size_t n = ns->scope_len < 128 ? ns->scope_len : 128;
    memcpy(kv->last_scope, ns->scope, n);
    kv->last_scope[n] = 0;
    if (ns->size < sizeof *ns || ns->call_id == 0 || ns->call_id != astrid_callback_call_id()) kv->without_call_id++;
    return kv->failing;
}

static int32_t ckv_get(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t len,
                       astrid_kv_value_sink_fn sink, void *ctx) {
    struct ckv *kv = ud;
    int32_t rc = ASTRID_KV_NOT_FOUND;
    if (ckv_enter(kv, ns)) rc = 77;
    else {
        int i = ckv_find(kv, key, len);
        if (i >= 0) {
            sink(ctx, (const uint8_t *)kv->values[i], kv->value_lens[i]);
            rc = ASTRID_KV_OK;
        }
    }
    pthread_mutex_unlock(&kv->lock);
    return rc;
}

static int32_t ckv_put_locked(struct ckv *kv, const char *key, size_t len, const uint8_t *v, size_t vlen) {
    if (vlen > sizeof kv->values[0]) return ASTRID_KV_TOO_LARGE;
    int i = ckv_find(kv, key, len);
    if (i < 0) {
        if (kv->count == CKV_MAX) return ASTRID_KV_QUOTA;
        i = kv->count++;
        memcpy(kv->keys[i], key, len);
        kv->keys[i][len] = 0;
    }
    if (vlen) memcpy(kv->values[i], v, vlen);
    kv->value_lens[i] = vlen;
    return ASTRID_KV_OK;
}

static int32_t ckv_set(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t len, const uint8_t *v,
                       size_t vlen) {
    struct ckv *kv = ud;
    int32_t rc = ckv_enter(kv, ns) ? 77 : ckv_put_locked(kv, key, len, v, vlen);
    pthread_mutex_unlock(&kv->lock);
    return rc;
}

static void ckv_remove_at(struct ckv *kv, int i) {
    kv->count--;
    if (i != kv->count) {
        memcpy(kv->keys[i], kv->keys[kv->count], sizeof kv->keys[i]);
        memcpy(kv->values[i], kv->values[kv->count], sizeof kv->values[i]);
        kv->value_lens[i] = kv->value_lens[kv->count];
    }
}

static int32_t ckv_remove(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t len) {
    struct ckv *kv = ud;
    int32_t rc = ASTRID_KV_OK;
    if (ckv_enter(kv, ns)) rc = 77;
    else {
        int i = ckv_find(kv, key, len);
        if (i >= 0) ckv_remove_at(kv, i);
    }
    pthread_mutex_unlock(&kv->lock);
    return rc;
}

static int cmp_keys(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int32_t ckv_list(void *ud, const astrid_kv_namespace_t *ns, const char *prefix, size_t plen,
                        const char *after, size_t alen, uint32_t limit, astrid_kv_key_sink_fn sink, void *ctx) {
    struct ckv *kv = ud;
    if (ckv_enter(kv, ns)) {
        pthread_mutex_unlock(&kv->lock);
        return 77;
    }
    char after_key[257] = {0};
    if (after) memcpy(after_key, after, alen);
    char *found[CKV_MAX];
    int n = 0;
    for (int i = 0; i < kv->count; i++)
        if (strncmp(kv->keys[i], prefix, plen) == 0 && strlen(kv->keys[i]) >= plen &&
            (!after || strcmp(kv->keys[i], after_key) > 0))
            found[n++] = kv->keys[i];
    qsort(found, (size_t)n, sizeof found[0], cmp_keys);
    for (int i = 0; i < n && (uint32_t)i < limit; i++)
        if (sink(ctx, found[i], strlen(found[i])) != 0) break;
    pthread_mutex_unlock(&kv->lock);
    return ASTRID_KV_OK;
}

static int32_t ckv_clear(void *ud, const astrid_kv_namespace_t *ns, const char *prefix, size_t plen, uint64_t *out) {
    struct ckv *kv = ud;
    int32_t rc = ASTRID_KV_OK;
    if (ckv_enter(kv, ns)) rc = 77;
    else {
        *out = 0;
        for (int i = kv->count - 1; i >= 0; i--)
            if (strncmp(kv->keys[i], prefix, plen) == 0) {
                ckv_remove_at(kv, i);
                (*out)++;
            }
    }
    pthread_mutex_unlock(&kv->lock);
    return rc;
}

static int32_t ckv_cas(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t len, uint32_t has_expected,
                       const uint8_t *expected, size_t elen, const uint8_t *v, size_t vlen) {
    struct ckv *kv = ud;
    int32_t rc;
    if (ckv_enter(kv, ns)) rc = 77;
    else {
        int i = ckv_find(kv, key, len);
        int matches = has_expected ? (i >= 0 && kv->value_lens[i] == elen &&
                                      (elen == 0 || memcmp(kv->values[i], expected, elen) == 0))
                                   : i < 0;
        rc = matches ? ckv_put_locked(kv, key, len, v, vlen) : ASTRID_KV_CAS_MISMATCH;
    }
    pthread_mutex_unlock(&kv->lock);
    return rc;
}

static void ckv_finalize(void *ud) { ((struct ckv *)ud)->finalized++; }

/* Calls kvprobe and compares "action:data". */
static int kv_is(astrid_capsule_t *c, const char *action, const char *args, const char *expected) {
    astrid_result_t *res = NULL;
    astrid_error_t *e = NULL;
    astrid_call_options_t opts;
    astrid_call_options_init(&opts, NULL);
    opts.principal = "carol";
    opts.principal_len = ASTRID_NTS;
    if (astrid_capsule_call_with(c, &opts, action, ASTRID_NTS, (const uint8_t *)args, strlen(args), &res, &e) !=
        ASTRID_OK) {
        fprintf(stderr, "kv %s: %s\n", action, astrid_error_message(e));
        astrid_error_free(e);
        return 0;
    }
    char got[512];
    const char *data = "";
    astrid_result_data(res, &data, NULL);
    snprintf(got, sizeof got, "%s:%s", astrid_result_action(res, NULL), data);
    int same = strcmp(got, expected) == 0;
    if (!same) fprintf(stderr, "kv %s(%s): got %s, expected %s\n", action, args, got, expected);
    astrid_result_free(res);
    return same;
}

static void test_kv_backend(void) {
    static struct ckv kv;
    memset(&kv, 0, sizeof kv);
    pthread_mutex_init(&kv.lock, NULL);
    astrid_kv_ops_t ops = {
        .size = sizeof ops,
        .get = ckv_get,
        .set = ckv_set,
        .remove = ckv_remove,
        .list = ckv_list,
        .clear_prefix = ckv_clear,
        .cas = ckv_cas,
    };
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_kv_ops_t small = ops;
    small.size = 8;
    CHECK_ERROR(astrid_runtime_set_kv(rt, &small, &kv, ckv_finalize, err), ASTRID_E_INVALID_ARGUMENT,
                "`ops.size` is 8");
    CHECK(astrid_runtime_set_kv(NULL, &ops, &kv, ckv_finalize, NULL) == ASTRID_E_INVALID_ARGUMENT);
    CHECK_ERROR(astrid_runtime_set_kv(NULL, &ops, &kv, ckv_finalize, err), ASTRID_E_INVALID_ARGUMENT,
                "`rt` must not be NULL");
    CHECK(kv.finalized == 0);
    CHECK_STATUS(astrid_runtime_set_kv(rt, &ops, &kv, ckv_finalize, err), ASTRID_OK);
    astrid_capsule_t *c = load(rt, "kvprobe");
    CHECK(kv_is(c, "get", "k", "ok:none"));
    CHECK(kv_is(c, "set", "k\nvalue", "ok:ok"));
    CHECK(kv_is(c, "get", "k", "ok:some:value"));
    CHECK(strcmp(kv.last_scope, "carol") == 0);
    CHECK(kv_is(c, "set", "b\n1", "ok:ok"));
    CHECK(kv_is(c, "set", "a\n1", "ok:ok"));
    CHECK(kv_is(c, "list", "", "ok:a,b,k"));
    CHECK(kv_is(c, "page", "\n-\n2", "ok:a,b|b"));
    CHECK(kv_is(c, "cas", "k\nvalue\nnext", "ok:ok"));
    CHECK(kv_is(c, "cas", "k\nvalue\nagain", "err:cas-mismatch"));
    CHECK(kv_is(c, "set-size", "big\n65", "err:too-large"));
    CHECK(kv_is(c, "clear", "", "ok:3"));
    CHECK(kv_is(c, "fill", "q\n64", "ok:ok"));
    CHECK(kv_is(c, "set", "one-more\nx", "err:quota"));
    kv.failing = 1;
    CHECK(kv_is(c, "get", "k", "err:unknown(storage failed)"));
    CHECK(kv_is(c, "set", "k\nv", "err:unknown(storage failed)"));
    kv.failing = 0;
    CHECK(kv_is(c, "delete", "q0000", "ok:ok"));
    /* Every backend call named the guest call it served, on its own thread. */
    CHECK(kv.calls > 10 && kv.without_call_id == 0);
    /* Back to the built-in store: the backend is finalized once. */
    CHECK_STATUS(astrid_runtime_set_kv(rt, NULL, NULL, NULL, err), ASTRID_OK);
    CHECK(kv.finalized == 1);
    CHECK(kv_is(c, "get", "q0001", "ok:none"));
    CHECK_STATUS(astrid_runtime_set_kv(rt, &ops, &kv, ckv_finalize, err), ASTRID_OK);
    CHECK(kv_is(c, "get", "q0001", "ok:some:x"));
    astrid_capsule_unload(c, NULL);
    astrid_runtime_free(rt);
    CHECK(kv.finalized == 2);
}

/* ---- run loops over C ---- */

static void test_run_loops(void) {
    astrid_runtime_t *rt = new_runtime(5000);
    astrid_capsule_t *service = load(rt, "runloop");
    astrid_capsule_t *hello = load(rt, "hello");
    CHECK(astrid_capsule_runs_loop(service));
    CHECK(!astrid_capsule_runs_loop(hello));
    CHECK(!astrid_capsule_runs_loop(NULL));
    CHECK_STATUS(astrid_capsule_wait_ready(service, 5000, err), ASTRID_OK);
    CHECK_STATUS(astrid_capsule_wait_ready(hello, 0, err), ASTRID_OK);
    CHECK_STATUS(astrid_capsule_wait_ready(NULL, 0, err), ASTRID_E_INVALID_ARGUMENT);

    /* A loop that returns from `run` is failed, and says so. */
    astrid_config_entry_t mode = {"MODE", 4, "return", 6};
    astrid_load_options_t opts;
    astrid_load_options_init(&opts, NULL);
    opts.config = &mode;
    opts.config_len = 1;
    CHECK(opts.watchdog_ms == 0);
    astrid_capsule_t *broken = NULL;
    astrid_error_t *e = NULL;
    CHECK(astrid_capsule_load(rt, path_of("runloop"), ASTRID_NTS, &opts, &broken, &e) == ASTRID_OK);
    CHECK(astrid_capsule_wait_ready(broken, 5000, &e) == ASTRID_E_TRAP);
    CHECK(e && strstr(astrid_error_message(e), "run loop") != NULL);
    astrid_error_free(e);
    e = NULL;

    /* Unloading a loop blocked in recv returns promptly; the handle is then closed. */
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_STATUS(astrid_capsule_unload(service, err), ASTRID_OK);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    CHECK(t1.tv_sec - t0.tv_sec < 2);
    CHECK_STATUS(astrid_capsule_wait_ready(service, 0, err), ASTRID_E_CLOSED);
    astrid_capsule_unload(broken, NULL);
    astrid_capsule_unload(hello, NULL);
    astrid_runtime_free(rt);
}

/* ---- networking: accept verifier, unix socket path, grown option structs ---- */

static atomic_int verifier_calls, verifier_finalized;
static struct off_thread accept_off_thread;
static astrid_accept_request_t *stale_accept_request;
static atomic_int accept_principal_refused; /* the bad principal came back with a message */

static astrid_verdict_t verify_peer(void *user_data, astrid_accept_request_t *request) {
    (void)user_data;
    int n = atomic_fetch_add(&verifier_calls, 1);
    astrid_accept_request_info_t info = {.size = sizeof info};
    if (astrid_accept_request_info(request, &info, NULL) != ASTRID_OK) return ASTRID_DENY;
    if (info.uid != (uint32_t)getuid() || info.capsule_len != 8 || memcmp(info.capsule, "netprobe", 8) != 0)
        return ASTRID_DENY;
    if (n == 0) {
        /* The first peer is refused, after another thread tried the handle. */
        try_off_thread(request, 1, &accept_off_thread);
        stale_accept_request = request;
        return ASTRID_DENY;
    }
    /* A control character is not a principal; the verdict still stands. */
    astrid_error_t *e = NULL;
    if (astrid_accept_request_set_principal(request, "bad\n", 4, &e) != ASTRID_E_INVALID_ARGUMENT) {
        astrid_error_free(e);
        return ASTRID_DENY;
    }
    if (e && astrid_error_code(e) == ASTRID_E_INVALID_ARGUMENT) atomic_fetch_add(&accept_principal_refused, 1);
    astrid_error_free(e);
    astrid_accept_request_set_principal(request, "carol", ASTRID_NTS, NULL);
    return ASTRID_ALLOW;
}

static void verifier_done(void *user_data) {
    (void)user_data;
    atomic_fetch_add(&verifier_finalized, 1);
}

struct unix_client {
    const char *path;
    char reply[8];
    int refused_eof;
};

#include <sys/socket.h>
#include <sys/un.h>

static int unix_connect(const char *path) {
    for (int i = 0; i < 500; i++) {
        int fd = socket(AF_UNIX, SOCK_STREAM, 0);
        struct sockaddr_un addr = {.sun_family = AF_UNIX};
        strncpy(addr.sun_path, path, sizeof addr.sun_path - 1);
        if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0)
            return fd;
        close(fd);
        usleep(10000);
    }
    return -1;
}

static void *unix_clients(void *arg) {
    struct unix_client *c = arg;
    char buf[8];
    int refused = unix_connect(c->path);
    if (refused >= 0) {
        /* The runtime may close a refused peer first: no SIGPIPE for us. */
        (void)!send(refused, "x", 1, MSG_NOSIGNAL);
        c->refused_eof = read(refused, buf, sizeof buf) <= 0;
        close(refused);
    }
    int fd = unix_connect(c->path);
    if (fd >= 0) {
        (void)!send(fd, "hello", 5, MSG_NOSIGNAL);
        ssize_t n = read(fd, c->reply, sizeof c->reply - 1);
        c->reply[n > 0 ? n : 0] = 0;
        close(fd);
    }
    return NULL;
}

/* Connects, sends, hangs up at once: the guest's reply meets a closed peer. */
static void *hangup_client(void *arg) {
    struct unix_client *c = arg;
    int fd = unix_connect(c->path);
    if (fd >= 0) {
        (void)!send(fd, "hello", 5, MSG_NOSIGNAL);
        close(fd);
    }
    return NULL;
}

static void test_accept_verifier_over_c(void) {
    astrid_runtime_t *rt = new_runtime(10000);
    CHECK_ERROR(astrid_runtime_set_accept_verifier(NULL, verify_peer, NULL, verifier_done, err),
                ASTRID_E_INVALID_ARGUMENT, "`rt` must not be NULL");
    CHECK(atomic_load(&verifier_finalized) == 0); /* a failed install keeps user_data the caller's */
    CHECK_STATUS(astrid_runtime_set_accept_verifier(rt, verify_peer, NULL, verifier_done, err), ASTRID_OK);

    char path[256];
    snprintf(path, sizeof path, "/tmp/astrid-c-%d.sock", (int)getpid());
    char too_long[200];
    memset(too_long, 'x', sizeof too_long - 1);
    too_long[sizeof too_long - 1] = 0;
    CHECK_STATUS(astrid_runtime_assign_unix_socket(rt, "netprobe", ASTRID_NTS, too_long, ASTRID_NTS, err),
                 ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_runtime_assign_unix_socket(rt, NULL, 0, path, ASTRID_NTS, err), ASTRID_E_INVALID_ARGUMENT);
    CHECK_STATUS(astrid_runtime_assign_unix_socket(rt, "netprobe", ASTRID_NTS, path, ASTRID_NTS, err), ASTRID_OK);
    astrid_capsule_t *capsule = load(rt, "netprobe");

    struct unix_client client = {.path = path};
    pthread_t t;
    pthread_create(&t, NULL, unix_clients, &client);
    astrid_result_t *result = NULL;
    CHECK_STATUS(astrid_capsule_call(capsule, "unix-serve", ASTRID_NTS, (const uint8_t *)"5000", 4, &result, err),
                 ASTRID_OK);
    const char *data = NULL;
    size_t len = 0;
    CHECK(result && astrid_result_data(result, &data, &len));
    CHECK(data && len == strlen("got:hello|principal=carol|owner=none") &&
          memcmp(data, "got:hello|principal=carol|owner=none", len) == 0);
    astrid_result_free(result);
    pthread_join(t, NULL);
    CHECK(client.refused_eof);
    CHECK(strcmp(client.reply, "hi") == 0);
    CHECK(atomic_load(&verifier_calls) == 2);
    /* Another thread was refused the first request; after its callback the
     * handle is dead everywhere; the bad principal was refused with a message. */
    CHECK(accept_off_thread.info == ASTRID_E_CLOSED && accept_off_thread.set == ASTRID_E_CLOSED);
    CHECK(accept_off_thread.messages_ok);
    astrid_accept_request_info_t late = {.size = sizeof late};
    CHECK_ERROR(astrid_accept_request_info(stale_accept_request, &late, err), ASTRID_E_CLOSED,
                "not a live request");
    CHECK_ERROR(astrid_accept_request_set_principal(stale_accept_request, "carol", ASTRID_NTS, err), ASTRID_E_CLOSED,
                "not a live request");
    CHECK(atomic_load(&accept_principal_refused) == 1);
    /* A guest writing to a peer that hung up gets an error; the embedding
     * process (which does not ignore SIGPIPE) is not killed. Several times,
     * so the write lands after the hang-up at least once. */
    for (int i = 0; i < 5; i++) {
        pthread_create(&t, NULL, hangup_client, &client);
        result = NULL;
        astrid_status_t served = astrid_capsule_call(capsule, "unix-serve", ASTRID_NTS,
                                                     (const uint8_t *)"5000", 4, &result, NULL);
        CHECK(served == ASTRID_OK);
        astrid_result_free(result);
        pthread_join(t, NULL);
    }
    astrid_capsule_unload(capsule, NULL);

    /* Unassigned: bind-unix has no path to bind. */
    CHECK_STATUS(astrid_runtime_assign_unix_socket(rt, "netprobe", ASTRID_NTS, NULL, 0, err), ASTRID_OK);
    capsule = load(rt, "netprobe");
    result = NULL;
    CHECK_STATUS(astrid_capsule_call(capsule, "unix-serve", ASTRID_NTS, (const uint8_t *)"10", 2, &result, err),
                 ASTRID_OK);
    CHECK(result && astrid_result_data(result, &data, &len) && len == strlen("address-not-available"));
    astrid_result_free(result);
    astrid_capsule_unload(capsule, NULL);

    CHECK_STATUS(astrid_runtime_set_accept_verifier(rt, NULL, NULL, NULL, err), ASTRID_OK);
    CHECK(atomic_load(&verifier_finalized) == 1); /* replaced: finalized once no call uses it */
    astrid_runtime_free(rt);
    CHECK(atomic_load(&verifier_finalized) == 1);
    unlink(path);
}

int main(int argc, char **argv) {
    capsules = argc > 1 ? argv[1] : "build/capsules";
    test_versions_and_errors();
    test_runtime_arguments();
    test_load_arguments();
    test_call_arguments_and_results();
    test_after_runtime_free();
    test_callbacks();
    test_unload_with_call_in_flight();
    test_secrets();
    test_ipc_arguments();
    if (!(argc > 2 && strcmp(argv[2], "lifetime") == 0)) {
        test_hostile_guests();
        test_call_control();
        test_stats();
        test_load_policy();
        test_eight_threads();
        test_gate_over_c();
        test_ipc_delivery();
        test_runtime_free_with_blocked_subscriber();
        test_ipc_queue_limits();
        test_kv_backend();
        test_run_loops();
        test_accept_verifier_over_c();
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
