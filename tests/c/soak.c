/*
 * Soak: THREADS threads, each picking at random among load, call (a greeting,
 * a host-side sleep, an endless loop cut by the deadline), cancel and unload,
 * over capsule handles shared by every thread (so threads use handles that
 * others just unloaded), for SECONDS. Nothing may crash, every status must be
 * a documented one, and after a warm-up the process's resident memory and
 * thread count must stay flat to the end.
 *
 *   usage: soak CAPSULES_DIR [SECONDS=10] [THREADS=8]
 *
 * Prints one line per phase and "soak: N passed, M failed".
 */
#define _POSIX_C_SOURCE 200809L
#define _DEFAULT_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "astrid.h"

#define SLOTS 6

/* Under ThreadSanitizer (scripts/tsan.sh) the run is for races: TSan's shadow
 * memory grows with every address touched, so resident memory says nothing
 * about the library, and TSan keeps one background thread of its own. */
#ifdef __SANITIZE_THREAD__
#define UNDER_TSAN 1
#else
#define UNDER_TSAN 0
#endif

static const char *capsules;
static astrid_runtime_t *rt;
static _Atomic(astrid_capsule_t *) slots[SLOTS];
static atomic_long ops, calls_ok, closed_seen, bad_status;
static atomic_bool stop;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* VmRSS (KiB) and Threads from /proc/self/status. */
static void process_status(long *rss_kib, long *threads) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    *rss_kib = *threads = -1;
    if (!f) return;
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) *rss_kib = atol(line + 6);
        if (!strncmp(line, "Threads:", 8)) *threads = atol(line + 8);
    }
    fclose(f);
}

static int documented(astrid_status_t s) {
    return s == ASTRID_OK || (s <= ASTRID_E_INVALID_ARGUMENT && s >= ASTRID_E_INTERNAL && s != ASTRID_E_PANIC);
}

static void note(astrid_status_t s, astrid_error_t *e, const char *what) {
    if (!documented(s) || (s != ASTRID_OK && e && astrid_error_code(e) != s)) {
        atomic_fetch_add(&bad_status, 1);
        fprintf(stderr, "soak: %s gave status %d (%s)\n", what, (int)s,
                e ? astrid_error_message(e) : "no error object");
    }
    if (s == ASTRID_E_CLOSED) atomic_fetch_add(&closed_seen, 1);
    astrid_error_free(e);
}

/* Unload and cancel through note(), with their error objects. */
static void unload_noted(astrid_capsule_t *cap, const char *what) {
    astrid_error_t *e = NULL;
    astrid_status_t s = astrid_capsule_unload(cap, &e);
    note(s, e, what);
}

static void cancel_noted(astrid_capsule_t *cap) {
    astrid_error_t *e = NULL;
    astrid_status_t s = astrid_capsule_cancel(cap, &e);
    note(s, e, "cancel");
}

static void do_load(unsigned *seed) {
    static const char *names[] = {"hello", "probe", "hostile"};
    const char *name = names[rand_r(seed) % 3];
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", capsules, name);
    astrid_load_options_t opts;
    astrid_load_options_init(&opts, NULL);
    static const astrid_config_entry_t required = {"REQUIRED", 8, "given", 5};
    opts.config = &required;
    opts.config_len = 1;
    astrid_capsule_t *cap = NULL;
    astrid_error_t *e = NULL;
    astrid_status_t s = astrid_capsule_load(rt, dir, ASTRID_NTS, &opts, &cap, &e);
    note(s, e, "load");
    if (s != ASTRID_OK) return;
    astrid_capsule_t *old = atomic_exchange(&slots[rand_r(seed) % SLOTS], cap);
    if (old) unload_noted(old, "unload (replaced)");
}

static void do_call(unsigned *seed) {
    astrid_capsule_t *cap = atomic_load(&slots[rand_r(seed) % SLOTS]);
    if (!cap) return;
    static const struct { const char *action, *payload; } calls[] = {
        {"greet", "{\"name\":\"soak\"}"}, {"sleep", "20000000"}, {"loop", ""}, {"anything", ""}};
    int pick = rand_r(seed) % 4;
    astrid_result_t *r = NULL;
    astrid_error_t *e = NULL;
    astrid_status_t s = astrid_capsule_call(cap, calls[pick].action, ASTRID_NTS,
                                            (const uint8_t *)calls[pick].payload,
                                            strlen(calls[pick].payload), &r, &e);
    note(s, e, "call");
    if (s == ASTRID_OK) {
        atomic_fetch_add(&calls_ok, 1);
        size_t len = 0;
        const char *data = NULL;
        astrid_result_data(r, &data, &len); /* touch what we were handed */
        if (data && strlen(data) != len) atomic_fetch_add(&bad_status, 1);
        astrid_result_free(r);
    }
}

static void *worker(void *arg) {
    unsigned seed = (unsigned)(uintptr_t)arg * 7919u + 17u;
    while (!atomic_load(&stop)) {
        int op = rand_r(&seed) % 16;
        if (op < 2) {
            do_load(&seed);
        } else if (op < 12) {
            do_call(&seed);
        } else if (op < 14) {
            astrid_capsule_t *cap = atomic_load(&slots[rand_r(&seed) % SLOTS]);
            if (cap) cancel_noted(cap);
        } else if (op < 15) {
            astrid_capsule_t *cap = atomic_exchange(&slots[rand_r(&seed) % SLOTS], NULL);
            if (cap) unload_noted(cap, "unload");
        } else {
            /* a handle value that was never issued */
            astrid_capsule_t *forged = (astrid_capsule_t *)(uintptr_t)(0x5000000u + rand_r(&seed));
            astrid_error_t *fe = NULL;
            astrid_status_t s = astrid_capsule_cancel(forged, &fe);
            if (s != ASTRID_E_CLOSED || astrid_error_code(fe) != ASTRID_E_CLOSED) atomic_fetch_add(&bad_status, 1);
            astrid_error_free(fe);
        }
        atomic_fetch_add(&ops, 1);
    }
    return NULL;
}

static void run_phase(int threads, double seconds) {
    pthread_t tids[64];
    atomic_store(&stop, false);
    for (int i = 0; i < threads; i++) pthread_create(&tids[i], NULL, worker, (void *)(uintptr_t)(i + 1));
    double end = now() + seconds;
    while (now() < end) usleep(50 * 1000);
    atomic_store(&stop, true);
    for (int i = 0; i < threads; i++) pthread_join(tids[i], NULL);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: soak CAPSULES_DIR [SECONDS] [THREADS]\n");
        return 2;
    }
    capsules = argv[1];
    double seconds = argc > 2 ? atof(argv[2]) : 10;
    int threads = argc > 3 ? atoi(argv[3]) : 8;
    if (threads < 1 || threads > 64) threads = 8;

    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, NULL);
    cfg.timeout_ms = 200;
    cfg.unload_grace_ms = 500;
    astrid_error_t *e = NULL;
    if (astrid_runtime_new(&cfg, &rt, &e) != ASTRID_OK) {
        fprintf(stderr, "runtime: %s\n", astrid_error_message(e));
        return 1;
    }
    /* Warm-up: a quarter of the time (at least 2 s) fills pools and caches. */
    double warm = seconds / 4 < 2 ? 2 : seconds / 4;
    run_phase(threads, warm);
    long rss_warm, threads_warm;
    process_status(&rss_warm, &threads_warm);
    long ops_warm = atomic_load(&ops);
    printf("soak: warm-up %.0f s, %ld ops, RSS %ld KiB, %ld threads\n", warm, ops_warm, rss_warm,
           threads_warm);
    run_phase(threads, seconds);
    for (int i = 0; i < SLOTS; i++) {
        astrid_capsule_t *cap = atomic_exchange(&slots[i], NULL);
        if (cap) unload_noted(cap, "unload (end)");
    }
    long rss_end, threads_end;
    process_status(&rss_end, &threads_end);
    long total = atomic_load(&ops);
    printf("soak: %.0f s x %d threads, %ld ops (%ld calls ok, %ld closed handles met), RSS %ld KiB, "
           "%ld threads\n",
           seconds, threads, total - ops_warm, atomic_load(&calls_ok), atomic_load(&closed_seen), rss_end,
           threads_end);
    int passed = 0, failed = 0;
#define VERDICT(cond, what)                                                                        \
    do {                                                                                           \
        if (cond) passed++;                                                                        \
        else {                                                                                     \
            failed++;                                                                              \
            fprintf(stderr, "soak FAIL: %s\n", what);                                              \
        }                                                                                          \
    } while (0)
    VERDICT(atomic_load(&bad_status) == 0, "every status was a documented one");
    VERDICT(total - ops_warm > 100, "the soak made progress");
    /* Flat: memory within 25% + 48 MiB of the warm level (allocator noise,
     * compiled-code cache), threads within the callback pool's growth. */
    VERDICT(UNDER_TSAN || rss_end <= rss_warm + rss_warm / 4 + 48 * 1024, "resident memory stayed flat");
    VERDICT(threads_end <= threads_warm + 4, "thread count stayed flat");
    astrid_runtime_free(rt);
    long rss_freed, threads_freed;
    process_status(&rss_freed, &threads_freed);
    printf("soak: after astrid_runtime_free: RSS %ld KiB, %ld threads\n", rss_freed, threads_freed);
    /* What may remain is process-wide, not the runtime's: the parallel
     * compiler's worker pool (one thread per core). */
    VERDICT(threads_freed <= 1 + UNDER_TSAN + sysconf(_SC_NPROCESSORS_ONLN), "runtime_free stopped its threads");
    printf("soak: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
