/*
 * The astrid demo: start a runtime, load the `hello` capsule directory,
 * call its `greet` action, print the result and the capsule's log lines.
 *
 *   usage: hello [CAPSULE_DIR] [NAME]   (default: build/capsules/hello, "C")
 */
#include <stdio.h>
#include <string.h>

#include "astrid.h"

static const char *level_name(astrid_log_level_t level) {
    switch (level) {
    case ASTRID_LOG_TRACE: return "trace";
    case ASTRID_LOG_DEBUG: return "debug";
    case ASTRID_LOG_INFO: return "info";
    case ASTRID_LOG_WARN: return "warn";
    default: return "error";
    }
}

/* Runs on the thread executing the guest; strings are (pointer, length). */
static void on_log(void *user_data, const astrid_log_record_t *rec) {
    FILE *out = user_data;
    fprintf(out, "  [%s] %.*s: %.*s\n", level_name(rec->level), (int)rec->capsule_len, rec->capsule,
            (int)rec->message_len, rec->message);
}

static int fail(const char *what, astrid_error_t *err) {
    fprintf(stderr, "%s failed (%d): %s\n", what, astrid_error_code(err), astrid_error_message(err));
    astrid_error_free(err);
    return 1;
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "build/capsules/hello";
    const char *name = argc > 2 ? argv[2] : "C";
    astrid_error_t *err = NULL;

    if (astrid_abi_version() != ASTRID_ABI_VERSION) {
        fprintf(stderr, "library ABI %u does not match header ABI %u\n", astrid_abi_version(), ASTRID_ABI_VERSION);
        return 1;
    }
    printf("astrid %s (ABI %u)\n", astrid_version(), astrid_abi_version());

    astrid_runtime_t *rt = NULL;
    if (astrid_runtime_new(NULL, &rt, &err) != ASTRID_OK) return fail("astrid_runtime_new", err);
    if (astrid_runtime_set_log_callback(rt, on_log, stdout, NULL, &err) != ASTRID_OK) {
        astrid_runtime_free(rt);
        return fail("astrid_runtime_set_log_callback", err);
    }

    astrid_load_options_t opts;
    astrid_load_options_init(&opts, NULL);
    opts.principal = "alice";
    opts.principal_len = ASTRID_NTS;

    astrid_capsule_t *capsule = NULL;
    if (astrid_capsule_load(rt, dir, ASTRID_NTS, &opts, &capsule, &err) != ASTRID_OK) {
        astrid_runtime_free(rt);
        return fail("astrid_capsule_load", err);
    }
    size_t name_len = 0;
    const char *capsule_name = astrid_capsule_name(capsule, &name_len);
    printf("loaded capsule %.*s (id %s)\n", (int)name_len, capsule_name, astrid_capsule_id(capsule, NULL));

    char payload[256];
    int payload_len = snprintf(payload, sizeof payload, "{\"name\":\"%s\"}", name);
    printf("calling greet with %s\n", payload);

    astrid_result_t *result = NULL;
    if (astrid_capsule_call(capsule, "greet", ASTRID_NTS, (const uint8_t *)payload, (size_t)payload_len, &result,
                            &err) != ASTRID_OK) {
        astrid_capsule_unload(capsule, NULL);
        astrid_runtime_free(rt);
        return fail("astrid_capsule_call", err);
    }
    const char *data = NULL;
    size_t data_len = 0;
    printf("result: action=%s", astrid_result_action(result, NULL));
    if (astrid_result_data(result, &data, &data_len)) printf(" data=%.*s", (int)data_len, data);
    printf("\n");

    astrid_result_free(result);
    astrid_capsule_unload(capsule, NULL);
    astrid_runtime_free(rt);
    return 0;
}
