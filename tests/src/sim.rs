//! A seeded multi-device simulation with faults, and its oracle.
//!
//! Everything random comes from the seed: the operations, the devices' clocks (simulated, skewed
//! by up to an hour either way and jumping backwards), and the faults. Devices sync through the
//! client users run, `client::sync_using` and the `SyncService`, over a transport that loses
//! requests and answers, cuts bodies short and refuses large pushes ([`crate::faulty`]), and
//! are killed between two steps of a sync; the server restarts, and purges tombstones past a
//! horizon, so cursors expire and full re-pulls span many pages.

use crate::device::{Device, LiveServer};
use crate::faulty::{Ack, FaultyTransport, sync_or_kill};
use crate::fixtures::addon;
use crate::server::Backend;
use entities::*;
use serde_json::{Value as Json, json};
use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use sync_runtime::client::{self, Activity, Limits, ServiceOptions, SyncService};
use sync_runtime::schema::{ColumnRole, ColumnType};
use sync_runtime::{Store, Timestamp, Value};

/// SplitMix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

const MAX_DEVICES: usize = 6;
/// Simulated time starts in 2100, above every real clock, so the server's derived stamps
/// (the greatest of its wall clock and the stamps involved, plus 1 ms) depend only on the seed.
const EPOCH: i64 = 4_102_444_800_000;

thread_local! {
    static NOW: RefCell<i64> = const { RefCell::new(EPOCH) };
    static SKEW: RefCell<[i64; MAX_DEVICES]> = const { RefCell::new([0; MAX_DEVICES]) };
}

fn wall(i: usize) -> Timestamp {
    Timestamp::from_millis(NOW.with(|n| *n.borrow()) + SKEW.with(|s| s.borrow()[i]))
}
fn wall0() -> Timestamp {
    wall(0)
}
fn wall1() -> Timestamp {
    wall(1)
}
fn wall2() -> Timestamp {
    wall(2)
}
fn wall3() -> Timestamp {
    wall(3)
}
fn wall4() -> Timestamp {
    wall(4)
}
fn wall5() -> Timestamp {
    wall(5)
}
const WALLS: [fn() -> Timestamp; MAX_DEVICES] = [wall0, wall1, wall2, wall3, wall4, wall5];

struct SimDevice {
    device: Device,
    index: usize,
    online: bool,
}

impl SimDevice {
    fn open(&mut self) {
        self.device.store =
            Store::open_with_wall_clock(&self.device.path, entities::app(), WALLS[self.index])
                .unwrap();
    }
}

/// One step of a run, for the trace printed on a failure.
pub type Trace = Vec<String>;

/// What a run found: `Err` carries the seed's trace and the first divergence.
pub async fn run_seed(seed: u64, backend: Backend) -> Result<(), String> {
    run_seed_traced(seed, backend).await.map(|_| ())
}

/// [`run_seed`], returning the trace of the steps taken.
pub async fn run_seed_traced(seed: u64, backend: Backend) -> Result<Trace, String> {
    let mut trace: Trace = vec![format!("seed {seed} on {backend:?}")];
    match simulate(seed, backend, &mut trace).await {
        Ok(true) => Ok(trace),
        Ok(false) => Ok(trace), // PostgreSQL not configured: skipped
        Err(e) => {
            let keep = if std::env::var_os("SIM_FULL_TRACE").is_some() {
                usize::MAX
            } else {
                60
            };
            let tail: Vec<String> = trace.iter().rev().take(keep).rev().cloned().collect();
            Err(format!(
                "seed {seed} diverged: {e}\nreplay: cargo xtask simulate --seed {seed} --backend {}\nlast steps:\n  {}",
                if backend == Backend::Sqlite {
                    "sqlite"
                } else {
                    "postgres"
                },
                tail.join("\n  ")
            ))
        }
    }
}

const NAMES: [&str; 3] = ["Favourites", "Watch later", "Kids"];
const METAS: [&str; 4] = ["tt0111161", "tt0068646", "tt0903747", "tt0468569"];
const ADDONS: [&str; 3] = [
    "https://a.example/manifest.json",
    "https://b.example/manifest.json",
    "https://c.example/manifest.json",
];

fn live_ids(store: &Store, table: &str) -> Vec<i64> {
    store
        .connection()
        .prepare(&format!(
            "SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY id"
        ))
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// One random app operation on a device. Errors the app would show (a duplicate key) are fine.
fn operate(rng: &mut Rng, d: &mut SimDevice, trace: &mut Trace) {
    let s = &mut d.device.store;
    let now = Timestamp::now();
    let profiles = live_ids(s, "profiles");
    let lists = live_ids(s, "lists");
    let op = rng.below(17);
    let result: Result<String, String> = (|| {
        let e = |e: sync_runtime::StoreError| e.to_string();
        Ok(match op {
            0 if profiles.len() < 4 => {
                let id = s
                    .insert(&mut Profile {
                        id: None,
                        user_id: String::new(),
                        name: format!("P{}", rng.below(100)),
                        avatar: "a".into(),
                        avatar_type: None,
                        avatar_style: None,
                        is_default: None,
                        settings_profile_id: None,
                        created_at: None,
                        updated_at: now,
                    })
                    .map_err(e)?;
                format!("insert profile {id}")
            }
            1 => {
                let Some(p) = rng.pick(&profiles).copied() else {
                    return Ok("no profile".into());
                };
                let name = *rng.pick(&NAMES).unwrap();
                let id = s
                    .insert(&mut List {
                        id: None,
                        profile_id: p,
                        name: name.into(),
                        is_default: None,
                        created_at: None,
                        updated_at: now,
                    })
                    .map_err(e)?;
                format!("insert list {id} {name:?} under profile {p}")
            }
            2 | 3 => {
                let Some(l) = rng.pick(&lists).copied() else {
                    return Ok("no list".into());
                };
                let meta = *rng.pick(&METAS).unwrap();
                let id = s
                    .insert(&mut ListItem {
                        id: None,
                        list_id: l,
                        meta_id: meta.into(),
                        r#type: "movie".into(),
                        title: Some(format!("t{}", rng.below(9))),
                        poster: None,
                        imdb_rating: None,
                        created_at: None,
                        updated_at: now,
                    })
                    .map_err(e)?;
                format!("insert list item {id} {meta} in list {l}")
            }
            4 | 5 => {
                let Some(p) = rng.pick(&profiles).copied() else {
                    return Ok("no profile".into());
                };
                let meta = *rng.pick(&METAS).unwrap();
                let (season, episode) = (rng.below(2) as i64, rng.below(2) as i64);
                let id = s
                    .insert(&mut WatchHistory {
                        id: None,
                        profile_id: p,
                        meta_id: meta.into(),
                        meta_type: "series".into(),
                        season,
                        episode,
                        episode_id: None,
                        title: None,
                        poster: None,
                        duration: None,
                        position: Some(rng.below(1000) as i64),
                        is_watched: None,
                        watched_at: None,
                        last_stream: Some(json!({"n": rng.below(5)})),
                        updated_at: now,
                    })
                    .map_err(e)?;
                format!("insert watch {id} {meta} s{season}e{episode} for profile {p}")
            }
            6 => {
                let Some(p) = rng.pick(&profiles).copied() else {
                    return Ok("no profile".into());
                };
                let url = *rng.pick(&ADDONS).unwrap();
                let addon = match s
                    .list::<Addon>()
                    .map_err(e)?
                    .into_iter()
                    .find(|a| a.manifest_url == url)
                {
                    Some(a) => a.id.unwrap(),
                    None => s.insert(&mut addon(url, "A")).map_err(e)?,
                };
                let id = s
                    .insert(&mut ProfileAddon {
                        id: None,
                        profile_id: Some(p),
                        addon_id: addon,
                        enabled: Some(true),
                        priority: Some(rng.below(5) as i64),
                        created_at: None,
                        updated_at: now,
                        settings_profile_id: None,
                    })
                    .map_err(e)?;
                format!("enable add-on {url} for profile {p} as {id}")
            }
            7 => {
                let Some(a) = rng.pick(&s.list::<Addon>().map_err(e)?).cloned() else {
                    return Ok("no add-on".into());
                };
                s.delete::<Addon>(a.id.unwrap()).map_err(e)?;
                format!("remove add-on {}", a.manifest_url)
            }
            8 => {
                let Some(p) = rng.pick(&profiles).copied() else {
                    return Ok("no profile".into());
                };
                s.delete::<Profile>(p).map_err(e)?;
                format!("delete profile {p}")
            }
            9 => {
                let Some(l) = rng.pick(&lists).copied() else {
                    return Ok("no list".into());
                };
                s.delete::<List>(l).map_err(e)?;
                format!("delete list {l}")
            }
            10 => {
                let Some(l) = rng.pick(&lists).copied() else {
                    return Ok("no list".into());
                };
                let mut list: List = s.get(l).map_err(e)?.unwrap();
                list.name = (*rng.pick(&NAMES).unwrap()).into();
                s.update(&list).map_err(e)?;
                format!("rename list {l} to {:?}", list.name)
            }
            11 => {
                let settings = live_ids(s, "settings_profiles");
                let Some(sp) = rng.pick(&settings).copied() else {
                    let id = s
                        .insert(&mut SettingsProfile {
                            id: None,
                            user_id: String::new(),
                            name: "S".into(),
                            is_default: None,
                            created_at: None,
                            updated_at: now,
                            tmdb_catalog_config: None,
                        })
                        .map_err(e)?;
                    return Ok(format!("insert settings profile {id}"));
                };
                let id = s
                    .insert(&mut AppearanceSettings {
                        id: None,
                        settings_profile_id: Some(sp),
                        show_imdb_ratings: Some(rng.chance(50)),
                        show_age_ratings: None,
                        updated_at: now,
                    })
                    .map_err(e)?;
                format!("insert appearance {id} for settings {sp}")
            }
            12 => {
                let Some(p) = rng.pick(&profiles).copied() else {
                    return Ok("no profile".into());
                };
                let settings = live_ids(s, "settings_profiles");
                let sp = rng.pick(&settings).copied();
                let id = s
                    .insert(&mut StreamSettings {
                        id: None,
                        profile_id: Some(p),
                        qualities: Some("4k".into()),
                        preferred_keywords: None,
                        required_keywords: None,
                        config: Some(json!({"q": rng.below(3)})),
                        settings_profile_id: sp,
                        updated_at: now,
                    })
                    .map_err(e)?;
                format!("insert stream settings {id} for profile {p}")
            }
            13 => {
                let settings = live_ids(s, "settings_profiles");
                let Some(sp) = rng.pick(&settings).copied() else {
                    return Ok("no settings".into());
                };
                s.delete::<SettingsProfile>(sp).map_err(e)?;
                format!("delete settings profile {sp}")
            }
            16 if rng.chance(50) => move_between_natural_keys(rng, s, &profiles).map_err(e)?,
            _ => {
                // Edit a random live row of a random table in a column that is not a key.
                let tables: Vec<&sync_runtime::Table> = entities::app().schema.synced().collect();
                let t = *rng.pick(&tables).unwrap();
                let ids = live_ids(s, &t.name);
                let Some(id) = rng.pick(&ids).copied() else {
                    return Ok(format!("no {}", t.name));
                };
                let mut values = s.get_values(&t.name, id).map_err(e)?.unwrap();
                let keys: BTreeSet<&str> = t
                    .natural_keys
                    .iter()
                    .flatten()
                    .map(String::as_str)
                    .collect();
                let editable: Vec<usize> = t
                    .columns
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| {
                        c.reference.is_none()
                            && c.role == ColumnRole::Data
                            && !keys.contains(c.name.as_str())
                            && c.name != "updated_at"
                    })
                    .map(|(i, _)| i)
                    .collect();
                let Some(i) = rng.pick(&editable).copied() else {
                    return Ok("nothing to edit".into());
                };
                let c = &t.columns[i];
                values[i] = match c.ty {
                    ColumnType::Text => Value::Text(format!("v{}", rng.below(50))),
                    ColumnType::Integer => Value::Integer(rng.below(100) as i64),
                    ColumnType::Real => Value::Real(rng.below(100) as f64 / 10.0),
                    ColumnType::Boolean => Value::Boolean(rng.chance(50)),
                    ColumnType::DateTime => {
                        Value::DateTime(Timestamp::from_millis(EPOCH + rng.below(1_000_000) as i64))
                    }
                    ColumnType::Json => Value::json(&json!({"k": rng.below(9)})),
                };
                s.update_values(&t.name, id, values).map_err(e)?;
                format!("edit {}.{} of {id}", t.name, c.name)
            }
        })
    })();
    trace.push(format!(
        "device {}: {}",
        d.index,
        result.unwrap_or_else(|e| format!("refused: {e}"))
    ));
}

/// Moves a live add-on setting (a table with two natural keys) between its keys: onto a
/// settings profile, onto a profile, or onto both, so that one key may meet another record's
/// while the other key is given up.
fn move_between_natural_keys(
    rng: &mut Rng,
    s: &mut Store,
    profiles: &[i64],
) -> Result<String, sync_runtime::StoreError> {
    let rows: Vec<ProfileAddon> = s.list()?;
    let Some(mut row) = rng.pick(&rows).cloned() else {
        return Ok("no add-on setting".into());
    };
    let settings = live_ids(s, "settings_profiles");
    let (profile, sp) = (rng.pick(profiles).copied(), rng.pick(&settings).copied());
    match rng.below(3) {
        0 => (row.profile_id, row.settings_profile_id) = (None, sp),
        1 => (row.profile_id, row.settings_profile_id) = (profile, None),
        _ => (row.profile_id, row.settings_profile_id) = (profile, sp),
    }
    if row.profile_id.is_none() && row.settings_profile_id.is_none() {
        return Ok("no key to move to".into());
    }
    s.update(&row)?;
    Ok(format!(
        "move add-on setting {} to profile {:?}, settings {:?}",
        row.id.unwrap_or_default(),
        row.profile_id,
        row.settings_profile_id
    ))
}

/// A sync through the client users run (`client::sync_using`: pipelined push and pull, 413
/// halving, the 410 restart, the byte-level decoders) over a transport that loses requests and
/// answers, cuts page bodies short and refuses large pushes; now and then the device is killed
/// between two steps of the sync (after a batch's results or a page are stored) and reopened.
/// With faults armed, batches and pages are small, so a full pull spans many pages.
async fn faulty_sync(
    rng: &mut Rng,
    d: &mut SimDevice,
    srv: &LiveServer,
    acks: &mut Vec<Ack>,
    trace: &mut Trace,
    faults: bool,
) -> Result<(), String> {
    let Some(url) = d.device.store.session().unwrap().0 else {
        return Ok(());
    };
    let transport = FaultyTransport::new(&url, d.index);
    let mut limits = Limits::default();
    let mut kill_at = None;
    if faults {
        let push_cap = if rng.chance(50) { 5 } else { 1000 };
        let page_cap = if rng.chance(50) { 3 } else { 1000 };
        limits = Limits {
            push_batch: 1 + rng.below(push_cap) as usize,
            pull_limit: 1 + rng.below(page_cap) as usize,
        };
        let max_push_rows = if rng.chance(20) {
            1 + rng.below(4) as usize
        } else {
            usize::MAX
        };
        transport.arm(rng, max_push_rows);
        if rng.chance(25) {
            kill_at = Some(1 + rng.below(8));
        }
    }
    let before = held_clean(&d.device.store);
    let outcome = sync_or_kill(&mut d.device.store, transport.clone(), limits, kill_at).await;
    let how = format!(
        "(push {}, pages of {}{})",
        limits.push_batch,
        limits.pull_limit,
        if faults { ", faults armed" } else { "" }
    );
    let ended = match outcome {
        None => Ended::Killed(format!(
            "device {}: killed after {} steps of a sync {how}",
            d.index,
            kill_at.unwrap_or_default()
        )),
        Some(Ok(report)) => {
            let mut lines = vec![format!("device {}: synced {how}: {report:?}", d.index)];
            if report.full_pull {
                lines.push(format!("device {}: finished a full pull", d.index));
            }
            Ended::Synced(lines, report.full_pull)
        }
        Some(Err(e)) => Ended::Failed(format!("device {}: sync failed {how}: {e}", d.index)),
    };
    end_faulty_sync(&transport, ended, d, srv, &before, acks, trace).await
}

/// One sync run by the device's `SyncService` (on its own connection to the database, as apps
/// run it), over the faulty transport.
async fn service_sync(
    rng: &mut Rng,
    d: &mut SimDevice,
    srv: &LiveServer,
    acks: &mut Vec<Ack>,
    trace: &mut Trace,
) -> Result<(), String> {
    let Some(url) = d.device.store.session().unwrap().0 else {
        return Ok(());
    };
    let transport = FaultyTransport::new(&url, d.index);
    transport.arm(rng, usize::MAX);
    let before = held_clean(&d.device.store);
    let options = ServiceOptions {
        period: Duration::from_secs(24 * 3600),
        live_wait: None,
        ..Default::default()
    };
    let store = d.device.store.reopen().map_err(|e| e.to_string())?;
    let service = SyncService::start_over(store, options, Some(transport.clone()));
    // Asked before the service's task first runs: its start-up sync is this one, whichever
    // wake-up it sees first (a seed replays the same syncs).
    let result = service.sync_now().await;
    service.stop();
    let ended = match result {
        Ok(report) => Ended::Synced(
            vec![format!("device {}: service sync: {report:?}", d.index)],
            report.full_pull,
        ),
        Err(e) => Ended::Failed(format!("device {}: service sync failed: {e}", d.index)),
    };
    end_faulty_sync(&transport, ended, d, srv, &before, acks, trace).await
}

/// How a sync over the faulty transport ended, in the trace's words.
enum Ended {
    /// Killed between two steps: the device is reopened, as a restarted process.
    Killed(String),
    /// Finished: its lines, and whether it ran a full pull (checked then).
    Synced(Vec<String>, bool),
    Failed(String),
}

/// The end that [`faulty_sync`] and [`service_sync`] share: the transport's trace lines and
/// the writes the server acknowledged, then how the sync ended, then the check of a full pull.
async fn end_faulty_sync(
    transport: &FaultyTransport,
    ended: Ended,
    d: &mut SimDevice,
    srv: &LiveServer,
    before: &BTreeSet<(String, String)>,
    acks: &mut Vec<Ack>,
    trace: &mut Trace,
) -> Result<(), String> {
    let (lines, acked) = transport.take();
    trace.extend(lines);
    acks.extend(acked);
    match ended {
        Ended::Killed(line) => {
            trace.push(line);
            d.open();
        }
        Ended::Synced(lines, full_pull) => {
            trace.extend(lines);
            if full_pull {
                check_full_pull(srv, d, before).await?;
            }
        }
        Ended::Failed(line) => trace.push(line),
    }
    Ok(())
}

/// The server purges the tombstones deleted more than `horizon` ms before the simulated now,
/// noting which records went.
async fn purge(
    srv: &LiveServer,
    user: &str,
    horizon: i64,
    purged: &mut BTreeSet<(String, String)>,
    trace: &mut Trace,
) -> Result<(), String> {
    let before = Timestamp::from_millis(NOW.with(|n| *n.borrow()) - horizon);
    let cutoff = before.to_wire();
    for (t, r) in read_server(srv, user).await.map_err(|e| e.to_string())? {
        if r["deleted_at"]
            .as_str()
            .is_some_and(|d| d < cutoff.as_str())
        {
            purged.insert((t, r["remote_id"].as_str().unwrap().to_owned()));
        }
    }
    let server = srv.server.clone().expect("the server is up");
    let n = server
        .purge_tombstones(before)
        .await
        .map_err(|e| e.to_string())?;
    trace.push(format!(
        "server purged {n} tombstones deleted before {cutoff}"
    ));
    Ok(())
}

/// Records (table, remote id) this device holds live and clean: the server has them.
fn held_clean(store: &Store) -> BTreeSet<(String, String)> {
    held(store, "NOT dirty")
}

/// Records (table, remote id) live on this device and known to the server, matching `filter`.
fn held(store: &Store, filter: &str) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for t in entities::app().schema.synced() {
        let mut q = store
            .connection()
            .prepare(&format!(
                "SELECT remote_id FROM {} WHERE remote_id IS NOT NULL AND deleted_at IS NULL AND {filter}",
                t.name
            ))
            .unwrap();
        let ids = q.query_map([], |r| r.get::<_, String>(0)).unwrap();
        out.extend(ids.map(|id| (t.name.clone(), id.unwrap())));
    }
    out
}

/// After a full pull: no row the device held clean before it is gone while the server still
/// holds that record live (the full pull's sweep removes only what the server dropped).
async fn check_full_pull(
    srv: &LiveServer,
    d: &SimDevice,
    before: &BTreeSet<(String, String)>,
) -> Result<(), String> {
    let Some(user) = d.device.store.synced_account().unwrap() else {
        return Ok(());
    };
    let server_live: BTreeSet<(String, String)> = read_server(srv, &user)
        .await
        .map_err(|e| e.to_string())?
        .into_iter()
        .filter(|(_, r)| r["deleted_at"].is_null())
        .map(|(t, r)| (t, r["remote_id"].as_str().unwrap().to_owned()))
        .collect();
    let after = held(&d.device.store, "TRUE");
    // A record whose pulled version is held back here (its parent waits for a natural key this
    // device's own unpushed row holds) is not lost: it lands once that row is pushed and merged,
    // and the final check requires that (simulation seed 6280).
    let parked: BTreeSet<(String, String)> = d
        .device
        .store
        .connection()
        .prepare("SELECT table_name, remote_id FROM sync_parked")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    match before
        .iter()
        .find(|k| server_live.contains(*k) && !after.contains(*k) && !parked.contains(*k))
    {
        Some((t, rid)) => Err(format!(
            "device {} lost {t} {rid} in a full pull, although the server holds it live",
            d.index
        )),
        None => Ok(()),
    }
}

/// A sync through the client users run (pipelined pull, 410 restart), with small batches and
/// pages so that a full pull spans many of them.
async fn client_sync(
    rng: &mut Rng,
    d: &mut SimDevice,
    srv: &LiveServer,
    trace: &mut Trace,
) -> Result<(), String> {
    let limits = Limits {
        push_batch: 1 + rng.below(20) as usize,
        pull_limit: 1 + rng.below(4) as usize,
    };
    let before = held_clean(&d.device.store);
    match client::sync_with(&mut d.device.store, limits, &mut |_: Activity| {}).await {
        Ok(report) => {
            trace.push(format!(
                "device {}: client sync (push {}, pages of {}): {report:?}",
                d.index, limits.push_batch, limits.pull_limit
            ));
            if report.full_pull {
                check_full_pull(srv, d, &before).await?;
            }
        }
        Err(e) => trace.push(format!("device {}: client sync failed: {e}", d.index)),
    }
    Ok(())
}

async fn simulate(seed: u64, backend: Backend, trace: &mut Trace) -> Result<bool, String> {
    let mut rng = Rng::new(seed);
    NOW.with(|n| *n.borrow_mut() = EPOCH);
    // Simulated time runs in 2100: the server must take stamps that far ahead of its clock.
    let config = sync_runtime::server::ServerConfig {
        max_clock_ahead: std::time::Duration::from_secs(200 * 365 * 24 * 3600),
        ..Default::default()
    };
    let Some(mut srv) = LiveServer::start_with(backend, "simulation", config).await else {
        return Ok(false);
    };
    let n = 3 + rng.below(4) as usize;
    let email = format!("sim-{seed}@example.org");
    let mut devices: Vec<SimDevice> = Vec::new();
    for i in 0..n {
        SKEW.with(|s| s.borrow_mut()[i] = rng.below(7_200_000) as i64 - 3_600_000);
        let mut d = SimDevice {
            device: Device::new(&format!("sim{i}")),
            index: i,
            online: true,
        };
        // Device ids from the seed: the merge rule breaks exact ties by device id, so a replay
        // must use the same ids to take the same path.
        let device_id = format!(
            "01a00000-0000-7000-8000-{:012x}",
            rng.next_u64() & 0xffff_ffff_ffff
        );
        d.device
            .store
            .connection()
            .execute("UPDATE sync_state SET device_id = ?1", [&device_id])
            .unwrap();
        d.open();
        d.device.connect(&srv.url, &email, i == 0).await;
        devices.push(d);
    }
    trace.push(format!(
        "{n} devices: {}",
        devices
            .iter()
            .map(|d| format!("{}={}", d.index, d.device.store.device_id()))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    // A shared start: a settings profile and two profiles, synced to every device.
    {
        let s = &mut devices[0].device.store;
        let sp = s
            .insert(&mut SettingsProfile {
                id: None,
                user_id: String::new(),
                name: "Default".into(),
                is_default: Some(true),
                created_at: None,
                updated_at: Timestamp::now(),
                tmdb_catalog_config: None,
            })
            .unwrap();
        for name in ["Alice", "Bob"] {
            s.insert(&mut Profile {
                id: None,
                user_id: String::new(),
                name: name.into(),
                avatar: "a".into(),
                avatar_type: None,
                avatar_style: None,
                is_default: None,
                settings_profile_id: Some(sp),
                created_at: None,
                updated_at: Timestamp::now(),
            })
            .unwrap();
        }
    }
    for d in devices.iter_mut() {
        client::sync_with(
            &mut d.device.store,
            Limits::default(),
            &mut |_: Activity| {},
        )
        .await
        .map_err(|e| e.to_string())?;
    }
    let mut acks = Vec::new();
    // Records whose tombstones the server purged: an acknowledged write to them may be gone.
    let mut purged = BTreeSet::new();
    let user = devices[0]
        .device
        .store
        .synced_account()
        .unwrap()
        .ok_or("device 0 has no account")?;
    let steps = 120 + rng.below(120);
    for _ in 0..steps {
        NOW.with(|t| *t.borrow_mut() += rng.below(3000) as i64);
        let i = rng.below(n as u64) as usize;
        match rng.below(100) {
            0..=59 => operate(&mut rng, &mut devices[i], trace),
            60..=75 if devices[i].online => {
                faulty_sync(&mut rng, &mut devices[i], &srv, &mut acks, trace, true).await?
            }
            76..=77 if devices[i].online => {
                client_sync(&mut rng, &mut devices[i], &srv, trace).await?
            }
            78..=79 if devices[i].online => {
                service_sync(&mut rng, &mut devices[i], &srv, &mut acks, trace).await?
            }
            80..=84 => {
                devices[i].online = !devices[i].online;
                trace.push(format!(
                    "device {i}: {}",
                    if devices[i].online {
                        "back online"
                    } else {
                        "offline"
                    }
                ));
            }
            85..=89 => {
                let jump = rng.below(7_200_000) as i64 - 3_600_000;
                SKEW.with(|s| s.borrow_mut()[i] = jump);
                trace.push(format!("device {i}: wall clock now {jump} ms off"));
            }
            90..=92 => {
                trace.push(format!("device {i}: killed and restarted"));
                devices[i].open();
            }
            93..=94 => {
                trace.push("server restarted".into());
                srv.restart().await;
            }
            95..=96 => {
                // Cursors expire: tombstones older than a horizon on the simulated clock go.
                let horizon = rng.below(120_000) as i64;
                purge(&srv, &user, horizon, &mut purged, trace).await?;
            }
            _ => operate(&mut rng, &mut devices[i], trace),
        }
    }
    // Every cursor expires, and every device pulls everything again through the client, in
    // small pages; then everyone online, two clean syncs each.
    purge(&srv, &user, -3_600_000, &mut purged, trace).await?;
    for d in devices.iter_mut() {
        client_sync(&mut rng, d, &srv, trace).await?;
    }
    trace.push("all online: two syncs each".into());
    // The first clean round is traced row by row.
    for d in devices.iter_mut() {
        faulty_sync(&mut rng, d, &srv, &mut acks, trace, false).await?;
    }
    for d in devices.iter_mut() {
        d.device.limits = Limits::default();
        client::sync_with(
            &mut d.device.store,
            Limits::default(),
            &mut |_: Activity| {},
        )
        .await
        .map_err(|e| format!("final sync of device {}: {e}", d.index))?;
    }
    check(&srv, &devices, &acks, &purged).await
}

/// A record in comparable form: every wire column, references as remote ids (or add-on URLs).
type Snapshot = BTreeMap<(String, String), BTreeMap<String, Json>>;

fn device_snapshot(store: &Store) -> Snapshot {
    let mut out = Snapshot::new();
    for t in entities::app().schema.synced() {
        for (id, values) in store.list_values(&t.name).unwrap() {
            let rid = store
                .remote_id(&t.name, id)
                .unwrap()
                .unwrap_or_else(|| format!("<none:{id}>"));
            let mut cols = BTreeMap::new();
            for (c, v) in t.columns.iter().zip(values) {
                if !c.on_wire() {
                    continue;
                }
                let v = match (&c.reference, &v) {
                    (Some(r), Value::Integer(pid)) => {
                        let parent = entities::app().schema.table(&r.table).unwrap();
                        let key = r.by_key.clone().unwrap_or_else(|| "remote_id".into());
                        let w: Option<String> = store
                            .connection()
                            .query_row(
                                &format!("SELECT {key} FROM {} WHERE id = ?1", parent.name),
                                [pid],
                                |r| r.get(0),
                            )
                            .unwrap();
                        json!(w)
                    }
                    _ => sync_runtime::protocol::wire::encode_value(&v),
                };
                cols.insert(c.name.clone(), v);
            }
            out.insert((t.name.clone(), rid), cols);
        }
    }
    out
}

/// Every record the server holds for the account, tombstones included, read from its storage
/// (a pull from the start would be refused once tombstones were purged).
async fn read_server(
    srv: &LiveServer,
    user: &str,
) -> Result<Vec<(String, Json)>, sync_runtime::server::error::ApiError> {
    use sync_runtime::protocol::cursor::PullFrom;
    use sync_runtime::server::sync::{self, PullInput};
    let server = srv.server.clone().expect("the server is up");
    let app = server.app;
    let input = PullInput {
        user_id: user.to_owned(),
        from: Some(PullFrom::After(0)),
        limit: 10_000_000,
        exclude_device: None,
        max_bytes: i64::MAX as usize,
    };
    let page = sync_runtime::with_tx!(&server.db, false, |tx| {
        let (last_seq, _) = sync::user_sequence(tx, &input.user_id).await?;
        Ok::<_, ApiError>(sync::pull(tx, &app.schema, &input, last_seq).await?)
    })?;
    let mut out = Vec::new();
    for (table, rows) in page.changes {
        let t = app.schema.table(&table).unwrap();
        for r in rows {
            out.push((
                table.clone(),
                Json::Object(sync::row_json(t, &r, app.schema.version())),
            ));
        }
    }
    Ok(out)
}

/// The server's live records in comparable form, and every record's stamp and whether it is a
/// tombstone.
async fn server_records(
    srv: &LiveServer,
    devices: &[SimDevice],
) -> Result<(Snapshot, BTreeMap<(String, String), (String, bool)>), String> {
    let user = devices[0]
        .device
        .store
        .synced_account()
        .unwrap()
        .ok_or("device 0 has no account")?;
    let (mut live, mut all) = (Snapshot::new(), BTreeMap::new());
    for (table, r) in read_server(srv, &user).await.map_err(|e| e.to_string())? {
        let t = entities::app().schema.table(&table).unwrap();
        let rid = r["remote_id"].as_str().unwrap().to_owned();
        let tomb = !r["deleted_at"].is_null();
        all.insert(
            (table.clone(), rid.clone()),
            (
                format!(
                    "{} by {}",
                    r["updated_at"].as_str().unwrap(),
                    r["device_id"].as_str().unwrap_or("?")
                ),
                tomb,
            ),
        );
        if tomb {
            continue;
        }
        let cols: BTreeMap<String, Json> = t
            .columns
            .iter()
            .filter(|c| c.on_wire())
            .map(|c| (c.name.clone(), r[&c.name].clone()))
            .collect();
        live.insert((table, rid), cols);
    }
    Ok((live, all))
}

async fn check(
    srv: &LiveServer,
    devices: &[SimDevice],
    acks: &[Ack],
    purged: &BTreeSet<(String, String)>,
) -> Result<bool, String> {
    let (server, all) = server_records(srv, devices).await?;
    // Every row left dirty is pushed or reported, before whether the devices agree is asked.
    let stamps: BTreeMap<(String, String), String> = all
        .iter()
        .map(|(k, (stamp, _))| {
            // "<stamp> by <device>": the stamp alone.
            let at = stamp.split(" by ").next().unwrap_or_default();
            (k.clone(), at.to_owned())
        })
        .collect();
    for d in devices {
        crate::unreported::check_no_silent_dirty_row(d.index, &d.device.store, &stamps)?;
    }
    let schema = &entities::app().schema;
    // No duplicate natural key, no dangling reference, no live child under a deleted parent.
    for t in schema.synced() {
        for key in &t.natural_keys {
            let mut seen = BTreeSet::new();
            for ((table, rid), cols) in &server {
                if table != &t.name {
                    continue;
                }
                let k: Vec<&Json> = key.iter().map(|c| &cols[c]).collect();
                if k.iter().any(|v| v.is_null()) {
                    continue;
                }
                if !seen.insert(format!("{k:?}")) {
                    return Err(format!(
                        "two live {} records share the natural key {key:?} = {k:?} ({rid})",
                        t.name
                    ));
                }
            }
        }
        for (c, r) in t.references() {
            if r.by_key.is_some() || !c.on_wire() {
                continue;
            }
            for ((table, rid), cols) in &server {
                if table != &t.name {
                    continue;
                }
                let dangling = cols[&c.name].as_str().filter(|parent| {
                    !server.contains_key(&(r.table.clone(), (*parent).to_owned()))
                });
                if let Some(parent) = dangling {
                    return Err(format!(
                        "{table} {rid} ({:?}): `{}` points at {parent}, which is not a live {} ({:?})",
                        all.get(&(table.clone(), rid.clone())),
                        c.name,
                        r.table,
                        all.get(&(r.table.clone(), parent.to_owned()))
                    ));
                }
            }
        }
    }
    // Every device holds exactly the server's records, and nothing waits but rejected rows.
    for d in devices {
        let mine = device_snapshot(&d.device.store);
        for (k, v) in &server {
            match mine.get(k) {
                None => {
                    let local: Option<(i64, Option<String>, bool, String)> = d
                        .device
                        .store
                        .connection()
                        .query_row(
                            &format!("SELECT id, deleted_at, dirty, updated_at FROM {} WHERE remote_id = ?1", k.0),
                            [&k.1],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .ok();
                    let parked: Vec<String> = d
                        .device
                        .store
                        .connection()
                        .prepare("SELECT table_name || ' ' || remote_id FROM sync_parked")
                        .unwrap()
                        .query_map([], |r| r.get(0))
                        .unwrap()
                        .collect::<Result<_, _>>()
                        .unwrap();
                    return Err(format!(
                        "device {} lacks {} {} (local row: {local:?}; held back here: {parked:?}; server {:?}: {v:?})",
                        d.index,
                        k.0,
                        k.1,
                        all.get(k)
                    ));
                }
                Some(m) if m != v => {
                    return Err(format!(
                        "device {} differs on {} {} (server: {:?}):\n device {m:?}\n server {v:?}",
                        d.index,
                        k.0,
                        k.1,
                        all.get(k)
                    ));
                }
                _ => {}
            }
        }
        if let Some(k) = mine.keys().find(|k| !server.contains_key(k)) {
            let local: (i64, bool, String) = d
                .device
                .store
                .connection()
                .query_row(
                    &format!(
                        "SELECT id, dirty, updated_at FROM {} WHERE remote_id = ?1",
                        k.0
                    ),
                    [&k.1],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .unwrap_or((0, false, String::new()));
            return Err(format!(
                "device {} ({}) holds {} {} that the server does not (server: {:?}; device row {}, dirty {}, stamp {}): {:?}",
                d.index,
                d.device.store.device_id(),
                k.0,
                k.1,
                all.get(k),
                local.0,
                local.1,
                local.2,
                mine[k]
            ));
        }
        let st = client::status(&d.device.store, Activity::Idle).map_err(|e| e.to_string())?;
        let waiting: u64 = st.pending.values().sum();
        if waiting > 0 {
            return Err(format!(
                "device {} still has {waiting} dirty rows: {:?}",
                d.index, st.pending
            ));
        }
        if st.parked > 0 {
            let parked: Vec<(String, String, String)> = d
                .device
                .store
                .connection()
                .prepare("SELECT table_name, remote_id, row FROM sync_parked")
                .unwrap()
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            let described: Vec<String> = parked
                .iter()
                .map(|(t, rid, row)| {
                    format!(
                        "{t} {rid} (server: {:?}): {row}",
                        all.get(&(t.clone(), rid.clone()))
                    )
                })
                .collect();
            return Err(format!(
                "device {} still holds {} rows back:\n{}",
                d.index,
                st.parked,
                described.join("\n")
            ));
        }
    }
    // No acknowledged write is lost: each record's final version is that write or a later one.
    for a in acks {
        let key = (a.table.clone(), a.remote_id.clone());
        if purged.contains(&key) {
            // Deleted, and the tombstone purged: a later write may have made it anew.
            continue;
        }
        match all.get(&key) {
            None => {
                return Err(format!(
                    "the acknowledged write {} {} is gone from the server",
                    a.table, a.remote_id
                ));
            }
            Some((stamp, _)) if stamp[..24] < a.stamp[..] => {
                return Err(format!(
                    "{} {} went back from {} to {stamp}",
                    a.table, a.remote_id, a.stamp
                ));
            }
            _ => {}
        }
    }
    Ok(true)
}
