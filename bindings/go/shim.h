/*
 * Private C helpers of the Go binding (not part of astrid's API).
 *
 * They exist for three reasons: to call astrid with a Go callback's
 * trampoline as the function pointer (cgo cannot take the address of an
 * exported Go function with the exact const-qualified C signature), to keep
 * the hot call path to one cgo crossing plus one for the free, and to pass
 * cgo.Handle values as integers (no Go pointer is ever stored in C).
 */
#ifndef ASTRID_GO_SHIM_H
#define ASTRID_GO_SHIM_H

#include <stdint.h>
#include <stdlib.h>

#include "astrid.h"

/* Room for the action inside astrid_go_call_t ("continue", "final", ...). */
#define ASTRID_GO_ACTION_INLINE 32

/* Everything one capsule call returns, by value (no Go allocation for an
   out-parameter). A short action is copied into `action_inline`; when that
   leaves nothing else to read (no data), the result is already freed and
   `result` is NULL, so the whole call is one cgo crossing. Otherwise
   `action` / `data` borrow from `result` until Go frees it. */
typedef struct astrid_go_call_t {
    astrid_status_t status;
    int32_t has_data;
    astrid_result_t *result;
    astrid_error_t *err;
    const char *action; /* NULL when the action is inline */
    size_t action_len;
    const char *data;
    size_t data_len;
    uint64_t call_id; /* astrid_result_call_id of a successful call */
    char action_inline[ASTRID_GO_ACTION_INLINE];
} astrid_go_call_t;

astrid_go_call_t astrid_go_call(astrid_capsule_t *capsule, const char *action, size_t action_len,
                                const uint8_t *payload, size_t payload_len);

/* astrid_capsule_call_with with the options built here; principal (NULL, 0)
   means the capsule's owner, 0 / NULL the defaults of the other options. */
astrid_go_call_t astrid_go_call_with(astrid_capsule_t *capsule, const char *principal, size_t principal_len,
                                     const astrid_config_entry_t *config, size_t config_len, uint64_t timeout_ms,
                                     uint64_t fuel, astrid_cancel_t *cancel, const char *action, size_t action_len,
                                     const uint8_t *payload, size_t payload_len);

/* Fills a load-time provider slot with the Go VFS trampolines over `ops`
   (caller-owned storage, read during the load) and `handle`. */
void astrid_go_load_vfs(astrid_load_vfs_t *slot, astrid_vfs_ops_t *ops, uintptr_t handle, uint32_t mask);

/* Installers: `handle` is a cgo.Handle (0 removes the callback); a failure
   stores the library's error object in *err. */
astrid_status_t astrid_go_set_gate(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err);
astrid_status_t astrid_go_set_log(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err);
astrid_status_t astrid_go_set_audit(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err);
astrid_status_t astrid_go_set_secret(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err);
astrid_status_t astrid_go_set_accept_verifier(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err);

/* Bits of `astrid_go_mount_vfs`'s `ops` mask: which optional entries the Go
   provider implements (stat, open, read_at, fstat and close are always set). */
#define ASTRID_GO_VFS_WRITE_AT (1u << 0)
#define ASTRID_GO_VFS_SYNC (1u << 1)
#define ASTRID_GO_VFS_SET_LEN (1u << 2)
#define ASTRID_GO_VFS_READ_DIR (1u << 4)
#define ASTRID_GO_VFS_MKDIR (1u << 5)
#define ASTRID_GO_VFS_REMOVE_FILE (1u << 6)
#define ASTRID_GO_VFS_REMOVE_DIR (1u << 7)
#define ASTRID_GO_VFS_RENAME (1u << 8)
#define ASTRID_GO_VFS_HARD_LINK (1u << 9)
#define ASTRID_GO_VFS_READ_LINK (1u << 10)

/* Mounts a Go provider (handle 0 unmounts). */
astrid_status_t astrid_go_mount_vfs(astrid_runtime_t *rt, const char *mount, size_t mount_len, uintptr_t handle,
                                    uint32_t ops, astrid_error_t **err);

/* Calls a read_dir sink handed to a Go provider. */
int32_t astrid_go_dir_sink(void *sink, void *ctx, const char *name, size_t name_len,
                           uint32_t kind);

/* ---- the host side of the IPC bus ---- */

/* Publishes as the embedder; principal (NULL, 0) means attribution system. */
astrid_status_t astrid_go_publish(astrid_runtime_t *rt, const char *topic, size_t topic_len, const char *json,
                                  size_t json_len, const char *principal, size_t principal_len,
                                  astrid_error_t **err);
astrid_status_t astrid_go_subscribe(astrid_runtime_t *rt, const char *pattern, size_t pattern_len, uintptr_t handle,
                                    astrid_subscription_t **out_sub, astrid_error_t **err);

/* ---- KV backend ---- */

/* Installs a Go backend (handle 0: back to the built-in store). */
astrid_status_t astrid_go_set_kv(astrid_runtime_t *rt, uintptr_t handle, astrid_error_t **err);

/* Call the sinks handed to a Go backend's get / list. */
void astrid_go_kv_value_sink(void *sink, void *ctx, const uint8_t *value, size_t value_len);
int32_t astrid_go_kv_key_sink(void *sink, void *ctx, const char *key, size_t key_len);

#endif
