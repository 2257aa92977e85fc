//! The fixed seeds of the convergence simulation, on both backends. A longer soak:
//! `cargo xtask simulate --seeds 1000`.

use tests::server::Backend;
use tests::sim::run_seed_traced;

/// Enough to exercise every operation and fault, and quick on a 2-core machine.
const SEEDS: std::ops::Range<u64> = 1..21;
/// Seeds found diverging by a soak or by CI's exploration, replayed on every run; each one's
/// fix names it in a comment.
const PINNED: [u64; 1] = [714848];

fn seeds() -> impl Iterator<Item = u64> {
    SEEDS.chain(PINNED)
}

fn run(backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut steps = Vec::new();
    for seed in seeds() {
        match rt.block_on(run_seed_traced(seed, backend)) {
            Ok(trace) => steps.extend(trace),
            Err(e) => failures.push(e),
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds diverged:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
    if steps.len() <= seeds().count() {
        return; // PostgreSQL not configured: every seed skipped
    }
    // The seeds reach the faults they are meant to: purged tombstones, so expired cursors and
    // full re-pulls over many pages, under faults and without.
    let seen = |what: &str| steps.iter().filter(|s| s.contains(what)).count();
    let purges = steps
        .iter()
        .filter(|s| s.starts_with("server purged") && !s.starts_with("server purged 0 "))
        .count();
    assert!(purges > 0, "no seed purged a tombstone");
    assert!(
        seen("finished a full pull") > 0,
        "no full pull under faults"
    );
    assert!(
        seen("full_pull: true") > 0,
        "no full pull through the client"
    );
    assert!(seen("client sync (") > 0, "no sync through the client");
    // The faulty transport's faults, and the service, are reached too.
    for (what, fault) in [
        ("killed after", "no device killed mid-sync"),
        (
            "push answer, after the server committed, lost",
            "no push answer lost after its commit",
        ),
        ("push request lost", "no push request lost"),
        ("pull answer lost", "no pull answer lost"),
        ("page body cut at byte", "no page body cut short"),
        ("refused as too large", "no push refused as too large"),
        ("service sync: ", "no sync through the SyncService"),
    ] {
        assert!(seen(what) > 0, "{fault}");
    }
}

#[test]
fn fixed_seeds_converge_on_sqlite() {
    run(Backend::Sqlite);
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[test]
fn fixed_seeds_converge_on_postgres() {
    run(Backend::Postgres);
}

/// A seed is a replay: the same operations, faults and answers, step by step (the pull pipeline
/// runs ahead of the device by as much as the scheduler lets it, and that must not leak into
/// what happens).
#[test]
fn a_seed_replays_the_same_run() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for seed in [3, 11] {
        let first = ids_in_order(rt.block_on(run_seed_traced(seed, Backend::Sqlite)).unwrap());
        let again = ids_in_order(rt.block_on(run_seed_traced(seed, Backend::Sqlite)).unwrap());
        if let Some(i) = (0..first.len().min(again.len())).find(|i| first[*i] != again[*i]) {
            panic!(
                "seed {seed} took another path at step {i}:\n  {}\n  {}",
                first[i], again[i]
            );
        }
        assert_eq!(first.len(), again.len(), "seed {seed}");
    }
}

/// The trace with each UUID (new records' ids are random) replaced by its rank of first
/// appearance, and the server's port left out, so two runs compare step by step.
fn ids_in_order(trace: Vec<String>) -> Vec<String> {
    let is_uuid = |w: &[u8]| {
        w.len() == 36
            && w.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    let mut seen: Vec<String> = Vec::new();
    trace
        .into_iter()
        .map(|line| {
            let line = match line.find("127.0.0.1:") {
                Some(at) => {
                    let rest = &line[at + 10..];
                    let port =
                        rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                    format!("{}127.0.0.1:PORT{}", &line[..at], &rest[port..])
                }
                None => line,
            };
            let (b, mut out, mut i) = (line.as_bytes(), String::new(), 0);
            while i < b.len() {
                if i + 36 <= b.len() && is_uuid(&b[i..i + 36]) {
                    let id = &line[i..i + 36];
                    let rank = match seen.iter().position(|s| s == id) {
                        Some(r) => r,
                        None => {
                            seen.push(id.to_owned());
                            seen.len() - 1
                        }
                    };
                    out.push_str(&format!("#{rank}"));
                    i += 36;
                } else {
                    let c = line[i..].chars().next().unwrap();
                    out.push(c);
                    i += c.len_utf8();
                }
            }
            out
        })
        .collect()
}
