package astrid

// #include "shim.h"
import "C"

import (
	"fmt"
	"sync"
)

// ABIVersion is the astrid ABI this binding implements. NewRuntime refuses a
// library (or a header it was compiled against) of another version.
const ABIVersion = 2

// headerABI is ASTRID_ABI_VERSION of the astrid.h this package was compiled
// against.
const headerABI = C.ASTRID_ABI_VERSION

// LibraryABIVersion returns astrid_abi_version() of the loaded library.
func LibraryABIVersion() uint32 { return uint32(C.astrid_abi_version()) }

// Version returns the library's version string (e.g. "0.1.0").
func Version() string { return C.GoString(C.astrid_version()) }

// checkABI compares the ABI of a library (got) with the one this binding
// implements, and the header's with both.
func checkABI(got uint32) error {
	if headerABI != ABIVersion {
		return fmt.Errorf("%w: compiled against astrid.h of ABI %d, the binding implements ABI %d",
			ErrABIMismatch, headerABI, ABIVersion)
	}
	if got != ABIVersion {
		return fmt.Errorf("%w: the loaded library implements ABI %d, the binding ABI %d",
			ErrABIMismatch, got, ABIVersion)
	}
	return nil
}

var abiOnce = sync.OnceValue(func() error { return checkABI(LibraryABIVersion()) })

// CheckABI reports whether the loaded library implements the ABI this
// binding was written for (nil) or not (an error matching ErrABIMismatch).
// NewRuntime checks it too.
func CheckABI() error { return abiOnce() }
