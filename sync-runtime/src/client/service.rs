//! The background sync service: syncs at start, on a period, soon after a local write
//! (debounced), and on demand; between syncs, while connected, keeps one pull held open on the
//! server so other devices' changes are applied as they happen; backs off with jitter while the
//! server is unreachable; runs one sync at a time; publishes its status, and what each sync
//! changed, for the app to watch.

use super::live::{self, Polled};
use super::transport::Transport;
use super::{Activity, Changes, Limits, SyncError, SyncReport, SyncStatus, status, sync_using};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc, oneshot, watch};
use tokio::time::Instant;

#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Sync this often when nothing else triggers it.
    pub period: Duration,
    /// The least time between the end of a sync and one a local write starts, so a burst of
    /// writes makes one or two syncs (a write after a quiet spell syncs at once).
    pub debounce: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// How long each held pull asks the server to wait for a change (servers cap it); `None`
    /// syncs only on the triggers above.
    pub live_wait: Option<Duration>,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            period: Duration::from_secs(5 * 60),
            debounce: Duration::from_millis(10),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
            live_wait: Some(Duration::from_secs(25)),
        }
    }
}

/// Why [`SyncService::sync_now`] failed. Clone, because one sync answers every request that
/// joined it: the sync's own error is shared, not turned into text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceError {
    #[error("the sync service stopped")]
    Stopped,
    #[error(transparent)]
    Sync(Arc<SyncError>),
}

impl ServiceError {
    /// The sync's own error, when a sync ran and failed.
    pub fn sync_error(&self) -> Option<&SyncError> {
        match self {
            ServiceError::Sync(e) => Some(e),
            ServiceError::Stopped => None,
        }
    }
}

type Reply = oneshot::Sender<Result<SyncReport, ServiceError>>;

/// Changes published and not yet received by a slow subscriber; beyond this it is told it
/// lagged (and should refresh everything).
const CHANGES_BACKLOG: usize = 64;

/// A running background sync over its own connection to the app's database.
pub struct SyncService {
    status: watch::Receiver<SyncStatus>,
    changes: broadcast::Sender<Changes>,
    wrote: Arc<Notify>,
    requests: mpsc::Sender<Reply>,
    task: tokio::task::JoinHandle<()>,
}

fn jittered(d: Duration) -> Duration {
    let mut b = [0u8; 2];
    let r = getrandom::fill(&mut b)
        .map(|_| u16::from_le_bytes(b))
        .unwrap_or(32768);
    // Between half and one and a half times `d`.
    d.mul_f64(0.5 + f64::from(r) / f64::from(u16::MAX))
}

/// What woke the service.
enum Wake {
    /// A sync is due: the period, a local write, a request, a retry.
    Sync,
    /// The held pull ended.
    Polled(Result<Polled, SyncError>),
}

/// What follows a held pull's end.
enum Next {
    /// The next sync stays when it was due.
    AsPlanned,
    SyncAfter(Duration),
    SyncNow,
}

/// The service's loop, over its own connection to the database.
struct Runner<T> {
    store: Store,
    options: ServiceOptions,
    status: watch::Sender<SyncStatus>,
    changes: broadcast::Sender<Changes>,
    remote: Option<T>,
    failures: u32,
    /// Held pulls the server refused in a row (it holds too many): the next one waits longer.
    refusals: u32,
    /// Whether to hold a pull open between syncs: after a sync that succeeded, until the
    /// server turns out not to hold pulls or the network fails.
    live: bool,
    /// What the last sync that succeeded did, for the status.
    last_report: Option<SyncReport>,
}

impl<T: Transport> Runner<T> {
    fn backoff(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff_after(self.failures)
    }

    fn backoff_after(&self, failures: u32) -> Duration {
        let exp = self
            .options
            .backoff_min
            .saturating_mul(1u32 << failures.min(16));
        jittered(exp.min(self.options.backoff_max))
    }

    /// Publishes the stored status with whether a pull is held open.
    fn publish_status(&self) {
        if let Ok(mut s) = status(&self.store, Activity::Idle) {
            s.live = self.live && self.options.live_wait.is_some();
            s.last_report = self.last_report.clone();
            self.status.send_replace(s);
        }
    }

    fn publish_changes(&self, changes: Changes) {
        if !changes.is_empty() {
            // No subscriber is not an error.
            let _ = self.changes.send(changes);
        }
    }

    /// Runs one sync; returns its result and when the next one is due.
    async fn sync(&mut self) -> (Result<SyncReport, SyncError>, Duration) {
        let tx = self.status.clone();
        let mut progress = |a: Activity| {
            tx.send_modify(|s| {
                s.syncing = a != Activity::Idle;
                s.activity = a;
            });
        };
        let result = sync_using(
            &mut self.store,
            &mut self.remote,
            Limits::default(),
            &mut progress,
        )
        .await;
        // The status shows what the last sync moved only while it succeeded.
        self.last_report = result.as_ref().ok().cloned();
        let next = match &result {
            Ok(report) => {
                self.failures = 0;
                self.live = true;
                self.publish_changes(report.changed.clone());
                self.options.period
            }
            Err(e) if e.is_transient() => {
                self.live = false;
                self.backoff()
            }
            // Not connected, or the token was refused: wait for the user (or a request).
            Err(_) => {
                self.live = false;
                Duration::from_secs(365 * 24 * 3600)
            }
        };
        self.publish_status();
        (result, next)
    }

    /// What a held pull's end calls for.
    fn polled(&mut self, polled: Result<Polled, SyncError>) -> Next {
        match polled {
            // More pages: a sync fetches them.
            Ok(Polled::Applied { changes, has_more }) => {
                self.refusals = 0;
                self.publish_changes(changes);
                self.publish_status();
                if has_more {
                    Next::SyncNow
                } else {
                    Next::AsPlanned
                }
            }
            // The server does not hold pulls: sync on the period, as before live sync.
            Ok(Polled::NotHeld { supported: false }) => {
                self.live = false;
                self.publish_status();
                Next::AsPlanned
            }
            // The server holds too many pulls now: try again later (a sync then, which holds
            // the next pull), each time later, whatever syncs succeed meanwhile.
            Ok(Polled::NotHeld { supported: true }) => {
                self.live = false;
                self.publish_status();
                self.refusals = self.refusals.saturating_add(1);
                Next::SyncAfter(self.backoff_after(self.refusals).min(self.options.period))
            }
            Ok(Polled::NeedsSync) => Next::SyncNow,
            Err(e) if live::needs_sync(&e) => Next::SyncNow,
            Err(e) => {
                tracing::debug!(error = %e, "the held pull failed; syncing with backoff");
                self.live = false;
                let _ = self.store.finish_sync(Some(&e.to_string()));
                self.publish_status();
                Next::SyncAfter(self.backoff())
            }
        }
    }
}

impl SyncService {
    /// Starts the service on `store` (give it its own connection: [`Store::reopen`]), reaching
    /// the stored session's server over HTTP.
    pub fn start(store: Store, options: ServiceOptions) -> SyncService {
        Self::start_over::<super::Remote>(store, options, None)
    }

    /// [`SyncService::start`] over `transport` (opened for the stored session's server when
    /// `None` or pointing elsewhere).
    pub fn start_over<T: Transport>(
        store: Store,
        options: ServiceOptions,
        transport: Option<T>,
    ) -> SyncService {
        // Long on purpose: the service's one loop, whose every wake-up (the period, a request,
        // a local write, the held pull) is read best beside the others it races.
        let initial = status(&store, Activity::Idle).unwrap_or_else(|_| SyncStatus {
            connected: false,
            remote_url: None,
            account: None,
            email: None,
            device_id: store.device_id().to_owned(),
            syncing: false,
            activity: Activity::Idle,
            last_sync_at: None,
            last_error: None,
            needs_sign_in: false,
            pending: Default::default(),
            rejected: vec![],
            parked: 0,
            owner: None,
            other_owners: Default::default(),
            held_back: vec![],
            last_report: None,
            live: false,
        });
        let (tx, rx) = watch::channel(initial);
        let (changes, _) = broadcast::channel(CHANGES_BACKLOG);
        let wrote = Arc::new(Notify::new());
        let (req_tx, mut req_rx) = mpsc::channel::<Reply>(16);
        let notify = wrote.clone();
        let mut runner = Runner {
            store,
            options,
            status: tx,
            changes: changes.clone(),
            remote: transport,
            failures: 0,
            refusals: 0,
            live: false,
            last_report: None,
        };
        let task = tokio::spawn(async move {
            let mut due = Instant::now();
            let mut last_sync = Instant::now();
            loop {
                let mut replies: Vec<Reply> = Vec::new();
                let wait = runner.options.live_wait.filter(|_| runner.live);
                let wake = tokio::select! {
                    () = tokio::time::sleep_until(due) => Wake::Sync,
                    r = req_rx.recv() => match r {
                        Some(r) => {
                            replies.push(r);
                            Wake::Sync
                        }
                        None => return,
                    },
                    () = notify.notified() => {
                        tokio::time::sleep_until(last_sync + runner.options.debounce).await;
                        Wake::Sync
                    }
                    polled = live::poll(&mut runner.store, &mut runner.remote, wait.unwrap_or_default()),
                        if wait.is_some() => Wake::Polled(polled),
                };
                if let Wake::Polled(polled) = wake {
                    match runner.polled(polled) {
                        Next::AsPlanned => continue,
                        Next::SyncAfter(after) => {
                            due = Instant::now() + after;
                            continue;
                        }
                        Next::SyncNow => {}
                    }
                }
                while let Ok(r) = req_rx.try_recv() {
                    replies.push(r);
                }
                let (result, next) = runner.sync().await;
                last_sync = Instant::now();
                due = last_sync + next;
                let answer = result.map_err(|e| ServiceError::Sync(Arc::new(e)));
                for r in replies {
                    let _ = r.send(answer.clone());
                }
            }
        });
        SyncService {
            status: rx,
            changes,
            wrote,
            requests: req_tx,
            task,
        }
    }

    /// Watch this to show sync status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// What each sync, and each change arriving live, changed locally: the tables and the local
    /// ids of their rows, for the app to refresh what it shows. A subscriber that falls behind
    /// by more than a few dozen updates is told it lagged (refresh everything then).
    pub fn changes(&self) -> broadcast::Receiver<Changes> {
        self.changes.subscribe()
    }

    /// A hook for [`Store::set_write_hook`]: a local write schedules a sync soon after.
    pub fn write_hook(&self) -> impl Fn() + Send + 'static {
        let n = self.wrote.clone();
        move || n.notify_one()
    }

    /// Syncs now (or joins the sync under way) and waits for it.
    pub async fn sync_now(&self) -> Result<SyncReport, ServiceError> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| ServiceError::Stopped)?;
        rx.await.map_err(|_| ServiceError::Stopped)?
    }

    /// Stops the service; a sync under way is abandoned (each of its steps is atomic).
    pub fn stop(self) {
        self.task.abort();
    }
}
