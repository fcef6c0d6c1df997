//! The built-in in-memory filesystem: directories, regular files and real
//! hard links; no symlinks (so `read-link` is `InvalidPath` and a no-follow
//! stat equals a stat). An optional byte cap turns growth past it into
//! `Quota`. One lock guards the tree: operations are short memory copies.

use super::{DirEntry, FileKind, OpenFlags, Stat, Timestamp, Vfs, VfsError, VfsResult};
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
    /// Bytes held by file contents.
    used: u64,
}

pub struct MemoryFs {
    tree: Mutex<Tree>,
    /// Byte cap over all file contents; `None` = unbounded.
    cap: Option<u64>,
}

impl Default for MemoryFs {
    fn default() -> Self {
        MemoryFs::new(None)
    }
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
        let ino = self.next_ino;
        self.next_ino += 1;
        self.entries_mut(dir)?.insert(name.to_string(), ino);
        self.nodes.insert(ino, Node::new(data));
        self.touch(dir);
        Ok(ino)
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
                self.used -= bytes.len() as u64;
            }
        }
    }

    fn handle(&self, handle: u64) -> VfsResult<&OpenFile> {
        self.handles.get(&handle).ok_or(VfsError::Closed)
    }
}

impl MemoryFs {
    pub fn new(cap: Option<u64>) -> MemoryFs {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Data::Dir(BTreeMap::new())));
        MemoryFs {
            tree: Mutex::new(Tree {
                nodes,
                next_ino: 1,
                handles: HashMap::new(),
                next_handle: 1,
                used: 0,
            }),
            cap,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tree> {
        self.tree.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resizes a file's contents, charging the byte cap.
    fn resize(&self, tree: &mut Tree, ino: Ino, new_len: usize) -> VfsResult<()> {
        let old_len = match &tree.node(ino)?.data {
            Data::File(bytes) => bytes.len(),
            Data::Dir(_) => return Err(VfsError::IsDirectory),
        };
        if new_len > old_len {
            let grown = tree.used + (new_len - old_len) as u64;
            if self.cap.is_some_and(|cap| grown > cap) {
                return Err(VfsError::Quota);
            }
        }
        tree.used = tree.used + new_len as u64 - old_len as u64;
        if let Data::File(bytes) = &mut tree.node_mut(ino)?.data {
            bytes.resize(new_len, 0);
        }
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
        tree.entries_mut(dir)?.remove(name);
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
        tree.entries_mut(dir)?.remove(name);
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
            tree.unlink_node(existing);
        }
        tree.entries_mut(src_dir)?.remove(src_name);
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
        let fs = MemoryFs::new(Some(8));
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
