//! One account's history pushed through a plain HTTP client in 1,000-row requests, each request
//! timed: a request must cost the same whatever the account already holds. And many devices
//! pushing one row at a time, as pushes per second.

use serde_json::{Value as Json, json};
use std::time::{Duration, Instant};
use sync_runtime::Timestamp;
use sync_runtime::protocol::paths;
use sync_runtime::protocol::push::{PushResponse, RowResult};
use sync_runtime::server::db::new_id;
use tests::server::row;

/// A registered account on the server at `url`: its bearer token and a device of its own.
#[derive(Clone)]
pub struct Account {
    http: reqwest::Client,
    url: String,
    token: String,
    device: String,
    profile: String,
}

impl Account {
    /// Registers `email` and pushes the profile its history belongs to.
    pub async fn register(url: &str, email: &str) -> Result<Account, String> {
        let http = reqwest::Client::new();
        let answer: Json = http
            .post(format!("{url}{}", paths::REGISTER))
            .json(&json!({"email": email, "password": "bench password"}))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        let token = answer["token"]
            .as_str()
            .ok_or_else(|| format!("register {email}: {answer}"))?
            .to_owned();
        let account = Account {
            http,
            url: url.to_owned(),
            token,
            device: new_id(),
            profile: new_id(),
        };
        let profile = row(
            "profiles",
            &account.profile,
            &Timestamp::now().to_wire(),
            json!({"name": "Alice", "avatar": "A"}),
        );
        account.push(&json!({"profiles": [profile]})).await?;
        Ok(account)
    }

    /// The same account and device, speaking to the server at `url` (another process on the
    /// same database).
    pub fn on(&self, url: &str) -> Account {
        Account {
            url: url.to_owned(),
            ..self.clone()
        }
    }

    /// The body of a push of `history`.
    pub fn body(&self, history: Vec<Json>) -> Vec<u8> {
        json!({"device_id": self.device, "schema_version": 1, "changes": {"watch_history": history}})
            .to_string()
            .into_bytes()
    }

    /// Watched episodes `from..to` of this account's profile, with realistic values.
    pub fn history(&self, from: usize, to: usize) -> Vec<Json> {
        let stamp = Timestamp::now().to_wire();
        (from..to)
            .map(|i| {
                let meta = format!("tt{:07}", i / 100);
                let (season, episode) = (i % 100 / 20, i % 20);
                row(
                    "watch_history",
                    &new_id(),
                    &stamp,
                    json!({
                        "profile_id": self.profile, "meta_id": meta, "meta_type": "series",
                        "season": season, "episode": episode,
                        "episode_id": format!("{meta}:{season}:{episode}"),
                        "title": format!("Series {} — episode {episode}", i / 100),
                        "poster": format!("https://images.example/{meta}/poster.jpg"),
                        "duration": 3_480_000, "position": i * 7919 % 3_480_000,
                        "is_watched": i % 3 == 0, "watched_at": stamp,
                        "last_stream": {"url": format!("magnet:?xt=urn:btih:{i:040}"),
                                        "title": "1080p WEB-DL", "size": 1_500_000_000 + i},
                    }),
                )
            })
            .collect()
    }

    async fn push(&self, changes: &Json) -> Result<(), String> {
        let body = json!({"device_id": self.device, "schema_version": 1, "changes": changes});
        self.send(body.to_string().into_bytes()).await
    }

    /// Sends a push body; fails unless every row was applied.
    pub async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let answer = self
            .http
            .post(format!("{}{}", self.url, paths::PUSH))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let answer: Json = answer.json().await.map_err(|e| e.to_string())?;
        let applied = serde_json::from_value::<PushResponse>(answer.clone()).is_ok_and(|a| {
            a.results
                .values()
                .flatten()
                .all(|r| r.result == RowResult::Applied)
        });
        if !status.is_success() || !applied {
            let text = answer.to_string();
            return Err(format!(
                "a push was not applied ({status}): {}",
                &text[..text.len().min(300)]
            ));
        }
        Ok(())
    }

    /// Sends a push body as it is; the answer's status (its body read and dropped).
    pub async fn send_raw(&self, body: bytes::Bytes) -> Result<u16, String> {
        let answer = self
            .http
            .post(format!("{}{}", self.url, paths::PUSH))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status().as_u16();
        answer.bytes().await.map_err(|e| e.to_string())?;
        Ok(status)
    }

    /// One row of a full pull; fails unless answered 200.
    pub async fn pull_one(&self) -> Result<(), String> {
        let answer = self
            .http
            .get(format!("{}{}?limit=1", self.url, paths::PULL))
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        answer.bytes().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("the other account's pull answered {status}"));
        }
        Ok(())
    }
}

/// Pushes `rows` watched episodes into a new account in requests of `per_request` rows (bodies
/// built beforehand); returns each request's seconds.
pub async fn timed_requests(
    url: &str,
    email: &str,
    rows: usize,
    per_request: usize,
) -> Result<Vec<f64>, String> {
    let account = Account::register(url, email).await?;
    let bodies: Vec<Vec<u8>> = (0..rows)
        .step_by(per_request)
        .map(|from| account.body(account.history(from, (from + per_request).min(rows))))
        .collect();
    let mut seconds = Vec::with_capacity(bodies.len());
    for body in bodies {
        let t = Instant::now();
        account.send(body).await?;
        seconds.push(t.elapsed().as_secs_f64());
        if seconds.len() % 10 == 0 {
            let last: Vec<String> = seconds[seconds.len() - 10..]
                .iter()
                .map(|s| format!("{:.0}", s * 1000.0))
                .collect();
            eprintln!(
                "  requests {}-{}: {} ms",
                seconds.len() - 9,
                seconds.len(),
                last.join(" ")
            );
        }
    }
    Ok(seconds)
}

/// `devices` devices, each of its own account, each pushing one new row per request, one
/// request after the other, for `duration`; returns the pushes per second of them all.
pub async fn one_row_pushes(
    url: &str,
    tag: &str,
    devices: usize,
    duration: Duration,
) -> Result<f64, String> {
    let mut accounts = Vec::with_capacity(devices);
    for d in 0..devices {
        accounts.push(Account::register(url, &format!("small{d}-{tag}@bench.example")).await?);
    }
    let started = Instant::now();
    let tasks: Vec<_> = accounts
        .into_iter()
        .map(|account| {
            tokio::spawn(async move {
                let mut pushes = 0usize;
                while started.elapsed() < duration {
                    account
                        .send(account.body(account.history(pushes, pushes + 1)))
                        .await?;
                    pushes += 1;
                }
                Ok::<_, String>(pushes)
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.map_err(|e| e.to_string())??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}
