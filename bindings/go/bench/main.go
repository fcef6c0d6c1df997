// Command bench measures the Go binding (performance.md method): every row
// of a benchmark runs in this one process, interleaved round-robin, each
// batch calibrated to a few tens of milliseconds, for at least 11 rounds;
// it prints min and median ns/op and the median of the per-round ratios
// against the row named as comparator.
//
//	B12  Capsule.Call("noop", 64 B) vs one raw cgo call of a C helper doing
//	     astrid_capsule_call + astrid_result_free (target: <= 2x)
//	B13  guest read-file of 4 KiB through a Go gate + Go VFS vs the same
//	     with C callbacks, inline and hand-off callback modes
//
//	usage: bench [-rounds N] [-batch-ms MS] [-only B12|B13] [CAPSULES_DIR]
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strings"
	"time"

	astrid "github.com/astrid-runtime/astrid/bindings/go"
)

type row struct {
	name    string
	perCall int // operations done by one fn() call
	fn      func() error
	batch   int
	samples []float64 // ns/op per round
}

func calibrate(r *row, target time.Duration) error {
	n := 1
	for {
		start := time.Now()
		for i := 0; i < n; i++ {
			if err := r.fn(); err != nil {
				return err
			}
		}
		if el := time.Since(start); el >= target/4 {
			r.batch = int(float64(n) * float64(target) / float64(el))
			if r.batch < 1 {
				r.batch = 1
			}
			return nil
		}
		n *= 2
	}
}

func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func minOf(xs []float64) float64 {
	m := xs[0]
	for _, x := range xs {
		if x < m {
			m = x
		}
	}
	return m
}

// run measures rows interleaved and prints the table; ratios are against
// rows[comparator] (each row in ratios[i] >= 0 names its own comparator).
func run(title string, rows []*row, comparators []int, rounds int, target time.Duration) error {
	for _, r := range rows {
		if err := calibrate(r, target); err != nil {
			return fmt.Errorf("%s: %w", r.name, err)
		}
	}
	for round := 0; round < rounds; round++ {
		for _, r := range rows {
			start := time.Now()
			for i := 0; i < r.batch; i++ {
				if err := r.fn(); err != nil {
					return fmt.Errorf("%s: %w", r.name, err)
				}
			}
			r.samples = append(r.samples, float64(time.Since(start).Nanoseconds())/float64(r.batch*r.perCall))
		}
	}
	fmt.Printf("\n%s (%d rounds, batches of ~%v)\n", title, rounds, target)
	fmt.Printf("%-58s %12s %12s %10s\n", "row", "min ns/op", "median ns/op", "ratio")
	for i, r := range rows {
		ratio := "-"
		if c := comparators[i]; c >= 0 && c != i {
			per := make([]float64, rounds)
			for k := range per {
				per[k] = r.samples[k] / rows[c].samples[k]
			}
			ratio = fmt.Sprintf("%.2fx", median(per))
		}
		fmt.Printf("%-58s %12.0f %12.0f %10s\n", r.name, minOf(r.samples), median(r.samples), ratio)
	}
	return nil
}

// exit is the program's exit status, set before returning from main so
// that deferred work (the CPU profile) still runs.
var exit int

func main() {
	defer func() { os.Exit(exit) }() // registered first: runs after the profile is written
	rounds := flag.Int("rounds", 15, "rounds (at least 11)")
	batchMS := flag.Int("batch-ms", 30, "target batch duration in milliseconds")
	only := flag.String("only", "", "run only B12 or B13")
	cpuprofile := flag.String("cpuprofile", "", "write a CPU profile of the whole run to this file")
	flag.Parse()
	if *cpuprofile != "" {
		f, err := os.Create(*cpuprofile)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		defer pprof.StopCPUProfile()
	}
	if *rounds < 11 {
		*rounds = 11
	}
	capsules := os.Getenv("ASTRID_CAPSULES")
	if flag.NArg() > 0 {
		capsules = flag.Arg(0)
	}
	if capsules == "" {
		capsules = filepath.Join("..", "..", "build", "capsules")
	}
	target := time.Duration(*batchMS) * time.Millisecond
	fmt.Printf("astrid %s, Go binding benchmarks; ratio = median of per-round ratios vs the comparator\n", astrid.Version())
	if *only == "" || strings.EqualFold(*only, "B12") {
		if err := b12(capsules, *rounds, target); err != nil {
			fmt.Fprintln(os.Stderr, "B12:", err)
			exit = 1
			return
		}
	}
	if *only == "" || strings.EqualFold(*only, "B13") {
		if err := b13(capsules, *rounds, target); err != nil {
			fmt.Fprintln(os.Stderr, "B13:", err)
			exit = 1
			return
		}
	}
}

func b12(capsules string, rounds int, target time.Duration) error {
	dir := filepath.Join(capsules, "hello")
	rt, err := astrid.NewRuntime(nil)
	if err != nil {
		return err
	}
	defer rt.Close()
	capsule, err := rt.Load(dir, nil)
	if err != nil {
		return err
	}
	defer capsule.Close()
	raw, err := rawLoad(dir)
	if err != nil {
		return err
	}
	payload := []byte(strings.Repeat("x", 64))
	const inC = 100
	rows := []*row{
		{name: "raw cgo call: C astrid_capsule_call + result_free", perCall: 1,
			fn: func() error { return raw.call("noop", payload) }},
		{name: "Go binding: Capsule.Call(\"noop\", 64 B)", perCall: 1,
			fn: func() error {
				res, err := capsule.Call("noop", payload)
				if err == nil && res.Action != "continue" {
					err = fmt.Errorf("action %q", res.Action)
				}
				return err
			}},
		{name: fmt.Sprintf("C loop of the same call (no cgo crossing) x%d", inC), perCall: inC,
			fn: func() error { return raw.loop("noop", payload, inC) }},
	}
	return run("B12: Go -> cgo -> astrid_capsule_call, 64 B payload, noop guest (target: binding <= 2x raw cgo)",
		rows, []int{-1, 0, 0}, rounds, target)
}

// oneFile is B13's Go VFS: one file, whatever the path (as benches/fs.rs).
type oneFile struct{ data []byte }

func (f *oneFile) Stat(string, bool) (astrid.FileStat, error) {
	return astrid.FileStat{Kind: astrid.KindRegular, Size: uint64(len(f.data))}, nil
}
func (f *oneFile) Open(string, astrid.OpenFlag) (uint64, error) { return 1, nil }
func (f *oneFile) ReadAt(_ uint64, buf []byte, off uint64) (int, error) {
	if off >= uint64(len(f.data)) {
		return 0, nil
	}
	return copy(buf, f.data[off:]), nil
}
func (f *oneFile) StatHandle(uint64) (astrid.FileStat, error) { return f.Stat("", true) }
func (f *oneFile) CloseHandle(uint64) error                   { return nil }

// goGate allows reads and writes under cwd://ws (the C gate's rule).
func goGate(req *astrid.GateRequest) astrid.Verdict {
	if req.Kind == astrid.GateFileWrite && !strings.HasPrefix(req.Path, "cwd://ws") {
		return astrid.Deny
	}
	return astrid.Allow
}

func goSetup(dir string, flags astrid.RuntimeFlag, size int) (*astrid.Runtime, *astrid.Capsule, error) {
	rt, err := astrid.NewRuntime(&astrid.Config{Flags: flags})
	if err != nil {
		return nil, nil, err
	}
	rt.SetGate(goGate)
	data := make([]byte, size)
	for i := range data {
		data[i] = 7
	}
	if err := rt.MountVFS("cwd", &oneFile{data: data}); err != nil {
		return nil, nil, err
	}
	c, err := rt.Load(dir, nil)
	return rt, c, err
}

func b13(capsules string, rounds int, target time.Duration) error {
	dir := filepath.Join(capsules, "fsprobe")
	const size, n = 4096, 200
	payload := []byte(fmt.Sprintf("f\n%d", n))
	want := fmt.Sprint(size * n)
	check := func(res astrid.Result, err error) error {
		if err == nil && (res.Action != "ok" || res.Data != want) {
			err = fmt.Errorf("read-loop answered %s %s", res.Action, res.Data)
		}
		return err
	}
	var rows []*row
	var comparators []int
	for _, mode := range []struct {
		name  string
		flags astrid.RuntimeFlag
	}{{"inline", astrid.FlagInlineCallbacks}, {"hand-off", 0}} {
		raw, err := rawSetup(dir, uint32(mode.flags), size)
		if err != nil {
			return err
		}
		rt, capsule, err := goSetup(dir, mode.flags, size)
		if err != nil {
			return err
		}
		defer rt.Close()
		defer capsule.Close()
		comparators = append(comparators, -1, len(rows))
		rows = append(rows,
			&row{name: fmt.Sprintf("read-file 4 KiB, C gate + C VFS, %s", mode.name), perCall: n,
				fn: func() error { return raw.call("read-loop", payload) }},
			&row{name: fmt.Sprintf("read-file 4 KiB, Go gate + Go VFS, %s", mode.name), perCall: n,
				fn: func() error { return check(capsule.Call("read-loop", payload)) }})
	}
	const callbacks = 7 // per read: gate, stat, open, fstat, read_at x2, close
	rows = append(rows, &row{name: fmt.Sprintf("floor: %d C -> Go no-op callbacks (per read)", callbacks), perCall: 1,
		fn: func() error { goCallbacks(callbacks); return nil }})
	comparators = append(comparators, -1)
	return run("B13: guest read-file 4 KiB through gate + VFS callbacks, per host call (ratio: Go vs C callbacks)",
		rows, comparators, rounds, target)
}
