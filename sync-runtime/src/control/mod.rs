//! The device's local control API and its "Connect to Cloud" settings page: an axum
//! [`router`] an app mounts on its own loopback HTTP server, over a running [`SyncService`].
//!
//! `GET /sync` is the page (one HTML file compiled in, nothing loaded from elsewhere);
//! `/api/sync/...` are its endpoints: status, config, connect, disconnect, sync now, and the
//! status as server-sent events. Only the page's own origin on this machine may call them
//! ([`guard`]); no answer carries the token, and the password is never stored.

mod account;
mod error;
pub mod guard;
mod routes;
mod view;

pub use error::ControlError;
pub use routes::{ControlApiDoc, PAGE_HTML, router};
pub use view::{
    ConfigView, ConnectRequest, ConnectionState, DeleteAccountRequest, HeldBackView, LastSync,
    LocalDataChoice, PasswordChangeRequest, Phase, Progress, RejectedView, StatusView, SyncResult,
};

use crate::client::{self, Activity, LocalData, Remote, ServiceOptions, SyncService, SyncStatus};
use crate::ddl::quote_ident;
use crate::store::{Store, StoreError};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::watch;

/// What the published status is derived from, beside the service's own status.
struct Tracker {
    service: SyncStatus,
    /// `Some` while a connect runs: what its first sync is doing.
    connecting: Option<Activity>,
    /// Rows that waited when the current push began.
    push_total: u64,
    /// Whether a sync is under way (its start fixes `push_total`).
    in_sync: bool,
    /// What the last finished sync moved, when known.
    last_sync: Option<LastSync>,
    records: BTreeMap<String, u64>,
}

/// The control API's state: the service, a connection for connect and disconnect, and the
/// status the page sees.
pub struct SyncControl {
    service: SyncService,
    /// Connect and disconnect run on it, one at a time.
    ops: tokio::sync::Mutex<Store>,
    /// Quick reads (records per table, the form's defaults) while a connect holds `ops`.
    reader: Mutex<Store>,
    tracker: Mutex<Tracker>,
    published: watch::Sender<StatusView>,
    forwarder: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for SyncControl {
    fn drop(&mut self) {
        if let Some(t) = self
            .forwarder
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            t.abort();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Live records per synced table.
fn records(store: &Store) -> Result<BTreeMap<String, u64>, StoreError> {
    store
        .app()
        .schema
        .synced()
        .map(|t| {
            let n: i64 = store.connection().query_row(
                &format!(
                    "SELECT count(*) FROM {} WHERE deleted_at IS NULL",
                    quote_ident(&t.name)
                ),
                [],
                |r| r.get(0),
            )?;
            Ok((t.name.clone(), n.max(0) as u64))
        })
        .collect()
}

impl SyncControl {
    /// Starts a [`SyncService`] on its own connection to `store`'s database and the control
    /// API over it. `store` must be a database file (the service and the API each open their
    /// own connection to it).
    pub fn start(store: Store, options: ServiceOptions) -> Result<Arc<SyncControl>, StoreError> {
        let service = SyncService::start(store.reopen()?, options);
        Self::over(service, store)
    }

    /// The control API over a service the app runs already; `store` is a connection of the
    /// control's own to the same database file.
    pub fn over(service: SyncService, store: Store) -> Result<Arc<SyncControl>, StoreError> {
        let reader = store.reopen()?;
        let status = client::status(&store, Activity::Idle)?;
        let records = records(&reader)?;
        let tracker = Tracker {
            service: status,
            connecting: None,
            push_total: 0,
            in_sync: false,
            last_sync: None,
            records,
        };
        let (published, _) = watch::channel(Self::view_of(&tracker));
        let control = Arc::new(SyncControl {
            service,
            ops: tokio::sync::Mutex::new(store),
            reader: Mutex::new(reader),
            tracker: Mutex::new(tracker),
            published,
            forwarder: Mutex::new(None),
        });
        let task = tokio::spawn(forward(control.service.status(), Arc::downgrade(&control)));
        *lock(&control.forwarder) = Some(task);
        Ok(control)
    }

    /// The running service (for the app's own status watch and write hook).
    pub fn service(&self) -> &SyncService {
        &self.service
    }

    /// The status as the page sees it, now.
    pub fn status(&self) -> StatusView {
        self.published.borrow().clone()
    }

    /// Every change of [`SyncControl::status`].
    pub fn subscribe(&self) -> watch::Receiver<StatusView> {
        self.published.subscribe()
    }

    fn view_of(t: &Tracker) -> StatusView {
        view::status_view(
            &t.service,
            t.connecting.as_ref(),
            t.push_total,
            t.last_sync,
            &t.records,
        )
    }

    fn publish(&self, t: &Tracker) {
        let view = Self::view_of(t);
        self.published.send_if_modified(|v| {
            let changed = *v != view;
            *v = view;
            changed
        });
    }

    fn read_records(&self) -> Option<BTreeMap<String, u64>> {
        match records(&lock(&self.reader)) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(error = %e, "cannot count the records for the sync status");
                None
            }
        }
    }

    /// Takes in one status of the service.
    fn observe(&self, status: SyncStatus) {
        self.observe_with(status, None);
    }

    /// Takes in one status, after a sync whose report is `report` when the control ran it.
    fn observe_with(&self, status: SyncStatus, report: Option<LastSync>) {
        let push_starts =
            matches!(status.activity, Activity::Pushing { .. }) && !lock(&self.tracker).in_sync;
        let waiting = push_starts.then(|| self.read_waiting());
        let counted = if status.syncing {
            None
        } else {
            self.read_records()
        };
        let mut t = lock(&self.tracker);
        Self::track(&mut t, &status.activity, waiting);
        if let Some(r) = counted {
            t.records = r;
        }
        if let Some(r) = report.or(status.last_report.as_ref().map(|r| LastSync {
            pushed: r.pushed as u64,
            pulled: r.pulled as u64,
        })) {
            t.last_sync = Some(r);
        } else if status.last_error.is_some() {
            t.last_sync = None;
        }
        t.service = status;
        self.publish(&t);
    }

    /// Rows dirty now. When a push first reports, the rows it has done plus these are what it
    /// pushes in all.
    fn read_waiting(&self) -> u64 {
        let store = lock(&self.reader);
        store
            .dirty_counts()
            .map(|c| c.iter().map(|(_, n)| n).sum())
            .unwrap_or(0)
    }

    /// Follows one sync's activity: how many rows its push moves in all.
    fn track(t: &mut Tracker, activity: &Activity, waiting: Option<u64>) {
        match activity {
            Activity::Idle => t.in_sync = false,
            Activity::Pushing { rows } if !t.in_sync => {
                t.in_sync = true;
                t.push_total = *rows as u64 + waiting.unwrap_or(0);
            }
            _ => t.in_sync = true,
        }
    }

    /// Re-reads what local writes change between syncs (rows waiting, records), so the page
    /// shows them without waiting for the next sync.
    fn refresh_counts(&self) {
        let busy = |t: &Tracker| t.in_sync || t.connecting.is_some();
        if busy(&lock(&self.tracker)) {
            return;
        }
        let fresh = {
            let store = lock(&self.reader);
            client::status(&store, Activity::Idle)
                .ok()
                .zip(records(&store).ok())
        };
        let Some((fresh, records)) = fresh else {
            return;
        };
        let mut t = lock(&self.tracker);
        if busy(&t) {
            return;
        }
        t.service.pending = fresh.pending;
        t.service.rejected = fresh.rejected;
        t.service.parked = fresh.parked;
        t.service.held_back = fresh.held_back;
        t.records = records;
        self.publish(&t);
    }

    /// The sign-in form's defaults.
    pub fn config(&self) -> Result<ConfigView, ControlError> {
        let store = lock(&self.reader);
        let (url, _) = store.session()?;
        Ok(ConfigView {
            default_remote_url: client::DEFAULT_REMOTE.to_owned(),
            remote_url: url.unwrap_or_else(|| client::DEFAULT_REMOTE.to_owned()),
            email: store.account_email()?,
            has_local_data: store.has_local_data()?,
            owner: store.owner()?,
            owners: store.local_owners()?,
            device_id: store.device_id().to_owned(),
            schema_version: store.app().schema.version(),
            server_ca: store.server_ca()?,
        })
    }

    /// Signs in (or registers) and runs the first sync, publishing its progress. Refused while
    /// connected: disconnect first.
    pub async fn connect(
        self: &Arc<Self>,
        req: ConnectRequest,
    ) -> Result<StatusView, ControlError> {
        let (url, email) = check_connect_request(&req)?;
        let server_ca = req
            .server_ca
            .as_deref()
            .map(str::trim)
            .filter(|pem| !pem.is_empty());
        if let Some(pem) = server_ca {
            client::check_server_ca(pem).map_err(ControlError::BadRequest)?;
        }
        let mut ops = self.ops.try_lock().map_err(|_| ControlError::Busy)?;
        if client::status(&ops, Activity::Idle)?.connected {
            return Err(ControlError::AlreadyConnected);
        }
        if let Some(owner) = &req.owner {
            ops.choose_owner(Some(owner))?;
        }
        // Trusted from the health check on, for this server's syncs from now on.
        ops.set_server_ca(server_ca)?;
        let waiting: u64 = ops.dirty_counts()?.iter().map(|(_, n)| n).sum();
        {
            let mut t = lock(&self.tracker);
            t.connecting = Some(Activity::Idle);
            // The first sync pushes what waits now.
            t.in_sync = true;
            t.push_total = waiting;
            self.publish(&t);
        }
        let local = match req.local_data {
            LocalDataChoice::Upload => LocalData::Upload,
            LocalDataChoice::Discard => LocalData::Discard,
        };
        let result = async {
            check_server(&url, server_ca, ops.app().schema.version()).await?;
            let mut progress = |a: Activity| {
                let mut t = lock(&self.tracker);
                Self::track(&mut t, &a, None);
                if a != Activity::Idle {
                    t.connecting = Some(a);
                }
                self.publish(&t);
            };
            client::connect(
                &mut ops,
                &url,
                email,
                &req.password,
                req.register,
                local,
                &mut progress,
            )
            .await
            .map_err(ControlError::from)
        }
        .await;
        let after = client::status(&ops, Activity::Idle);
        drop(ops);
        {
            let mut t = lock(&self.tracker);
            t.connecting = None;
            t.in_sync = false;
        }
        let after = after?;
        let connected = after.connected;
        let report = result.as_ref().ok().map(|r| LastSync {
            pushed: r.pushed as u64,
            pulled: r.pulled as u64,
        });
        self.observe_with(after, report);
        if connected {
            // The service learns of the session and takes over from here (its first sync
            // also refreshes the app's own status watch).
            let this = Arc::clone(self);
            tokio::spawn(async move {
                let _ = this.service.sync_now().await;
            });
        }
        match result {
            // Signed in, but the first sync failed (e.g. the network went): connected, and
            // the service retries; the status shows the error.
            Err(_) if connected => Ok(self.status()),
            Err(e) => Err(e),
            Ok(_) => Ok(self.status()),
        }
    }

    /// Forgets the token (signing out on the server when reachable); the local data stays.
    pub async fn disconnect(self: &Arc<Self>) -> Result<StatusView, ControlError> {
        self.change_session(false, async |store: &mut Store| {
            client::disconnect(store).await
        })
        .await
    }

    /// Syncs now and waits for it.
    pub async fn sync_now(&self) -> Result<SyncResult, ControlError> {
        match self.status().state {
            ConnectionState::Connected => {}
            ConnectionState::Connecting => return Err(ControlError::Busy),
            ConnectionState::SignInAgain => {
                return Err(ControlError::SignInAgain(
                    "sign in again to resume syncing".into(),
                ));
            }
            ConnectionState::Disconnected => {
                return Err(ControlError::NotConnected(
                    "connect to an account first".into(),
                ));
            }
        }
        let result = self.service.sync_now().await;
        // The service published its status before it answered: take it in now, so an answer
        // and the status read right after it agree.
        let latest = self.service.status().borrow().clone();
        self.observe(latest);
        match result {
            Ok(r) => Ok(SyncResult {
                pushed: r.pushed as u64,
                rejected: r.rejected as u64,
                pulled: r.pulled as u64,
                pages: r.pages as u64,
            }),
            Err(e) => {
                let message = e.to_string();
                let unreachable = matches!(
                    e.sync_error(),
                    Some(client::SyncError::Remote(
                        client::RemoteError::Unreachable { .. }
                    ))
                );
                let now = client::status(&lock(&self.reader), Activity::Idle)?;
                Err(if now.needs_sign_in {
                    ControlError::SignInAgain(message)
                } else if !now.connected {
                    ControlError::NotConnected(message)
                } else if unreachable {
                    ControlError::Unreachable(message)
                } else {
                    ControlError::Remote(message)
                })
            }
        }
    }
}

/// Copies every status of the service into the control's, until either goes away.
/// Every few seconds between syncs, the counts are read again.
async fn forward(mut service: watch::Receiver<SyncStatus>, control: Weak<SyncControl>) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            changed = service.changed() => {
                if changed.is_err() {
                    return;
                }
                let status = service.borrow_and_update().clone();
                match control.upgrade() {
                    Some(c) => c.observe(status),
                    None => return,
                }
            }
            _ = tick.tick() => match control.upgrade() {
                Some(c) => c.refresh_counts(),
                None => return,
            },
        }
    }
}

/// Whether `url` is a sync server that serves this app's schema version, before a password is
/// sent to it.
async fn check_server(url: &str, ca_pem: Option<&str>, version: u32) -> Result<(), ControlError> {
    let health = Remote::trusting(url, ca_pem)?
        .health()
        .await
        .map_err(|e| match e {
            client::RemoteError::Unreachable { .. } => ControlError::from(e),
            _ => ControlError::NotASyncServer(format!("{url} does not answer as a sync server")),
        })?;
    let (newest, oldest) = (
        u64::from(health.schema_version),
        u64::from(health.min_schema_version),
    );
    if newest < u64::from(version) {
        return Err(ControlError::ServerTooOld(format!(
            "the server at {url} serves schema versions up to {newest}; this app needs {version}: the server must be updated"
        )));
    }
    if oldest > u64::from(version) {
        return Err(ControlError::AppTooOld(format!(
            "the server at {url} serves schema versions {oldest} and newer; this app has {version}: update the app"
        )));
    }
    Ok(())
}

/// The server's URL and the email of a connect request, checked before anything is asked of
/// the network.
fn check_connect_request(req: &ConnectRequest) -> Result<(String, &str), ControlError> {
    let url = client::remote_url::check_remote_url(
        req.remote_url.as_deref().unwrap_or(client::DEFAULT_REMOTE),
    )
    .map_err(ControlError::BadRequest)?;
    let email = req.email.trim();
    if email.is_empty() || !email.contains('@') || email.len() > 254 {
        return Err(ControlError::BadRequest(
            "enter the account's email address".into(),
        ));
    }
    if req.password.is_empty() {
        return Err(ControlError::BadRequest("enter the password".into()));
    }
    Ok((url, email))
}
