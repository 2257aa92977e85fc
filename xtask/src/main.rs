//! `cargo xtask`: the project's own tasks.

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
}

fn entities_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("entities")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
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
