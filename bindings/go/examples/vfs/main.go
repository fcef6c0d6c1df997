// Command vfs is an embedder that supplies the filesystem a capsule sees
// and decides what it may change: the workspace (cwd) mount is served from
// this program's own in-memory files through a Go astrid.VFS, and the gate
// logs every request and refuses writes outside cwd://ws/public.
//
//	usage: vfs [CAPSULE_DIR]   (default: build/capsules/fsprobe)
package main

import (
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strings"
	"sync"

	astrid "github.com/astrid-runtime/astrid/bindings/go"
)

// memFS is a tiny in-memory filesystem: files and directories by path.
// Its methods may run concurrently on library threads, hence the mutex.
type memFS struct {
	mu      sync.Mutex
	dirs    map[string]bool
	files   map[string][]byte
	handles map[uint64]string // handle -> file path
	next    uint64
}

func newMemFS(dirs ...string) *memFS {
	m := &memFS{dirs: map[string]bool{"": true}, files: map[string][]byte{}, handles: map[uint64]string{}}
	for _, d := range dirs {
		m.dirs[d] = true
	}
	return m
}

func parent(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i]
	}
	return ""
}

func (m *memFS) Stat(path string, follow bool) (astrid.FileStat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirs[path] {
		return astrid.FileStat{Kind: astrid.KindDirectory}, nil
	}
	if data, ok := m.files[path]; ok {
		return astrid.FileStat{Kind: astrid.KindRegular, Size: uint64(len(data))}, nil
	}
	return astrid.FileStat{}, fs.ErrNotExist
}

func (m *memFS) Open(path string, flags astrid.OpenFlag) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.dirs[path] {
		return 0, astrid.VFSIsDirectory
	}
	if _, ok := m.files[path]; !ok {
		if flags&astrid.OpenCreate == 0 || !m.dirs[parent(path)] {
			return 0, fs.ErrNotExist
		}
		m.files[path] = nil
	}
	if flags&astrid.OpenTruncate != 0 {
		m.files[path] = nil
	}
	m.next++
	m.handles[m.next] = path
	return m.next, nil
}

func (m *memFS) ReadAt(h uint64, buf []byte, off uint64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	path, ok := m.handles[h]
	if !ok {
		return 0, astrid.VFSClosed
	}
	data := m.files[path]
	if off >= uint64(len(data)) {
		return 0, nil
	}
	return copy(buf, data[off:]), nil
}

func (m *memFS) WriteAt(h uint64, data []byte, off uint64) (int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	path, ok := m.handles[h]
	if !ok {
		return 0, astrid.VFSClosed
	}
	file := m.files[path]
	if end := int(off) + len(data); end > len(file) {
		file = append(file, make([]byte, end-len(file))...)
	}
	copy(file[off:], data)
	m.files[path] = file
	return len(data), nil
}

func (m *memFS) StatHandle(h uint64) (astrid.FileStat, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	path, ok := m.handles[h]
	if !ok {
		return astrid.FileStat{}, astrid.VFSClosed
	}
	return astrid.FileStat{Kind: astrid.KindRegular, Size: uint64(len(m.files[path]))}, nil
}

func (m *memFS) CloseHandle(h uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.handles, h)
	return nil
}

func (m *memFS) ReadDir(path string, emit func(string, astrid.FileKind) bool) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.dirs[path] {
		return fs.ErrNotExist
	}
	kinds := map[string]astrid.FileKind{}
	for d := range m.dirs {
		if d != "" && parent(d) == path {
			kinds[d] = astrid.KindDirectory
		}
	}
	for f := range m.files {
		if parent(f) == path {
			kinds[f] = astrid.KindRegular
		}
	}
	names := make([]string, 0, len(kinds))
	for p := range kinds {
		names = append(names, p)
	}
	sort.Strings(names)
	for _, p := range names {
		if !emit(strings.TrimPrefix(p[len(path):], "/"), kinds[p]) {
			break
		}
	}
	return nil
}

func (m *memFS) Mkdir(path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, isFile := m.files[path]; isFile || m.dirs[path] {
		return fs.ErrExist
	}
	if !m.dirs[parent(path)] {
		return fs.ErrNotExist
	}
	m.dirs[path] = true
	return nil
}

// Release runs once the library has dropped the provider.
func (m *memFS) Release() { fmt.Println("memfs released") }

// gate logs everything and refuses writes outside cwd://ws/public.
func gate(req *astrid.GateRequest) astrid.Verdict {
	const allowed = "cwd://ws/public"
	inside := req.Path == allowed || strings.HasPrefix(req.Path, allowed+"/")
	allow := req.Kind != astrid.GateFileWrite || inside
	kind, verdict := "read", "allow"
	if req.Kind == astrid.GateFileWrite {
		kind = "write"
	}
	if !allow {
		verdict = "deny"
		req.SetReason("writes only under ws/public")
	}
	fmt.Printf("  gate: %s asks to %s %s -> %s\n", req.Capsule, kind, req.Path, verdict)
	if allow {
		return astrid.Allow
	}
	return astrid.Deny
}

func main() {
	dir := "build/capsules/fsprobe"
	if len(os.Args) > 1 {
		dir = os.Args[1]
	}
	if err := run(dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(dir string) error {
	rt, err := astrid.NewRuntime(nil)
	if err != nil {
		return err
	}
	defer rt.Close() // flushes the audit queue and releases the memfs

	if err := rt.MountVFS("cwd", newMemFS("ws", "ws/public")); err != nil {
		return err
	}
	rt.SetGate(gate)
	rt.SetAuditor(func(e astrid.AuditEvent) {
		if e.Outcome == astrid.AuditDenied {
			fmt.Printf("  audit: %s %s denied (%s)\n", e.Call, e.Target, e.Reason)
		}
	})

	capsule, err := rt.Load(dir, nil)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer capsule.Close()
	for _, c := range [][2]string{
		{"write-file", "ws/public/hello.txt\nhello from the capsule"},
		{"read-file", "ws/public/hello.txt"},
		{"write-file", "ws/secret.txt\nnot allowed"},
		{"readdir", "ws"},
	} {
		res, err := capsule.Call(c[0], []byte(c[1]))
		if err != nil {
			return fmt.Errorf("call %s: %w", c[0], err)
		}
		fmt.Printf("%s(%s) -> %s %s\n", c[0], strings.ReplaceAll(c[1], "\n", ", "), res.Action, res.Data)
	}
	return nil
}
