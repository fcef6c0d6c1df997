//go:build astrid_pkgconfig

package astrid

// With -tags astrid_pkgconfig the compiler and linker flags come from the
// astrid.pc file found on PKG_CONFIG_PATH (Cflags: -I<include dir>,
// Libs: -L<lib dir> -lastrid, plus an rpath if the .pc file carries one).

// #cgo pkg-config: astrid
import "C"
