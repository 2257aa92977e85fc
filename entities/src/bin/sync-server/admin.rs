//! `sync-server admin ...`: an operator's commands on the database of a server (running or
//! not), given by the same `--database`.

use clap::{Args, Subcommand};
use std::io::{BufRead, IsTerminal, Write};
use std::process::ExitCode;
use sync_runtime::server::admin::{AdminCommand, run};
use sync_runtime::server::{Server, ServerConfig};

#[derive(Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: Admin,
}

#[derive(Subcommand)]
enum Admin {
    /// Every account: email, id, created, disabled, sessions, last used, live records.
    List {
        /// One JSON array instead of tab-separated lines.
        #[arg(long)]
        json: bool,
    },
    /// Accounts, sessions, and records and tombstones per table.
    Summary {
        #[arg(long)]
        json: bool,
    },
    /// The account can no longer sign in; its sessions end at once.
    Disable { email: String },
    /// Lets a disabled account sign in again.
    Enable { email: String },
    /// Sets a new password, read from the first line of standard input (never from the command
    /// line, which other users of the machine can read); the account's sessions end.
    SetPassword { email: String },
    /// Writes the account and every live record it holds to standard output, as JSON.
    Export { email: String },
    /// Deletes the account and everything it holds.
    Delete {
        email: String,
        /// Confirms the deletion: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
    },
}

/// Runs one admin command against `database`.
pub async fn main(database: &str, args: AdminArgs) -> ExitCode {
    let (command, json) = match args.command {
        Admin::List { json } => (AdminCommand::List, json),
        Admin::Summary { json } => (AdminCommand::Summary, json),
        Admin::Disable { email } => (AdminCommand::Disable { email }, false),
        Admin::Enable { email } => (AdminCommand::Enable { email }, false),
        Admin::Export { email } => (AdminCommand::Export { email }, false),
        Admin::Delete { email, yes } => {
            if !yes {
                eprintln!(
                    "error: deleting {email} removes the account and all its data for good; add --yes to do it"
                );
                return ExitCode::from(2);
            }
            (AdminCommand::Delete { email }, false)
        }
        Admin::SetPassword { email } => match read_password() {
            Ok(password) => (AdminCommand::SetPassword { email, password }, false),
            Err(e) => {
                eprintln!("error: cannot read the new password from standard input: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // A mistyped path would otherwise make an empty database and report no accounts.
    if let Some(path) = database.strip_prefix("sqlite://")
        && !std::path::Path::new(path).exists()
    {
        eprintln!("error: {path} does not exist: give the --database of the server");
        return ExitCode::FAILURE;
    }
    let server = match Server::open(database, entities::app(), ServerConfig::default()).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot open {database}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&server, command, json).await {
        Ok(text) => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The first line of standard input, without its line end.
fn read_password() -> std::io::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("new password: ");
    }
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
