//! The background sync service: syncs at start, on a period, soon after a local write
//! (debounced), and on demand; backs off with jitter while the server is unreachable; runs one
//! sync at a time; publishes its status for the app to watch.

use super::{Activity, Limits, SyncError, SyncReport, SyncStatus, status, sync_using};
use crate::store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, mpsc, oneshot, watch};

#[derive(Clone, Debug)]
pub struct ServiceOptions {
    /// Sync this often when nothing else triggers it.
    pub period: Duration,
    /// Wait this long after a local write, so a burst of writes makes one sync.
    pub debounce: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl Default for ServiceOptions {
    fn default() -> Self {
        ServiceOptions {
            period: Duration::from_secs(5 * 60),
            debounce: Duration::from_secs(2),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(5 * 60),
        }
    }
}

type Reply = oneshot::Sender<Result<SyncReport, String>>;

/// A running background sync over its own connection to the app's database.
pub struct SyncService {
    status: watch::Receiver<SyncStatus>,
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

impl SyncService {
    /// Starts the service on `store` (give it its own connection: [`Store::reopen`]).
    pub fn start(mut store: Store, options: ServiceOptions) -> SyncService {
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
            last_report: None,
        });
        let (tx, rx) = watch::channel(initial);
        let wrote = Arc::new(Notify::new());
        let (req_tx, mut req_rx) = mpsc::channel::<Reply>(16);
        let notify = wrote.clone();
        let task = tokio::spawn(async move {
            let mut failures: u32 = 0;
            let mut remote = None;
            let mut next = Duration::ZERO;
            loop {
                let mut replies: Vec<Reply> = Vec::new();
                tokio::select! {
                    () = tokio::time::sleep(next) => {}
                    r = req_rx.recv() => match r {
                        Some(r) => replies.push(r),
                        None => return,
                    },
                    () = notify.notified() => tokio::time::sleep(options.debounce).await,
                }
                while let Ok(r) = req_rx.try_recv() {
                    replies.push(r);
                }
                let tx2 = tx.clone();
                let mut progress = |a: Activity| {
                    tx2.send_modify(|s| {
                        s.syncing = a != Activity::Idle;
                        s.activity = a;
                    });
                };
                let result: Result<SyncReport, SyncError> =
                    sync_using(&mut store, &mut remote, Limits::default(), &mut progress).await;
                if let Ok(mut s) = status(&store, Activity::Idle) {
                    s.last_report = result.as_ref().ok().cloned();
                    let _ = tx.send(s);
                }
                next = match &result {
                    Ok(_) => {
                        failures = 0;
                        options.period
                    }
                    Err(e) if e.is_transient() => {
                        failures = failures.saturating_add(1);
                        let exp = options.backoff_min.saturating_mul(1u32 << failures.min(16));
                        jittered(exp.min(options.backoff_max))
                    }
                    // Not connected, or the token was refused: wait for the user (or a request).
                    Err(_) => Duration::from_secs(365 * 24 * 3600),
                };
                let answer = result.map_err(|e| e.to_string());
                for r in replies {
                    let _ = r.send(answer.clone());
                }
            }
        });
        SyncService {
            status: rx,
            wrote,
            requests: req_tx,
            task,
        }
    }

    /// Watch this to show sync status.
    pub fn status(&self) -> watch::Receiver<SyncStatus> {
        self.status.clone()
    }

    /// A hook for [`Store::set_write_hook`]: a local write schedules a sync soon after.
    pub fn write_hook(&self) -> impl Fn() + Send + 'static {
        let n = self.wrote.clone();
        move || n.notify_one()
    }

    /// Syncs now (or joins the sync under way) and waits for it.
    pub async fn sync_now(&self) -> Result<SyncReport, String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(tx)
            .await
            .map_err(|_| "the sync service stopped".to_owned())?;
        rx.await
            .map_err(|_| "the sync service stopped".to_owned())?
    }

    /// Stops the service; a sync under way is abandoned (each of its steps is atomic).
    pub fn stop(self) {
        self.task.abort();
    }
}
