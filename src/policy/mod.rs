//! Pure policy rules: the grammar of topics, VFS paths and network entries,
//! and how manifest grants are matched. Nothing here touches I/O, so every
//! rule is unit-tested in isolation.

pub mod airlock;
pub mod gate;
pub mod net;
pub mod paths;
pub mod topic;
