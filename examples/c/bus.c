/*
 * The embedder and two capsules exchanging messages over the bus:
 *
 *   embedder --svc.in--> runloop (a `run` loop service) --svc.out-->
 *   ipcprobe (an interceptor bound to svc.out) --out.report--> embedder
 *
 * The embedder subscribes to every hop, waits for the service to be ready,
 * publishes for a principal, and prints what each hop carried.
 *
 *   usage: bus [CAPSULES_DIR]   (default: build/capsules)
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "astrid.h"

struct inbox {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int reports;
};

static const char *attribution(uint32_t kind) {
    switch (kind) {
    case ASTRID_ATTRIBUTION_VERIFIED: return "verified";
    case ASTRID_ATTRIBUTION_CLAIMED: return "claimed";
    default: return "system";
    }
}

/* Runs on the subscription's own thread, one message at a time, in order. */
static void on_message(void *user_data, const astrid_message_t *msg) {
    struct inbox *inbox = user_data;
    pthread_mutex_lock(&inbox->lock);
    printf("  %.*s <- %.*s [%s%s%.*s%s]\n", (int)msg->topic_len, msg->topic, (int)msg->payload_len, msg->payload,
           attribution(msg->attribution), msg->principal ? "(" : "", (int)msg->principal_len,
           msg->principal ? msg->principal : "", msg->principal ? ")" : "");
    if (msg->topic_len == 10 && memcmp(msg->topic, "out.report", 10) == 0) inbox->reports++;
    pthread_cond_broadcast(&inbox->changed);
    pthread_mutex_unlock(&inbox->lock);
}

static int fail(const char *what, astrid_error_t *err) {
    fprintf(stderr, "%s failed (%d): %s\n", what, astrid_error_code(err), astrid_error_message(err));
    astrid_error_free(err);
    return 1;
}

static astrid_capsule_t *load(astrid_runtime_t *rt, const char *dir, const char *name) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    astrid_capsule_t *capsule = NULL;
    astrid_error_t *err = NULL;
    if (astrid_capsule_load(rt, path, ASTRID_NTS, NULL, &capsule, &err) != ASTRID_OK) {
        fail("astrid_capsule_load", err);
        return NULL;
    }
    printf("loaded %s%s\n", name, astrid_capsule_runs_loop(capsule) ? " (run loop)" : " (interceptor)");
    return capsule;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "build/capsules";
    astrid_error_t *err = NULL;
    astrid_runtime_t *rt = NULL;
    if (astrid_runtime_new(NULL, &rt, &err) != ASTRID_OK) return fail("astrid_runtime_new", err);

    static struct inbox inbox = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0};
    astrid_subscription_t *sub = NULL;
    if (astrid_ipc_subscribe(rt, "svc.*", ASTRID_NTS, on_message, &inbox, NULL, &sub, &err) != ASTRID_OK)
        return fail("astrid_ipc_subscribe", err);
    astrid_subscription_t *reports = NULL;
    if (astrid_ipc_subscribe(rt, "out.report", ASTRID_NTS, on_message, &inbox, NULL, &reports, &err) != ASTRID_OK)
        return fail("astrid_ipc_subscribe", err);

    astrid_capsule_t *service = load(rt, dir, "runloop");
    astrid_capsule_t *reporter = load(rt, dir, "ipcprobe");
    if (!service || !reporter) return 1;
    if (astrid_capsule_wait_ready(service, 5000, &err) != ASTRID_OK) return fail("astrid_capsule_wait_ready", err);
    printf("service ready\n");

    const char *requests[] = {"{\"order\":1}", "{\"order\":2}"};
    for (int i = 0; i < 2; i++) {
        printf("publishing svc.in %s for alice\n", requests[i]);
        if (astrid_ipc_publish_as(rt, "svc.in", ASTRID_NTS, requests[i], ASTRID_NTS, "alice", ASTRID_NTS, &err) !=
            ASTRID_OK)
            return fail("astrid_ipc_publish_as", err);
    }

    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 10;
    pthread_mutex_lock(&inbox.lock);
    while (inbox.reports < 2)
        if (pthread_cond_timedwait(&inbox.changed, &inbox.lock, &until) != 0) break;
    int reports_seen = inbox.reports;
    pthread_mutex_unlock(&inbox.lock);
    printf("%d report(s) came back\n", reports_seen);

    astrid_subscription_free(sub);
    astrid_subscription_free(reports);
    astrid_capsule_unload(reporter, NULL);
    astrid_capsule_unload(service, NULL);
    astrid_runtime_free(rt);
    return reports_seen == 2 ? 0 : 1;
}
