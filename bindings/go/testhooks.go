package astrid

// #include "shim.h"
import "C"

import "unsafe"

// Helpers for the package's own tests, which cannot use cgo themselves.

// libraryUnload unloads the capsule handle p through the C API directly,
// behind its Capsule's back, and returns the status.
func libraryUnload(p *byte) int32 {
	return int32(C.astrid_capsule_unload(capPtr(p), nil))
}

// forgedTicket is a ticket handle value the library never issued (handles
// are registry ids, never dereferenced).
func forgedTicket() *byte {
	return (*byte)(unsafe.Pointer(uintptr(0x12340)))
}
