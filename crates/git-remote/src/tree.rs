//! Reading and changing the tree of one commit, from a store that may hold only the objects on
//! the paths asked about: a depth-1 fetch into a libgit2 repository holds them all, a partial
//! checkout's memory only the commit, the trees along the paths and their files. Commits are
//! built by rebuilding the trees along each changed path only, so both can commit, the same way.

use std::borrow::Cow;

use step_kit::StepError;

use crate::checkout::{Change, Identity, PathContent};
use crate::objects::{
    commit_tree, parse_tree, write_commit, write_tree, Kind, ObjectId, ObjectStore, TreeEntry,
    FILE_MODE, TREE_MODE,
};

/// An object as read: its kind and its bytes (borrowed from memory, or read from disk).
pub(crate) type Read<'a> = Option<(Kind, Cow<'a, [u8]>)>;

/// Where objects are read and written.
pub(crate) trait Objects {
    /// The object, or `None` when this store does not hold it.
    fn read(&self, id: &ObjectId) -> Result<Read<'_>, StepError>;
    fn write(&mut self, kind: Kind, data: Vec<u8>) -> Result<ObjectId, StepError>;
}

impl Objects for ObjectStore {
    fn read(&self, id: &ObjectId) -> Result<Read<'_>, StepError> {
        Ok(self.get(id).map(|(kind, data)| (kind, Cow::Borrowed(data))))
    }

    fn write(&mut self, kind: Kind, data: Vec<u8>) -> Result<ObjectId, StepError> {
        Ok(self.insert(kind, data))
    }
}

/// The objects of a libgit2 repository.
pub(crate) struct Odb<'r>(pub &'r git2::Repository);

impl Objects for Odb<'_> {
    fn read(&self, id: &ObjectId) -> Result<Read<'_>, StepError> {
        let odb = self
            .0
            .odb()
            .map_err(|e| local_error("open the objects", e))?;
        let object = match odb.read(git2_oid(id)) {
            Ok(object) => object,
            Err(e) if e.code() == git2::ErrorCode::NotFound => return Ok(None),
            Err(e) => return Err(local_error("read an object", e)),
        };
        let kind = match object.kind() {
            git2::ObjectType::Commit => Kind::Commit,
            git2::ObjectType::Tree => Kind::Tree,
            git2::ObjectType::Blob => Kind::Blob,
            _ => Kind::Tag,
        };
        Ok(Some((kind, Cow::Owned(object.data().to_vec()))))
    }

    fn write(&mut self, kind: Kind, data: Vec<u8>) -> Result<ObjectId, StepError> {
        let kind = match kind {
            Kind::Commit => git2::ObjectType::Commit,
            Kind::Tree => git2::ObjectType::Tree,
            Kind::Blob => git2::ObjectType::Blob,
            Kind::Tag => git2::ObjectType::Tag,
        };
        let odb = self
            .0
            .odb()
            .map_err(|e| local_error("open the objects", e))?;
        let id = odb
            .write(kind, &data)
            .map_err(|e| local_error("write an object", e))?;
        Ok(id.into())
    }
}

impl From<git2::Oid> for ObjectId {
    fn from(oid: git2::Oid) -> ObjectId {
        ObjectId::from_bytes(oid.as_bytes()).expect("libgit2 ids are SHA-1")
    }
}

/// The libgit2 id of `id` (starting libgit2 if it has not started: only the libgit2 paths call it).
pub(crate) fn git2_oid(id: &ObjectId) -> git2::Oid {
    git2::Oid::from_bytes(id.as_bytes()).expect("20 bytes are an id")
}

fn local_error(what: &str, e: git2::Error) -> StepError {
    StepError::unexpected(format!("cannot {what}: {}", e.message()))
}

/// An object `store` must hold, of `kind`.
fn object<'s>(
    store: &'s dyn Objects,
    id: &ObjectId,
    kind: Kind,
) -> Result<Cow<'s, [u8]>, StepError> {
    match store.read(id)? {
        Some((k, data)) if k == kind => Ok(data),
        Some((k, _)) => Err(StepError::unexpected(format!(
            "object {id} is a {}, not a {}",
            k.name(),
            kind.name()
        ))),
        None => Err(StepError::unexpected(format!(
            "object {id} ({}) was not fetched",
            kind.name()
        ))),
    }
}

pub(crate) fn entries(store: &dyn Objects, id: &ObjectId) -> Result<Vec<TreeEntry>, StepError> {
    parse_tree(&object(store, id, Kind::Tree)?)
        .map_err(|e| StepError::unexpected(format!("tree {id}: {e}")))
}

/// The root tree of commit `commit`.
pub(crate) fn root_tree(store: &dyn Objects, commit: &ObjectId) -> Result<ObjectId, StepError> {
    commit_tree(&object(store, commit, Kind::Commit)?)
        .map_err(|e| StepError::unexpected(format!("commit {commit}: {e}")))
}

/// A path's components (empty ones, as in `a//b` or a trailing `/`, skipped).
pub(crate) fn components(path: &str) -> Vec<&str> {
    path.split('/').filter(|c| !c.is_empty()).collect()
}

/// A commit of a store, read by path.
pub(crate) struct TipView<'s> {
    pub store: &'s dyn Objects,
    pub tip: ObjectId,
}

impl TipView<'_> {
    /// The entry at `path`, or `None` when absent (or below a file).
    pub fn entry(&self, path: &str) -> Result<Option<TreeEntry>, StepError> {
        let root = root_tree(self.store, &self.tip)?;
        let mut entry = TreeEntry {
            mode: TREE_MODE,
            name: Vec::new(),
            id: root,
        };
        for name in components(path) {
            if !entry.is_tree() {
                return Ok(None);
            }
            let found = entries(self.store, &entry.id)?
                .into_iter()
                .find(|e| e.name == name.as_bytes());
            match found {
                Some(e) => entry = e,
                None => return Ok(None),
            }
        }
        Ok(Some(entry))
    }

    /// A file's content, or `None` when absent.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>, StepError> {
        match self.entry(path)? {
            None => Ok(None),
            Some(e) if !e.is_blob() => {
                Err(StepError::precondition(format!("{path} is not a file")))
            }
            Some(e) => Ok(Some(object(self.store, &e.id, Kind::Blob)?.into_owned())),
        }
    }

    /// The names of the files directly in directory `path` (empty when it is absent), in order.
    pub fn list_dir(&self, path: &str) -> Result<Vec<String>, StepError> {
        match self.entry(path)? {
            None => Ok(Vec::new()),
            Some(e) if !e.is_tree() => Err(StepError::precondition(format!(
                "{path} is not a directory"
            ))),
            Some(e) => {
                let mut names: Vec<String> = entries(self.store, &e.id)?
                    .into_iter()
                    .filter(|e| e.is_blob())
                    .filter_map(|e| String::from_utf8(e.name).ok())
                    .collect();
                names.sort();
                Ok(names)
            }
        }
    }

    /// A file's content, or the files directly in a directory (name order), or nothing.
    pub fn read_path(&self, path: &str) -> Result<PathContent, StepError> {
        let Some(entry) = self.entry(path)? else {
            return Ok(PathContent::Missing);
        };
        if !entry.is_tree() {
            return Ok(match self.read_file(path)? {
                Some(content) => PathContent::File(content),
                None => PathContent::Missing,
            });
        }
        let mut files = Vec::new();
        for e in entries(self.store, &entry.id)? {
            let (true, Ok(name)) = (e.is_blob(), String::from_utf8(e.name)) else {
                continue;
            };
            files.push((name, object(self.store, &e.id, Kind::Blob)?.into_owned()));
        }
        files.sort();
        Ok(PathContent::Dir(files))
    }
}

/// A commit built locally: its id and the objects written for it that its parent's tree does
/// not hold (what a push must send), the commit first.
#[derive(Debug, Clone)]
pub(crate) struct NewCommit {
    pub id: ObjectId,
    pub objects: Vec<ObjectId>,
}

/// Commits `changes` on top of `parent` in `store`; `None` when they change nothing. Only the
/// trees on the changed paths are read and rewritten.
pub(crate) fn commit(
    store: &mut dyn Objects,
    parent: ObjectId,
    changes: &[Change],
    identity: &Identity,
    message: &str,
) -> Result<Option<NewCommit>, StepError> {
    check_identity(identity)?;
    let base = root_tree(store, &parent)?;
    let mut root = base;
    let mut written = Vec::new();
    for change in changes {
        let path = components(&change.path);
        let rebuilt = rebuild(
            store,
            Some(root),
            &path,
            change.content.as_deref(),
            &mut written,
        )
        .map_err(|why| StepError::precondition(format!("cannot change {}: {why}", change.path)))?;
        root = match rebuilt {
            Some(id) => id,
            // The last file went: the root is the empty tree.
            None => store.write(Kind::Tree, Vec::new())?,
        };
    }
    if root == base {
        return Ok(None);
    }
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let data = write_commit(
        root,
        parent,
        &identity.name,
        &identity.email,
        seconds,
        message,
    );
    let id = store.write(Kind::Commit, data)?;
    let mut objects = vec![id];
    reachable_new(store, root, &written, &mut objects)?;
    Ok(Some(NewCommit { id, objects }))
}

/// Names and emails with `<`, `>` or a line break would corrupt the commit's author line.
fn check_identity(identity: &Identity) -> Result<(), StepError> {
    for (what, value) in [("name", &identity.name), ("email", &identity.email)] {
        if value.trim().is_empty() || value.contains(['<', '>', '\n', '\r', '\0']) {
            return Err(StepError::invalid(format!(
                "invalid author identity: the {what} {value:?} is empty or holds <, > or a line break"
            )));
        }
    }
    Ok(())
}

/// A name git accepts in a tree (and checks out safely).
fn check_name(name: &str) -> Result<(), String> {
    if name == "." || name == ".." || name.eq_ignore_ascii_case(".git") || name.contains('\0') {
        return Err(format!("{name:?} is not a valid name in a git tree"));
    }
    Ok(())
}

/// Tree `tree` (absent: a new directory) with `path` set to `content` (`None`: removed); the new
/// tree's id, or `None` when it ends up empty (git keeps no empty directory).
fn rebuild(
    store: &mut dyn Objects,
    tree: Option<ObjectId>,
    path: &[&str],
    content: Option<&[u8]>,
    written: &mut Vec<ObjectId>,
) -> Result<Option<ObjectId>, String> {
    let (name, rest) = path.split_first().ok_or("an empty path")?;
    check_name(name)?;
    let mut entries = match &tree {
        Some(id) => entries(store, id).map_err(|e| e.message)?,
        None => Vec::new(),
    };
    let at = entries.iter().position(|e| e.name == name.as_bytes());
    let existing = at.map(|i| entries[i].clone());
    let new_entry = if rest.is_empty() {
        match (content, &existing) {
            (Some(_), Some(e)) if !e.is_blob() => {
                return Err(format!("{name} is a directory or a submodule"))
            }
            (Some(content), _) => {
                let blob = store
                    .write(Kind::Blob, content.to_vec())
                    .map_err(|e| e.message)?;
                written.push(blob);
                // An executable or a link keeps its mode; a new file is a plain one.
                let mode = existing.as_ref().map_or(FILE_MODE, |e| e.mode);
                Some((mode, blob))
            }
            (None, Some(_)) => None,
            (None, None) => return Ok(tree),
        }
    } else {
        let subtree = match &existing {
            Some(e) if e.is_tree() => Some(e.id),
            // Removing below a file or below nothing: nothing to remove, this tree stays.
            _ if content.is_none() => return Ok(tree),
            Some(_) => return Err(format!("{name} is a file, not a directory")),
            None => None,
        };
        rebuild(store, subtree, rest, content, written)?.map(|id| (TREE_MODE, id))
    };
    match (new_entry, at) {
        (Some((mode, id)), Some(i)) => {
            entries[i] = TreeEntry {
                mode,
                name: name.as_bytes().to_vec(),
                id,
            }
        }
        (Some((mode, id)), None) => entries.push(TreeEntry {
            mode,
            name: name.as_bytes().to_vec(),
            id,
        }),
        (None, Some(i)) => {
            entries.remove(i);
        }
        (None, None) => {}
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let id = store
        .write(Kind::Tree, write_tree(&mut entries))
        .map_err(|e| e.message)?;
    written.push(id);
    Ok(Some(id))
}

/// Appends to `out` the objects of `written` reachable from tree `root` (itself included when
/// written), walking only into written trees: what a push of the new commit must carry.
fn reachable_new(
    store: &dyn Objects,
    root: ObjectId,
    written: &[ObjectId],
    out: &mut Vec<ObjectId>,
) -> Result<(), StepError> {
    if !written.contains(&root) || out.contains(&root) {
        return Ok(());
    }
    out.push(root);
    for entry in entries(store, &root)? {
        if entry.is_tree() {
            reachable_new(store, entry.id, written, out)?;
        } else if written.contains(&entry.id) && !out.contains(&entry.id) {
            out.push(entry.id);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::write_tree as tree_bytes;

    fn identity() -> Identity {
        Identity {
            name: "sandbox-steps".into(),
            email: "bot@example.invalid".into(),
        }
    }

    fn change(path: &str, content: Option<&str>) -> Change {
        Change {
            path: path.into(),
            content: content.map(|c| c.as_bytes().to_vec()),
        }
    }

    /// A commit of `run.sh` (executable) and `apps/a.yaml`.
    fn base(store: &mut ObjectStore) -> ObjectId {
        let script = store.insert(Kind::Blob, b"echo\n".to_vec());
        let app = store.insert(Kind::Blob, b"a: 1\n".to_vec());
        let entry = |mode, name: &str, id| TreeEntry {
            mode,
            name: name.as_bytes().to_vec(),
            id,
        };
        let apps = store.insert(
            Kind::Tree,
            tree_bytes(&mut [entry(FILE_MODE, "a.yaml", app)]),
        );
        let root = store.insert(
            Kind::Tree,
            tree_bytes(&mut [
                entry(0o100755, "run.sh", script),
                entry(TREE_MODE, "apps", apps),
            ]),
        );
        let commit =
            format!("tree {root}\nauthor a <a@b> 0 +0000\ncommitter a <a@b> 0 +0000\n\ninit");
        store.insert(Kind::Commit, commit.into_bytes())
    }

    fn read(store: &ObjectStore, tip: ObjectId, path: &str) -> PathContent {
        TipView { store, tip }.read_path(path).unwrap()
    }

    #[test]
    fn commits_rebuild_the_trees_on_the_path_only() {
        let mut store = ObjectStore::default();
        let tip = base(&mut store);
        let new = commit(
            &mut store,
            tip,
            &[
                change("apps/deep/b.yaml", Some("b: 2\n")),
                change("run.sh", Some("exit\n")),
            ],
            &identity(),
            "two files",
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            read(&store, new.id, "apps/deep/b.yaml"),
            PathContent::File(b"b: 2\n".to_vec())
        );
        assert_eq!(
            read(&store, new.id, "apps/a.yaml"),
            PathContent::File(b"a: 1\n".to_vec())
        );
        let view = TipView {
            store: &store,
            tip: new.id,
        };
        assert_eq!(
            view.entry("run.sh").unwrap().unwrap().mode,
            0o100755,
            "the mode is kept"
        );
        // The commit, two blobs, three trees (root, apps, apps/deep): nothing superseded, nothing
        // the parent's tree already holds.
        assert_eq!(new.objects.len(), 6, "{:?}", new.objects);
        assert_eq!(new.objects[0], new.id);
        assert!(!new
            .objects
            .contains(&store.insert(Kind::Blob, b"a: 1\n".to_vec())));

        // The last file of a directory removed: the directory goes too.
        let removed = commit(
            &mut store,
            tip,
            &[change("apps/a.yaml", None)],
            &identity(),
            "rm",
        )
        .unwrap()
        .unwrap();
        assert_eq!(read(&store, removed.id, "apps"), PathContent::Missing);
        // Nothing to change: no commit.
        for same in [
            change("apps/a.yaml", Some("a: 1\n")),
            change("apps/none.yaml", None),
            change("run.sh/x", None),
        ] {
            assert!(commit(&mut store, tip, &[same], &identity(), "same")
                .unwrap()
                .is_none());
        }
    }

    #[test]
    fn paths_through_files_names_git_refuses_and_bad_identities_are_errors() {
        let mut store = ObjectStore::default();
        let tip = base(&mut store);
        for (path, why) in [
            ("apps", "is a directory"),
            ("run.sh/x", "is a file, not a directory"),
            ("apps/../x", "not a valid name"),
            (".git/config", "not a valid name"),
        ] {
            let e = commit(
                &mut store,
                tip,
                &[change(path, Some("x"))],
                &identity(),
                "m",
            )
            .unwrap_err();
            assert!(e.message.contains(why), "{path}: {e}");
        }
        let bad = Identity {
            name: "Mallory <evil@example.invalid>".into(),
            email: "m@example.invalid".into(),
        };
        let e = commit(&mut store, tip, &[change("x", Some("x"))], &bad, "m").unwrap_err();
        assert_eq!(e.exit_code(), 2, "{e}");
    }
}
