//! The fixed seeds of the convergence simulation, on both backends. A longer soak:
//! `cargo xtask simulate --seeds 1000`.

use tests::server::Backend;
use tests::sim::run_seed_traced;

/// Enough to exercise every operation and fault, and quick on a 2-core machine.
const SEEDS: std::ops::Range<u64> = 1..21;

fn run(backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut steps = Vec::new();
    for seed in SEEDS {
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
    if steps.len() <= SEEDS.count() {
        return; // PostgreSQL not configured: every seed skipped
    }
    // The seeds reach the faults they are meant to: purged tombstones, so expired cursors and
    // full re-pulls over many pages, through the engine steps and through the client.
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
}

#[test]
fn fixed_seeds_converge_on_sqlite() {
    run(Backend::Sqlite);
}

#[test]
fn fixed_seeds_converge_on_postgres() {
    run(Backend::Postgres);
}
