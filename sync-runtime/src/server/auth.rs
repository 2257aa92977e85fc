//! Accounts and tokens: argon2id password hashes, random bearer tokens stored only as SHA-256
//! hashes (they are high-entropy; a slow hash is for passwords), with a bound on how many
//! passwords are hashed at once.

use crate::schema::ColumnType;
use crate::server::db::SyncTx;
use crate::server::error::ApiError;
use crate::server::hashing::HashMemory;
use crate::timestamp::Timestamp;
use crate::value::Value;
use argon2::password_hash::SaltString;
use sea_query::{Expr, ExprTrait, Query};
use sha2::Digest;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::Semaphore;

pub const MIN_PASSWORD_CHARS: usize = 8;

/// How many passwords are hashed at once, and how many more may wait. Each argon2 hash holds
/// about 19 MiB while it runs: without a bound, a burst of registrations or logins takes the
/// server's memory; beyond the queue a request is answered 503 with `Retry-After`.
pub struct HashGate {
    running: Semaphore,
    concurrent: usize,
    /// Requests holding or waiting for a slot.
    admitted: AtomicUsize,
    max_admitted: usize,
    /// The running hashes' working memory, reused from one hash to the next.
    memory: Arc<HashMemory>,
}

/// Seconds a client is told to wait when every hashing slot and queue place is taken.
const BUSY_RETRY_AFTER: u64 = 1;

impl HashGate {
    /// `concurrent` hashes at once (at least one), `queue` more waiting.
    pub fn new(concurrent: usize, queue: usize) -> Self {
        let concurrent = concurrent.max(1);
        HashGate {
            running: Semaphore::new(concurrent),
            concurrent,
            admitted: AtomicUsize::new(0),
            max_admitted: concurrent + queue,
            memory: Arc::default(),
        }
    }

    /// Hashes running now, and requests waiting for a slot (the metrics read them).
    pub fn load(&self) -> (usize, usize) {
        let running = self
            .concurrent
            .saturating_sub(self.running.available_permits());
        let admitted = self.admitted.load(Ordering::Acquire);
        (running, admitted.saturating_sub(running))
    }

    /// Runs `work` on a blocking thread once a slot is free, or refuses at once when the queue
    /// is full.
    async fn run<R: Send + 'static>(
        &self,
        work: impl FnOnce() -> R + Send + 'static,
    ) -> Result<R, ApiError> {
        let admitted = self.admitted.fetch_add(1, Ordering::AcqRel);
        // Given back however this ends (answered, refused, or the client went away).
        struct Leave<'a>(&'a AtomicUsize);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        let _leave = Leave(&self.admitted);
        if admitted >= self.max_admitted {
            return Err(ApiError::Busy {
                retry_after: BUSY_RETRY_AFTER,
            });
        }
        let _slot = self.running.acquire().await.map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(work)
            .await
            .map_err(ApiError::internal)
    }
}

/// Hashes a password with argon2id (on a blocking thread: it is slow on purpose).
pub async fn hash_password(gate: &HashGate, password: String) -> Result<String, ApiError> {
    let memory = gate.memory.clone();
    gate.run(move || {
        let salt = new_salt()?;
        memory
            .hash(password.as_bytes(), &salt)
            .map_err(ApiError::internal)
    })
    .await?
}

/// Checks a password against a stored hash; `None` checks against a dummy so that an unknown
/// email costs the same time as a wrong password.
pub async fn verify_password(
    gate: &HashGate,
    password: String,
    hash: Option<String>,
) -> Result<bool, ApiError> {
    let memory = gate.memory.clone();
    gate.run(move || {
        static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let dummy = DUMMY.get_or_init(|| {
            new_salt()
                .ok()
                .and_then(|salt| memory.hash(b"not a password anyone has", &salt).ok())
                .unwrap_or_default()
        });
        let known = hash.is_some();
        let stored = hash.as_deref().unwrap_or(dummy);
        memory.verify(password.as_bytes(), stored) && known
    })
    .await
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
    // Exactly the rule the OpenAPI document states: no trimming, at most 254 characters.
    let e = email.to_lowercase();
    let valid = email.chars().count() <= 254
        && e.split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && !domain.is_empty())
        // Control characters (NUL among them) are refused alike on both backends: PostgreSQL
        // cannot store a NUL in text at all.
        && !e.chars().any(|c| c.is_whitespace() || c.is_control());
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

/// (user_id, password hash) of the account with this email, unless an operator disabled it
/// (a disabled account is signed in to as one that does not exist).
pub async fn find_user<T: SyncTx>(
    tx: &mut T,
    email: &str,
) -> Result<Option<(String, String)>, ApiError> {
    let mut q = Query::select();
    q.columns(["user_id", "password_hash"])
        .from("sync_users")
        .and_where(Expr::col("email").eq(email))
        .and_where(Expr::col("disabled_at").is_null());
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

/// The user of a live token, and when the token expires.
pub async fn token_user<T: SyncTx>(
    tx: &mut T,
    hash: &str,
) -> Result<Option<(String, Timestamp)>, ApiError> {
    let mut q = Query::select();
    q.columns(["user_id", "expires_at"])
        .from("sync_tokens")
        .and_where(Expr::col("token_hash").eq(hash))
        .and_where(Expr::col("revoked_at").is_null())
        .and_where(Expr::col("expires_at").gt(Timestamp::now().to_wire()));
    Ok(tx
        .fetch(&q, &[ColumnType::Text, ColumnType::Text])
        .await?
        .into_iter()
        .next()
        .and_then(|r| match (&r[0], &r[1]) {
            (Value::Text(u), Value::Text(e)) => {
                Some((u.clone(), Timestamp::parse_lenient(e).ok()?))
            }
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
