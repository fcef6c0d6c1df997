package astrid

// #include "shim.h"
import "C"

import "sync"

// Helpers for the package's own tests, which cannot use cgo themselves.

// libraryUnload unloads the capsule handle p through the C API directly,
// behind its Capsule's back, and returns the status.
func libraryUnload(p *byte) int32 {
	return int32(C.astrid_capsule_unload(capPtr(p), nil))
}

// forgedTicket is a ticket handle value the library never issued: the
// address of a byte of C memory (handles are registry ids, never
// dereferenced). The byte is kept for the life of the test binary.
func forgedTicket() *byte {
	forgedOnce.Do(func() { forged = (*byte)(C.malloc(1)) })
	return forged
}

var (
	forgedOnce sync.Once
	forged     *byte
)
