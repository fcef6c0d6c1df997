// A stand-in for a mismatched libastrid: exports astrid_abi_version (999)
// and astrid_runtime_new (recording that it was reached). The ABI test
// links it before the real library, so the dynamic linker binds these two
// symbols of the test executable here — exactly what happens when an
// application built against one astrid.h meets a different libastrid.so.
#include <cstdint>

extern "C" {

static int runtime_new_calls;

__attribute__((visibility("default"))) uint32_t astrid_abi_version(void) { return 999; }

__attribute__((visibility("default"))) int32_t astrid_runtime_new(const void *, void **, void **) {
    runtime_new_calls++;
    return -17; // ASTRID_E_INTERNAL
}

__attribute__((visibility("default"))) int fake_abi_runtime_new_calls(void) { return runtime_new_calls; }
}
