//! Restoring one backup into one (new, empty) database: the download opened and told apart
//! (gzip, plain SQL, custom format), plain dumps through the loader, custom ones through
//! pg_restore, progress while it runs.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use gcs::Gcs;
use sqlx::postgres::PgConnectOptions;
use sqlx::Connection;
use step_kit::StepError;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, BufReader};

use crate::backup::Backup;
use crate::load::{AdminExtensions, Counters, LoadError, Loaded, Loader};
use pg_admin::{self, Admin};
use sql_script::{Error as DumpError, Reader as DumpReader};

/// What was restored into a database, kept as its comment: the backup and generation identify
/// it (a template is reused while they match), the counts answer a later `--if-exists skip`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Provenance {
    pub backup: String,
    pub generation: i64,
    pub tables: u64,
    pub rows: u64,
    /// The masking applied before the database got its name (`--mask-rules`): the rules' and
    /// the key's fingerprints. A template is reused only with the same masking.
    pub masked: Option<String>,
}

impl Provenance {
    const PREFIX: &'static str = "restore-db: ";

    pub fn source(backup: &str, generation: i64) -> String {
        format!("{}{backup} generation {generation}", Self::PREFIX)
    }

    pub fn comment(&self) -> String {
        format!(
            "{}; tables {}, rows {}{}",
            Self::source(&self.backup, self.generation),
            self.tables,
            self.rows,
            self.masked
                .as_deref()
                .map(|m| format!("; masked {m}"))
                .unwrap_or_default()
        )
    }

    pub fn parse(comment: &str) -> Option<Provenance> {
        let rest = comment.strip_prefix(Self::PREFIX)?;
        let (source, counts) = rest.split_once("; ")?;
        let (backup, generation) = source.rsplit_once(" generation ")?;
        let (counts, masked) = match counts.split_once("; masked ") {
            Some((counts, masked)) => (counts, Some(masked.to_owned())),
            None => (counts, None),
        };
        let (tables, rows) = counts.strip_prefix("tables ")?.split_once(", rows ")?;
        Some(Provenance {
            backup: backup.to_owned(),
            generation: generation.parse().ok()?,
            tables: tables.parse().ok()?,
            rows: rows.parse().ok()?,
            masked,
        })
    }
}

/// The server for libpq programs (pg_restore): the admin URL without its password, so that its
/// host, port and query parameters (sslmode, ...) apply to the restoring role's login too.
#[derive(Clone)]
pub(crate) struct Libpq {
    pub url: url::Url,
}

impl Libpq {
    /// The URL of `database` for `user` (the password stays out: it goes in PGPASSWORD).
    pub fn url_for(&self, user: &str, database: &str) -> String {
        let mut url = self.url.clone();
        let _ = url.set_username(user);
        url.set_path(&format!("/{database}"));
        url.to_string()
    }
}

/// The role a restore runs as, and the password it logs in with: the sandbox's owner (or the
/// template's role), never the admin.
pub(crate) struct Login {
    pub role: String,
    pub password: step_kit::Secret,
}

/// Formats of a backup, told by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Plain,
    /// pg_dump -Fc: "PGDMP".
    Custom,
}

pub(crate) struct Restorer {
    pub gcs: Gcs,
    pub policy: step_kit::RetryPolicy,
    pub jobs: usize,
    pub libpq: Libpq,
    /// Extensions whose CREATE/COMMENT statements run as the admin (`--extensions-as-admin`).
    pub extensions_as_admin: Vec<String>,
}

type Input = Box<dyn AsyncBufRead + Unpin + Send>;

/// Bytes of the backup downloaded so far.
#[derive(Default)]
struct ReadCount(AtomicU64);

impl Restorer {
    /// Opens the backup: the download, gzip undone when it is gzip, and its format.
    async fn open(
        &self,
        backup: &Backup,
        read: Arc<ReadCount>,
    ) -> Result<(Input, Format), StepError> {
        let stream = Box::pin(
            self.gcs
                .read(
                    &backup.bucket,
                    &backup.entry.name,
                    backup.entry.generation,
                    &self.policy,
                )
                .inspect_ok(move |chunk| {
                    read.0.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                })
                .map_err(|e| {
                    let kind = if e.is_transient() {
                        std::io::ErrorKind::TimedOut
                    } else {
                        std::io::ErrorKind::Other
                    };
                    std::io::Error::new(kind, e.to_string())
                }),
        );
        let mut raw =
            BufReader::with_capacity(256 << 10, tokio_util::io::StreamReader::new(stream));
        let head = peek(&mut raw).await?;
        let mut input: Input = if head.starts_with(&[0x1f, 0x8b]) {
            let mut decoder = async_compression::tokio::bufread::GzipDecoder::new(raw);
            // pg_dump | gzip writes one member; concatenated files have several.
            decoder.multiple_members(true);
            Box::new(BufReader::with_capacity(256 << 10, decoder))
        } else {
            Box::new(raw)
        };
        let head = peek(&mut input).await?;
        let format = if head.starts_with(b"PGDMP") {
            Format::Custom
        } else if head.len() > 262 && &head[257..262] == b"ustar" {
            return Err(StepError::precondition(format!(
                "{}: a tar archive (pg_dump -Ft): restore-db reads plain SQL (pg_dump) or the \
                 custom format (pg_dump -Fc)",
                backup.url()
            )));
        } else {
            Format::Plain
        };
        Ok((input, format))
    }

    /// Restores the backup into `database` (created, empty, owned by `login.role`), connected as
    /// `login`: every statement of the dump runs with that role's rights only.
    pub async fn restore(
        &self,
        admin: &Admin,
        database: &str,
        backup: &Backup,
        login: &Login,
    ) -> Result<Provenance, StepError> {
        let read = Arc::new(ReadCount::default());
        let counters = Arc::new(Counters::default());
        let reporter = tokio::spawn(report_progress(
            read.clone(),
            backup.entry.size,
            counters.clone(),
        ));
        let result = async {
            let (input, format) = self.open(backup, read.clone()).await?;
            let options = admin
                .options_for(database)
                .username(&login.role)
                .password(login.password.expose());
            match format {
                Format::Plain => {
                    tracing::info!(
                        "restoring {} (plain SQL) into {database} as {} over {} connection(s)",
                        backup.url(),
                        login.role,
                        self.jobs
                    );
                    let extensions = AdminExtensions::new(
                        self.extensions_as_admin.clone(),
                        admin.options_for(database),
                    );
                    self.load_plain(input, &options, extensions, counters.clone())
                        .await
                }
                Format::Custom => {
                    tracing::info!(
                        "restoring {} (custom format) into {database} as {} with pg_restore",
                        backup.url(),
                        login.role
                    );
                    self.pg_restore(input, database, login).await?;
                    count_tables_and_rows(&options).await
                }
            }
        }
        .await;
        reporter.abort();
        log_progress(&read, backup.entry.size, &counters);
        let loaded = result?;
        Ok(Provenance {
            backup: backup.url(),
            generation: backup.entry.generation,
            tables: loaded.tables,
            rows: loaded.rows,
            masked: None,
        })
    }

    async fn load_plain(
        &self,
        input: Input,
        options: &PgConnectOptions,
        extensions: AdminExtensions,
        counters: Arc<Counters>,
    ) -> Result<Loaded, StepError> {
        // Bounded memory: chunks of 1 MiB; the item queue holds 2, the workers' queue one per
        // worker, and each worker sends one (copied once more into its connection's buffer):
        // a few MiB in flight whatever the dump's size.
        let chunk = 1 << 20;
        let (sender, mut items) = tokio::sync::mpsc::channel(2);
        let reader = tokio::spawn(async move {
            let mut dump = DumpReader::new(input, chunk);
            loop {
                let next = dump.next().await;
                let stop = !matches!(next, Ok(Some(_)));
                let item = match next {
                    Ok(Some(item)) => Ok(item),
                    Ok(None) => break,
                    Err(e) => Err(e),
                };
                if sender.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        let loader = Loader::connect(options, self.jobs, extensions, counters)
            .await
            .map_err(load_error);
        let result = match loader {
            Ok(loader) => loader.run(&mut items).await.map_err(load_error),
            Err(e) => Err(e),
        };
        reader.abort();
        let loaded = result?;
        if loaded.skipped > 0 {
            tracing::info!(
                "left out {} statements about the integration server's roles (OWNER TO, \
                 GRANT/REVOKE, subscriptions)",
                loaded.skipped
            );
        }
        Ok(loaded)
    }

    /// pg_restore for custom-format dumps, logged in as `login`: from stdin with one job, from a
    /// spooled file with more (pg_restore -j needs to seek). Without --no-owner it would `ALTER
    /// ... OWNER TO` the integration server's roles; `--extensions-as-admin` does not apply
    /// (pg_restore runs every item as one role).
    async fn pg_restore(
        &self,
        mut input: Input,
        database: &str,
        login: &Login,
    ) -> Result<(), StepError> {
        let Some(program) = find_on_path("pg_restore") else {
            return Err(StepError::precondition(
                "the backup is in pg_dump's custom format (-Fc), which needs pg_restore, and \
                 pg_restore is not on PATH: use an image with the PostgreSQL client, or dump \
                 in plain format (pg_dump | gzip), which restore-db reads itself",
            ));
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args([
            "--no-owner",
            "--no-privileges",
            "--no-subscriptions",
            "--exit-on-error",
        ])
        .arg(format!(
            "--dbname={}",
            self.libpq.url_for(&login.role, database)
        ))
        .env("PGAPPNAME", "restore-db")
        // The environment, not argv: `ps` shows argv.
        .env("PGPASSWORD", login.password.expose())
        .kill_on_drop(true);
        let spool;
        if self.jobs > 1 {
            spool = tempfile::NamedTempFile::new()
                .map_err(|e| StepError::unexpected(format!("cannot create a spool file: {e}")))?;
            let mut file = tokio::fs::File::from_std(
                spool
                    .reopen()
                    .map_err(|e| StepError::unexpected(format!("spool file: {e}")))?,
            );
            tokio::io::copy_buf(&mut input, &mut file)
                .await
                .map_err(read_error)?;
            cmd.arg(format!("--jobs={}", self.jobs)).arg(spool.path());
            cmd.stdin(std::process::Stdio::null());
        } else {
            cmd.stdin(std::process::Stdio::piped());
        }
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| StepError::unexpected(format!("cannot start pg_restore: {e}")))?;
        let feed = async {
            if let Some(mut stdin) = child.stdin.take() {
                let copied = tokio::io::copy_buf(&mut input, &mut stdin).await;
                drop(stdin);
                copied.map(|_| ()).map_err(read_error)
            } else {
                Ok(())
            }
        };
        let mut stderr = child.stderr.take().expect("piped");
        let errors = async {
            let mut text = String::new();
            let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
            text
        };
        let (fed, errors) = tokio::join!(feed, errors);
        let status = child
            .wait()
            .await
            .map_err(|e| StepError::unexpected(format!("pg_restore: {e}")))?;
        if !status.success() {
            let detail: Vec<&str> = errors
                .lines()
                .filter(|l| !l.trim().is_empty())
                .take(5)
                .collect();
            let message = format!("pg_restore failed ({status}): {}", detail.join(" / "));
            let message = message.replace(login.password.expose(), "***");
            return Err(StepError::precondition(message));
        }
        fed
    }
}

fn find_on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

fn read_error(e: std::io::Error) -> StepError {
    if sql_script::is_transient(&e) {
        StepError::transient(format!("reading the backup failed: {e}"))
    } else {
        StepError::precondition(format!("reading the backup failed: {e}"))
    }
}

fn load_error(e: LoadError) -> StepError {
    match e {
        LoadError::Dump(DumpError::Read {
            transient: true, ..
        })
        | LoadError::Connection(_) => StepError::transient(e.to_string()),
        other => StepError::precondition(other.to_string()),
    }
}

/// Tables and rows of a database pg_restore filled (it reports neither): user tables, and their
/// exact row counts. Counted as the owner (`options`), never the admin: the restored database
/// may hold functions that shadow built-in ones for an unwary caller.
async fn count_tables_and_rows(options: &PgConnectOptions) -> Result<Loaded, StepError> {
    use sqlx::Row;
    let mut conn = sqlx::postgres::PgConnection::connect_with(options)
        .await
        .map_err(|e| pg_admin::sql_error("connect to count the rows", e))?;
    let row = sqlx::query(
        "SELECT count(*)::bigint, coalesce(sum((xpath('/row/n/text()', query_to_xml(format( \
         'SELECT count(*) AS n FROM %I.%I', schemaname, tablename), false, true, '')))[1]::text \
         ::bigint), 0)::bigint FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', \
         'information_schema')",
    )
    .fetch_one(&mut conn)
    .await
    .map_err(|e| pg_admin::sql_error("count the rows", e))?;
    let _ = sqlx::Connection::close(conn).await;
    Ok(Loaded {
        tables: row.get::<i64, _>(0) as u64,
        rows: row.get::<i64, _>(1) as u64,
        ..Loaded::default()
    })
}

async fn peek(input: &mut (impl AsyncBufRead + Unpin)) -> Result<Vec<u8>, StepError> {
    // A few reads may be needed for the first 512 bytes (small first chunks of a download).
    let buf = input.fill_buf().await.map_err(read_error)?;
    Ok(buf[..buf.len().min(512)].to_vec())
}

fn log_progress(read: &ReadCount, total: u64, counters: &Counters) {
    let read = read.0.load(Ordering::Relaxed);
    let tables = counters.tables.load(Ordering::Relaxed);
    let rows = counters.rows.load(Ordering::Relaxed);
    let percent = if total > 0 {
        read as f64 * 100.0 / total as f64
    } else {
        100.0
    };
    tracing::info!(
        read,
        total,
        tables,
        rows,
        "progress: read {read} of {total} bytes ({percent:.0}%), {tables} tables, {rows} rows loaded"
    );
    step_kit::report_argo_progress(&format!("{read}/{}", total.max(read)));
}

async fn report_progress(read: Arc<ReadCount>, total: u64, counters: Arc<Counters>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    tick.tick().await;
    loop {
        tick.tick().await;
        log_progress(&read, total, &counters);
    }
}
