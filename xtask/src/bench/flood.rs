//! One account floods the server: many concurrent pushes of the largest body the server takes,
//! each sent again after `Retry-After` until the server stores it. Measured: the server
//! process's peak resident memory, and how long another account waits meanwhile for a
//! one-row push and a one-row pull. The server is a `sync-server` process, so the memory is
//! its own; the accounts sign up on another process (argon2's memory would count otherwise).

use super::requests::Account;
use crate::bench_live::ServerProcess;
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// What one flood measured.
pub struct Flood {
    /// Peak resident memory of the server process (VmHWM), and its memory before the flood.
    pub peak_mib: f64,
    pub before_mib: f64,
    /// The other account's one-row pushes and pulls during the flood, in seconds, sorted.
    pub other_push: Vec<f64>,
    pub other_pull: Vec<f64>,
    /// Answers the flooding pushes got that refused them for now (429 or 503).
    pub refused: usize,
    pub seconds: f64,
}

/// A push body of `rows` watched episodes of `account`, padded to about `bytes`.
fn padded_body(account: &Account, rows: usize, bytes: usize) -> Vec<u8> {
    let mut history = account.history(0, rows);
    let pad = (bytes / rows).saturating_sub(700);
    for row in &mut history {
        row["title"] = Json::String(format!(
            "{}{}",
            row["title"].as_str().unwrap_or(""),
            "x".repeat(pad)
        ));
    }
    account.body(history)
}

/// Peak resident memory of process `pid` so far, in MiB.
fn peak_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// `pushes` concurrent pushes of about `body_bytes` each by one account on a `sync-server`
/// process over `database`, while another account pushes and pulls one row at a time.
pub async fn one_account_flood(
    database: &str,
    pushes: usize,
    body_bytes: usize,
) -> Result<Flood, String> {
    let (flooder, other) = {
        let signup = ServerProcess::start(database, &[])?;
        (
            Account::register(&signup.url, "flooder@bench.example").await?,
            Account::register(&signup.url, "bystander@bench.example").await?,
        )
    };
    let server = ServerProcess::start(database, &[])?;
    let (flooder, other) = (flooder.on(&server.url), other.on(&server.url));
    let body = bytes::Bytes::from(padded_body(&flooder, 5000, body_bytes));
    let before_mib = server.rss_mib().ok_or("no resident memory")?;
    let started = Instant::now();
    let tasks: Vec<_> = (0..pushes)
        .map(|_| {
            let (flooder, body) = (flooder.clone(), body.clone());
            tokio::spawn(async move {
                let mut refused = 0;
                loop {
                    match flooder.send_raw(body.clone()).await {
                        Ok(200) => return Ok::<_, String>(refused),
                        // A refused push, or its connection closed before the answer came.
                        Ok(429 | 503) | Err(_) => {
                            refused += 1;
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Ok(status) => return Err(format!("a flooding push answered {status}")),
                    }
                }
            })
        })
        .collect();
    let (mut other_push, mut other_pull) = (Vec::new(), Vec::new());
    let mut i = 0;
    while tasks.iter().any(|t| !t.is_finished()) {
        let t = Instant::now();
        other.send(other.body(other.history(i, i + 1))).await?;
        other_push.push(t.elapsed().as_secs_f64());
        let t = Instant::now();
        other.pull_one().await?;
        other_pull.push(t.elapsed().as_secs_f64());
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut refused = 0;
    for task in tasks {
        refused += task.await.map_err(|e| e.to_string())??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let peak_mib = peak_mib(server.pid()).ok_or("no peak memory")?;
    other_push.sort_by(f64::total_cmp);
    other_pull.sort_by(f64::total_cmp);
    Ok(Flood {
        peak_mib,
        before_mib,
        other_push,
        other_pull,
        refused,
        seconds,
    })
}

/// A value of sorted `samples` at quantile `q`.
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    samples[((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1]
}
