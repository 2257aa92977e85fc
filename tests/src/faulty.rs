//! A transport that fails the way networks and servers do, on the decisions of seeded
//! generators: requests lost before or after the server handled them, page bodies cut short,
//! pushes refused as too large. The simulation's faults, reaching the client users run.
//!
//! Each kind of request draws from its own generator, seeded afresh for each sync: the pull
//! pipeline asks for pages ahead of the ones the device stores, and how far ahead it got must
//! not change the faults of later syncs (a seed replays the same run).

use crate::sim::Rng;
use futures_util::FutureExt;
use serde_json::value::RawValue;
use serde_json::{Map, Value as Json};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use sync_runtime::Store;
use sync_runtime::client::{self, Activity, Limits, SyncError, SyncReport};
use sync_runtime::client::{NextPage, PullRequest, Remote, RemoteError, Session, Transport};
use sync_runtime::protocol::error::ErrorCode;
use sync_runtime::protocol::push::{PushResponse, RowResult};

/// A write the server acknowledged to the device: it must survive.
#[derive(Clone, Debug)]
pub struct Ack {
    pub table: String,
    pub remote_id: String,
    pub stamp: String,
}

/// What one sync's faults are.
struct Armed {
    pushes: Rng,
    heads: Rng,
    bodies: Rng,
    /// Pushes of more rows are answered 413, as by a server with a smaller body limit.
    max_push_rows: usize,
}

/// Something to do before each push reaches the server.
type BeforePush = Box<dyn Fn() + Send>;

#[derive(Default)]
struct Record {
    armed: Option<Armed>,
    /// Push answers still to lose after the server committed (set by a test).
    lose_push_answers: usize,
    before_push: Option<BeforePush>,
    trace: Vec<String>,
    acks: Vec<Ack>,
}

/// [`Remote`] with faults injected.
#[derive(Clone)]
pub struct FaultyTransport {
    inner: Remote,
    /// Whose requests these are, for the trace.
    device: usize,
    record: Arc<Mutex<Record>>,
}

/// Chance in percent of each fault, per request.
const FAULT_PERCENT: u64 = 5;

impl FaultyTransport {
    pub fn new(url: &str, device: usize) -> FaultyTransport {
        FaultyTransport {
            inner: Remote::new(url).expect("a client for the simulated server"),
            device,
            record: Arc::default(),
        }
    }

    /// Arms faults for the next sync, seeded from `rng`.
    pub fn arm(&self, rng: &mut Rng, max_push_rows: usize) {
        self.lock().armed = Some(Armed {
            pushes: Rng::new(rng.next_u64()),
            heads: Rng::new(rng.next_u64()),
            bodies: Rng::new(rng.next_u64()),
            max_push_rows,
        });
    }

    /// Loses the answers of the next `n` pushes, after the server committed them.
    pub fn lose_push_answers(&self, n: usize) {
        self.lock().lose_push_answers = n;
    }

    /// Runs `f` as each push is sent, before the server sees it (a test's write racing a push).
    pub fn before_each_push(&self, f: impl Fn() + Send + 'static) {
        self.lock().before_push = Some(Box::new(f));
    }

    /// What happened since the last call: trace lines, and the writes the server acknowledged.
    pub fn take(&self) -> (Vec<String>, Vec<Ack>) {
        let mut r = self.lock();
        (std::mem::take(&mut r.trace), std::mem::take(&mut r.acks))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn note(&self, line: String) {
        self.lock()
            .trace
            .push(format!("device {}: {line}", self.device));
    }

    /// Whether `pick`'s generator strikes now (never when disarmed).
    fn strikes(&self, pick: fn(&mut Armed) -> &mut Rng) -> bool {
        self.lock()
            .armed
            .as_mut()
            .is_some_and(|a| pick(a).chance(FAULT_PERCENT))
    }

    fn lost(&self, what: &str) -> RemoteError {
        self.note(format!("{what} lost"));
        RemoteError::Unreachable {
            url: self.inner.url().to_owned(),
            message: format!("the simulation lost the {what}"),
        }
    }

    /// Notes each pushed row's result, and the writes the server acknowledged.
    fn record_push(&self, sent: &Map<String, Json>, answer: &PushResponse) {
        let mut record = self.lock();
        for (table, rows) in sent {
            for row in rows.as_array().into_iter().flatten() {
                let (rid, stamp) = (row["remote_id"].as_str(), row["updated_at"].as_str());
                let (Some(rid), Some(stamp)) = (rid, stamp) else {
                    continue;
                };
                let Some(outcome) = answer
                    .results
                    .get(table)
                    .and_then(|l| l.iter().find(|x| x.remote_id == rid))
                else {
                    continue;
                };
                let (status, acked, with_row) = match &outcome.result {
                    RowResult::Applied => ("applied", Some(rid), false),
                    RowResult::Stale { .. } => ("stale", None, true),
                    RowResult::Merged { canonical_id, row } => {
                        ("merged", Some(canonical_id.as_str()), row.is_some())
                    }
                    RowResult::Rejected { .. } => ("rejected", None, false),
                };
                let why = match &outcome.result {
                    RowResult::Rejected { message } => format!(": {message}"),
                    _ => String::new(),
                };
                record.trace.push(format!(
                    "device {}:   pushed {table} {rid} ({stamp}) -> {status} {}{}{why}",
                    self.device,
                    if status == "merged" {
                        acked.unwrap_or("")
                    } else {
                        ""
                    },
                    if with_row {
                        " with the server's row"
                    } else {
                        ""
                    }
                ));
                if let Some(acked) = acked {
                    record.acks.push(Ack {
                        table: table.clone(),
                        remote_id: acked.to_owned(),
                        stamp: stamp.to_owned(),
                    });
                }
            }
        }
    }
}

fn rows_in(sent: &Map<String, Json>) -> usize {
    sent.values()
        .map(|rows| rows.as_array().map_or(0, Vec::len))
        .sum()
}

impl Transport for FaultyTransport {
    type Body = <Remote as Transport>::Body;

    /// A transport with no faults armed.
    fn open(url: &str) -> Result<FaultyTransport, RemoteError> {
        Ok(FaultyTransport::new(url, usize::MAX))
    }

    fn url(&self) -> &str {
        self.inner.url()
    }

    async fn sign_in(
        &self,
        email: &str,
        password: &str,
        register: bool,
    ) -> Result<Session, RemoteError> {
        self.inner.sign_in(email, password, register).await
    }

    async fn sign_out(&self, token: &str) -> Result<(), RemoteError> {
        self.inner.sign_out(token).await
    }

    async fn push(
        &self,
        token: &str,
        device_id: &str,
        schema_version: u32,
        changes: &RawValue,
    ) -> Result<PushResponse, RemoteError> {
        // Read once, for the row limit and for the record of the results.
        let sent: Map<String, Json> = serde_json::from_str(changes.get()).unwrap_or_default();
        let limit = self.lock().armed.as_ref().map(|a| a.max_push_rows);
        if let Some(limit) = limit.filter(|l| rows_in(&sent) > *l) {
            self.note(format!(
                "push of more than {limit} rows refused as too large"
            ));
            return Err(RemoteError::Api {
                status: 413,
                code: ErrorCode::TooLarge,
                message: format!("more than {limit} rows"),
                reason: None,
            });
        }
        if self.strikes(|a| &mut a.pushes) {
            return Err(self.lost("push request"));
        }
        if let Some(f) = &self.lock().before_push {
            f();
        }
        let answer = self
            .inner
            .push(token, device_id, schema_version, changes)
            .await;
        let scripted = {
            let mut r = self.lock();
            let lose = r.lose_push_answers > 0;
            r.lose_push_answers = r.lose_push_answers.saturating_sub(1);
            lose
        };
        if scripted || self.strikes(|a| &mut a.pushes) {
            return Err(self.lost("push answer, after the server committed,"));
        }
        if let Ok(answer) = &answer {
            self.record_push(&sent, answer);
        }
        answer
    }

    async fn pull_head(
        &self,
        request: PullRequest<'_>,
    ) -> Result<(Self::Body, Option<NextPage>), RemoteError> {
        if self.strikes(|a| &mut a.heads) {
            return Err(self.lost("pull request"));
        }
        let head = self.inner.pull_head(request).await;
        if self.strikes(|a| &mut a.heads) {
            return Err(self.lost("pull answer"));
        }
        head
    }

    async fn pull_waiting(
        &self,
        request: PullRequest<'_>,
        wait: Duration,
    ) -> Result<(Self::Body, Option<Duration>), RemoteError> {
        if self.strikes(|a| &mut a.heads) {
            return Err(self.lost("held pull"));
        }
        self.inner.pull_waiting(request, wait).await
    }

    async fn read_body(&self, body: Self::Body) -> Result<bytes::Bytes, RemoteError> {
        let bytes = self.inner.read_body(body).await?;
        let cut = {
            let mut r = self.lock();
            r.armed.as_mut().and_then(|a| {
                (a.bodies.chance(FAULT_PERCENT) && !bytes.is_empty())
                    .then(|| a.bodies.below(bytes.len() as u64) as usize)
            })
        };
        match cut {
            Some(at) => {
                self.note(format!("page body cut at byte {at} of {}", bytes.len()));
                Ok(bytes.slice(..at))
            }
            None => Ok(bytes),
        }
    }
}

/// The payload of a simulated kill: it unwinds the sync at the step it strikes.
struct Killed;

/// Runs one sync of `store` through the client over `transport`, and kills the device after
/// `kill_at` of the sync's steps (a batch's results or a page stored): the sync stops there as
/// at a process kill, and `None` is returned (reopen the store as a restarted process would).
pub async fn sync_or_kill<T: Transport>(
    store: &mut Store,
    transport: T,
    limits: Limits,
    kill_at: Option<u64>,
) -> Option<Result<SyncReport, SyncError>> {
    let mut steps = 0;
    let mut progress = |a: Activity| {
        if a != Activity::Idle {
            steps += 1;
            if Some(steps) == kill_at {
                // Not a panic: the panic hook would print it.
                std::panic::resume_unwind(Box::new(Killed));
            }
        }
    };
    let mut kept = Some(transport);
    AssertUnwindSafe(client::sync_using(store, &mut kept, limits, &mut progress))
        .catch_unwind()
        .await
        .ok()
}
