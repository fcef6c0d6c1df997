//! The built-in in-memory filesystem: directories, regular files and real
//! hard links; no symlinks (so `read-link` is `InvalidPath` and a no-follow
//! stat equals a stat). One lock guards the tree: operations are short
//! memory copies.
//!
//! Every mount has a budget ([`MemoryLimits`]): bytes the host commits
//! (file capacity, plus [`ENTRY_OVERHEAD`] and the name for every
//! directory entry) and a count of entries. Growth past either is `Quota`,
//! checked before anything is allocated; allocation itself is fallible,
//! so no size a guest asks for can abort the host.

use super::{DirEntry, FileKind, OpenFlags, Stat, Timestamp, Vfs, VfsError, VfsResult};
use crate::signal::MutexExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

type Ino = u64;
const ROOT: Ino = 0;

enum Data {
    File(Vec<u8>),
    Dir(BTreeMap<String, Ino>),
}

struct Node {
    data: Data,
    /// Directory entries naming this node (hard links).
    links: u32,
    /// Open handles; an unlinked file lives until the last one closes.
    opens: u32,
    modified: Timestamp,
    created: Timestamp,
    accessed: Timestamp,
}

impl Node {
    fn new(data: Data) -> Node {
        let now = Timestamp::now();
        Node {
            data,
            links: 1,
            opens: 0,
            modified: now,
            created: now,
            accessed: now,
        }
    }

    fn stat(&self) -> Stat {
        let (size, kind, mode) = match &self.data {
            Data::File(bytes) => (bytes.len() as u64, FileKind::Regular, 0o644),
            Data::Dir(entries) => (entries.len() as u64, FileKind::Directory, 0o755),
        };
        Stat {
            size,
            kind,
            mode,
            modified: Some(self.modified),
            created: Some(self.created),
            accessed: Some(self.accessed),
        }
    }
}

struct OpenFile {
    ino: Ino,
    flags: OpenFlags,
}

struct Tree {
    nodes: HashMap<Ino, Node>,
    next_ino: Ino,
    handles: HashMap<u64, OpenFile>,
    next_handle: u64,
    /// Bytes charged: file capacity plus per-entry overhead and names.
    used: u64,
    /// Directory entries (every name, hard links included).
    entries: u64,
    limits: MemoryLimits,
}

/// Bytes charged per directory entry beyond its name: the node, its map
/// slots and allocator headers, so a flood of empty files costs what it
/// really holds.
pub const ENTRY_OVERHEAD: u64 = 128;

/// The budget of one in-memory mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryLimits {
    /// Bytes committed: file capacity plus per-entry overhead and names.
    pub bytes: u64,
    /// Directory entries (files, directories and extra hard links).
    pub entries: u64,
}

impl MemoryLimits {
    /// Sized like the KV budget: 64 MiB and 65,536 entries.
    pub const DEFAULT: MemoryLimits = MemoryLimits {
        bytes: 64 << 20,
        entries: 1 << 16,
    };
}

impl Default for MemoryLimits {
    fn default() -> Self {
        MemoryLimits::DEFAULT
    }
}

pub struct MemoryFs {
    tree: Mutex<Tree>,
}

impl Default for MemoryFs {
    fn default() -> Self {
        MemoryFs::new(MemoryLimits::DEFAULT)
    }
}

fn entry_cost(name: &str) -> u64 {
    ENTRY_OVERHEAD + name.len() as u64
}

fn split_parent(path: &str) -> VfsResult<(&str, &str)> {
    if path.is_empty() {
        return Err(VfsError::Access); // the mount root itself
    }
    Ok(match path.rsplit_once('/') {
        Some((parent, name)) => (parent, name),
        None => ("", path),
    })
}

impl Tree {
    fn node(&self, ino: Ino) -> VfsResult<&Node> {
        self.nodes.get(&ino).ok_or(VfsError::NotFound)
    }

    fn node_mut(&mut self, ino: Ino) -> VfsResult<&mut Node> {
        self.nodes.get_mut(&ino).ok_or(VfsError::NotFound)
    }

    fn lookup(&self, path: &str) -> VfsResult<Ino> {
        let mut ino = ROOT;
        if path.is_empty() {
            return Ok(ino);
        }
        for part in path.split('/') {
            match &self.node(ino)?.data {
                Data::Dir(entries) => ino = *entries.get(part).ok_or(VfsError::NotFound)?,
                Data::File(_) => return Err(VfsError::NotDirectory),
            }
        }
        Ok(ino)
    }

    /// The parent directory's inode and the entry name.
    fn parent<'p>(&self, path: &'p str) -> VfsResult<(Ino, &'p str)> {
        let (parent, name) = split_parent(path)?;
        let ino = self.lookup(parent)?;
        match self.node(ino)?.data {
            Data::Dir(_) => Ok((ino, name)),
            Data::File(_) => Err(VfsError::NotDirectory),
        }
    }

    fn entries_mut(&mut self, dir: Ino) -> VfsResult<&mut BTreeMap<String, Ino>> {
        match &mut self.node_mut(dir)?.data {
            Data::Dir(entries) => Ok(entries),
            Data::File(_) => Err(VfsError::NotDirectory),
        }
    }

    fn insert(&mut self, dir: Ino, name: &str, data: Data) -> VfsResult<Ino> {
        self.charge_entry(name)?;
        let ino = self.next_ino;
        self.next_ino += 1;
        self.entries_mut(dir)?.insert(name.to_string(), ino);
        self.nodes.insert(ino, Node::new(data));
        self.touch(dir);
        Ok(ino)
    }

    /// Charges one new directory entry, or refuses it past the budget.
    fn charge_entry(&mut self, name: &str) -> VfsResult<()> {
        let bytes = self.used.saturating_add(entry_cost(name));
        if self.entries >= self.limits.entries || bytes > self.limits.bytes {
            return Err(VfsError::Quota);
        }
        self.entries += 1;
        self.used = bytes;
        Ok(())
    }

    /// Removes the entry `name` from `dir` and releases its charge.
    fn remove_entry(&mut self, dir: Ino, name: &str) -> VfsResult<()> {
        if self.entries_mut(dir)?.remove(name).is_some() {
            self.entries -= 1;
            self.used -= entry_cost(name);
        }
        Ok(())
    }

    fn touch(&mut self, ino: Ino) {
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.modified = Timestamp::now();
        }
    }

    /// Drops one link; frees the node when nothing names or holds it.
    fn unlink_node(&mut self, ino: Ino) {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return;
        };
        node.links = node.links.saturating_sub(1);
        self.collect(ino);
    }

    fn collect(&mut self, ino: Ino) {
        let free = matches!(self.nodes.get(&ino), Some(n) if n.links == 0 && n.opens == 0);
        if free {
            if let Some(Node {
                data: Data::File(bytes),
                ..
            }) = self.nodes.remove(&ino)
            {
                self.used -= bytes.capacity() as u64;
            }
        }
    }

    fn handle(&self, handle: u64) -> VfsResult<&OpenFile> {
        self.handles.get(&handle).ok_or(VfsError::Closed)
    }
}

impl MemoryFs {
    pub fn new(limits: MemoryLimits) -> MemoryFs {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Data::Dir(BTreeMap::new())));
        MemoryFs {
            tree: Mutex::new(Tree {
                nodes,
                next_ino: 1,
                handles: HashMap::new(),
                next_handle: 1,
                used: 0,
                entries: 0,
                limits,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.locked()
    }

    /// Resizes a file's contents. Growth reserves first, charging the
    /// capacity actually allocated (doubling while the budget allows, exact
    /// otherwise), so a refused size allocates nothing; a file shrunk to a
    /// quarter of its capacity gives the rest back.
    fn resize(&self, tree: &mut Tree, ino: Ino, new_len: usize) -> VfsResult<()> {
        let (len, capacity) = match &tree.node(ino)?.data {
            Data::File(bytes) => (bytes.len(), bytes.capacity()),
            Data::Dir(_) => return Err(VfsError::IsDirectory),
        };
        let budget = tree.limits.bytes;
        let fits = |cap: usize| {
            (cap - capacity) as u64 <= budget.saturating_sub(tree.used)
                && cap <= isize::MAX as usize
        };
        let mut grown_to = None;
        if new_len > capacity {
            let doubled = new_len.max(capacity.saturating_mul(2));
            let want = if fits(doubled) {
                doubled
            } else if fits(new_len) {
                new_len
            } else {
                return Err(VfsError::Quota);
            };
            grown_to = Some(want);
        }
        let Data::File(bytes) = &mut tree.node_mut(ino)?.data else {
            return Err(VfsError::IsDirectory);
        };
        if let Some(want) = grown_to {
            bytes
                .try_reserve_exact(want - len)
                .map_err(|_| VfsError::Quota)?;
        }
        bytes.resize(new_len, 0);
        if new_len < capacity / 4 {
            bytes.shrink_to(new_len);
        }
        let now = bytes.capacity() as u64;
        tree.used = tree.used - capacity as u64 + now;
        Ok(())
    }
}

impl Vfs for MemoryFs {
    fn stat(&self, path: &str, _follow: bool) -> VfsResult<Stat> {
        let tree = self.lock();
        Ok(tree.node(tree.lookup(path)?)?.stat())
    }

    fn open(&self, path: &str, flags: OpenFlags) -> VfsResult<u64> {
        let mut tree = self.lock();
        let ino = match tree.lookup(path) {
            Ok(ino) => {
                if flags.has(OpenFlags::EXCLUSIVE) && flags.has(OpenFlags::CREATE) {
                    return Err(VfsError::AlreadyExists);
                }
                if matches!(tree.node(ino)?.data, Data::Dir(_)) {
                    return Err(VfsError::IsDirectory);
                }
                if flags.has(OpenFlags::TRUNCATE) {
                    self.resize(&mut tree, ino, 0)?;
                }
                ino
            }
            Err(VfsError::NotFound) if flags.has(OpenFlags::CREATE) => {
                let (dir, name) = tree.parent(path)?;
                tree.insert(dir, name, Data::File(Vec::new()))?
            }
            Err(e) => return Err(e),
        };
        tree.node_mut(ino)?.opens += 1;
        let handle = tree.next_handle;
        tree.next_handle += 1;
        tree.handles.insert(handle, OpenFile { ino, flags });
        Ok(handle)
    }

    fn read_at(&self, handle: u64, offset: u64, len: usize, buf: &mut Vec<u8>) -> VfsResult<()> {
        let tree = self.lock();
        let open = tree.handle(handle)?;
        if !open.flags.has(OpenFlags::READ) {
            return Err(VfsError::Access);
        }
        if let Data::File(bytes) = &tree.node(open.ino)?.data {
            let start = usize::try_from(offset)
                .unwrap_or(usize::MAX)
                .min(bytes.len());
            let end = start.saturating_add(len).min(bytes.len());
            buf.extend_from_slice(&bytes[start..end]);
        }
        Ok(())
    }

    fn write_at(&self, handle: u64, offset: u64, data: &[u8]) -> VfsResult<usize> {
        let mut tree = self.lock();
        let open = tree.handle(handle)?;
        let (ino, flags) = (open.ino, open.flags);
        if !flags.has(OpenFlags::WRITE) {
            return Err(VfsError::Access);
        }
        let current = match &tree.node(ino)?.data {
            Data::File(bytes) => bytes.len(),
            Data::Dir(_) => return Err(VfsError::IsDirectory),
        };
        let start = if flags.has(OpenFlags::APPEND) {
            current
        } else {
            usize::try_from(offset).map_err(|_| VfsError::TooLarge)?
        };
        let end = start.checked_add(data.len()).ok_or(VfsError::TooLarge)?;
        if end > current {
            self.resize(&mut tree, ino, end)?;
        }
        let node = tree.node_mut(ino)?;
        if let Data::File(bytes) = &mut node.data {
            bytes[start..end].copy_from_slice(data);
        }
        node.modified = Timestamp::now();
        Ok(data.len())
    }

    fn sync(&self, handle: u64, _data_only: bool) -> VfsResult<()> {
        self.lock().handle(handle).map(|_| ())
    }

    fn set_len(&self, handle: u64, len: u64) -> VfsResult<()> {
        let mut tree = self.lock();
        let open = tree.handle(handle)?;
        if !open.flags.has(OpenFlags::WRITE) {
            return Err(VfsError::Access);
        }
        let ino = open.ino;
        let len = usize::try_from(len).map_err(|_| VfsError::TooLarge)?;
        self.resize(&mut tree, ino, len)?;
        tree.touch(ino);
        Ok(())
    }

    fn fstat(&self, handle: u64) -> VfsResult<Stat> {
        let tree = self.lock();
        let ino = tree.handle(handle)?.ino;
        Ok(tree.node(ino)?.stat())
    }

    fn close(&self, handle: u64) {
        let mut tree = self.lock();
        if let Some(open) = tree.handles.remove(&handle) {
            if let Some(node) = tree.nodes.get_mut(&open.ino) {
                node.opens = node.opens.saturating_sub(1);
            }
            tree.collect(open.ino);
        }
    }

    fn read_dir(&self, path: &str, sink: &mut dyn FnMut(DirEntry) -> bool) -> VfsResult<()> {
        let tree = self.lock();
        let Data::Dir(entries) = &tree.node(tree.lookup(path)?)?.data else {
            return Err(VfsError::NotDirectory);
        };
        for (name, ino) in entries {
            let kind = match tree.node(*ino)?.data {
                Data::Dir(_) => FileKind::Directory,
                Data::File(_) => FileKind::Regular,
            };
            if !sink(DirEntry {
                name: name.clone(),
                kind,
            }) {
                break;
            }
        }
        Ok(())
    }

    fn mkdir(&self, path: &str) -> VfsResult<()> {
        let mut tree = self.lock();
        if path.is_empty() || tree.lookup(path).is_ok() {
            return Err(VfsError::AlreadyExists);
        }
        let (dir, name) = tree.parent(path)?;
        tree.insert(dir, name, Data::Dir(BTreeMap::new()))?;
        Ok(())
    }

    fn remove_file(&self, path: &str) -> VfsResult<()> {
        let mut tree = self.lock();
        let (dir, name) = tree.parent(path)?;
        let ino = tree.lookup(path)?;
        if matches!(tree.node(ino)?.data, Data::Dir(_)) {
            return Err(VfsError::IsDirectory);
        }
        tree.remove_entry(dir, name)?;
        tree.touch(dir);
        tree.unlink_node(ino);
        Ok(())
    }

    fn remove_dir(&self, path: &str) -> VfsResult<()> {
        let mut tree = self.lock();
        let (dir, name) = tree.parent(path)?;
        let ino = tree.lookup(path)?;
        match &tree.node(ino)?.data {
            Data::Dir(entries) if !entries.is_empty() => return Err(VfsError::NotEmpty),
            Data::Dir(_) => {}
            Data::File(_) => return Err(VfsError::NotDirectory),
        }
        tree.remove_entry(dir, name)?;
        tree.touch(dir);
        tree.unlink_node(ino);
        Ok(())
    }

    fn rename(&self, src: &str, dst: &str) -> VfsResult<()> {
        let mut tree = self.lock();
        let (src_dir, src_name) = tree.parent(src)?;
        let ino = tree.lookup(src)?;
        let (dst_dir, dst_name) = tree.parent(dst)?;
        let moving_dir = matches!(tree.node(ino)?.data, Data::Dir(_));
        if moving_dir && (dst == src || dst.starts_with(&format!("{src}/"))) {
            return if dst == src {
                Ok(())
            } else {
                Err(VfsError::InvalidPath) // into its own subtree, as EINVAL
            };
        }
        // A longer name may need budget: checked before anything changes.
        let growth = (dst_name.len() as u64).saturating_sub(src_name.len() as u64);
        if tree.used.saturating_add(growth) > tree.limits.bytes {
            return Err(VfsError::Quota);
        }
        if let Ok(existing) = tree.lookup(dst) {
            if existing == ino {
                return Ok(());
            }
            match (&tree.node(existing)?.data, moving_dir) {
                (Data::Dir(entries), true) if !entries.is_empty() => {
                    return Err(VfsError::NotEmpty)
                }
                (Data::Dir(_), false) => return Err(VfsError::IsDirectory),
                (Data::File(_), true) => return Err(VfsError::NotDirectory),
                _ => {}
            }
            tree.remove_entry(dst_dir, dst_name)?;
            tree.unlink_node(existing);
        }
        // The name moves: the old entry's charge is released before the new
        // one is taken, so a rename never fails on the entry count.
        tree.remove_entry(src_dir, src_name)?;
        tree.charge_entry(dst_name)?; // cannot fail: checked above
        tree.entries_mut(dst_dir)?.insert(dst_name.to_string(), ino);
        tree.touch(src_dir);
        tree.touch(dst_dir);
        Ok(())
    }

    fn hard_link(&self, src: &str, dst: &str) -> VfsResult<()> {
        let mut tree = self.lock();
        let ino = tree.lookup(src)?;
        if matches!(tree.node(ino)?.data, Data::Dir(_)) {
            return Err(VfsError::IsDirectory);
        }
        if tree.lookup(dst).is_ok() {
            return Err(VfsError::AlreadyExists);
        }
        let (dir, name) = tree.parent(dst)?;
        tree.charge_entry(name)?;
        tree.entries_mut(dir)?.insert(name.to_string(), ino);
        tree.node_mut(ino)?.links += 1;
        tree.touch(dir);
        Ok(())
    }

    fn read_link(&self, path: &str) -> VfsResult<String> {
        self.lock().lookup(path)?;
        Err(VfsError::InvalidPath)
    }

    fn has_symlinks(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &MemoryFs, path: &str, data: &[u8]) -> VfsResult<()> {
        let h = fs.open(
            path,
            OpenFlags(OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE),
        )?;
        let r = fs.write_at(h, 0, data).map(|_| ());
        fs.close(h);
        r
    }

    fn read(fs: &MemoryFs, path: &str) -> VfsResult<Vec<u8>> {
        let h = fs.open(path, OpenFlags(OpenFlags::READ))?;
        let mut buf = Vec::new();
        let r = fs.read_at(h, 0, 1 << 20, &mut buf);
        fs.close(h);
        r.map(|()| buf)
    }

    #[test]
    fn files_dirs_and_hard_links() {
        let fs = MemoryFs::default();
        fs.mkdir("d").unwrap();
        assert_eq!(fs.mkdir("d"), Err(VfsError::AlreadyExists));
        assert_eq!(fs.mkdir("x/y"), Err(VfsError::NotFound));
        write(&fs, "d/a", b"hello").unwrap();
        assert_eq!(fs.mkdir("d/a/b"), Err(VfsError::NotDirectory));
        fs.hard_link("d/a", "d/b").unwrap();
        write(&fs, "d/b", b"bye").unwrap();
        assert_eq!(read(&fs, "d/a").unwrap(), b"bye");
        fs.remove_file("d/a").unwrap();
        assert_eq!(read(&fs, "d/b").unwrap(), b"bye");
        assert_eq!(fs.remove_dir("d"), Err(VfsError::NotEmpty));
        assert_eq!(fs.remove_file("d"), Err(VfsError::IsDirectory));
        assert_eq!(fs.read_link("d/b"), Err(VfsError::InvalidPath));
        assert_eq!(fs.remove_file(""), Err(VfsError::Access));
    }

    #[test]
    fn unlinked_file_lives_while_open_and_cap_is_enforced() {
        let fs = MemoryFs::new(MemoryLimits {
            bytes: ENTRY_OVERHEAD + 1 + 8,
            entries: 8,
        });
        write(&fs, "f", b"12345").unwrap();
        let h = fs.open("f", OpenFlags(OpenFlags::READ)).unwrap();
        fs.remove_file("f").unwrap();
        let mut buf = Vec::new();
        fs.read_at(h, 1, 2, &mut buf).unwrap();
        assert_eq!(buf, b"23");
        assert_eq!(write(&fs, "g", b"1234"), Err(VfsError::Quota));
        fs.close(h);
        write(&fs, "g", b"1234").unwrap();
        assert_eq!(fs.read_at(h, 0, 1, &mut buf), Err(VfsError::Closed));
    }

    #[test]
    fn sizes_past_the_budget_are_refused_before_any_allocation() {
        let fs = MemoryFs::default();
        let h = fs
            .open("f", OpenFlags(OpenFlags::WRITE | OpenFlags::CREATE))
            .unwrap();
        // Each would abort the process if the host tried to allocate it.
        for len in [u64::MAX, 1 << 40, (64 << 20) + 1] {
            assert_eq!(fs.set_len(h, len), Err(VfsError::Quota), "{len}");
        }
        for offset in [u64::MAX - 4, 1 << 40, 64 << 20] {
            let result = fs.write_at(h, offset, b"x");
            assert!(
                matches!(result, Err(VfsError::Quota | VfsError::TooLarge)),
                "{offset}: {result:?}"
            );
        }
        assert_eq!(fs.fstat(h).unwrap().size, 0, "nothing changed");
        fs.set_len(h, 1 << 20).unwrap();
        assert_eq!(fs.fstat(h).unwrap().size, 1 << 20);
        fs.close(h);
    }

    #[test]
    fn entries_cost_their_overhead_and_are_counted() {
        let fs = MemoryFs::new(MemoryLimits {
            bytes: 1 << 20,
            entries: 3,
        });
        write(&fs, "a", b"").unwrap();
        fs.mkdir("d").unwrap();
        fs.hard_link("a", "d/b").unwrap();
        assert_eq!(write(&fs, "c", b""), Err(VfsError::Quota));
        assert_eq!(fs.mkdir("e"), Err(VfsError::Quota));
        assert_eq!(fs.hard_link("a", "z"), Err(VfsError::Quota));
        fs.rename("d/b", "d/renamed").unwrap(); // a rename never adds one
        fs.remove_file("a").unwrap();
        write(&fs, "c", b"").unwrap();

        // Empty files are not free: the byte budget bounds a flood of them.
        let fs = MemoryFs::new(MemoryLimits {
            bytes: 100 * (ENTRY_OVERHEAD + 4),
            entries: u64::MAX,
        });
        let made = (0..1000)
            .take_while(|i| write(&fs, &format!("{i:04}"), b"").is_ok())
            .count();
        assert_eq!(made, 100);
    }

    #[test]
    fn rename_rules() {
        let fs = MemoryFs::default();
        fs.mkdir("a").unwrap();
        fs.mkdir("b").unwrap();
        write(&fs, "b/x", b"").unwrap();
        write(&fs, "f", b"1").unwrap();
        assert_eq!(fs.rename("a", "b"), Err(VfsError::NotEmpty));
        assert_eq!(fs.rename("a", "f"), Err(VfsError::NotDirectory));
        assert_eq!(fs.rename("f", "a"), Err(VfsError::IsDirectory));
        assert_eq!(fs.rename("a", "a/c"), Err(VfsError::InvalidPath));
        fs.rename("f", "b/x").unwrap();
        assert_eq!(read(&fs, "b/x").unwrap(), b"1");
        assert_eq!(fs.stat("f", true), Err(VfsError::NotFound));
    }
}
