/*
 * Native reference points for bench.py, compiled by it at run time:
 * - bench_call_loop: astrid_capsule_call + astrid_result_free n times from C,
 *   the library's own per-call time with no Python in between;
 * - bench_fill_vfs: a C VFS provider serving one 4 KiB file, the native
 *   version of bench.py's Python FileServer.
 * The astrid functions come in as pointers (taken from the library Python
 * already loaded), so this file links against nothing.
 */
#include <stdint.h>
#include <string.h>

#include "astrid.h"

typedef astrid_status_t (*call_fn)(astrid_capsule_t *, const char *, size_t, const uint8_t *, size_t,
                                   astrid_result_t **, astrid_error_t **);
typedef void (*free_fn)(astrid_result_t *);

int bench_call_loop(call_fn call, free_fn free_result, astrid_capsule_t *capsule, const uint8_t *payload,
                    size_t len, uint64_t n) {
    for (uint64_t i = 0; i < n; i++) {
        astrid_result_t *result = NULL;
        if (call(capsule, "noop", 4, payload, len, &result, NULL) != ASTRID_OK) return -1;
        free_result(result);
    }
    return 0;
}

static unsigned char file_data[4096];

static int32_t v_stat(void *ud, const char *path, size_t len, uint32_t follow, astrid_vfs_stat_t *out) {
    (void)ud, (void)path, (void)follow;
    out->kind = len == 0 ? ASTRID_VFS_KIND_DIRECTORY : ASTRID_VFS_KIND_REGULAR;
    out->size = len == 0 ? 0 : sizeof file_data;
    return ASTRID_VFS_OK;
}

static int32_t v_open(void *ud, const char *path, size_t len, uint32_t flags, uint64_t *handle) {
    (void)ud, (void)path, (void)len, (void)flags;
    *handle = 1;
    return ASTRID_VFS_OK;
}

static int32_t v_read_at(void *ud, uint64_t h, uint64_t off, uint8_t *buf, size_t len, size_t *out) {
    (void)ud, (void)h;
    size_t take = off >= sizeof file_data ? 0 : sizeof file_data - off;
    if (take > len) take = len;
    memcpy(buf, file_data + off, take);
    *out = take;
    return ASTRID_VFS_OK;
}

static int32_t v_close(void *ud, uint64_t h) {
    (void)ud, (void)h;
    return ASTRID_VFS_OK;
}

static int32_t v_fstat(void *ud, uint64_t h, astrid_vfs_stat_t *out) {
    (void)ud, (void)h;
    out->kind = ASTRID_VFS_KIND_REGULAR;
    out->size = sizeof file_data;
    return ASTRID_VFS_OK;
}

void bench_fill_vfs(astrid_vfs_ops_t *ops) {
    memset(ops, 0, sizeof *ops);
    ops->size = sizeof *ops;
    ops->stat = v_stat;
    ops->open = v_open;
    ops->read_at = v_read_at;
    ops->close = v_close;
    ops->fstat = v_fstat;
    for (size_t i = 0; i < sizeof file_data; i++) file_data[i] = (unsigned char)i;
}
