// Command hello is the astrid demo in Go: start a runtime, load the hello
// capsule directory, call its greet action, print the result and the
// capsule's log lines.
//
//	usage: hello [CAPSULE_DIR] [NAME]   (default: build/capsules/hello, "Go")
package main

import (
	"encoding/json"
	"fmt"
	"os"

	astrid "github.com/astrid-runtime/astrid/bindings/go"
)

func main() {
	dir, name := "build/capsules/hello", "Go"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if len(os.Args) > 2 {
		name = os.Args[2]
	}
	if err := run(dir, name); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(dir, name string) error {
	if err := astrid.CheckABI(); err != nil {
		return err
	}
	fmt.Printf("astrid %s (ABI %d)\n", astrid.Version(), astrid.LibraryABIVersion())

	rt, err := astrid.NewRuntime(nil)
	if err != nil {
		return fmt.Errorf("starting the runtime: %w", err)
	}
	defer rt.Close()
	// Runs on the thread executing the guest.
	rt.SetLogger(func(r astrid.LogRecord) {
		fmt.Printf("  [%s] %s: %s\n", r.Level, r.Capsule, r.Message)
	})

	capsule, err := rt.Load(dir, &astrid.LoadOptions{Principal: "alice"})
	if err != nil {
		return fmt.Errorf("loading %s: %w", dir, err)
	}
	defer capsule.Close()
	fmt.Printf("loaded capsule %s (id %s)\n", capsule.Name(), capsule.ID())

	payload, err := json.Marshal(map[string]string{"name": name})
	if err != nil {
		return err
	}
	fmt.Printf("calling greet with %s\n", payload)
	res, err := capsule.Call("greet", payload)
	if err != nil {
		return fmt.Errorf("calling greet: %w", err)
	}
	fmt.Printf("result: action=%s", res.Action)
	if res.HasData {
		fmt.Printf(" data=%s", res.Data)
	}
	fmt.Println()
	return nil
}
