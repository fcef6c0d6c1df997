package main

// The floor of a C -> Go callback: C code running inside a cgo call (as
// the guest's thread does with inline callbacks) calls an exported Go
// function that does nothing.

// #include <stdint.h>
import "C"

import "unsafe"

//export benchGoNop
func benchGoNop(ud unsafe.Pointer) C.int32_t { return 0 }
