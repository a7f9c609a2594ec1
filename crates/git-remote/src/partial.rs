//! Partial checkouts over smart HTTP protocol v2: the objects a step reads or changes, fetched by
//! id into memory. The branch's commit comes alone with its root tree (`deepen 1`,
//! `filter tree:1`), each tree along a path alone (`filter tree:0`: an explicitly wanted tree
//! comes without what it contains, measured with git 2.39's upload-pack), and each file alone (a
//! blob has no children). A one-file edit of a 100k-file repository fetches about a kilobyte;
//! the new file, the trees up the path and the commit travel back as one small pack, with a
//! compare-and-swap on the branch's old commit.
//!
//! A server that does not answer in v2, or refuses filters (`uploadpack.allowFilter` off, git's
//! default for self-hosted servers) or a want by id, gives [`PartialError::Unsupported`]: the
//! callers then fall back to a depth-1 fetch through libgit2.

use step_kit::{escape_untrusted, Context, StepError};

use crate::objects::{read_pack, write_pack, Kind, ObjectId, ObjectStore};
use crate::protocol_v2::Fetched;
use crate::tree::{self, NewCommit, TipView};
use crate::{Change, Credentials, GitFlags, Identity, RefUpdate, Remote};

/// Why a partial checkout did not happen or could not go on.
#[derive(Debug)]
pub(crate) enum PartialError {
    /// The remote cannot serve partial fetches: fall back to a full depth-1 fetch.
    Unsupported(String),
    /// A failure a full fetch would meet as well.
    Failed(StepError),
}

impl From<StepError> for PartialError {
    fn from(e: StepError) -> Self {
        PartialError::Failed(e)
    }
}

/// The tip of one branch of a remote, with only the objects asked for so far.
pub(crate) struct PartialCheckout {
    remote: Remote,
    /// `refs/heads/<branch>`, or the full ref name given.
    refname: String,
    store: ObjectStore,
    tip: ObjectId,
    /// The ref HEAD points to (`refs/heads/main`), when the server says.
    head: Option<String>,
}

impl PartialCheckout {
    /// Reads where `branch` points and fetches its commit and root tree.
    pub async fn open(remote: Remote, branch: &str) -> Result<PartialCheckout, PartialError> {
        let refname = if branch.starts_with("refs/") {
            branch.to_owned()
        } else {
            format!("refs/heads/{branch}")
        };
        let mut checkout = PartialCheckout {
            remote,
            refname,
            store: ObjectStore::default(),
            // Set by the refresh below.
            tip: ObjectId::of(Kind::Tree, b""),
            head: None,
        };
        checkout.refresh().await?;
        Ok(checkout)
    }

    /// Reads the branch's commit again (after a refused push) and fetches it when new.
    pub async fn refresh(&mut self) -> Result<(), PartialError> {
        let listing = self
            .remote
            .ls_refs(&["HEAD".to_owned(), self.refname.clone()])
            .await?
            .map_err(|why| {
                PartialError::Unsupported(format!(
                    "the remote did not answer git protocol v2's ls-refs ({why})"
                ))
            })?;
        self.head = listing.head;
        let Some(tip) = listing.refs.get(&self.refname) else {
            return Err(PartialError::Failed(StepError::precondition(format!(
                "branch {} does not exist on {}",
                escape_untrusted(self.refname.trim_start_matches("refs/heads/")),
                self.remote.url()
            ))));
        };
        let tip = ObjectId::from_hex(tip).ok_or_else(|| {
            StepError::precondition(format!("{}: a malformed commit id", self.remote.url()))
        })?;
        if !self.store.contains(&tip) {
            self.fetch(vec![
                format!("want {tip}"),
                "deepen 1".into(),
                "filter tree:1".into(),
            ])
            .await?;
        }
        self.tip = tip;
        Ok(())
    }

    /// The commit the branch pointed to when last read.
    pub fn tip(&self) -> ObjectId {
        self.tip
    }

    /// The remote's default branch (`main`), from where its HEAD points.
    pub fn default_branch(&self) -> Option<&str> {
        self.head.as_deref()?.strip_prefix("refs/heads/")
    }

    /// The tip's tree, read by path (holding what [`PartialCheckout::fetch_path`] fetched).
    pub fn view(&self) -> TipView<'_> {
        TipView {
            store: &self.store,
            tip: self.tip,
        }
    }

    /// Fetches what reading `path` of the tip needs: the trees on the way and the file, or for
    /// a directory its tree, and with `dir_files` the files directly in it. Nothing more once
    /// the path turns out absent (or a file stands where a directory is expected: reading and
    /// committing report that).
    pub async fn fetch_path(&mut self, path: &str, dir_files: bool) -> Result<(), PartialError> {
        let mut dir = tree::root_tree(&self.store, &self.tip)?;
        self.ensure(&[dir], Some("tree:0")).await?;
        let components = tree::components(path);
        for i in 0..components.len() {
            match self.view().entry(&components[..=i].join("/"))? {
                Some(e) if e.is_tree() => {
                    self.ensure(&[e.id], Some("tree:0")).await?;
                    dir = e.id;
                }
                Some(e) if e.is_blob() && i + 1 == components.len() => {
                    return self.ensure(&[e.id], None).await;
                }
                _ => return Ok(()),
            }
        }
        if dir_files {
            let files: Vec<ObjectId> = tree::entries(&self.store, &dir)?
                .into_iter()
                .filter(|e| e.is_blob())
                .map(|e| e.id)
                .collect();
            self.ensure(&files, None).await?;
        }
        Ok(())
    }

    /// Commits `changes` on the tip, in memory; `None` when they change nothing.
    pub fn commit(
        &mut self,
        changes: &[Change],
        identity: &Identity,
        message: &str,
    ) -> Result<Option<NewCommit>, StepError> {
        tree::commit(&mut self.store, self.tip, changes, identity, message)
    }

    /// Pushes `commit` (built on the tip) with a compare-and-swap on the tip: `None` when the
    /// branch now points to it, else the remote's reason for refusing.
    pub async fn push(&self, commit: &NewCommit) -> Result<Option<String>, PartialError> {
        let objects: Vec<(Kind, &[u8])> = commit
            .objects
            .iter()
            .filter_map(|id| self.store.get(id))
            .collect();
        let update = RefUpdate {
            name: self.refname.clone(),
            old: self.tip.to_string(),
            new: commit.id.to_string(),
        };
        let results = self
            .remote
            .update_refs_with_pack(std::slice::from_ref(&update), &write_pack(&objects))
            .await?;
        Ok(results.into_iter().find_map(|r| r.rejected))
    }

    /// Logs what the checkout cost on the wire.
    pub fn log_traffic(&self) {
        let (requests, bytes) = self.remote.traffic();
        tracing::info!("fetched and pushed in {requests} request(s), {bytes} byte(s) received");
    }

    /// Fetches those of `ids` not here yet, in one request.
    async fn ensure(&mut self, ids: &[ObjectId], filter: Option<&str>) -> Result<(), PartialError> {
        let mut args: Vec<String> = ids
            .iter()
            .filter(|id| !self.store.contains(id))
            .map(|id| format!("want {id}"))
            .collect();
        if args.is_empty() {
            return Ok(());
        }
        args.extend(filter.map(|f| format!("filter {f}")));
        self.fetch(args).await
    }

    async fn fetch(&mut self, args: Vec<String>) -> Result<(), PartialError> {
        match self.remote.fetch_pack(&args).await? {
            Fetched::Refused(why) => Err(PartialError::Unsupported(format!(
                "the remote refused a filtered fetch by object id, as a server without \
                 uploadpack.allowFilter does ({why})"
            ))),
            Fetched::Pack(pack) => {
                read_pack(&pack, &mut self.store).map_err(|e| {
                    StepError::precondition(format!("{}: a malformed pack: {e}", self.remote.url()))
                })?;
                Ok(())
            }
        }
    }
}

/// A partial checkout of `branch` of the HTTP(S) remote `url`, or `None` when the remote cannot
/// serve one (logged once per process: the caller then fetches the branch's whole tip).
pub(crate) async fn open(
    url: &str,
    branch: &str,
    git: &GitFlags,
    ctx: &Context,
) -> Result<Option<PartialCheckout>, StepError> {
    let remote = Remote::new(url, Credentials::from_flags(git).await?, ctx.retry_policy())?;
    match PartialCheckout::open(remote, branch).await {
        Ok(checkout) => Ok(Some(checkout)),
        Err(PartialError::Failed(e)) => Err(e),
        Err(PartialError::Unsupported(why)) => {
            fall_back(&why);
            Ok(None)
        }
    }
}

/// Logs, once per process, why the partial path is not taken.
pub(crate) fn fall_back(why: &str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        tracing::info!("{why}: fetching the branch's whole tip (depth 1) instead");
    });
}
