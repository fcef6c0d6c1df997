package astrid

import (
	"io/fs"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// memFS is a complete in-memory provider for the tests: every optional VFS
// interface, symlinks, and a path whose reads panic on purpose.
type memFS struct {
	mu      sync.Mutex
	nodes   map[string]*memNode
	handles map[uint64]*memHandle
	next    uint64

	panicRead string       // ReadAt on this path panics
	reads     atomic.Int64 // ReadAt calls
	calls     atomic.Int64 // every method call
	released  atomic.Int32 // Release calls
}

func (m *memFS) Release() { m.released.Add(1) }

type memNode struct {
	dir      bool
	link     string // symlink target when non-empty
	data     []byte
	modified time.Time
}

type memHandle struct {
	path   string
	node   *memNode
	append bool
}

func newMemFS() *memFS {
	return &memFS{nodes: map[string]*memNode{}, handles: map[uint64]*memHandle{}}
}

func (m *memFS) addDir(path string) { m.nodes[path] = &memNode{dir: true} }

func (m *memFS) addFile(path, text string) {
	m.nodes[path] = &memNode{data: []byte(text), modified: time.Unix(1700000000, 5)}
}

func (m *memFS) get(path string) (*memNode, bool) {
	if path == "" {
		return &memNode{dir: true}, true
	}
	n, ok := m.nodes[path]
	return n, ok
}

func parentOf(path string) string {
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		return path[:i]
	}
	return ""
}

func (m *memFS) parentIsDir(path string) bool {
	p, ok := m.get(parentOf(path))
	return ok && p.dir
}

func statOf(n *memNode) FileStat {
	switch {
	case n.dir:
		return FileStat{Kind: KindDirectory}
	case n.link != "":
		return FileStat{Kind: KindSymlink, Size: uint64(len(n.link))}
	}
	return FileStat{Kind: KindRegular, Size: uint64(len(n.data)), Mode: 0o644, Modified: n.modified}
}

func (m *memFS) Stat(path string, follow bool) (FileStat, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.get(path)
	if !ok {
		return FileStat{}, fs.ErrNotExist
	}
	return statOf(n), nil
}

func (m *memFS) Open(path string, flags OpenFlag) (uint64, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.get(path)
	switch {
	case ok && n.dir:
		return 0, VFSIsDirectory
	case ok && flags&OpenCreate != 0 && flags&OpenExclusive != 0:
		return 0, fs.ErrExist
	case !ok && flags&OpenCreate == 0:
		return 0, fs.ErrNotExist
	case !ok && !m.parentIsDir(path):
		return 0, VFSNotFound
	case !ok:
		n = &memNode{modified: time.Now()}
		m.nodes[path] = n
	}
	if flags&OpenTruncate != 0 {
		n.data = nil
	}
	m.next++
	m.handles[m.next] = &memHandle{path: path, node: n, append: flags&OpenAppend != 0}
	return m.next, nil
}

func (m *memFS) handle(h uint64) (*memHandle, error) {
	f, ok := m.handles[h]
	if !ok {
		return nil, VFSClosed
	}
	return f, nil
}

func (m *memFS) ReadAt(h uint64, buf []byte, off uint64) (int, error) {
	m.calls.Add(1)
	m.reads.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.handle(h)
	if err != nil {
		return 0, err
	}
	if f.path == m.panicRead {
		panic("memfs: read of " + f.path + " panics on purpose")
	}
	if off >= uint64(len(f.node.data)) {
		return 0, nil
	}
	return copy(buf, f.node.data[off:]), nil
}

func (m *memFS) WriteAt(h uint64, data []byte, off uint64) (int, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.handle(h)
	if err != nil {
		return 0, err
	}
	if f.append {
		off = uint64(len(f.node.data))
	}
	if end := off + uint64(len(data)); end > uint64(len(f.node.data)) {
		grown := make([]byte, end)
		copy(grown, f.node.data)
		f.node.data = grown
	}
	copy(f.node.data[off:], data)
	f.node.modified = time.Now()
	return len(data), nil
}

func (m *memFS) CloseHandle(h uint64) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.handles, h)
	return nil
}

func (m *memFS) Sync(h uint64, dataOnly bool) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	_, err := m.handle(h)
	return err
}

func (m *memFS) SetLen(h uint64, size uint64) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.handle(h)
	if err != nil {
		return err
	}
	grown := make([]byte, size)
	copy(grown, f.node.data)
	f.node.data = grown
	return nil
}

func (m *memFS) StatHandle(h uint64) (FileStat, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	f, err := m.handle(h)
	if err != nil {
		return FileStat{}, err
	}
	return statOf(f.node), nil
}

func (m *memFS) ReadDir(path string, emit func(string, FileKind) bool) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.get(path)
	if !ok {
		return fs.ErrNotExist
	}
	if !d.dir {
		return VFSNotDirectory
	}
	var names []string
	for p := range m.nodes {
		if p != path && parentOf(p) == path {
			names = append(names, p)
		}
	}
	sort.Strings(names)
	for _, p := range names {
		name := p
		if path != "" {
			name = p[len(path)+1:]
		}
		if !emit(name, statOf(m.nodes[p]).Kind) {
			break
		}
	}
	return nil
}

func (m *memFS) Mkdir(path string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.get(path); ok {
		return fs.ErrExist
	}
	if !m.parentIsDir(path) {
		return fs.ErrNotExist
	}
	m.addDir(path)
	return nil
}

func (m *memFS) RemoveFile(path string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[path]
	if !ok {
		return fs.ErrNotExist
	}
	if n.dir {
		return VFSIsDirectory
	}
	delete(m.nodes, path)
	return nil
}

func (m *memFS) RemoveDir(path string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[path]
	if !ok {
		return fs.ErrNotExist
	}
	if !n.dir {
		return VFSNotDirectory
	}
	for p := range m.nodes {
		if parentOf(p) == path {
			return VFSNotEmpty
		}
	}
	delete(m.nodes, path)
	return nil
}

func (m *memFS) Rename(src, dst string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[src]
	if !ok {
		return fs.ErrNotExist
	}
	if n.dir {
		return VFSNotSupported // the tests move files only
	}
	delete(m.nodes, src)
	m.nodes[dst] = n
	return nil
}

func (m *memFS) HardLink(src, dst string) error {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[src]
	if !ok {
		return fs.ErrNotExist
	}
	if _, exists := m.nodes[dst]; exists {
		return fs.ErrExist
	}
	m.nodes[dst] = n // the same node: a second name
	return nil
}

func (m *memFS) ReadLink(path string) (string, error) {
	m.calls.Add(1)
	m.mu.Lock()
	defer m.mu.Unlock()
	n, ok := m.nodes[path]
	if !ok {
		return "", fs.ErrNotExist
	}
	if n.link == "" {
		return "", VFSInvalidPath
	}
	return n.link, nil
}

// readOnlyFS has only the required methods: a provider without writes.
type readOnlyFS struct{ m *memFS }

func (r readOnlyFS) Stat(p string, follow bool) (FileStat, error) { return r.m.Stat(p, follow) }
func (r readOnlyFS) Open(p string, flags OpenFlag) (uint64, error) {
	if flags&(OpenWrite|OpenCreate|OpenTruncate|OpenAppend) != 0 {
		return 0, fs.ErrPermission
	}
	return r.m.Open(p, flags)
}
func (r readOnlyFS) ReadAt(h uint64, b []byte, off uint64) (int, error) { return r.m.ReadAt(h, b, off) }
func (r readOnlyFS) CloseHandle(h uint64) error                         { return r.m.CloseHandle(h) }
func (r readOnlyFS) StatHandle(h uint64) (FileStat, error)              { return r.m.StatHandle(h) }
