/*
 * Private C helpers of the Go binding; see shim.h. The trampolines here only
 * adapt C signatures (const qualifiers, the mirrored message) and forward to
 * the exported Go functions of callbacks.go, which own every decision.
 */
#include <string.h>

#include "shim.h"
#include "_cgo_export.h"

static astrid_go_call_t finish_call(astrid_status_t status, astrid_result_t *result, astrid_error_t *err) {
    astrid_go_call_t out;
    out.status = status;
    out.err = err;
    out.result = NULL;
    out.action = NULL;
    out.action_len = 0;
    out.data = NULL;
    out.data_len = 0;
    out.has_data = 0;
    if (status != ASTRID_OK) return out;
    out.result = result;
    out.action = astrid_result_action(result, &out.action_len);
    out.has_data = astrid_result_data(result, &out.data, &out.data_len) ? 1 : 0;
    if (out.action && out.action_len <= ASTRID_GO_ACTION_INLINE) {
        memcpy(out.action_inline, out.action, out.action_len);
        out.action = NULL;
        if (!out.has_data) {
            astrid_result_free(result);
            out.result = NULL;
        }
    }
    return out;
}

astrid_go_call_t astrid_go_call(astrid_capsule_t *capsule, const char *action, size_t action_len,
                                const uint8_t *payload, size_t payload_len) {
    astrid_result_t *result = NULL;
    astrid_error_t *err = NULL;
    astrid_status_t s = astrid_capsule_call(capsule, action, action_len, payload, payload_len, &result, &err);
    return finish_call(s, result, err);
}

astrid_go_call_t astrid_go_call_with(astrid_capsule_t *capsule, const char *principal, size_t principal_len,
                                     const astrid_config_entry_t *config, size_t config_len,
                                     const char *action, size_t action_len, const uint8_t *payload,
                                     size_t payload_len) {
    astrid_call_options_t opts;
    astrid_call_options_init(&opts);
    opts.principal = principal;
    opts.principal_len = principal_len;
    opts.config = config;
    opts.config_len = config_len;
    astrid_result_t *result = NULL;
    astrid_error_t *err = NULL;
    astrid_status_t s =
        astrid_capsule_call_with(capsule, &opts, action, action_len, payload, payload_len, &result, &err);
    return finish_call(s, result, err);
}

/* ---- callback trampolines ---- */

static void finalize(void *user_data) { astridGoFinalize(user_data); }

static uint32_t gate(void *user_data, astrid_gate_request_t *request) {
    return astridGoGate(user_data, request);
}

static void log_line(void *user_data, const astrid_log_record_t *record) {
    astridGoLog(user_data, (astrid_log_record_t *)record);
}

static void audit(void *user_data, const astrid_audit_event_t *event) {
    astridGoAudit(user_data, (astrid_audit_event_t *)event);
}

static astrid_status_t secret(void *user_data, astrid_secret_request_t *request) {
    return astridGoSecret(user_data, request);
}

astrid_status_t astrid_go_set_gate(astrid_runtime_t *rt, uintptr_t handle) {
    if (!handle) return astrid_runtime_set_gate(rt, NULL, NULL, NULL);
    return astrid_runtime_set_gate(rt, gate, (void *)handle, finalize);
}

astrid_status_t astrid_go_set_log(astrid_runtime_t *rt, uintptr_t handle) {
    if (!handle) return astrid_runtime_set_log_callback(rt, NULL, NULL, NULL);
    return astrid_runtime_set_log_callback(rt, log_line, (void *)handle, finalize);
}

astrid_status_t astrid_go_set_audit(astrid_runtime_t *rt, uintptr_t handle) {
    if (!handle) return astrid_runtime_set_audit_callback(rt, NULL, NULL, NULL);
    return astrid_runtime_set_audit_callback(rt, audit, (void *)handle, finalize);
}

astrid_status_t astrid_go_set_secret(astrid_runtime_t *rt, uintptr_t handle) {
    if (!handle) return astrid_runtime_set_secret_callback(rt, NULL, NULL, NULL);
    return astrid_runtime_set_secret_callback(rt, secret, (void *)handle, finalize);
}

/* ---- VFS ---- */

static int32_t vfs_stat(void *ud, const char *path, size_t path_len, uint32_t follow, astrid_vfs_stat_t *out) {
    return astridGoVfsStat(ud, (char *)path, path_len, follow, out);
}

static int32_t vfs_open(void *ud, const char *path, size_t path_len, uint32_t flags, uint64_t *out_handle) {
    return astridGoVfsOpen(ud, (char *)path, path_len, flags, out_handle);
}

static int32_t vfs_read_at(void *ud, uint64_t handle, uint64_t offset, uint8_t *buf, size_t len, size_t *out_read) {
    return astridGoVfsReadAt(ud, handle, offset, buf, len, out_read);
}

static int32_t vfs_write_at(void *ud, uint64_t handle, uint64_t offset, const uint8_t *data, size_t len,
                            size_t *out_written) {
    return astridGoVfsWriteAt(ud, handle, offset, (uint8_t *)data, len, out_written);
}

static int32_t vfs_close(void *ud, uint64_t handle) { return astridGoVfsClose(ud, handle); }

static int32_t vfs_sync(void *ud, uint64_t handle, uint32_t data_only) {
    return astridGoVfsSync(ud, handle, data_only);
}

static int32_t vfs_set_len(void *ud, uint64_t handle, uint64_t len) { return astridGoVfsSetLen(ud, handle, len); }

static int32_t vfs_fstat(void *ud, uint64_t handle, astrid_vfs_stat_t *out) {
    return astridGoVfsFstat(ud, handle, out);
}

static int32_t vfs_read_dir(void *ud, const char *path, size_t path_len, astrid_vfs_dir_sink_fn sink, void *ctx) {
    return astridGoVfsReadDir(ud, (char *)path, path_len, (void *)sink, ctx);
}

static int32_t vfs_mkdir(void *ud, const char *path, size_t path_len) {
    return astridGoVfsPath(ud, ASTRID_GO_VFS_MKDIR, (char *)path, path_len);
}

static int32_t vfs_remove_file(void *ud, const char *path, size_t path_len) {
    return astridGoVfsPath(ud, ASTRID_GO_VFS_REMOVE_FILE, (char *)path, path_len);
}

static int32_t vfs_remove_dir(void *ud, const char *path, size_t path_len) {
    return astridGoVfsPath(ud, ASTRID_GO_VFS_REMOVE_DIR, (char *)path, path_len);
}

static int32_t vfs_rename(void *ud, const char *src, size_t src_len, const char *dst, size_t dst_len) {
    return astridGoVfsTwoPaths(ud, ASTRID_GO_VFS_RENAME, (char *)src, src_len, (char *)dst, dst_len);
}

static int32_t vfs_hard_link(void *ud, const char *src, size_t src_len, const char *dst, size_t dst_len) {
    return astridGoVfsTwoPaths(ud, ASTRID_GO_VFS_HARD_LINK, (char *)src, src_len, (char *)dst, dst_len);
}

static int32_t vfs_read_link(void *ud, const char *path, size_t path_len, char *buf, size_t cap, size_t *out_len) {
    return astridGoVfsReadLink(ud, (char *)path, path_len, buf, cap, out_len);
}

astrid_status_t astrid_go_mount_vfs(astrid_runtime_t *rt, const char *mount, size_t mount_len, uintptr_t handle,
                                    uint32_t mask) {
    if (!handle) return astrid_runtime_mount_vfs(rt, mount, mount_len, NULL, NULL, NULL);
    astrid_vfs_ops_t ops;
    memset(&ops, 0, sizeof ops);
    ops.size = sizeof ops;
    ops.stat = vfs_stat;
    ops.open = vfs_open;
    ops.read_at = vfs_read_at;
    ops.close = vfs_close;
    ops.fstat = vfs_fstat;
    if (mask & ASTRID_GO_VFS_WRITE_AT) ops.write_at = vfs_write_at;
    if (mask & ASTRID_GO_VFS_SYNC) ops.sync = vfs_sync;
    if (mask & ASTRID_GO_VFS_SET_LEN) ops.set_len = vfs_set_len;
    if (mask & ASTRID_GO_VFS_READ_DIR) ops.read_dir = vfs_read_dir;
    if (mask & ASTRID_GO_VFS_MKDIR) ops.mkdir = vfs_mkdir;
    if (mask & ASTRID_GO_VFS_REMOVE_FILE) ops.remove_file = vfs_remove_file;
    if (mask & ASTRID_GO_VFS_REMOVE_DIR) ops.remove_dir = vfs_remove_dir;
    if (mask & ASTRID_GO_VFS_RENAME) ops.rename = vfs_rename;
    if (mask & ASTRID_GO_VFS_HARD_LINK) ops.hard_link = vfs_hard_link;
    if (mask & ASTRID_GO_VFS_READ_LINK) ops.read_link = vfs_read_link;
    return astrid_runtime_mount_vfs(rt, mount, mount_len, &ops, (void *)handle, finalize);
}

int32_t astrid_go_dir_sink(void *sink, void *ctx, const char *name, size_t name_len,
                           uint32_t kind) {
    return ((astrid_vfs_dir_sink_fn)sink)(ctx, name, name_len, kind);
}

/* ---- IPC: compiled only when astrid.h has it ---- */

#ifdef ASTRID_ATTRIBUTION_SYSTEM

int astrid_go_has_ipc(void) { return 1; }

int astrid_go_config_set_ipc(astrid_runtime_config_t *cfg, uint32_t messages, uint64_t bytes) {
    cfg->ipc_queue_messages = messages;
    cfg->ipc_queue_bytes = bytes;
    return 1;
}

static void message(void *user_data, const astrid_message_t *m) {
    astrid_go_message_t out;
    out.topic = m->topic;
    out.topic_len = m->topic_len;
    out.payload = m->payload;
    out.payload_len = m->payload_len;
    out.source_id = m->source_id;
    out.source_id_len = m->source_id_len;
    out.principal = m->principal;
    out.principal_len = m->principal_len;
    out.attribution = m->attribution;
    out.depth = m->depth;
    out.sequence = m->sequence;
    out.timestamp_ms = m->timestamp_ms;
    out.dropped = m->dropped;
    out.lagged = m->lagged;
    astridGoMessage(user_data, &out);
}

astrid_status_t astrid_go_publish(astrid_runtime_t *rt, const char *topic, size_t topic_len, const char *json,
                                  size_t json_len, const char *principal, size_t principal_len,
                                  astrid_error_t **err) {
    if (!principal) return astrid_ipc_publish(rt, topic, topic_len, json, json_len, err);
    return astrid_ipc_publish_as(rt, topic, topic_len, json, json_len, principal, principal_len, err);
}

astrid_status_t astrid_go_subscribe(astrid_runtime_t *rt, const char *pattern, size_t pattern_len, uintptr_t handle,
                                    void **out_sub, astrid_error_t **err) {
    astrid_subscription_t *sub = NULL;
    astrid_status_t s = astrid_ipc_subscribe(rt, pattern, pattern_len, message, (void *)handle, finalize, &sub, err);
    if (s == ASTRID_OK) *out_sub = sub;
    return s;
}

void astrid_go_subscription_free(void *sub) { astrid_subscription_free((astrid_subscription_t *)sub); }

#else

int astrid_go_has_ipc(void) { return 0; }

int astrid_go_config_set_ipc(astrid_runtime_config_t *cfg, uint32_t messages, uint64_t bytes) {
    (void)cfg;
    (void)messages;
    (void)bytes;
    return 0;
}

astrid_status_t astrid_go_publish(astrid_runtime_t *rt, const char *topic, size_t topic_len, const char *json,
                                  size_t json_len, const char *principal, size_t principal_len,
                                  astrid_error_t **err) {
    (void)rt, (void)topic, (void)topic_len, (void)json, (void)json_len, (void)principal, (void)principal_len;
    if (err) *err = NULL;
    return ASTRID_E_INTERNAL;
}

astrid_status_t astrid_go_subscribe(astrid_runtime_t *rt, const char *pattern, size_t pattern_len, uintptr_t handle,
                                    void **out_sub, astrid_error_t **err) {
    (void)rt, (void)pattern, (void)pattern_len, (void)handle, (void)out_sub;
    if (err) *err = NULL;
    return ASTRID_E_INTERNAL;
}

void astrid_go_subscription_free(void *sub) { (void)sub; }

#endif
