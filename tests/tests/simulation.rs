//! The fixed seeds of the convergence simulation, on both backends. A longer soak:
//! `cargo xtask simulate --seeds 1000`.

use tests::server::Backend;
use tests::sim::run_seed;

/// Enough to exercise every operation and fault, and quick on a 2-core machine.
const SEEDS: std::ops::Range<u64> = 1..21;

fn run(backend: Backend) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut failures = Vec::new();
    for seed in SEEDS {
        if let Err(e) = rt.block_on(run_seed(seed, backend)) {
            failures.push(e);
        }
    }
    assert!(
        failures.is_empty(),
        "{} seeds diverged:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[test]
fn fixed_seeds_converge_on_sqlite() {
    run(Backend::Sqlite);
}

#[test]
fn fixed_seeds_converge_on_postgres() {
    run(Backend::Postgres);
}
