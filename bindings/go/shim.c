/*
 * Private C helpers of the Go binding; see shim.h. The trampolines here only
 * adapt C signatures (const qualifiers) and forward to
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
    out.call_id = 0;
    if (status != ASTRID_OK) return out;
    out.result = result;
    out.call_id = astrid_result_call_id(result);
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
                                     const astrid_config_entry_t *config, size_t config_len, uint64_t timeout_ms,
                                     uint64_t fuel, astrid_cancel_t *cancel, const char *action, size_t action_len,
                                     const uint8_t *payload, size_t payload_len) {
    astrid_call_options_t opts;
    astrid_call_options_init(&opts, NULL);
    opts.principal = principal;
    opts.principal_len = principal_len;
    opts.config = config;
    opts.config_len = config_len;
    opts.timeout_ms = timeout_ms;
    opts.fuel = fuel;
    opts.cancel = cancel;
    astrid_result_t *result = NULL;
    astrid_error_t *err = NULL;
    astrid_status_t s =
        astrid_capsule_call_with(capsule, &opts, action, action_len, payload, payload_len, &result, &err);
    return finish_call(s, result, err);
}

/* ---- callback trampolines ---- */

static void finalize(void *user_data) { astridGoFinalize(user_data); }

static astrid_verdict_t gate(void *user_data, astrid_gate_request_t *request) {
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

static astrid_verdict_t accept_verifier(void *user_data, astrid_accept_request_t *request) {
    return astridGoAcceptVerify(user_data, request);
}

astrid_status_t astrid_go_set_gate(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err) {
    if (!handle) return astrid_runtime_set_gate(rt, NULL, NULL, NULL, err);
    return astrid_runtime_set_gate(rt, gate, (void *)handle, finalize, err);
}

astrid_status_t astrid_go_set_log(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err) {
    if (!handle) return astrid_runtime_set_log_callback(rt, NULL, NULL, NULL, err);
    return astrid_runtime_set_log_callback(rt, log_line, (void *)handle, finalize, err);
}

astrid_status_t astrid_go_set_audit(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err) {
    if (!handle) return astrid_runtime_set_audit_callback(rt, NULL, NULL, NULL, err);
    return astrid_runtime_set_audit_callback(rt, audit, (void *)handle, finalize, err);
}

astrid_status_t astrid_go_set_secret(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err) {
    if (!handle) return astrid_runtime_set_secret_callback(rt, NULL, NULL, NULL, err);
    return astrid_runtime_set_secret_callback(rt, secret, (void *)handle, finalize, err);
}

astrid_status_t astrid_go_set_accept_verifier(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err) {
    if (!handle) return astrid_runtime_set_accept_verifier(rt, NULL, NULL, NULL, err);
    return astrid_runtime_set_accept_verifier(rt, accept_verifier, (void *)handle, finalize, err);
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

/* The table of the Go VFS trampolines, the optional entries as `mask` says. */
static void fill_vfs_ops(astrid_vfs_ops_t *ops, uint32_t mask) {
    memset(ops, 0, sizeof *ops);
    ops->size = sizeof *ops;
    ops->stat = vfs_stat;
    ops->open = vfs_open;
    ops->read_at = vfs_read_at;
    ops->close = vfs_close;
    ops->fstat = vfs_fstat;
    if (mask & ASTRID_GO_VFS_WRITE_AT) ops->write_at = vfs_write_at;
    if (mask & ASTRID_GO_VFS_SYNC) ops->sync = vfs_sync;
    if (mask & ASTRID_GO_VFS_SET_LEN) ops->set_len = vfs_set_len;
    if (mask & ASTRID_GO_VFS_READ_DIR) ops->read_dir = vfs_read_dir;
    if (mask & ASTRID_GO_VFS_MKDIR) ops->mkdir = vfs_mkdir;
    if (mask & ASTRID_GO_VFS_REMOVE_FILE) ops->remove_file = vfs_remove_file;
    if (mask & ASTRID_GO_VFS_REMOVE_DIR) ops->remove_dir = vfs_remove_dir;
    if (mask & ASTRID_GO_VFS_RENAME) ops->rename = vfs_rename;
    if (mask & ASTRID_GO_VFS_HARD_LINK) ops->hard_link = vfs_hard_link;
    if (mask & ASTRID_GO_VFS_READ_LINK) ops->read_link = vfs_read_link;
}

astrid_status_t astrid_go_mount_vfs(astrid_runtime_t *rt, const char *mount, size_t mount_len, uintptr_t handle,
                                    uint32_t mask, astrid_error_t **err) {
    if (!handle) return astrid_runtime_mount_vfs(rt, mount, mount_len, NULL, NULL, NULL, err);
    astrid_vfs_ops_t ops;
    fill_vfs_ops(&ops, mask);
    return astrid_runtime_mount_vfs(rt, mount, mount_len, &ops, (void *)handle, finalize, err);
}

void astrid_go_load_vfs(astrid_load_vfs_t *slot, astrid_vfs_ops_t *ops, uintptr_t handle, uint32_t mask) {
    fill_vfs_ops(ops, mask);
    slot->ops = ops;
    slot->user_data = (void *)handle;
    slot->finalizer = finalize;
}

int32_t astrid_go_dir_sink(void *sink, void *ctx, const char *name, size_t name_len,
                           uint32_t kind) {
    return ((astrid_vfs_dir_sink_fn)sink)(ctx, name, name_len, kind);
}

/* ---- IPC ---- */

static void message(void *user_data, const astrid_message_t *m) {
    astridGoMessage(user_data, (astrid_message_t *)m);
}

astrid_status_t astrid_go_publish(astrid_runtime_t *rt, const char *topic, size_t topic_len, const char *json,
                                  size_t json_len, const char *principal, size_t principal_len,
                                  astrid_error_t **err) {
    if (!principal) return astrid_ipc_publish(rt, topic, topic_len, json, json_len, err);
    return astrid_ipc_publish_as(rt, topic, topic_len, json, json_len, principal, principal_len, err);
}

astrid_status_t astrid_go_subscribe(astrid_runtime_t *rt, const char *pattern, size_t pattern_len, uintptr_t handle,
                                    astrid_subscription_t **out_sub, astrid_error_t **err) {
    return astrid_ipc_subscribe(rt, pattern, pattern_len, message, (void *)handle, finalize, out_sub, err);
}

/* ---- KV ---- */

static int32_t kv_get(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len,
                      astrid_kv_value_sink_fn sink, void *ctx) {
    return astridGoKvGet(ud, (astrid_kv_namespace_t *)ns, (char *)key, key_len, (void *)sink, ctx);
}

static int32_t kv_set(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len,
                      const uint8_t *value, size_t value_len) {
    return astridGoKvSet(ud, (astrid_kv_namespace_t *)ns, (char *)key, key_len, (uint8_t *)value, value_len);
}

static int32_t kv_remove(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len) {
    return astridGoKvRemove(ud, (astrid_kv_namespace_t *)ns, (char *)key, key_len);
}

static int32_t kv_list(void *ud, const astrid_kv_namespace_t *ns, const char *prefix, size_t prefix_len,
                       const char *after, size_t after_len, uint32_t limit, astrid_kv_key_sink_fn sink,
                       void *ctx) {
    return astridGoKvList(ud, (astrid_kv_namespace_t *)ns, (char *)prefix, prefix_len, (char *)after, after_len,
                          limit, (void *)sink, ctx);
}

static int32_t kv_clear_prefix(void *ud, const astrid_kv_namespace_t *ns, const char *prefix, size_t prefix_len,
                               uint64_t *out_count) {
    return astridGoKvClearPrefix(ud, (astrid_kv_namespace_t *)ns, (char *)prefix, prefix_len, out_count);
}

static int32_t kv_cas(void *ud, const astrid_kv_namespace_t *ns, const char *key, size_t key_len,
                      uint32_t has_expected, const uint8_t *expected, size_t expected_len, const uint8_t *value,
                      size_t value_len) {
    return astridGoKvCas(ud, (astrid_kv_namespace_t *)ns, (char *)key, key_len, has_expected, (uint8_t *)expected,
                         expected_len, (uint8_t *)value, value_len);
}

astrid_status_t astrid_go_set_kv(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err) {
    if (!handle) return astrid_runtime_set_kv(rt, NULL, NULL, NULL, err);
    astrid_kv_ops_t ops;
    memset(&ops, 0, sizeof ops);
    ops.size = sizeof ops;
    ops.get = kv_get;
    ops.set = kv_set;
    ops.remove = kv_remove;
    ops.list = kv_list;
    ops.clear_prefix = kv_clear_prefix;
    ops.cas = kv_cas;
    return astrid_runtime_set_kv(rt, &ops, (void *)handle, finalize, err);
}

void astrid_go_kv_value_sink(void *sink, void *ctx, const uint8_t *value, size_t value_len) {
    ((astrid_kv_value_sink_fn)sink)(ctx, value, value_len);
}

int32_t astrid_go_kv_key_sink(void *sink, void *ctx, const char *key, size_t key_len) {
    return ((astrid_kv_key_sink_fn)sink)(ctx, key, key_len);
}
