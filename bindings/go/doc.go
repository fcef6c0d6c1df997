// Package astrid is the Go binding of astrid, the embeddable runtime for
// Astrid capsules (sandboxed WebAssembly components). It wraps the C API of
// libastrid (include/astrid.h) through cgo.
//
//	rt, err := astrid.NewRuntime(nil)                     // nil: the defaults
//	capsule, err := rt.Load("build/capsules/hello", nil)
//	res, err := capsule.Call("greet", []byte(`{"name":"Go"}`))
//
// # Building
//
// The package links -lastrid and takes the locations from the environment:
//
//	export CGO_CFLAGS="-I$ASTRID_INCLUDE_DIR"
//	export CGO_LDFLAGS="-L$ASTRID_LIB_DIR -Wl,-rpath,$ASTRID_LIB_DIR"
//
// or, with -tags astrid_pkgconfig, from `pkg-config astrid`.
//
// # Ownership and lifetimes
//
// Runtime, Capsule, Subscription and GateTicket own a library handle. Close
// releases it; Close is idempotent, and any later use returns an error
// matching ErrClosed (the library looks handles up, it never dereferences a
// stale one). A finalizer closes what the program forgot, but call Close:
// a callback that captures its own Runtime keeps it reachable for ever.
// Closing a Runtime shuts down its capsules too (they then answer
// ErrClosed; Close them as usual).
//
// # Run loops
//
// A capsule that exports a real run loop (Capsule.RunsLoop) is ready once
// the loop signals it: Capsule.WaitReady waits for that (and fails with
// ErrTrap, ErrTimeout or ErrResourceLimit when the loop failed or
// returned); other capsules are ready at once. LoadOptions.Watchdog sets the
// loop's watchdog window (WatchdogOff exempts it).
//
// # Threads and callbacks
//
// Runtime and Capsule methods are safe for concurrent use; calls on one
// capsule run in parallel up to the runtime's pool size. A call blocks its
// goroutine's thread until the guest returns.
//
// Callbacks (gate, accept verifier, VFS, KV backend, log, audit, secret
// provider, subscription handler) are plain Go funcs and interfaces. They run on the library's threads —
// with FlagInlineCallbacks, gate and VFS callbacks run on the thread of the
// calling goroutine — possibly several at once, so they must be safe for
// concurrent use. They must not call blocking methods of the runtime (Load,
// Call, Close...): those return ErrReentrant. Cancel and Publish are allowed.
// The library keeps only an integer cgo.Handle, never a Go pointer; the
// handle is deleted when the library runs the callback's finalizer.
//
// A panic inside a callback is recovered: a gate panic denies the request,
// an accept-verifier panic refuses the connection, a VFS panic fails the operation with VFSIO, a KV panic with KVIO, a
// secret-provider panic fails the guest's get-config; the runtime keeps
// serving. The panic is handed to the
// handler set with Runtime.SetPanicHandler, or written to the standard
// logger when there is none.
package astrid
