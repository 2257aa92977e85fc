//! `cargo xtask simulate`: the seeded multi-device simulation over one seed (a replay), a range
//! (a soak), or a few seeds derived from the checked-out commit (CI's exploration).

use std::process::ExitCode;
use tests::server::Backend;

/// Where CI's exploration starts: above the fixed seeds (1 to 20 and the pinned ones below
/// 1,000,000) and the soak ranges run so far (below 10,000,000), in a span of 900,000,000 so
/// that two commits hardly ever run the same seeds.
const EXPLORED_FROM: u64 = 100_000_000;
const EXPLORED_SPAN: u64 = 900_000_000;

/// The first seed explored for commit `hash` (hexadecimal, as git prints it).
pub fn explored_first_seed(hash: &str) -> Option<u64> {
    let head = hash.get(..15)?;
    let n = u64::from_str_radix(head, 16).ok()?;
    Some(EXPLORED_FROM + n % EXPLORED_SPAN)
}

/// `count` seeds from the one the checked-out commit gives, announced with the command that
/// replays them.
pub fn explored(count: u64, backend: Backend) -> Result<Vec<u64>, String> {
    let out = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .map_err(|e| format!("cannot run git to name the commit: {e}"))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let first = explored_first_seed(&hash)
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            format!("no commit to derive the seeds from (git rev-parse HEAD: {hash:?})")
        })?;
    println!(
        "exploring {count} seeds from {first} (commit {}) on {}; replay them: cargo xtask simulate --first-seed {first} --seeds {count} --backend {}",
        &hash[..12],
        name(backend),
        name(backend)
    );
    Ok((first..first + count).collect())
}

fn name(backend: Backend) -> &'static str {
    match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    }
}

/// Runs `seeds` on `backend`, stopping at the first divergence, which it prints with its seed,
/// its replay command and its trace.
pub fn run(seeds: &[u64], backend: Backend) -> ExitCode {
    if backend == Backend::Postgres && std::env::var(tests::POSTGRES_URL_VAR).is_err() {
        eprintln!(
            "error: --backend postgres needs {} (e.g. postgres://postgres@127.0.0.1:5432/test)",
            tests::POSTGRES_URL_VAR
        );
        return ExitCode::FAILURE;
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let bar = indicatif::ProgressBar::new(seeds.len() as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} seeds, {elapsed} ({eta} left) {msg}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // A panic inside a run names its seed, so that it can be replayed.
    static CURRENT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        let s = CURRENT.load(std::sync::atomic::Ordering::Relaxed);
        eprintln!(
            "the panic above happened in seed {s}; replay: cargo xtask simulate --seed {s} --backend {}",
            name(backend)
        );
    }));
    for &s in seeds {
        CURRENT.store(s, std::sync::atomic::Ordering::Relaxed);
        bar.set_message(format!("seed {s}"));
        if let Err(e) = rt.block_on(tests::sim::run_seed(s, backend)) {
            bar.abandon();
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    match (seeds.first(), seeds.last()) {
        (Some(first), Some(last)) => println!(
            "{} seeds converged on {} (seeds {first} to {last})",
            seeds.len(),
            name(backend)
        ),
        _ => println!("no seeds to run"),
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod explored_seeds {
    use super::*;

    #[test]
    fn the_explored_seeds_follow_the_commit_and_stay_away_from_the_fixed_ones() {
        let a = explored_first_seed("37f511a0c0ffee00000000000000000000000000").unwrap();
        let b = explored_first_seed("7cd1c8d0c0ffee00000000000000000000000000").unwrap();
        assert_ne!(a, b);
        for s in [a, b] {
            assert!((EXPLORED_FROM..EXPLORED_FROM + EXPLORED_SPAN).contains(&s));
        }
        assert_eq!(explored_first_seed("not a hash"), None);
    }
}
