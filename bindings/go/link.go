//go:build !astrid_pkgconfig

package astrid

// The library is linked by name; where it lives comes from the environment:
//
//	CGO_CFLAGS="-I$ASTRID_INCLUDE_DIR"
//	CGO_LDFLAGS="-L$ASTRID_LIB_DIR -Wl,-rpath,$ASTRID_LIB_DIR"
//
// Build with -tags astrid_pkgconfig to take both from `pkg-config astrid` instead.

// #cgo LDFLAGS: -lastrid
import "C"
