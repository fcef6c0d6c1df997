package main

// The comparators: the same work done from C, reached by one plain cgo call.

/*
#cgo LDFLAGS: -lastrid
#include <stdlib.h>
#include <string.h>
#include "astrid.h"

// The callback floor: n calls of an exported Go function that does nothing.
extern int32_t benchGoNop(void *);
static int32_t go_callbacks(int n) {
    int32_t sum = 0;
    for (int i = 0; i < n; i++) sum += benchGoNop(NULL);
    return sum;
}

// B12's raw call: what a hand-written cgo program would do per call.
static int32_t raw_call(astrid_capsule_t *capsule, const char *action, size_t action_len,
                        const uint8_t *payload, size_t payload_len) {
    astrid_result_t *result = NULL;
    astrid_status_t s = astrid_capsule_call(capsule, action, action_len, payload, payload_len, &result, NULL);
    astrid_result_free(result);
    return s;
}

// The same calls looped in C: no cgo crossing per call at all.
static int32_t c_loop(astrid_capsule_t *capsule, const char *action, size_t action_len,
                      const uint8_t *payload, size_t payload_len, int n) {
    for (int i = 0; i < n; i++) {
        int32_t s = raw_call(capsule, action, action_len, payload, payload_len);
        if (s != ASTRID_OK) return s;
    }
    return ASTRID_OK;
}

// B13's C callbacks: the gate and the one-file VFS of benches/fs.rs.
typedef struct { uint8_t *data; size_t len; } one_file_t;

static astrid_verdict_t c_gate(void *ud, astrid_gate_request_t *req) {
    (void)ud;
    astrid_gate_request_info_t info = {.size = sizeof info};
    if (astrid_gate_request_info(req, &info, NULL) != ASTRID_OK) return ASTRID_DENY;
    if (info.kind == ASTRID_GATE_FILE_WRITE && (info.path_len < 8 || memcmp(info.path, "cwd://ws", 8) != 0))
        return ASTRID_DENY;
    return ASTRID_ALLOW;
}
static int32_t c_stat(void *ud, const char *p, size_t n, uint32_t follow, astrid_vfs_stat_t *out) {
    (void)p, (void)n, (void)follow;
    out->kind = ASTRID_VFS_KIND_REGULAR;
    out->size = ((one_file_t *)ud)->len;
    return ASTRID_VFS_OK;
}
static int32_t c_open(void *ud, const char *p, size_t n, uint32_t flags, uint64_t *out) {
    (void)ud, (void)p, (void)n, (void)flags;
    *out = 1;
    return ASTRID_VFS_OK;
}
static int32_t c_read_at(void *ud, uint64_t h, uint64_t off, uint8_t *buf, size_t len, size_t *out) {
    (void)h;
    one_file_t *f = ud;
    size_t start = off < f->len ? (size_t)off : f->len;
    size_t take = f->len - start < len ? f->len - start : len;
    memcpy(buf, f->data + start, take);
    *out = take;
    return ASTRID_VFS_OK;
}
static int32_t c_close(void *ud, uint64_t h) { (void)ud, (void)h; return ASTRID_VFS_OK; }
static int32_t c_fstat(void *ud, uint64_t h, astrid_vfs_stat_t *out) { (void)h; return c_stat(ud, NULL, 0, 1, out); }

// A runtime with the C gate and VFS (a file of `size` bytes of 7s) and the
// capsule at `dir` loaded; NULL on failure.
static astrid_capsule_t *c_setup(const char *dir, uint32_t flags, size_t size) {
    one_file_t *f = malloc(sizeof *f);
    f->data = malloc(size);
    memset(f->data, 7, size);
    f->len = size;
    astrid_runtime_config_t cfg;
    astrid_runtime_config_init(&cfg, NULL);
    cfg.flags = flags;
    astrid_runtime_t *rt = NULL;
    if (astrid_runtime_new(&cfg, &rt, NULL) != ASTRID_OK) return NULL;
    if (astrid_runtime_set_gate(rt, c_gate, NULL, NULL, NULL) != ASTRID_OK) return NULL;
    astrid_vfs_ops_t ops;
    memset(&ops, 0, sizeof ops);
    ops.size = sizeof ops;
    ops.stat = c_stat;
    ops.open = c_open;
    ops.read_at = c_read_at;
    ops.close = c_close;
    ops.fstat = c_fstat;
    if (astrid_runtime_mount_vfs(rt, "cwd", ASTRID_NTS, &ops, f, NULL, NULL) != ASTRID_OK) return NULL;
    astrid_capsule_t *capsule = NULL;
    if (astrid_capsule_load(rt, dir, ASTRID_NTS, NULL, &capsule, NULL) != ASTRID_OK) return NULL;
    return capsule;
}

// A runtime with no callbacks and the capsule at `dir` loaded.
static astrid_capsule_t *c_plain(const char *dir) {
    astrid_runtime_t *rt = NULL;
    if (astrid_runtime_new(NULL, &rt, NULL) != ASTRID_OK) return NULL;
    astrid_capsule_t *capsule = NULL;
    if (astrid_capsule_load(rt, dir, ASTRID_NTS, NULL, &capsule, NULL) != ASTRID_OK) return NULL;
    return capsule;
}
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// rawCapsule is a capsule loaded and called through C only.
type rawCapsule struct{ p *C.astrid_capsule_t }

func rawLoad(dir string) (rawCapsule, error) {
	d := C.CString(dir)
	defer C.free(unsafe.Pointer(d))
	p := C.c_plain(d)
	if p == nil {
		return rawCapsule{}, fmt.Errorf("raw load of %s failed", dir)
	}
	return rawCapsule{p}, nil
}

func rawSetup(dir string, flags uint32, size int) (rawCapsule, error) {
	d := C.CString(dir)
	defer C.free(unsafe.Pointer(d))
	p := C.c_setup(d, C.uint32_t(flags), C.size_t(size))
	if p == nil {
		return rawCapsule{}, fmt.Errorf("C setup of %s failed", dir)
	}
	return rawCapsule{p}, nil
}

// call is one cgo call of raw_call, passing Go memory for the duration of
// the call (the fastest legal way).
func (r rawCapsule) call(action string, payload []byte) error {
	var pp *C.uint8_t
	if len(payload) > 0 {
		pp = (*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(payload)))
	}
	s := C.raw_call(r.p, (*C.char)(unsafe.Pointer(unsafe.StringData(action))), C.size_t(len(action)), pp, C.size_t(len(payload)))
	if s != C.ASTRID_OK {
		return fmt.Errorf("raw call %s: status %d", action, s)
	}
	return nil
}

// goCallbacks makes n C -> Go calls from one cgo call.
func goCallbacks(n int) { C.go_callbacks(C.int(n)) }

// loop runs n calls inside C.
func (r rawCapsule) loop(action string, payload []byte, n int) error {
	s := C.c_loop(r.p, (*C.char)(unsafe.Pointer(unsafe.StringData(action))), C.size_t(len(action)),
		(*C.uint8_t)(unsafe.Pointer(unsafe.SliceData(payload))), C.size_t(len(payload)), C.int(n))
	if s != C.ASTRID_OK {
		return fmt.Errorf("C loop %s: status %d", action, s)
	}
	return nil
}
