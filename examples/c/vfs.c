/*
 * An embedder that supplies the filesystem a capsule sees and decides what
 * it may change: the workspace (`cwd`) mount is served from this program's
 * own in-memory files through astrid_vfs_ops_t callbacks, and the gate logs
 * every request and refuses writes outside `cwd://ws/public`.
 *
 *   usage: vfs [CAPSULE_DIR]   (default: build/capsules/fsprobe)
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "astrid.h"

/* ---- a tiny in-memory filesystem: a flat table of files and directories ---- */

#define MAX_NODES 64
#define MAX_HANDLES 32

typedef struct {
    char path[256]; /* mount-relative, as astrid hands it over */
    int is_dir;
    unsigned char *data;
    size_t len;
} node_t;

typedef struct {
    pthread_mutex_t lock; /* callbacks may run concurrently */
    node_t nodes[MAX_NODES];
    int handles[MAX_HANDLES]; /* handle - 1 -> node index, -1 = free */
} memfs_t;

static int find(memfs_t *fs, const char *path, size_t len) {
    if (len == 0) return -2; /* the root directory */
    for (int i = 0; i < MAX_NODES; i++)
        if (fs->nodes[i].path[0] && strlen(fs->nodes[i].path) == len && !memcmp(fs->nodes[i].path, path, len))
            return i;
    return -1;
}

/* The parent of `path` must exist and be a directory. */
static int parent_ok(memfs_t *fs, const char *path, size_t len) {
    size_t cut = len;
    while (cut > 0 && path[cut - 1] != '/') cut--;
    if (cut == 0) return 1; /* a child of the root */
    int p = find(fs, path, cut - 1);
    return p >= 0 && fs->nodes[p].is_dir;
}

static int add(memfs_t *fs, const char *path, size_t len, int is_dir) {
    if (len >= sizeof fs->nodes[0].path) return -1;
    for (int i = 0; i < MAX_NODES; i++) {
        if (!fs->nodes[i].path[0]) {
            memcpy(fs->nodes[i].path, path, len);
            fs->nodes[i].path[len] = 0;
            fs->nodes[i].is_dir = is_dir;
            return i;
        }
    }
    return -1;
}

static astrid_vfs_status_t fs_stat(void *ud, const char *path, size_t len, uint32_t follow, astrid_vfs_stat_t *out) {
    (void)follow; /* no symlinks here */
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    int i = find(fs, path, len);
    astrid_vfs_status_t rc = ASTRID_VFS_OK;
    if (i == -1) rc = ASTRID_VFS_NOT_FOUND;
    else if (i == -2) out->kind = ASTRID_VFS_KIND_DIRECTORY;
    else {
        out->kind = fs->nodes[i].is_dir ? ASTRID_VFS_KIND_DIRECTORY : ASTRID_VFS_KIND_REGULAR;
        out->size = fs->nodes[i].len;
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static astrid_vfs_status_t fs_open(void *ud, const char *path, size_t len, astrid_vfs_open_flags_t flags, uint64_t *out_handle) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    astrid_vfs_status_t rc = ASTRID_VFS_OK;
    int i = find(fs, path, len);
    if (i == -2 || (i >= 0 && fs->nodes[i].is_dir)) rc = ASTRID_VFS_IS_DIRECTORY;
    else if (i == -1 && !(flags & ASTRID_VFS_OPEN_CREATE)) rc = ASTRID_VFS_NOT_FOUND;
    else if (i == -1 && !parent_ok(fs, path, len)) rc = ASTRID_VFS_NOT_FOUND;
    else if (i == -1 && (i = add(fs, path, len, 0)) < 0) rc = ASTRID_VFS_QUOTA;
    if (rc == ASTRID_VFS_OK && (flags & ASTRID_VFS_OPEN_TRUNCATE)) fs->nodes[i].len = 0;
    if (rc == ASTRID_VFS_OK) {
        rc = ASTRID_VFS_QUOTA;
        for (int h = 0; h < MAX_HANDLES; h++) {
            if (fs->handles[h] < 0) {
                fs->handles[h] = i;
                *out_handle = (uint64_t)h + 1;
                rc = ASTRID_VFS_OK;
                break;
            }
        }
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static node_t *by_handle(memfs_t *fs, uint64_t h) {
    if (h == 0 || h > MAX_HANDLES || fs->handles[h - 1] < 0) return NULL;
    return &fs->nodes[fs->handles[h - 1]];
}

static astrid_vfs_status_t fs_read_at(void *ud, uint64_t h, uint64_t off, uint8_t *buf, size_t len, size_t *out_read) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    node_t *n = by_handle(fs, h);
    astrid_vfs_status_t rc = n ? ASTRID_VFS_OK : ASTRID_VFS_CLOSED;
    *out_read = 0;
    if (n && off < n->len) {
        size_t take = n->len - off < len ? n->len - off : len;
        memcpy(buf, n->data + off, take);
        *out_read = take;
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static astrid_vfs_status_t fs_write_at(void *ud, uint64_t h, uint64_t off, const uint8_t *data, size_t len, size_t *out_written) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    node_t *n = by_handle(fs, h);
    astrid_vfs_status_t rc = n ? ASTRID_VFS_OK : ASTRID_VFS_CLOSED;
    if (n && off + len > n->len) {
        unsigned char *grown = realloc(n->data, off + len);
        if (!grown) rc = ASTRID_VFS_QUOTA;
        else {
            if (off > n->len) memset(grown + n->len, 0, off - n->len);
            n->data = grown;
            n->len = off + len;
        }
    }
    if (rc == ASTRID_VFS_OK) {
        memcpy(n->data + off, data, len);
        *out_written = len;
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static astrid_vfs_status_t fs_close(void *ud, uint64_t h) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    if (h >= 1 && h <= MAX_HANDLES) fs->handles[h - 1] = -1;
    pthread_mutex_unlock(&fs->lock);
    return ASTRID_VFS_OK;
}

static astrid_vfs_status_t fs_fstat(void *ud, uint64_t h, astrid_vfs_stat_t *out) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    node_t *n = by_handle(fs, h);
    if (n) {
        out->kind = ASTRID_VFS_KIND_REGULAR;
        out->size = n->len;
    }
    pthread_mutex_unlock(&fs->lock);
    return n ? ASTRID_VFS_OK : ASTRID_VFS_CLOSED;
}

static astrid_vfs_status_t fs_read_dir(void *ud, const char *path, size_t len, astrid_vfs_dir_sink_fn sink, void *ctx) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    int d = find(fs, path, len);
    astrid_vfs_status_t rc = d == -1 ? ASTRID_VFS_NOT_FOUND : (d >= 0 && !fs->nodes[d].is_dir) ? ASTRID_VFS_NOT_DIRECTORY : 0;
    for (int i = 0; rc == ASTRID_VFS_OK && i < MAX_NODES; i++) {
        const char *p = fs->nodes[i].path;
        size_t plen = strlen(p);
        if (!p[0] || plen <= len || (len && (memcmp(p, path, len) || p[len] != '/'))) continue;
        const char *name = len ? p + len + 1 : p;
        if (strchr(name, '/')) continue; /* deeper than one level */
        astrid_vfs_kind_t kind = fs->nodes[i].is_dir ? ASTRID_VFS_KIND_DIRECTORY : ASTRID_VFS_KIND_REGULAR;
        if (sink(ctx, name, strlen(name), kind) != 0) break;
    }
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

static astrid_vfs_status_t fs_mkdir(void *ud, const char *path, size_t len) {
    memfs_t *fs = ud;
    pthread_mutex_lock(&fs->lock);
    astrid_vfs_status_t rc = ASTRID_VFS_OK;
    if (find(fs, path, len) != -1) rc = ASTRID_VFS_ALREADY_EXISTS;
    else if (!parent_ok(fs, path, len)) rc = ASTRID_VFS_NOT_FOUND;
    else if (add(fs, path, len, 1) < 0) rc = ASTRID_VFS_QUOTA;
    pthread_mutex_unlock(&fs->lock);
    return rc;
}

/* ---- the gate: log everything, refuse writes outside cwd://ws/public ---- */

/* The request is an opaque handle, readable on this thread until we return. */
static astrid_verdict_t gate(void *user_data, astrid_gate_request_t *req) {
    (void)user_data;
    astrid_gate_request_info_t info = {.size = sizeof info};
    if (astrid_gate_request_info(req, &info, NULL) != ASTRID_OK) return ASTRID_DENY;
    const char *kind = info.kind == ASTRID_GATE_FILE_WRITE ? "write" : "read";
    static const char allowed[] = "cwd://ws/public";
    size_t n = sizeof allowed - 1;
    int inside = info.path_len >= n && !memcmp(info.path, allowed, n) &&
                 (info.path_len == n || info.path[n] == '/');
    int allow = info.kind != ASTRID_GATE_FILE_WRITE || inside;
    printf("  gate: %.*s asks to %s %.*s -> %s\n", (int)info.capsule_len, info.capsule, kind, (int)info.path_len,
           info.path, allow ? "allow" : "deny");
    if (!allow) astrid_gate_request_set_reason(req, "writes only under ws/public", ASTRID_NTS, NULL);
    return allow ? ASTRID_ALLOW : ASTRID_DENY;
}

static void on_audit(void *user_data, const astrid_audit_event_t *e) {
    (void)user_data;
    if (e->outcome != ASTRID_AUDIT_DENIED) return;
    printf("  audit: %.*s %.*s denied (%.*s)\n", (int)e->call_len, e->call, (int)e->target_len, e->target,
           (int)e->reason_len, e->reason);
}

static int call(astrid_capsule_t *capsule, const char *action, const char *args) {
    astrid_result_t *result = NULL;
    astrid_error_t *err = NULL;
    if (astrid_capsule_call(capsule, action, ASTRID_NTS, (const uint8_t *)args, strlen(args), &result, &err) !=
        ASTRID_OK) {
        fprintf(stderr, "call %s failed: %s\n", action, astrid_error_message(err));
        astrid_error_free(err);
        return 1;
    }
    const char *data = NULL;
    size_t len = 0;
    astrid_result_data(result, &data, &len);
    printf("%s(%s) -> %s %.*s\n", action, args, astrid_result_action(result, NULL), (int)len, data);
    astrid_result_free(result);
    return 0;
}

static void free_memfs(void *user_data) {
    memfs_t *fs = user_data;
    for (int i = 0; i < MAX_NODES; i++) free(fs->nodes[i].data);
    pthread_mutex_destroy(&fs->lock);
    free(fs);
    printf("memfs finalized\n");
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "build/capsules/fsprobe";
    astrid_error_t *err = NULL;
    astrid_runtime_t *rt = NULL;
    if (astrid_runtime_new(NULL, &rt, &err) != ASTRID_OK) {
        fprintf(stderr, "runtime: %s\n", astrid_error_message(err));
        return 1;
    }

    memfs_t *fs = calloc(1, sizeof *fs);
    pthread_mutex_init(&fs->lock, NULL);
    for (int h = 0; h < MAX_HANDLES; h++) fs->handles[h] = -1;
    add(fs, "ws", 2, 1);
    add(fs, "ws/public", 9, 1);

    astrid_vfs_ops_t ops = {0};
    ops.size = sizeof ops;
    ops.stat = fs_stat;
    ops.open = fs_open;
    ops.read_at = fs_read_at;
    ops.write_at = fs_write_at;
    ops.close = fs_close;
    ops.fstat = fs_fstat;
    ops.read_dir = fs_read_dir;
    ops.mkdir = fs_mkdir;
    if (astrid_runtime_mount_vfs(rt, "cwd", ASTRID_NTS, &ops, fs, free_memfs, &err) != ASTRID_OK) {
        fprintf(stderr, "mount: %s\n", astrid_error_message(err));
        return 1;
    }
    if (astrid_runtime_set_gate(rt, gate, NULL, NULL, &err) != ASTRID_OK ||
        astrid_runtime_set_audit_callback(rt, on_audit, NULL, NULL, &err) != ASTRID_OK) {
        fprintf(stderr, "callbacks: %s\n", astrid_error_message(err));
        return 1;
    }

    astrid_capsule_t *capsule = NULL;
    if (astrid_capsule_load(rt, dir, ASTRID_NTS, NULL, &capsule, &err) != ASTRID_OK) {
        fprintf(stderr, "load: %s\n", astrid_error_message(err));
        return 1;
    }
    int failed = 0;
    failed |= call(capsule, "write-file", "ws/public/hello.txt\nhello from the capsule");
    failed |= call(capsule, "read-file", "ws/public/hello.txt");
    failed |= call(capsule, "write-file", "ws/secret.txt\nnot allowed");
    failed |= call(capsule, "readdir", "ws");
    astrid_capsule_unload(capsule, NULL);
    astrid_runtime_free(rt); /* flushes the audit queue and runs the finalizer */
    return failed;
}
