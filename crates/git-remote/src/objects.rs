//! Git objects in memory: ids, trees, commits, and packs in both directions. What a partial
//! checkout needs without a repository on disk (and without libgit2, whose start-up alone, loading
//! OpenSSL and the system's certificates, took longer than the whole edit's requests).
//! Formats: git's Documentation/gitformat-pack.txt and the object layouts of `git cat-file`.

use std::collections::HashMap;
use std::fmt;
use std::io::Write;

use sha1::{Digest, Sha1};

/// A SHA-1 object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId([u8; 20]);

impl ObjectId {
    /// The id of an object of `kind` holding `data`: SHA-1 of `<kind> <len>\0<data>`.
    pub fn of(kind: Kind, data: &[u8]) -> ObjectId {
        let mut hasher = Sha1::new();
        hasher.update(format!("{} {}\0", kind.name(), data.len()).as_bytes());
        hasher.update(data);
        ObjectId(hasher.finalize().into())
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<ObjectId> {
        bytes.try_into().ok().map(ObjectId)
    }

    /// 40 hex digits (either case).
    pub fn from_hex(hex: &str) -> Option<ObjectId> {
        if hex.len() != 40 {
            return None;
        }
        let mut id = [0u8; 20];
        for (i, byte) in id.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(ObjectId(id))
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The four object types, numbered as in packs.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Commit = 1,
    Tree = 2,
    Blob = 3,
    Tag = 4,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Commit => "commit",
            Kind::Tree => "tree",
            Kind::Blob => "blob",
            Kind::Tag => "tag",
        }
    }

    fn from_pack(code: u8) -> Option<Kind> {
        Some(match code {
            1 => Kind::Commit,
            2 => Kind::Tree,
            3 => Kind::Blob,
            4 => Kind::Tag,
            _ => return None,
        })
    }
}

/// Objects by id: those fetched and those built.
#[derive(Default)]
pub(crate) struct ObjectStore {
    objects: HashMap<ObjectId, (Kind, Vec<u8>)>,
}

impl ObjectStore {
    pub fn get(&self, id: &ObjectId) -> Option<(Kind, &[u8])> {
        self.objects.get(id).map(|(k, d)| (*k, d.as_slice()))
    }

    pub fn contains(&self, id: &ObjectId) -> bool {
        self.objects.contains_key(id)
    }

    /// Stores an object; its id.
    pub fn insert(&mut self, kind: Kind, data: Vec<u8>) -> ObjectId {
        let id = ObjectId::of(kind, &data);
        self.objects.entry(id).or_insert((kind, data));
        id
    }
}

/// The mode of a directory in a tree.
pub const TREE_MODE: u32 = 0o40000;
/// The mode of a plain file.
pub const FILE_MODE: u32 = 0o100644;
/// The mode of a submodule (a commit of another repository).
pub const GITLINK_MODE: u32 = 0o160000;

/// One entry of a tree.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    pub mode: u32,
    pub name: Vec<u8>,
    pub id: ObjectId,
}

impl TreeEntry {
    pub fn is_tree(&self) -> bool {
        self.mode == TREE_MODE
    }

    /// A file: a blob (plain, executable or symbolic link); not a directory nor a submodule.
    pub fn is_blob(&self) -> bool {
        self.mode != TREE_MODE && self.mode != GITLINK_MODE
    }
}

/// A tree's entries: `<octal mode> <name>\0<20-byte id>` each.
pub fn parse_tree(mut data: &[u8]) -> Result<Vec<TreeEntry>, String> {
    let mut entries = Vec::new();
    while !data.is_empty() {
        let space = data
            .iter()
            .position(|&b| b == b' ')
            .ok_or("a tree entry without mode")?;
        let mode = std::str::from_utf8(&data[..space])
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .ok_or("a tree entry's mode is not octal")?;
        let rest = &data[space + 1..];
        let nul = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or("a tree entry without name end")?;
        let id = rest
            .get(nul + 1..nul + 21)
            .and_then(ObjectId::from_bytes)
            .ok_or("a tree entry's id is truncated")?;
        entries.push(TreeEntry {
            mode,
            name: rest[..nul].to_vec(),
            id,
        });
        data = &rest[nul + 21..];
    }
    Ok(entries)
}

/// A tree's bytes, its entries in git's order: by name, a directory's name compared as if it
/// ended with `/` (so `a.txt` < `a/` < `a0`).
pub fn write_tree(entries: &mut [TreeEntry]) -> Vec<u8> {
    fn key(e: &TreeEntry) -> impl Iterator<Item = u8> + '_ {
        e.name.iter().copied().chain(e.is_tree().then_some(b'/'))
    }
    entries.sort_by(|a, b| key(a).cmp(key(b)));
    let mut out = Vec::new();
    for e in entries.iter() {
        out.extend_from_slice(format!("{:o} ", e.mode).as_bytes());
        out.extend_from_slice(&e.name);
        out.push(0);
        out.extend_from_slice(e.id.as_bytes());
    }
    out
}

/// The root tree of a commit (its first line, `tree <hex>`).
pub fn commit_tree(data: &[u8]) -> Result<ObjectId, String> {
    data.strip_prefix(b"tree ")
        .and_then(|rest| rest.get(..40))
        .and_then(|hex| std::str::from_utf8(hex).ok())
        .and_then(ObjectId::from_hex)
        .ok_or_else(|| "a commit that does not start with its tree".into())
}

/// A commit's bytes: `tree`, `parent`, author and committer (`name <email> <seconds> +0000`),
/// a blank line, the message.
pub fn write_commit(
    tree: ObjectId,
    parent: ObjectId,
    name: &str,
    email: &str,
    seconds: u64,
    message: &str,
) -> Vec<u8> {
    let person = format!("{name} <{email}> {seconds} +0000");
    format!("tree {tree}\nparent {parent}\nauthor {person}\ncommitter {person}\n\n{message}")
        .into_bytes()
}

const OFS_DELTA: u8 = 6;
const REF_DELTA: u8 = 7;

/// Reads a pack (version 2 or 3) into `store`, resolving deltas against objects of the pack or
/// already in the store; checks its trailing checksum. Returns how many objects it held.
pub(crate) fn read_pack(pack: &[u8], store: &mut ObjectStore) -> Result<usize, String> {
    if pack.len() < 32 || &pack[..4] != b"PACK" {
        return Err("not a pack".into());
    }
    let (body, trailer) = pack.split_at(pack.len() - 20);
    if Sha1::digest(body).as_slice() != trailer {
        return Err("the pack's checksum does not match".into());
    }
    let version = u32::from_be_bytes(pack[4..8].try_into().unwrap());
    if version != 2 && version != 3 {
        return Err(format!("pack version {version} is not supported"));
    }
    let count = u32::from_be_bytes(pack[8..12].try_into().unwrap()) as usize;
    // Objects by their offset, for deltas against an earlier object of the pack.
    let mut by_offset: HashMap<usize, ObjectId> = HashMap::new();
    let mut at = 12;
    for _ in 0..count {
        let start = at;
        let mut byte = *body.get(at).ok_or("the pack is truncated")?;
        at += 1;
        let code = (byte >> 4) & 7;
        let mut size = (byte & 15) as usize;
        let mut shift = 4;
        while byte & 0x80 != 0 {
            byte = *body.get(at).ok_or("the pack is truncated")?;
            at += 1;
            size |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
        }
        let base = match code {
            OFS_DELTA => {
                let mut byte = *body.get(at).ok_or("the pack is truncated")?;
                at += 1;
                let mut offset = (byte & 0x7f) as usize;
                while byte & 0x80 != 0 {
                    byte = *body.get(at).ok_or("the pack is truncated")?;
                    at += 1;
                    offset = ((offset + 1) << 7) | (byte & 0x7f) as usize;
                }
                let base = start.checked_sub(offset).ok_or("a delta before the pack")?;
                Some(
                    *by_offset
                        .get(&base)
                        .ok_or("a delta's base is not in the pack")?,
                )
            }
            REF_DELTA => {
                let id = body
                    .get(at..at + 20)
                    .and_then(ObjectId::from_bytes)
                    .ok_or("the pack is truncated")?;
                at += 20;
                Some(id)
            }
            _ => None,
        };
        let (data, used) = inflate(&body[at..], size)?;
        at += used;
        let id = match base {
            None => {
                let kind = Kind::from_pack(code).ok_or(format!("object type {code}"))?;
                store.insert(kind, data)
            }
            Some(base) => {
                let (kind, source) = store.get(&base).ok_or("a delta's base is missing")?;
                let target = apply_delta(source, &data)?;
                store.insert(kind, target)
            }
        };
        by_offset.insert(start, id);
    }
    if at != body.len() {
        return Err("bytes after the pack's last object".into());
    }
    Ok(count)
}

/// Inflates the zlib stream at the start of `input`, `size` bytes once inflated; those bytes and
/// how many of `input` the stream took.
fn inflate(input: &[u8], size: usize) -> Result<(Vec<u8>, usize), String> {
    let mut inflater = flate2::Decompress::new(true);
    let mut out = Vec::with_capacity(size + 1);
    loop {
        let status = inflater
            .decompress_vec(
                &input[inflater.total_in() as usize..],
                &mut out,
                flate2::FlushDecompress::Finish,
            )
            .map_err(|e| format!("a pack object does not inflate: {e}"))?;
        match status {
            flate2::Status::StreamEnd => break,
            _ if out.len() > size => return Err("a pack object is larger than it says".into()),
            _ if inflater.total_in() as usize >= input.len() => {
                return Err("the pack is truncated".into())
            }
            _ => out.reserve(size.max(64)),
        }
    }
    if out.len() != size {
        return Err("a pack object's size does not match".into());
    }
    Ok((out, inflater.total_in() as usize))
}

/// `base` with git's delta `delta` applied (source size, target size, then copy and insert
/// instructions).
fn apply_delta(base: &[u8], delta: &[u8]) -> Result<Vec<u8>, String> {
    fn varint(data: &[u8], at: &mut usize) -> Result<usize, String> {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = *data.get(*at).ok_or("a delta is truncated")?;
            *at += 1;
            value |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
    }
    let mut at = 0;
    if varint(delta, &mut at)? != base.len() {
        return Err("a delta's base has another size".into());
    }
    let size = varint(delta, &mut at)?;
    let mut out = Vec::with_capacity(size);
    while at < delta.len() {
        let op = delta[at];
        at += 1;
        if op & 0x80 != 0 {
            let mut read = |bits: u8, bytes: std::ops::Range<u8>| -> Result<usize, String> {
                let mut value = 0usize;
                for i in bytes.clone() {
                    if op & (1 << (i + bits)) != 0 {
                        value |=
                            (*delta.get(at).ok_or("a delta is truncated")? as usize) << (8 * i);
                        at += 1;
                    }
                }
                Ok(value)
            };
            let offset = read(0, 0..4)?;
            let length = match read(4, 0..3)? {
                0 => 0x10000,
                n => n,
            };
            let chunk = base
                .get(offset..offset + length)
                .ok_or("a delta copies beyond its base")?;
            out.extend_from_slice(chunk);
        } else if op != 0 {
            let chunk = delta
                .get(at..at + op as usize)
                .ok_or("a delta is truncated")?;
            out.extend_from_slice(chunk);
            at += op as usize;
        } else {
            return Err("a delta holds the reserved instruction 0".into());
        }
    }
    if out.len() != size {
        return Err("a delta's result has another size".into());
    }
    Ok(out)
}

/// A version-2 pack of `objects`, each whole (no deltas), with its checksum.
pub(crate) fn write_pack(objects: &[(Kind, &[u8])]) -> Vec<u8> {
    let mut pack = b"PACK".to_vec();
    pack.extend_from_slice(&2u32.to_be_bytes());
    pack.extend_from_slice(&(objects.len() as u32).to_be_bytes());
    for (kind, data) in objects {
        let mut size = data.len();
        let mut byte = ((*kind as u8) << 4) | (size & 15) as u8;
        size >>= 4;
        while size > 0 {
            pack.push(byte | 0x80);
            byte = (size & 0x7f) as u8;
            size >>= 7;
        }
        pack.push(byte);
        let mut deflater = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
        // Writing into a Vec cannot fail.
        deflater.write_all(data).expect("deflate into memory");
        pack.extend_from_slice(&deflater.finish().expect("deflate into memory"));
    }
    let checksum = Sha1::digest(&pack);
    pack.extend_from_slice(&checksum);
    pack
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_gits() {
        // `git hash-object --stdin <<< hello` and the empty tree.
        assert_eq!(
            ObjectId::of(Kind::Blob, b"hello\n").to_string(),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        assert_eq!(
            ObjectId::of(Kind::Tree, b"").to_string(),
            "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
        );
        let id = ObjectId::from_hex("CE013625030BA8DBA906F756967F9E9CA394464A").unwrap();
        assert_eq!(id, ObjectId::of(Kind::Blob, b"hello\n"));
        assert!(
            ObjectId::from_hex("ce01").is_none() && ObjectId::from_hex(&"g".repeat(40)).is_none()
        );
    }

    #[test]
    fn trees_round_trip_in_gits_order() {
        let blob = ObjectId::of(Kind::Blob, b"x");
        let entry = |mode, name: &str| TreeEntry {
            mode,
            name: name.as_bytes().to_vec(),
            id: blob,
        };
        let mut entries = vec![
            entry(FILE_MODE, "a0"),
            entry(TREE_MODE, "a"),
            entry(FILE_MODE, "a.txt"),
            entry(0o100755, "run.sh"),
        ];
        let data = write_tree(&mut entries);
        let names: Vec<_> = parse_tree(&data)
            .unwrap()
            .into_iter()
            .map(|e| String::from_utf8(e.name).unwrap())
            .collect();
        assert_eq!(names, ["a.txt", "a", "a0", "run.sh"]);
        assert!(String::from_utf8_lossy(&data).starts_with("100644 a.txt\0"));
        assert!(parse_tree(b"100644 x\0short").is_err());
        assert!(parse_tree(b"9z x\0").is_err());
    }

    #[test]
    fn a_pack_written_reads_back() {
        let objects = [(Kind::Blob, &b"hello\n"[..]), (Kind::Tree, &b""[..])];
        let pack = write_pack(&objects);
        let mut store = ObjectStore::default();
        assert_eq!(read_pack(&pack, &mut store).unwrap(), 2);
        assert_eq!(
            store.get(&ObjectId::of(Kind::Blob, b"hello\n")),
            Some((Kind::Blob, &b"hello\n"[..]))
        );
        let mut corrupt = pack.clone();
        corrupt[20] ^= 1;
        assert!(read_pack(&corrupt, &mut ObjectStore::default()).is_err());
        assert!(read_pack(&pack[..pack.len() - 3], &mut ObjectStore::default()).is_err());
    }

    #[test]
    fn deltas_apply_copies_and_inserts() {
        let base = b"0123456789abcdef";
        // source 16, target 9: copy 4 bytes at offset 2, insert "XYZ", copy 2 at offset 14.
        let delta = [16, 9, 0x91, 2, 4, 3, b'X', b'Y', b'Z', 0x91, 14, 2];
        assert_eq!(apply_delta(base, &delta).unwrap(), b"2345XYZef");
        assert!(apply_delta(base, &[15, 1, 1, b'x']).is_err());
        assert!(apply_delta(base, &[16, 4, 0x91, 14, 4]).is_err());
        assert!(apply_delta(base, &[16, 1, 0]).is_err());
    }

    /// Packs made by git itself, with deltas (OFS_DELTA, as `git pack-objects` writes them),
    /// read whole: every object's id matches git's.
    #[test]
    fn reads_packs_with_deltas_from_git() {
        let dir = tempfile::tempdir().unwrap();
        let git = |args: &[&str], input: Option<&[u8]>| {
            let mut cmd = std::process::Command::new("git");
            cmd.args(args)
                .current_dir(dir.path())
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped());
            let mut child = cmd.spawn().unwrap();
            let mut stdin = child.stdin.take().unwrap();
            stdin.write_all(input.unwrap_or_default()).unwrap();
            drop(stdin);
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "git {args:?}");
            out.stdout
        };
        git(&["init", "-q", "--bare", "."], None);
        let mut ids = Vec::new();
        let mut text = String::new();
        for i in 0..40 {
            text.push_str(&format!(
                "line {i} of a file that grows by one line each version\n"
            ));
            let id = git(&["hash-object", "-w", "--stdin"], Some(text.as_bytes()));
            ids.push(String::from_utf8(id).unwrap().trim().to_owned());
        }
        let list = ids.join("\n") + "\n";
        let pack = git(
            &["pack-objects", "--stdout", "--window=50"],
            Some(list.as_bytes()),
        );
        let mut store = ObjectStore::default();
        assert_eq!(read_pack(&pack, &mut store).unwrap(), 40);
        // git wrote deltas: the pack is far smaller than the objects.
        assert!(pack.len() < text.len() * 10, "{} bytes", pack.len());
        for id in &ids {
            assert!(store.contains(&ObjectId::from_hex(id).unwrap()), "{id}");
        }
        // And git reads ours.
        let blob = b"written by sandbox-steps\n";
        let ours = write_pack(&[(Kind::Blob, blob)]);
        git(&["index-pack", "--stdin"], Some(&ours));
        let shown = git(
            &[
                "cat-file",
                "-p",
                &ObjectId::of(Kind::Blob, blob).to_string(),
            ],
            None,
        );
        assert_eq!(shown, blob);
    }
}
