/* Newer LLVM (the one rustc nightly uses) instruments the Rust side's
 * memory intrinsics as calls to __tsan_memcpy / __tsan_memset /
 * __tsan_memmove; the older TSan runtime that gcc ships does not define
 * them. Forwarding them to the C library functions keeps every check: TSan
 * intercepts memcpy, memset and memmove and records their accesses. They
 * are weak so that a runtime which does define them (clang's) wins. */
#include <string.h>

void *__tsan_memcpy(void *dst, const void *src, size_t n);
void *__tsan_memset(void *dst, int c, size_t n);
void *__tsan_memmove(void *dst, const void *src, size_t n);

__attribute__((weak)) void *__tsan_memcpy(void *dst, const void *src, size_t n) { return memcpy(dst, src, n); }
__attribute__((weak)) void *__tsan_memset(void *dst, int c, size_t n) { return memset(dst, c, n); }
__attribute__((weak)) void *__tsan_memmove(void *dst, const void *src, size_t n) { return memmove(dst, src, n); }
