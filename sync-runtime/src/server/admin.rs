//! An operator's commands on a server's database (`sync-server admin ...`): list the accounts,
//! show a summary, disable or enable one, set a new password for one, export one, delete one.
//! They run against the database a running server uses, on either backend, through the same
//! storage code as the endpoints; each answers the text to print.

use crate::server::error::ApiError;
use crate::server::routes::check_password;
use crate::server::{Server, account_routes, accounts, auth};
use std::fmt::Write as _;

/// One operator command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdminCommand {
    /// Every account: email, id, when created, disabled or not, sessions, records.
    List,
    /// Accounts, sessions, records and tombstones per table.
    Summary,
    /// The account cannot sign in, and its sessions end.
    Disable {
        email: String,
    },
    Enable {
        email: String,
    },
    /// A new password; the account's sessions end.
    SetPassword {
        email: String,
        password: String,
    },
    /// The account's data as JSON, as `GET /api/account/export` answers it.
    Export {
        email: String,
    },
    /// The account and everything it holds.
    Delete {
        email: String,
    },
}

/// Why a command did nothing.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("no account has the email `{0}`")]
    NoSuchAccount(String),
    #[error("{0}")]
    Refused(String),
    #[error("the database failed: {0}")]
    Database(String),
}

impl From<ApiError> for AdminError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Internal(m) => AdminError::Database(m),
            other => AdminError::Refused(other.to_string()),
        }
    }
}

impl From<crate::server::db::DbError> for AdminError {
    fn from(e: crate::server::db::DbError) -> Self {
        AdminError::Database(e.to_string())
    }
}

/// Runs `command` on `server`'s database; the answer is the text to print (`json`: JSON).
pub async fn run(server: &Server, command: AdminCommand, json: bool) -> Result<String, AdminError> {
    match command {
        AdminCommand::List => list(server, json).await,
        AdminCommand::Summary => summary(server, json).await,
        AdminCommand::Disable { email } => set_disabled(server, &email, true).await,
        AdminCommand::Enable { email } => set_disabled(server, &email, false).await,
        AdminCommand::SetPassword { email, password } => {
            set_password(server, &email, password).await
        }
        AdminCommand::Export { email } => {
            let user = user_id(server, &email).await?;
            let document = account_routes::export_document(server, &user)
                .await?
                .ok_or_else(|| AdminError::NoSuchAccount(email.clone()))?;
            serde_json::to_string(&document).map_err(|e| AdminError::Database(e.to_string()))
        }
        AdminCommand::Delete { email } => {
            let user = user_id(server, &email).await?;
            let rows = accounts::delete_now(server, &user)
                .await?
                .ok_or_else(|| AdminError::NoSuchAccount(email.clone()))?;
            tracing::info!(%user, rows, "account deleted by the operator");
            Ok(format!("deleted {email} ({user}): {rows} rows"))
        }
    }
}

/// The id of the account with `email` (compared as sign-in compares it).
async fn user_id(server: &Server, email: &str) -> Result<String, AdminError> {
    let normalised = auth::normalise_email(email)?;
    let found = crate::with_tx!(&server.db, false, |tx| Ok::<_, ApiError>(
        accounts::account_by_email(tx, &normalised).await?
    ))?;
    found
        .map(|a| a.user_id)
        .ok_or_else(|| AdminError::NoSuchAccount(email.to_owned()))
}

async fn list(server: &Server, json: bool) -> Result<String, AdminError> {
    let app = server.app;
    let lines = crate::with_tx!(&server.db, false, |tx| Ok::<_, ApiError>(
        accounts::list_accounts(tx, &app.schema).await?
    ))?;
    if json {
        return serde_json::to_string(&lines).map_err(|e| AdminError::Database(e.to_string()));
    }
    let mut out =
        String::from("email\tuser_id\tcreated_at\tdisabled_at\tsessions\tlast_used_at\trecords\n");
    for l in &lines {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}",
            l.account.email,
            l.account.user_id,
            l.account.created_at,
            l.account.disabled_at.as_deref().unwrap_or("-"),
            l.tokens,
            l.last_used_at.as_deref().unwrap_or("-"),
            l.records
        );
    }
    Ok(out)
}

async fn summary(server: &Server, json: bool) -> Result<String, AdminError> {
    let app = server.app;
    let s = crate::with_tx!(&server.db, false, |tx| Ok::<_, ApiError>(
        accounts::summary(tx, &app.schema).await?
    ))?;
    if json {
        return serde_json::to_string(&s).map_err(|e| AdminError::Database(e.to_string()));
    }
    let mut out = format!(
        "schema version {}\naccounts {} ({} disabled)\nsessions {}\n",
        app.schema.version(),
        s.accounts,
        s.disabled_accounts,
        s.live_tokens
    );
    for (table, records) in &s.records {
        let tombstones = s.tombstones.get(table).copied().unwrap_or(0);
        let _ = writeln!(out, "{table}: {records} records, {tombstones} tombstones");
    }
    Ok(out)
}

async fn set_disabled(server: &Server, email: &str, disabled: bool) -> Result<String, AdminError> {
    let user = user_id(server, email).await?;
    crate::with_tx!(&server.db, true, |tx| Ok::<_, ApiError>(
        accounts::set_disabled(tx, &user, disabled).await?
    ))?;
    Ok(if disabled {
        format!("disabled {email}: it cannot sign in, and its sessions ended")
    } else {
        format!("enabled {email}")
    })
}

async fn set_password(
    server: &Server,
    email: &str,
    password: String,
) -> Result<String, AdminError> {
    check_password(&password)?;
    let user = user_id(server, email).await?;
    let hash = auth::hash_password(&server.hashing, password).await?;
    crate::with_tx!(&server.db, true, |tx| {
        accounts::set_password_hash(tx, &user, &hash).await?;
        Ok::<_, ApiError>(accounts::revoke_all_tokens(tx, &user).await?)
    })?;
    Ok(format!(
        "set a new password for {email}; its sessions ended"
    ))
}
