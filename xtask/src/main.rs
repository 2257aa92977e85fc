//! `cargo xtask`: the project's own tasks.

mod bench;
mod bench_live;
mod fuzz_api;
mod screenshots;
mod simulate;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the next migration of each target (device SQLite, server SQLite, server
    /// PostgreSQL) from the entities, if they changed.
    Migrations {
        /// Write nothing; fail if the committed migrations are stale.
        #[arg(long)]
        check: bool,
    },
    /// Run the seeded multi-device simulation: one seed to replay a failure, or a soak over
    /// seeds S..S+N. Stops at the first divergence, printing its seed and trace.
    Simulate {
        /// Replay this one seed.
        #[arg(long, conflicts_with_all = ["seeds", "first_seed", "explore"])]
        seed: Option<u64>,
        /// How many seeds to run.
        #[arg(long, default_value_t = 100)]
        seeds: u64,
        #[arg(long, default_value_t = 1)]
        first_seed: u64,
        /// Run this many seeds from a first seed derived from the checked-out commit, far from
        /// the fixed ones: CI's exploration, different on every commit.
        #[arg(long, conflicts_with_all = ["seeds", "first_seed"])]
        explore: Option<u64>,
        /// Storage of the in-process server; postgres reads SYNC_TEST_POSTGRES_URL.
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: BackendArg,
    },

    /// Run schemathesis (from PyPI) against the server's OpenAPI document: every answer must
    /// be documented, and none a 5xx. Skips when schemathesis is not installed.
    FuzzApi {
        /// Storage of the in-process server; postgres reads SYNC_TEST_POSTGRES_URL.
        #[arg(long, value_enum, default_value = "sqlite")]
        backend: BackendArg,
        /// Examples generated per operation.
        #[arg(long, default_value_t = 100)]
        max_examples: u32,
    },

    /// Measure sync throughput, latency, memory and server load; writes docs/bench.md.
    Bench {
        /// A short run (10,000 rows, 3 runs).
        #[arg(long)]
        quick: bool,
        /// Run only these workloads (the bound always runs); docs/bench.md is then left as it is.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Workload>,
        /// Add the 1,000,000-row point to the growth curve (a long run).
        #[arg(long)]
        million: bool,
        /// Run in this process even if it is not a release build.
        #[arg(long, hide = true)]
        here: bool,
    },
    /// Take the settings page's screenshots (docs/screenshots/) in headless Chromium.
    Screenshots,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    Sqlite,
    Postgres,
}

impl From<BackendArg> for tests::server::Backend {
    fn from(b: BackendArg) -> Self {
        match b {
            BackendArg::Sqlite => tests::server::Backend::Sqlite,
            BackendArg::Postgres => tests::server::Backend::Postgres,
        }
    }
}

fn entities_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("entities")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench {
            quick,
            million,
            only,
            here,
        } => bench(quick, million, &only, here),
        Command::Screenshots => screenshots::run(),
        Command::Simulate {
            seed,
            seeds,
            first_seed,
            explore,
            backend,
        } => {
            let backend = backend.into();
            let seeds = match (seed, explore) {
                (Some(s), _) => vec![s],
                (None, Some(n)) => match simulate::explored(n, backend) {
                    Ok(seeds) => seeds,
                    Err(e) => {
                        eprintln!("error: {e}");
                        return ExitCode::FAILURE;
                    }
                },
                (None, None) => (first_seed..first_seed.saturating_add(seeds)).collect(),
            };
            simulate::run(&seeds, backend)
        }
        Command::FuzzApi {
            backend,
            max_examples,
        } => match fuzz_api::run(backend.into(), max_examples) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Migrations { check } => {
            let dir = entities_dir();
            let schema = entities::schema();
            let result = if check {
                sync_runtime::generate::check(&dir, &schema).map(|()| {
                    println!("migrations are current");
                })
            } else {
                sync_runtime::generate::update(&dir, &schema).map(|written| {
                    if written.is_empty() {
                        println!("migrations are current; nothing written");
                    }
                    for p in written {
                        println!("wrote {}", p.display());
                    }
                })
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn bench(quick: bool, million: bool, only: &[bench::Workload], here: bool) -> ExitCode {
    // Speed means nothing in a debug build: re-run as a release build, with sync-client beside it.
    if cfg!(debug_assertions) && !here {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = std::process::Command::new(&cargo)
            .args([
                "build",
                "--release",
                "--quiet",
                "--package",
                "entities",
                "--features",
                "client,server",
                "--bin",
                "sync-client",
                "--bin",
                "sync-server",
            ])
            .status();
        if !built.is_ok_and(|s| s.success()) {
            eprintln!("error: building sync-client and sync-server in release failed");
            return ExitCode::FAILURE;
        }
        let mut args = vec![
            "run",
            "--release",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench",
            "--here",
        ];
        if quick {
            args.push("--quick");
        }
        if million {
            args.push("--million");
        }
        let only: Vec<String> = only.iter().map(|w| w.to_string()).collect();
        let only = only.join(",");
        if !only.is_empty() {
            args.extend(["--only", &only]);
        }
        return match std::process::Command::new(&cargo).args(&args).status() {
            Ok(s) if s.success() => ExitCode::SUCCESS,
            _ => ExitCode::FAILURE,
        };
    }
    match bench::run(quick, million, only) {
        Ok(report) => {
            println!("{}", report.markdown);
            let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join("docs");
            if !quick && only.is_empty() {
                let mut files = vec![(docs.join("bench.md"), report.markdown)];
                if let Some(svg) = report.chart {
                    files.push((docs.join(bench::CHART_FILE), svg));
                }
                for (path, text) in files {
                    if let Err(e) = std::fs::write(&path, text) {
                        eprintln!("error: {}: {e}", path.display());
                        return ExitCode::FAILURE;
                    }
                    println!("wrote {}", path.display());
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
