//! The device's sync client: connect to an account, push dirty rows, pull changes, run in the
//! background, and tell the app how it is going.

mod account;
pub mod changes;
mod live;
pub mod remote;
pub mod remote_url;
pub mod service;
pub mod transport;
mod trust;

pub use crate::protocol::auth::Session;
pub use account::{change_password, delete_account};
pub use changes::{Changes, TableChanges};
pub use remote::{NextPage, Remote, RemoteError};
pub use remote_url::allow_plain_http_anywhere;
pub use service::{ServiceError, ServiceOptions, SyncService};
pub use transport::{PullRequest, Transport};
pub use trust::check_server_ca;

use crate::protocol::page::PulledPage;
use crate::protocol::push::PushResponse;
use crate::store::{HeldBackRow, RejectedRow, StateRow, Store, StoreError};
use crate::timestamp::Timestamp;
use std::collections::{BTreeMap, HashSet};

/// The app's default remote.
pub const DEFAULT_REMOTE: &str = "https://zentrio.eu";
/// Rows per push; halved while the server answers 413.
pub const PUSH_BATCH: usize = 1000;
/// Rows per pulled page.
pub const PULL_LIMIT: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("not connected to an account: run connect first")]
    NotConnected,
    /// The server refused the stored token: syncing stops until the user signs in again. No
    /// local change is lost.
    #[error("sign in again: {0}")]
    SignInAgain(String),
    #[error(transparent)]
    Remote(#[from] RemoteError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl SyncError {
    /// Whether a later attempt may succeed without the user doing anything.
    pub fn is_transient(&self) -> bool {
        matches!(self, SyncError::Remote(e) if e.is_transient())
    }
}

/// What the sync is doing right now.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "phase", rename_all = "snake_case")]
pub enum Activity {
    Idle,
    Pushing { rows: usize },
    Pulling { pages: usize, rows: usize },
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub pushed: usize,
    pub rejected: usize,
    pub pulled: usize,
    pub pages: usize,
    pub full_pull: bool,
    /// The local rows the pull changed.
    pub changed: Changes,
}

/// Everything the app shows about sync, readable at any time (also offline).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SyncStatus {
    pub connected: bool,
    pub remote_url: Option<String>,
    pub account: Option<String>,
    /// The email the account was signed in with.
    pub email: Option<String>,
    pub device_id: String,
    pub syncing: bool,
    pub activity: Activity,
    pub last_sync_at: Option<String>,
    pub last_error: Option<String>,
    /// The stored token was refused: the user must sign in again.
    pub needs_sign_in: bool,
    /// Rows waiting to be pushed, per table (rejected rows apart): the next push sends them.
    pub pending: BTreeMap<String, u64>,
    /// Rows the server refused as they are now, with why: sent again once they change.
    pub rejected: Vec<RejectedRow>,
    /// Pulled rows held back until a parent arrives or a natural key frees up: how many.
    pub parked: u64,
    /// The local owner (the app's local user) whose rows this device syncs, once chosen.
    pub owner: Option<String>,
    /// Rows of other local owners, per table: they never leave the device.
    pub other_owners: BTreeMap<String, u64>,
    /// The same rows, each with why it waits.
    pub held_back: Vec<HeldBackRow>,
    /// What the service's last sync did, when it succeeded (set by [`SyncService`]).
    pub last_report: Option<SyncReport>,
    /// A pull is held open on the server, so other devices' changes arrive as they happen
    /// (set by [`SyncService`]; false when the device syncs only now and then).
    pub live: bool,
}

/// The store's sync status; `activity` is what a running sync reports.
pub fn status(store: &Store, activity: Activity) -> Result<SyncStatus, StoreError> {
    let row: StateRow = store.status_row()?;
    let rejected = store.rejected_rows()?;
    let held_back = store.held_back_rows()?;
    let mut pending = BTreeMap::new();
    for (table, n) in store.dirty_counts()? {
        let r = rejected.iter().filter(|x| x.table == table).count() as u64;
        pending.insert(table, n.saturating_sub(r));
    }
    Ok(SyncStatus {
        connected: row.token.is_some(),
        remote_url: row.remote_url,
        account: row.account,
        email: store.account_email()?,
        device_id: store.device_id().to_owned(),
        syncing: row.syncing || activity != Activity::Idle,
        activity,
        last_sync_at: row.last_sync_at,
        last_error: row.last_error,
        needs_sign_in: row.token_refused,
        pending,
        rejected,
        parked: held_back.len() as u64,
        held_back,
        owner: store.owner()?,
        other_owners: store
            .other_owners_counts()?
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .collect(),
        last_report: None,
        live: false,
    })
}

/// Batch sizes of a sync.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub push_batch: usize,
    pub pull_limit: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            push_batch: PUSH_BATCH,
            pull_limit: PULL_LIMIT,
        }
    }
}

/// One sync: every dirty row pushed (parents first, in batches), then every page pulled.
pub async fn sync_once(
    store: &mut Store,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<SyncReport, SyncError> {
    sync_with(store, Limits::default(), progress).await
}

/// [`sync_once`] with other batch sizes.
pub async fn sync_with(
    store: &mut Store,
    limits: Limits,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<SyncReport, SyncError> {
    sync_using::<Remote>(store, &mut None, limits, progress).await
}

/// [`sync_with`] over a kept transport ([`Remote`] over HTTP), so repeated syncs reuse its
/// kept-alive connections (an app syncing often keeps one; [`SyncService`] does). `remote` is
/// (re)opened when it is `None` or points elsewhere than the stored session.
pub async fn sync_using<T: Transport>(
    store: &mut Store,
    remote: &mut Option<T>,
    limits: Limits,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<SyncReport, SyncError> {
    let (url, token) = match store.session()? {
        (Some(u), Some(t)) => (u, t),
        _ => return Err(SyncError::NotConnected),
    };
    let remote = transport::kept_or_open(remote, &url, store.server_ca()?.as_deref())?;
    store.set_syncing(true)?;
    let result = run(store, remote, &token, limits, progress).await;
    // A refused token is recorded as state (the status asks to sign in again until a sign-in
    // succeeds), not left to be read back from the error's text.
    match &result {
        Err(e @ SyncError::SignInAgain(_)) => store.refuse_token(&token, &e.to_string())?,
        Err(e) => store.finish_sync(Some(&e.to_string()))?,
        Ok(_) => store.finish_sync(None)?,
    }
    progress(Activity::Idle);
    result
}

fn refused(e: RemoteError) -> SyncError {
    match e.status() {
        Some(401) => SyncError::SignInAgain(e.to_string()),
        _ => SyncError::Remote(e),
    }
}

async fn run<T: Transport>(
    store: &mut Store,
    remote: &T,
    token: &str,
    limits: Limits,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<SyncReport, SyncError> {
    let mut report = SyncReport::default();
    push_phase(store, remote, token, limits, &mut report, progress).await?;
    if let Pulled::Requeued =
        pull_phase(store, remote, token, limits, &mut report, progress).await?
    {
        // The server lost history: what the full pull re-queued goes up again now.
        push_phase(store, remote, token, limits, &mut report, progress).await?;
    }
    Ok(report)
}

/// Pushes only: every dirty row, parents first, in batches (for measuring an upload alone).
pub async fn push_pending(store: &mut Store, limits: Limits) -> Result<SyncReport, SyncError> {
    let (url, token) = match store.session()? {
        (Some(u), Some(t)) => (u, t),
        _ => return Err(SyncError::NotConnected),
    };
    let remote = Remote::trusting(&url, store.server_ca()?.as_deref())?;
    let mut report = SyncReport::default();
    push_phase(store, &remote, &token, limits, &mut report, &mut |_| {}).await?;
    Ok(report)
}

/// A task running in the background; dropping it cancels it (a sync that fails or is
/// dropped leaves nothing running behind it).
struct Background<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for Background<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Background<Result<PushResponse, RemoteError>> {
    /// The answer of a request sent in the background.
    async fn answer(mut self, remote: &impl Transport) -> Result<PushResponse, RemoteError> {
        (&mut self.0).await.unwrap_or_else(|e| {
            Err(RemoteError::Unreachable {
                url: remote.url().to_owned(),
                message: e.to_string(),
            })
        })
    }
}

type RowKey = (String, i64, String);

fn keys(rows: &[crate::store::PushedRow]) -> impl Iterator<Item = RowKey> + '_ {
    rows.iter()
        .map(|r| (r.table.clone(), r.id, r.updated_at.clone()))
}

/// Pushes every dirty row in batches, one request at a time (the server must see parents
/// before children), with the device's own work overlapped: the next batch is read while one
/// is in flight, and a batch's results are stored while the next one is.
async fn push_phase<T: Transport>(
    store: &mut Store,
    remote: &T,
    token: &str,
    limits: Limits,
    report: &mut SyncReport,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<(), SyncError> {
    let device = store.device_id().to_owned();
    let version = store.app().schema.version();
    let send = |changes: Box<serde_json::value::RawValue>| {
        let (remote, token, device) = (remote.clone(), token.to_owned(), device.clone());
        Background(tokio::spawn(async move {
            remote.push(&token, &device, version, &changes).await
        }))
    };
    let mut limit = limits.push_batch.max(1);
    // Rows sent in this sync at their stamp: not read again (a rejected row stays dirty).
    let mut done: HashSet<RowKey> = HashSet::new();
    let mut in_flight = None;
    if let Some(batch) = store.prepare_push(limit, &done)? {
        done.extend(keys(&batch.rows));
        in_flight = Some((batch.rows, send(batch.changes)));
    }
    while let Some((rows, request)) = in_flight.take() {
        let next = store.prepare_push(limit, &done)?;
        match request.answer(remote).await {
            Ok(answer) => {
                if let Some(batch) = next {
                    done.extend(keys(&batch.rows));
                    in_flight = Some((batch.rows, send(batch.changes)));
                }
                let summary = store.apply_push_results(&rows, &answer.results)?;
                if let Ok(t) = Timestamp::parse_wire(&answer.server_time) {
                    store.clock().observe_server_time(t);
                }
                report.pushed += rows.len();
                report.rejected += summary.rejected;
                progress(Activity::Pushing {
                    rows: report.pushed,
                });
            }
            Err(e) if e.status() == Some(413) => {
                if rows.len() == 1 {
                    store.reject(&rows[0], "the row is too large for the server")?;
                    report.rejected += 1;
                } else {
                    for k in keys(&rows) {
                        done.remove(&k);
                    }
                    limit = rows.len() / 2;
                }
                if let Some(batch) = store.prepare_push(limit, &done)? {
                    done.extend(keys(&batch.rows));
                    in_flight = Some((batch.rows, send(batch.changes)));
                }
            }
            Err(e) => return Err(refused(e)),
        }
    }
    Ok(())
}

/// The pages of one pull, fetched ahead in the background. The next page is asked for as soon
/// as the head of the current one names its cursor, while the current one's body is still read
/// and decoded and the one before is stored: the device stores pages back to back instead of
/// waiting a round trip and a decode for each. A few pages at most are held at once. Dropping
/// it stops the fetching.
struct PagePipeline {
    pages: tokio::sync::mpsc::Receiver<Result<PulledPage, RemoteError>>,
    _tasks: [Background<()>; 2],
}

/// An answer's head, or (from a server that does not send the cursor in the head) the page
/// decoded to learn it.
enum Head<B> {
    Raw(B),
    Decoded(PulledPage),
}

impl PagePipeline {
    fn start<T: Transport>(
        remote: &T,
        token: &str,
        device: Option<&str>,
        schema: &'static crate::schema::Schema,
        since: Option<String>,
        limit: usize,
    ) -> PagePipeline {
        use tokio::sync::mpsc;
        let (heads_tx, mut heads_rx) = mpsc::channel::<Result<Head<T::Body>, RemoteError>>(1);
        let (pages_tx, pages) = mpsc::channel(1);
        let version = schema.version();
        let (fetch_remote, token, device) =
            (remote.clone(), token.to_owned(), device.map(str::to_owned));
        let fetcher = Background(tokio::spawn(async move {
            let remote = fetch_remote;
            let mut since = since;
            loop {
                let head = remote
                    .pull_head(PullRequest {
                        token: &token,
                        device_id: device.as_deref(),
                        schema_version: version,
                        since: since.as_deref(),
                        limit,
                    })
                    .await;
                let (item, next) = match head {
                    Err(e) => (Err(e), None),
                    Ok((resp, Some(next))) => (Ok(Head::Raw(resp)), Some(next)),
                    Ok((resp, None)) => match transport::read_page(&remote, schema, resp).await {
                        Ok(page) => {
                            let next = if page.has_more {
                                NextPage::After(page.cursor.clone())
                            } else {
                                NextPage::None
                            };
                            (Ok(Head::Decoded(page)), Some(next))
                        }
                        Err(e) => (Err(e), None),
                    },
                };
                if heads_tx.send(item).await.is_err() {
                    return;
                }
                match next {
                    Some(NextPage::After(cursor)) => since = Some(cursor),
                    _ => return,
                }
            }
        }));
        let decode_remote = remote.clone();
        let decoder = Background(tokio::spawn(async move {
            while let Some(head) = heads_rx.recv().await {
                let page = match head {
                    Ok(Head::Raw(resp)) => transport::read_page(&decode_remote, schema, resp).await,
                    Ok(Head::Decoded(page)) => Ok(page),
                    Err(e) => Err(e),
                };
                let failed = page.is_err();
                if pages_tx.send(page).await.is_err() || failed {
                    return;
                }
            }
        }));
        PagePipeline {
            pages,
            _tasks: [fetcher, decoder],
        }
    }
}

/// How a pull ended.
enum Pulled {
    /// Every page applied.
    Done,
    /// Every page applied, after the server answered that it had lost history: this device's
    /// rows were queued for upload again.
    Requeued,
}

async fn pull_phase<T: Transport>(
    store: &mut Store,
    remote: &T,
    token: &str,
    limits: Limits,
    report: &mut SyncReport,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<Pulled, SyncError> {
    let device = store.device_id().to_owned();
    let schema = &store.app().schema;
    let limit = limits.pull_limit.max(1);
    let mut restarted = false;
    let mut requeued = false;
    'pull: loop {
        let since = store.cursor()?;
        if since.is_none() {
            store.begin_full_pull()?;
        }
        // A full pull must see this device's own writes on every page, or its sweep would
        // remove them here: it never asks the server to leave them out (whatever the server's
        // cursors say).
        let full = since.is_none() || store.in_full_pull()?;
        report.full_pull |= full;
        let filter = (!full).then_some(device.as_str());
        let mut pipeline = PagePipeline::start(remote, token, filter, schema, since, limit);
        loop {
            let fetched = pipeline.pages.recv().await.unwrap_or_else(|| {
                Err(RemoteError::Unreachable {
                    url: remote.url().to_owned(),
                    message: "the pull stopped before its last page".into(),
                })
            });
            match fetched {
                Ok(page) => {
                    let server_time = page.server_clock();
                    let touched = changes::touched(&page, full);
                    let summary = store.apply_page(page)?;
                    report.changed.record(store, touched)?;
                    if let Some(t) = server_time {
                        store.clock().observe_server_time(t);
                    }
                    report.pages += 1;
                    report.pulled += summary.rows;
                    progress(Activity::Pulling {
                        pages: report.pages,
                        rows: report.pulled,
                    });
                    if !summary.has_more {
                        return Ok(if requeued {
                            Pulled::Requeued
                        } else {
                            Pulled::Done
                        });
                    }
                }
                Err(e) if e.status() == Some(410) && !restarted => {
                    drop(pipeline);
                    if e.server_lost_history() {
                        // The server was restored from an earlier copy: every row it may have
                        // lost goes up again, and competes by its stamp with what it kept.
                        store.requeue_all_for_upload()?;
                        requeued = true;
                    }
                    // The cursor expired: pull everything again.
                    store.restart_full_pull()?;
                    restarted = true;
                    continue 'pull;
                }
                Err(e) => return Err(refused(e)),
            }
        }
    }
}

/// What to do with this device's data when it connects to an account that holds data too.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LocalData {
    /// Upload it beside the account's (the default).
    #[default]
    Upload,
    /// Discard it and take the account's.
    Discard,
}

/// Signs in (or registers) and runs a first sync that uploads the existing data. Connecting to
/// another account than the last one forgets this database's remote ids, cursor and tombstones
/// and queues every live row for upload. The rows synced are those of one local owner: name it
/// first with [`Store::choose_owner`] when the device's rows have several. A server with a
/// certificate of its own CA is trusted when that CA is stored first ([`Store::set_server_ca`]).
pub async fn connect(
    store: &mut Store,
    url: &str,
    email: &str,
    password: &str,
    register: bool,
    local_data: LocalData,
    progress: &mut (dyn FnMut(Activity) + Send),
) -> Result<SyncReport, SyncError> {
    // The local owner to sync is settled before anything is sent: with rows of several owners
    // and none named ([`Store::choose_owner`]) nothing happens but the error naming them.
    store.choose_owner(None)?;
    let remote = Remote::trusting(url, store.server_ca()?.as_deref())?;
    let session = remote.sign_in(email, password, register).await?;
    let previous = store.synced_account()?;
    if previous.as_deref() != Some(session.user_id.as_str()) {
        if previous.is_some() {
            store.reset_for_new_account()?;
        }
        if local_data == LocalData::Discard && store.has_local_data()? {
            // One row of a full pull says whether the account holds data (a full pull never
            // names the device: the answer must not depend on who wrote the rows).
            let (body, _) = remote
                .pull_head(PullRequest {
                    token: &session.token,
                    device_id: None,
                    schema_version: store.app().schema.version(),
                    since: None,
                    limit: 1,
                })
                .await?;
            let page = transport::read_page(&remote, &store.app().schema, body).await?;
            let account_has_data = page.changes.iter().any(|(_, rows)| !rows.is_empty());
            if account_has_data {
                store.discard_local_data()?;
            }
        }
    }
    store.save_session(remote.url(), &session.user_id, &session.token)?;
    store.save_account_email(email.trim())?;
    sync_once(store, progress).await
}

/// Forgets the token (signing out on the server when it is reachable); the local data stays.
pub async fn disconnect(store: &mut Store) -> Result<(), SyncError> {
    if let (Some(url), Some(token)) = store.session()? {
        // Best effort: offline, the token simply expires on the server.
        let ca = store.server_ca()?;
        let _ = async {
            Remote::trusting(&url, ca.as_deref())?
                .sign_out(&token)
                .await
        }
        .await;
    }
    store.forget_token()?;
    Ok(())
}
