//! Accounts and tokens: argon2id password hashes, random bearer tokens stored only as SHA-256
//! hashes (they are high-entropy; a slow hash is for passwords), and failed-login limits.

use crate::schema::ColumnType;
use crate::server::db::SyncTx;
use crate::server::error::ApiError;
use crate::timestamp::Timestamp;
use crate::value::Value;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sea_query::{Expr, ExprTrait, Query};
use sha2::Digest;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const MIN_PASSWORD_CHARS: usize = 8;

/// Hashes a password with argon2id (on a blocking thread: it is slow on purpose).
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = new_salt()?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(ApiError::internal)
    })
    .await
    .map_err(ApiError::internal)?
}

/// Checks a password against a stored hash; `None` checks against a dummy so that an unknown
/// email costs the same time as a wrong password.
pub async fn verify_password(password: String, hash: Option<String>) -> Result<bool, ApiError> {
    tokio::task::spawn_blocking(move || {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy = DUMMY.get_or_init(|| {
            new_salt()
                .ok()
                .and_then(|salt| {
                    let hash = argon2::Argon2::default()
                        .hash_password(b"not a password anyone has", &salt)
                        .ok()?;
                    Some(hash.to_string())
                })
                .unwrap_or_default()
        });
        let known = hash.is_some();
        let stored = hash.unwrap_or_else(|| dummy.clone());
        let ok = PasswordHash::new(&stored)
            .map(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false);
        ok && known
    })
    .await
    .map_err(ApiError::internal)
}

fn new_salt() -> Result<SaltString, ApiError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    SaltString::encode_b64(&bytes).map_err(ApiError::internal)
}

/// A new bearer token: 256 random bits, hex.
pub fn new_token() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(ApiError::internal)?;
    Ok(hex::encode(bytes))
}

pub fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// Emails compare case-insensitively.
pub fn normalise_email(email: &str) -> Result<String, ApiError> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        && !e.chars().any(char::is_whitespace);
    if valid {
        Ok(e)
    } else {
        Err(ApiError::BadRequest(
            "`email` is not an email address".into(),
        ))
    }
}

pub async fn create_user<T: SyncTx>(
    tx: &mut T,
    email: &str,
    password_hash: &str,
) -> Result<String, ApiError> {
    let mut q = Query::select();
    q.column("user_id")
        .from("sync_users")
        .and_where(Expr::col("email").eq(email));
    if !tx.fetch(&q, &[ColumnType::Text]).await?.is_empty() {
        return Err(ApiError::Conflict(
            "an account with this email exists".into(),
        ));
    }
    let user_id = uuid::Uuid::now_v7().to_string();
    let mut ins = Query::insert();
    ins.into_table("sync_users")
        .columns([
            "user_id",
            "email",
            "password_hash",
            "created_at",
            "last_seq",
            "purged_seq",
        ])
        .values_panic([
            user_id.as_str().into(),
            email.into(),
            password_hash.into(),
            Timestamp::now().to_wire().into(),
            0i64.into(),
            0i64.into(),
        ]);
    match tx.run(&ins).await {
        Ok(_) => Ok(user_id),
        // Two registrations raced: the other one won.
        Err(e) if e.is_unique_violation() => Err(ApiError::Conflict(
            "an account with this email exists".into(),
        )),
        Err(e) => Err(e.into()),
    }
}

/// (user_id, password hash) of the account with this email.
pub async fn find_user<T: SyncTx>(
    tx: &mut T,
    email: &str,
) -> Result<Option<(String, String)>, ApiError> {
    let mut q = Query::select();
    q.columns(["user_id", "password_hash"])
        .from("sync_users")
        .and_where(Expr::col("email").eq(email));
    Ok(tx
        .fetch(&q, &[ColumnType::Text, ColumnType::Text])
        .await?
        .into_iter()
        .next()
        .and_then(|r| match (&r[0], &r[1]) {
            (Value::Text(u), Value::Text(h)) => Some((u.clone(), h.clone())),
            _ => None,
        }))
}

pub async fn insert_token<T: SyncTx>(
    tx: &mut T,
    hash: &str,
    user: &str,
    expires: Timestamp,
) -> Result<(), ApiError> {
    let mut ins = Query::insert();
    ins.into_table("sync_tokens")
        .columns(["token_hash", "user_id", "created_at", "expires_at"])
        .values_panic([
            hash.into(),
            user.into(),
            Timestamp::now().to_wire().into(),
            expires.to_wire().into(),
        ]);
    tx.run(&ins).await?;
    Ok(())
}

/// The user of a live token.
pub async fn token_user<T: SyncTx>(tx: &mut T, hash: &str) -> Result<Option<String>, ApiError> {
    let mut q = Query::select();
    q.column("user_id")
        .from("sync_tokens")
        .and_where(Expr::col("token_hash").eq(hash))
        .and_where(Expr::col("revoked_at").is_null())
        .and_where(Expr::col("expires_at").gt(Timestamp::now().to_wire()));
    Ok(tx
        .fetch(&q, &[ColumnType::Text])
        .await?
        .into_iter()
        .next()
        .and_then(|r| match &r[0] {
            Value::Text(u) => Some(u.clone()),
            _ => None,
        }))
}

pub async fn revoke_token<T: SyncTx>(tx: &mut T, hash: &str) -> Result<(), ApiError> {
    let mut up = Query::update();
    up.table("sync_tokens")
        .value("revoked_at", Timestamp::now().to_wire())
        .and_where(Expr::col("token_hash").eq(hash))
        .and_where(Expr::col("revoked_at").is_null());
    tx.run(&up).await?;
    Ok(())
}

/// Failed logins per account and per address, over a sliding window. Kept in the process: with
/// several server processes each one limits on its own.
pub struct LoginLimiter {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, (u32, Instant)>>,
}

impl LoginLimiter {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        LoginLimiter {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Refuses when any of `keys` has used up its failures; says when to try again.
    pub fn check(&self, keys: &[String]) -> Result<(), ApiError> {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        map.retain(|_, (_, since)| now.duration_since(*since) < self.window);
        for k in keys {
            if let Some((_, since)) = map.get(k).filter(|(n, _)| *n >= self.max_failures) {
                let left = self.window.saturating_sub(now.duration_since(*since));
                return Err(ApiError::RateLimited {
                    retry_after: std::cmp::max(left.as_secs(), 1),
                });
            }
        }
        Ok(())
    }

    pub fn failed(&self, keys: &[String]) {
        let mut map = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        for k in keys {
            map.entry(k.clone()).or_insert((0, now)).0 += 1;
        }
    }

    pub fn succeeded(&self, account_key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(account_key);
    }
}
