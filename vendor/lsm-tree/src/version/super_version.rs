// Copyright (c) 2024-present, fjall-rs
// This source code is licensed under both the Apache 2.0 and MIT License
// (found in the LICENSE-* files in the repository)

use crate::{
    memtable::Memtable,
    tree::sealed::SealedMemtables,
    version::{persist_version, Version},
    SeqNo, SequenceNumberCounter,
};
use std::{
    collections::VecDeque,
    path::{Path, PathBuf},
    sync::{Arc, RwLock, RwLockWriteGuard},
};

/// TERN PATCH: versions taken out of the history by [`SuperVersions::take_garbage`].
#[derive(Default)]
pub struct VersionGarbage {
    files: Vec<PathBuf>,
    versions: Vec<SuperVersion>,
}

/// TERN PATCH: drops what [`SuperVersions::take_garbage`] took and deletes its version
/// files; call it without holding the super-version lock.
pub fn delete_version_files(garbage: VersionGarbage) -> crate::Result<()> {
    let VersionGarbage { files, versions } = garbage;
    drop(versions);
    for path in files {
        if path.try_exists()? {
            crate::file::retry_transient_io(|| std::fs::remove_file(&path))?;
        }
    }
    Ok(())
}

/// TERN PATCH: [`SuperVersions::maintenance`] with the lock held only to drop the old
/// versions from memory: checked under the read lock first (nothing to do is the usual
/// case), their files deleted after the write lock is released.
pub fn maintenance_outside_lock(
    lock: &RwLock<SuperVersions>,
    folder: &Path,
    gc_watermark: SeqNo,
) -> crate::Result<()> {
    #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
    if !lock.read().expect("lock is poisoned").has_garbage(gc_watermark) {
        return Ok(());
    }
    #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
    release_and_collect(lock.write().expect("lock is poisoned"), folder, gc_watermark)
}

/// TERN PATCH: version maintenance for a caller that holds the write lock (after an
/// install): takes the old versions out under it, releases it, then drops them and
/// deletes their files.
pub fn release_and_collect(
    mut guard: RwLockWriteGuard<'_, SuperVersions>,
    folder: &Path,
    gc_watermark: SeqNo,
) -> crate::Result<()> {
    let garbage = guard.take_garbage(folder, gc_watermark);
    drop(guard);
    delete_version_files(garbage)
}

/// TERN PATCH: like [`SuperVersions::upgrade_version`], but writes the new version's
/// files (five fsyncs: the version file, its folder, `current` twice and the folder
/// again) *before* taking the super-version write lock, which every read and every
/// write of the tree takes as a reader. Upstream held the write lock across them, so a
/// slow fsync on a busy disk stalled all reads and writes of the tree at every memtable
/// flush and every compaction (Tern's store writer waited up to 35 ms at a time).
///
/// The caller must hold the tree's compaction-state lock: every change of the table set
/// holds it (`clear` too, with this patch), so the [`Version`] cannot change between
/// the read here and the install. Memtable rotations can, as they take only the
/// super-version lock: the installed super version keeps the then-current active
/// memtable and sealed memtables, minus those `f` released. Should the table set have
/// changed anyway, the upgrade is redone from the latest version under the lock, as
/// upstream does.
///
/// Returns the write guard, for the caller's version maintenance.
pub(crate) fn upgrade_version_outside_lock<'a, F: Fn(&SuperVersion) -> crate::Result<SuperVersion>>(
    lock: &'a RwLock<SuperVersions>,
    tree_path: &Path,
    f: F,
    seqno: &SequenceNumberCounter,
    visible_seqno: &SequenceNumberCounter,
) -> crate::Result<RwLockWriteGuard<'a, SuperVersions>> {
    #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
    let base = lock.read().expect("lock is poisoned").latest_version();
    let mut next_version = f(&base)?;
    persist_version(tree_path, &next_version.version)?;

    #[expect(clippy::expect_used, reason = "lock is expected to not be poisoned")]
    let mut guard = lock.write().expect("lock is poisoned");
    let latest = guard.latest_version();

    if latest.version.id() != base.version.id() {
        log::warn!(
            "version changed from #{} to #{} during an unlocked upgrade; redoing it under the lock",
            base.version.id(),
            latest.version.id(),
        );
        guard.upgrade_version(tree_path, f, seqno, visible_seqno)?;
        return Ok(guard);
    }

    let released = base
        .sealed_memtables
        .iter()
        .map(|m| m.id())
        .filter(|id| !next_version.sealed_memtables.contains(id))
        .collect::<Vec<_>>();
    let mut sealed = latest.sealed_memtables.clone();
    for id in released {
        sealed = Arc::new(sealed.remove(id));
    }
    next_version.active_memtable = latest.active_memtable.clone();
    next_version.sealed_memtables = sealed;
    next_version.seqno = seqno.next();
    log::trace!("Next version seqno={}", next_version.seqno);

    let installed_seqno = next_version.seqno;
    guard.append_version(next_version);
    visible_seqno.fetch_max(installed_seqno + 1);

    Ok(guard)
}

/// A super version is a point-in-time snapshot of memtables and a [`Version`] (list of disk files)
#[derive(Clone)]
pub struct SuperVersion {
    /// Active memtable that is being written to
    #[doc(hidden)]
    pub active_memtable: Arc<Memtable>,

    /// Frozen memtables that are being flushed
    pub(crate) sealed_memtables: Arc<SealedMemtables>,

    /// Current tree version
    pub(crate) version: Version,

    pub(crate) seqno: SeqNo,
}

pub struct SuperVersions(VecDeque<SuperVersion>);

impl SuperVersions {
    pub fn new(version: Version) -> Self {
        Self(
            vec![SuperVersion {
                active_memtable: Arc::new(Memtable::new(0)),
                sealed_memtables: Arc::default(),
                version,
                seqno: 0,
            }]
            .into(),
        )
    }

    pub fn memtable_size_sum(&self) -> u64 {
        let mut set = crate::HashMap::default();

        for super_version in &self.0 {
            set.entry(super_version.active_memtable.id)
                .and_modify(|bytes| *bytes += super_version.active_memtable.size())
                .or_insert_with(|| super_version.active_memtable.size());

            for sealed in super_version.sealed_memtables.iter() {
                set.entry(sealed.id)
                    .and_modify(|bytes| *bytes += sealed.size())
                    .or_insert_with(|| sealed.size());
            }
        }

        set.into_values().sum()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn free_list_len(&self) -> usize {
        self.len().saturating_sub(1)
    }

    /// TERN PATCH: the part of [`SuperVersions::maintenance`] that needs the lock: takes
    /// the versions no snapshot can read any more out of the history. The caller drops
    /// them and deletes their files with [`delete_version_files`] after releasing the
    /// lock: an unlink can wait on the file system's journal, dropping a version can
    /// free a whole memtable or delete table files, and every read and write of the tree
    /// waits for this lock.
    pub fn take_garbage(&mut self, folder: &Path, gc_watermark: SeqNo) -> VersionGarbage {
        let mut garbage = VersionGarbage::default();
        if !self.has_garbage(gc_watermark) {
            return garbage;
        }
        if let Some(hi_idx) = self.0.iter().rposition(|x| x.seqno < gc_watermark) {
            for _ in 0..hi_idx {
                let Some(head) = self.0.pop_front() else {
                    break;
                };
                log::trace!(
                    "Removing version #{} (seqno={})",
                    head.version.id(),
                    head.seqno,
                );
                garbage.files.push(folder.join(format!("v{}", head.version.id())));
                garbage.versions.push(head);
            }
        }
        garbage
    }

    /// TERN PATCH: whether [`SuperVersions::take_garbage`] may find anything (a read-lock check).
    pub fn has_garbage(&self, gc_watermark: SeqNo) -> bool {
        gc_watermark != 0 && self.free_list_len() >= 1
    }

    /// Upstream's maintenance, all under the caller's lock (TERN PATCH: built from
    /// [`SuperVersions::take_garbage`], so the collection rule stands once).
    pub fn maintenance(&mut self, folder: &Path, gc_watermark: SeqNo) -> crate::Result<()> {
        delete_version_files(self.take_garbage(folder, gc_watermark))
    }

    /// Modifies the level manifest atomically.
    ///
    /// The function accepts a transition function that receives the current version
    /// and returns a new version.
    ///
    /// The function takes care of persisting the version changes on disk.
    pub(crate) fn upgrade_version<F: FnOnce(&SuperVersion) -> crate::Result<SuperVersion>>(
        &mut self,
        tree_path: &Path,
        f: F,
        seqno: &SequenceNumberCounter,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<()> {
        self.upgrade_version_with_seqno(tree_path, f, seqno.next(), visible_seqno)
    }

    /// Like `upgrade_version`, but takes an already-allocated sequence number.
    ///
    /// This is useful when the seqno must be coordinated with other operations
    /// (e.g., bulk ingestion where tables are recovered with the same seqno).
    pub(crate) fn upgrade_version_with_seqno<
        F: FnOnce(&SuperVersion) -> crate::Result<SuperVersion>,
    >(
        &mut self,
        tree_path: &Path,
        f: F,
        seqno: SeqNo,
        visible_seqno: &SequenceNumberCounter,
    ) -> crate::Result<()> {
        let mut next_version = f(&self.latest_version())?;
        next_version.seqno = seqno;
        log::trace!("Next version seqno={}", next_version.seqno);

        persist_version(tree_path, &next_version.version)?;
        self.append_version(next_version);

        visible_seqno.fetch_max(seqno + 1);

        Ok(())
    }

    pub fn append_version(&mut self, version: SuperVersion) {
        self.0.push_back(version);
    }

    pub fn replace_latest_version(&mut self, version: SuperVersion) {
        if self.0.pop_back().is_some() {
            self.0.push_back(version);
        }
    }

    pub fn latest_version(&self) -> SuperVersion {
        #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
        self.0
            .iter()
            .last()
            .cloned()
            .expect("should always have a SuperVersion")
    }

    pub fn get_version_for_snapshot(&self, seqno: SeqNo) -> SuperVersion {
        if seqno == 0 {
            #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
            return self
                .0
                .front()
                .cloned()
                .expect("should always find a SuperVersion");
        }

        let version = self
            .0
            .iter()
            .rev()
            .find(|version| version.seqno < seqno)
            .cloned();

        if version.is_none() {
            log::error!("Failed to find a SuperVersion for snapshot with seqno={seqno}");
            log::error!("SuperVersions:");

            for version in self.0.iter().rev() {
                log::error!("-> {}, seqno={}", version.version.id(), version.seqno);
            }
        }

        #[expect(clippy::expect_used, reason = "SuperVersion is expected to exist")]
        version.expect("should always find a SuperVersion")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use test_log::test;

    #[test]
    fn super_version_gc_above_watermark() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 0)?;

        assert_eq!(history.free_list_len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_simple() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 1);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_simple_2() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 1,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 8,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_keep() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 8,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 2);

        Ok(())
    }

    #[test]
    fn super_version_gc_below_watermark_shadowed() -> crate::Result<()> {
        let mut history = SuperVersions(
            vec![
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 0,
                },
                SuperVersion {
                    active_memtable: Arc::new(Memtable::new(0)),
                    sealed_memtables: Arc::default(),
                    version: Version::new(0, crate::TreeType::Standard),
                    seqno: 2,
                },
            ]
            .into(),
        );

        history.maintenance(Path::new("."), 3)?;

        assert_eq!(history.len(), 1);

        Ok(())
    }
}

/// TERN PATCH: tests of `upgrade_version_outside_lock`.
#[cfg(test)]
#[expect(clippy::unwrap_used, clippy::expect_used)]
mod tern_patch_tests {
    use crate::{AbstractTree, Config, SequenceNumberCounter};
    use std::sync::Arc;

    /// A memtable rotation in the window between the unlocked read and the install
    /// (simulated inside `f`, which runs in that window) is kept: the installed version
    /// has the new active memtable and the rotated one among the sealed ones, and the
    /// sealed memtable that `f` released (as a flush does) is gone.
    #[test]
    fn a_rotation_during_an_unlocked_upgrade_is_kept() -> crate::Result<()> {
        let folder = tempfile::tempdir()?;
        let seqno = SequenceNumberCounter::default();
        let crate::AnyTree::Standard(tree) =
            Config::new(&folder, seqno.clone(), SequenceNumberCounter::default()).open()?
        else {
            panic!("a standard tree");
        };

        tree.insert("a", "1", seqno.next());
        let first = tree.rotate_memtable().expect("a memtable to seal");
        tree.insert("b", "2", seqno.next());
        let second_id = tree.active_memtable().id();

        let guard = super::upgrade_version_outside_lock(
            &tree.version_history,
            &tree.config.path,
            |current| {
                // Another thread rotates now.
                tree.rotate_memtable().expect("the second memtable to seal");
                let mut copy = current.clone();
                copy.version = copy.version.with_new_l0_run(&[], None, None);
                copy.sealed_memtables = Arc::new(copy.sealed_memtables.remove(first.id()));
                Ok(copy)
            },
            &tree.config.seqno,
            &tree.config.visible_seqno,
        )?;
        let installed = guard.latest_version();
        drop(guard);

        assert_ne!(installed.active_memtable.id(), second_id, "the rotation's new active memtable is kept");
        let sealed: Vec<_> = installed.sealed_memtables.iter().map(|m| m.id()).collect();
        assert_eq!(sealed, vec![second_id], "the rotated memtable is sealed, the released one gone");

        // Writes after the install land where reads look.
        tree.insert("c", "3", seqno.next());
        assert_eq!(&*tree.get("b", seqno.get())?.unwrap(), b"2");
        assert_eq!(&*tree.get("c", seqno.get())?.unwrap(), b"3");
        Ok(())
    }
}
