//! Runs a plain dump's items against the database being restored.
//!
//! With one job everything runs on one connection in dump order, COPY rows streamed as they
//! arrive. With N jobs, N more connections each take work from a queue of their own: a table's
//! rows are dealt out in chunks to whichever has room, and each keeps one `COPY ... FROM stdin`
//! open for that table until its rows end (so the rows of one large table load over all of
//! them, not only different tables side by side); runs of index builds after the data run in
//! parallel too, one connection per table. Any other statement waits until all work before it
//! has finished (a barrier), so dump order holds where it matters: tables exist before their
//! rows, rows before their constraints, primary keys before the foreign keys that need them.
//! Memory: each queue holds at most two chunks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};
use tokio::sync::{mpsc, oneshot};

use crate::statement::{classify, Kind};
use sql_script::{Error as DumpError, Item};

/// What a restore loaded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// COPY blocks run (tables with their rows, empty ones included).
    pub tables: u64,
    pub rows: u64,
    pub statements: u64,
    /// Left out: OWNER TO, GRANT/REVOKE/default privileges, subscriptions.
    pub skipped: u64,
}

/// Counters the progress reporter reads while the load runs.
#[derive(Debug, Default)]
pub struct Counters {
    pub tables: AtomicU64,
    pub rows: AtomicU64,
}

#[derive(Debug)]
pub enum LoadError {
    Dump(DumpError),
    /// The server refused a statement (or rows): the dump does not apply here.
    Statement {
        line: u64,
        message: String,
    },
    /// A connection failed (network, server restart): worth a retry.
    Connection(String),
    /// A psql meta-command restore-db does not run.
    Unsupported {
        line: u64,
        message: String,
    },
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Dump(DumpError::Syntax { line, message }) => {
                write!(f, "dump line {line}: {message}")
            }
            LoadError::Dump(e) => write!(f, "the dump: {e}"),
            LoadError::Statement { line, message } => write!(f, "dump line {line}: {message}"),
            LoadError::Connection(e) => write!(f, "the database connection failed: {e}"),
            LoadError::Unsupported { line, message } => write!(f, "dump line {line}: {message}"),
        }
    }
}

/// A statement's first line, shortened, for error messages.
fn excerpt(text: &str) -> String {
    let first = text.lines().next().unwrap_or("").trim();
    let mut out: String = first.chars().take(120).collect();
    if out.len() < first.len() || text.trim().lines().nth(1).is_some() {
        out.push_str(" …");
    }
    step_kit::escape_untrusted(&out)
}

pub fn sql_error(e: sqlx::Error, line: u64, what: &str) -> LoadError {
    match e {
        sqlx::Error::Database(db) => LoadError::Statement {
            line,
            message: format!(
                "{what} failed: {} (SQLSTATE {})",
                db.message(),
                db.code().as_deref().unwrap_or("?")
            ),
        },
        other => LoadError::Connection(other.to_string()),
    }
}

async fn execute(conn: &mut PgConnection, text: &str, line: u64) -> Result<(), LoadError> {
    sqlx::raw_sql(AssertSqlSafe(text))
        .execute(conn)
        .await
        .map(|_| ())
        .map_err(|e| sql_error(e, line, &format!("`{}`", excerpt(text))))
}

/// Settings of the dump that every connection needs, in order; only ever appended to.
type Session = Arc<Vec<String>>;

enum Job {
    /// Rows for the COPY `statement`: the worker opens it with the first chunk and keeps it open
    /// for the next ones, until [`Job::EndCopy`] (one COPY per connection and table, like two
    /// halves loaded side by side; a COPY per chunk costs a transaction each).
    Copy {
        statement: Arc<str>,
        line: u64,
        rows: Bytes,
        session: Session,
    },
    /// The table's rows are all sent: commit the open COPY.
    EndCopy,
    /// Statements run one after the other (the index builds of one table).
    Sql {
        statements: Vec<(String, u64)>,
        session: Session,
    },
    /// Answered once everything before it on this worker is done.
    Barrier(oneshot::Sender<()>),
}

/// Chunks queued per worker: enough to keep it busy while the next chunk is read.
const QUEUED_PER_WORKER: usize = 2;

type Failure = Arc<std::sync::Mutex<Option<LoadError>>>;

/// The extra connections of a parallel restore, each with its own queue.
struct Pool {
    queues: Vec<mpsc::Sender<Job>>,
    /// Where the next chunk of rows goes first.
    next: usize,
    failure: Failure,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Pool {
    async fn start(
        jobs: usize,
        connect: &PgConnectOptions,
        counters: Arc<Counters>,
    ) -> Result<Pool, LoadError> {
        let failure: Failure = Arc::default();
        let mut queues = Vec::with_capacity(jobs);
        let mut workers = Vec::with_capacity(jobs);
        for _ in 0..jobs {
            let conn = connect
                .connect()
                .await
                .map_err(|e| LoadError::Connection(e.to_string()))?;
            let (queue, receiver) = mpsc::channel::<Job>(QUEUED_PER_WORKER);
            queues.push(queue);
            workers.push(tokio::spawn(work(
                conn,
                receiver,
                failure.clone(),
                counters.clone(),
            )));
        }
        Ok(Pool {
            queues,
            next: 0,
            failure,
            workers,
        })
    }

    fn failed(&self) -> Option<LoadError> {
        self.failure.lock().expect("failure lock").take()
    }

    fn stopped(&self) -> LoadError {
        self.failed()
            .unwrap_or_else(|| LoadError::Connection("the restore's workers stopped".into()))
    }

    /// Rows go to the first worker with room, starting after the last one used; when all are
    /// busy, to the next in turn.
    async fn submit_rows(&mut self, job: Job) -> Result<(), LoadError> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let n = self.queues.len();
        let mut job = job;
        for i in 0..n {
            let at = (self.next + i) % n;
            match self.queues[at].try_send(job) {
                Ok(()) => {
                    self.next = (at + 1) % n;
                    return Ok(());
                }
                Err(mpsc::error::TrySendError::Full(back)) => job = back,
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(self.stopped()),
            }
        }
        let at = self.next;
        self.next = (at + 1) % n;
        self.queues[at].send(job).await.map_err(|_| self.stopped())
    }

    /// Statements go to the worker with the shortest queue.
    async fn submit_sql(&self, job: Job) -> Result<(), LoadError> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let queue = self
            .queues
            .iter()
            .max_by_key(|q| q.capacity())
            .expect("at least one worker");
        queue.send(job).await.map_err(|_| self.stopped())
    }

    /// Every worker commits its open COPY.
    async fn end_copy(&self) -> Result<(), LoadError> {
        for queue in &self.queues {
            queue.send(Job::EndCopy).await.map_err(|_| self.stopped())?;
        }
        Ok(())
    }

    /// Waits until every submitted job has finished; the first failure if one failed.
    async fn barrier(&self) -> Result<(), LoadError> {
        let mut answers = Vec::with_capacity(self.queues.len());
        for queue in &self.queues {
            let (done, answer) = oneshot::channel();
            queue
                .send(Job::Barrier(done))
                .await
                .map_err(|_| self.stopped())?;
            answers.push(answer);
        }
        for answer in answers {
            let _ = answer.await;
        }
        match self.failed() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn close(self) -> Result<(), LoadError> {
        let result = self.barrier().await;
        drop(self.queues);
        for worker in self.workers {
            let _ = worker.await;
        }
        result
    }
}

async fn catch_up(
    conn: &mut PgConnection,
    applied: &mut usize,
    session: &Session,
) -> Result<(), LoadError> {
    for text in &session[*applied..] {
        execute(conn, text, 0).await?;
    }
    *applied = session.len();
    Ok(())
}

/// A worker: runs its queue's jobs in order on its connection. After a failure (kept for the
/// loader) it skips the work but still answers barriers, so the loader never waits forever.
async fn work(
    mut conn: PgConnection,
    mut queue: mpsc::Receiver<Job>,
    failure: Failure,
    counters: Arc<Counters>,
) {
    let mut applied = 0usize;
    let failed = || failure.lock().expect("failure lock").is_some();
    let fail = |e: LoadError| {
        failure.lock().expect("failure lock").get_or_insert(e);
    };
    let mut next = queue.recv().await;
    while let Some(job) = next.take() {
        match job {
            Job::Barrier(done) => {
                let _ = done.send(());
            }
            Job::EndCopy => {}
            Job::Sql {
                statements,
                session,
            } => {
                if !failed() {
                    let result = async {
                        catch_up(&mut conn, &mut applied, &session).await?;
                        for (text, line) in &statements {
                            execute(&mut conn, text, *line).await?;
                        }
                        Ok(())
                    }
                    .await;
                    if let Err(e) = result {
                        fail(e);
                    }
                }
            }
            Job::Copy {
                statement,
                line,
                rows,
                session,
            } => {
                if failed() {
                    next = queue.recv().await;
                    continue;
                }
                let copied = copy_table(
                    &mut conn,
                    &mut applied,
                    &mut queue,
                    (statement, line, rows, session),
                    &counters,
                )
                .await;
                match copied {
                    // The job that ended the COPY (EndCopy, or a barrier) is handled next.
                    Ok(after) => {
                        next = after;
                        continue;
                    }
                    Err(e) => fail(e),
                }
            }
        }
        next = queue.recv().await;
    }
    let _ = conn.close().await;
}

/// One COPY kept open while this table's chunks arrive; returns the job that ended it.
async fn copy_table(
    conn: &mut PgConnection,
    applied: &mut usize,
    queue: &mut mpsc::Receiver<Job>,
    (statement, line, rows, session): (Arc<str>, u64, Bytes, Session),
    counters: &Counters,
) -> Result<Option<Job>, LoadError> {
    catch_up(conn, applied, &session).await?;
    let what = format!("`{}`", excerpt(&statement));
    let mut copy = conn
        .copy_in_raw(&statement)
        .await
        .map_err(|e| sql_error(e, line, &what))?;
    copy.send(rows)
        .await
        .map_err(|e| sql_error(e, line, &what))?;
    let after = loop {
        match queue.recv().await {
            Some(Job::Copy {
                statement: s, rows, ..
            }) if Arc::ptr_eq(&s, &statement) => {
                copy.send(rows)
                    .await
                    .map_err(|e| sql_error(e, line, &what))?;
            }
            other => break other,
        }
    };
    let n = copy.finish().await.map_err(|e| sql_error(e, line, &what))?;
    counters.rows.fetch_add(n, Ordering::Relaxed);
    Ok(after)
}

/// The extensions the operator allows the admin to create for the dump (`--extensions-as-admin`),
/// and the admin's connection to the database being restored, opened when first needed.
pub struct AdminExtensions {
    pub allowed: Vec<String>,
    pub connect: PgConnectOptions,
    conn: Option<PgConnection>,
    /// Session settings of the dump applied on `conn` so far.
    applied: usize,
}

impl AdminExtensions {
    pub fn new(allowed: Vec<String>, connect: PgConnectOptions) -> AdminExtensions {
        AdminExtensions {
            allowed,
            connect,
            conn: None,
            applied: 0,
        }
    }

    async fn execute(&mut self, text: &str, line: u64, session: &Session) -> Result<(), LoadError> {
        let conn = match &mut self.conn {
            Some(conn) => conn,
            None => self.conn.insert(
                self.connect
                    .connect()
                    .await
                    .map_err(|e| LoadError::Connection(e.to_string()))?,
            ),
        };
        catch_up(conn, &mut self.applied, session).await?;
        execute(conn, text, line).await
    }
}

/// Runs a plain dump on connections of the sandbox's owner (never the admin's: what the dump
/// says runs with the owner's rights, and PostgreSQL refuses what reaches outside its database).
pub struct Loader {
    main: PgConnection,
    pool: Option<Pool>,
    extensions: AdminExtensions,
    session: Session,
    /// A run of index builds not yet handed to the workers: grouped by table when the run ends.
    indexes: Vec<(String, String, u64)>,
    counters: Arc<Counters>,
    loaded: Loaded,
}

impl Loader {
    /// `connect`: the owner's connection to the database. `jobs` > 1 opens that many more
    /// connections for data and index builds.
    pub async fn connect(
        connect: &PgConnectOptions,
        jobs: usize,
        extensions: AdminExtensions,
        counters: Arc<Counters>,
    ) -> Result<Loader, LoadError> {
        let main = connect
            .connect()
            .await
            .map_err(|e| LoadError::Connection(e.to_string()))?;
        let pool = if jobs > 1 {
            Some(Pool::start(jobs, connect, counters.clone()).await?)
        } else {
            None
        };
        Ok(Loader {
            main,
            pool,
            extensions,
            session: Arc::new(Vec::new()),
            indexes: Vec::new(),
            counters,
            loaded: Loaded::default(),
        })
    }

    /// Hands the pending run of index builds to the workers, one job per table: builds of one
    /// table run one after the other (an ALTER TABLE ... PRIMARY KEY locks the table anyway, and
    /// each build already sorts in parallel on the server), different tables side by side.
    async fn flush_indexes(&mut self) -> Result<(), LoadError> {
        let Some(pool) = &self.pool else {
            return Ok(());
        };
        let mut by_table: Vec<(String, Vec<(String, u64)>)> = Vec::new();
        for (table, text, line) in self.indexes.drain(..) {
            match by_table.iter_mut().find(|(t, _)| *t == table) {
                Some((_, statements)) => statements.push((text, line)),
                None => by_table.push((table, vec![(text, line)])),
            }
        }
        for (_, statements) in by_table {
            let job = Job::Sql {
                statements,
                session: self.session.clone(),
            };
            pool.submit_sql(job).await?;
        }
        Ok(())
    }

    async fn barrier(&mut self) -> Result<(), LoadError> {
        self.flush_indexes().await?;
        match &self.pool {
            Some(pool) => pool.barrier().await,
            None => Ok(()),
        }
    }

    /// Loads the dump's items until they end; then waits for the workers and closes every
    /// connection.
    pub async fn run(
        mut self,
        items: &mut mpsc::Receiver<Result<Item, DumpError>>,
    ) -> Result<Loaded, LoadError> {
        let mut result = self.run_items(items).await;
        if result.is_ok() {
            result = self.flush_indexes().await;
        }
        let closed = match self.pool.take() {
            Some(pool) => pool.close().await,
            None => Ok(()),
        };
        let _ = self.main.close().await;
        if let Some(conn) = self.extensions.conn.take() {
            let _ = conn.close().await;
        }
        result?;
        closed?;
        let mut loaded = self.loaded;
        loaded.tables = self.counters.tables.load(Ordering::Relaxed);
        loaded.rows = self.counters.rows.load(Ordering::Relaxed);
        Ok(loaded)
    }

    async fn run_items(
        &mut self,
        items: &mut mpsc::Receiver<Result<Item, DumpError>>,
    ) -> Result<(), LoadError> {
        while let Some(item) = items.recv().await {
            match item.map_err(LoadError::Dump)? {
                Item::Meta { command, line } => meta_command(&command, line)?,
                Item::Sql { text, line } => self.statement(text, line).await?,
                Item::CopyStart {
                    statement,
                    table,
                    line,
                } => {
                    tracing::debug!("loading {table}");
                    self.flush_indexes().await?;
                    self.counters.tables.fetch_add(1, Ordering::Relaxed);
                    self.copy(statement, line, items).await?;
                }
                Item::CopyData(_) | Item::CopyEnd => {
                    return Err(LoadError::Unsupported {
                        line: 0,
                        message: "COPY rows outside a COPY block".into(),
                    })
                }
            }
        }
        Ok(())
    }

    async fn statement(&mut self, text: String, line: u64) -> Result<(), LoadError> {
        let text = match classify(&text) {
            Kind::Privileges | Kind::Subscription => {
                self.loaded.skipped += 1;
                tracing::debug!("left out (integration server's roles): {}", excerpt(&text));
                return Ok(());
            }
            Kind::Owner => {
                self.loaded.skipped += 1;
                return Ok(());
            }
            Kind::Extension { name } if self.extensions.allowed.contains(&name) => {
                self.barrier().await?;
                tracing::info!("as the admin (--extensions-as-admin): {}", excerpt(&text));
                self.extensions.execute(&text, line, &self.session).await?;
                self.loaded.statements += 1;
                return Ok(());
            }
            Kind::Session => {
                execute(&mut self.main, &text, line).await?;
                Arc::make_mut(&mut self.session).push(text);
                self.loaded.statements += 1;
                return Ok(());
            }
            Kind::SequenceValue => {
                execute(&mut self.main, &text, line).await?;
                self.loaded.statements += 1;
                return Ok(());
            }
            Kind::IndexBuild { table } if self.pool.is_some() => {
                self.indexes.push((table, text, line));
                self.loaded.statements += 1;
                return Ok(());
            }
            Kind::IndexBuild { .. } | Kind::Extension { .. } | Kind::Other => text,
        };
        self.barrier().await?;
        execute(&mut self.main, &text, line).await?;
        self.loaded.statements += 1;
        Ok(())
    }

    async fn copy(
        &mut self,
        statement: String,
        line: u64,
        items: &mut mpsc::Receiver<Result<Item, DumpError>>,
    ) -> Result<(), LoadError> {
        let what = format!("`{}`", excerpt(&statement));
        if let Some(pool) = &mut self.pool {
            let statement: Arc<str> = statement.into();
            loop {
                match next_copy_item(items, line).await? {
                    Some(rows) => {
                        let job = Job::Copy {
                            statement: statement.clone(),
                            line,
                            rows,
                            session: self.session.clone(),
                        };
                        pool.submit_rows(job).await?;
                    }
                    None => return pool.end_copy().await,
                }
            }
        }
        let mut copy = self
            .main
            .copy_in_raw(&statement)
            .await
            .map_err(|e| sql_error(e, line, &what))?;
        loop {
            match next_copy_item(items, line).await {
                Ok(Some(rows)) => {
                    if let Err(e) = copy.send(rows).await {
                        return Err(sql_error(e, line, &what));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    let _ = copy.abort("restore-db: the dump could not be read").await;
                    return Err(e);
                }
            }
        }
        let n = copy.finish().await.map_err(|e| sql_error(e, line, &what))?;
        self.counters.rows.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

/// The next rows of the current COPY block; None at its end.
async fn next_copy_item(
    items: &mut mpsc::Receiver<Result<Item, DumpError>>,
    line: u64,
) -> Result<Option<Bytes>, LoadError> {
    match items.recv().await {
        Some(Ok(Item::CopyData(rows))) => Ok(Some(rows)),
        Some(Ok(Item::CopyEnd)) => Ok(None),
        Some(Err(e)) => Err(LoadError::Dump(e)),
        Some(Ok(_)) | None => Err(LoadError::Unsupported {
            line,
            message: "a COPY block without its rows' end".into(),
        }),
    }
}

/// psql meta-commands in a dump: `\restrict`/`\unrestrict` (pg_dump since 17.6/15.14, a guard
/// for psql) mean nothing here; `\connect` means a dump made with `--create` or by pg_dumpall,
/// which names databases of its own.
fn meta_command(command: &str, line: u64) -> Result<(), LoadError> {
    let name = command.split_whitespace().next().unwrap_or("");
    match name {
        "restrict" | "unrestrict" => Ok(()),
        "connect" | "c" => Err(LoadError::Unsupported {
            line,
            message: "\\connect: the dump switches databases (made with pg_dump --create or \
                      pg_dumpall); restore-db restores one database: dump it without --create"
                .into(),
        }),
        _ => Err(LoadError::Unsupported {
            line,
            message: format!(
                "psql meta-command \\{} is not one pg_dump writes; restore-db does not run psql \
                 commands",
                step_kit::escape_untrusted(name)
            ),
        }),
    }
}
