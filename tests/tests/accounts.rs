//! A person manages their own account, on both backends: a new password signs out the other
//! sessions, signing out everywhere ends them all, one session can be ended, the export holds
//! what a full pull gives, and deleting the account removes every row it owns and nothing of
//! anyone else's.

use axum::http::{Method, StatusCode};
use serde_json::{Value as Json, json};
use std::collections::BTreeMap;
use sync_runtime::protocol::paths;
use sync_runtime::schema::ColumnType;
use sync_runtime::server::db::SyncTx;
use sync_runtime::value::Value;
use tests::on_both_backends;
use tests::server::{TestServer, at, id, row, status};

const PASSWORD: &str = "correct horse";

async fn login(s: &TestServer, email: &str, password: &str) -> (StatusCode, Json) {
    s.call(
        Method::POST,
        paths::LOGIN,
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// A new session of `email`'s account.
async fn token(s: &TestServer, email: &str) -> String {
    let (st, b) = login(s, email, PASSWORD).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    b["token"].as_str().unwrap().to_owned()
}

/// Asks for a new password with `token`; the answer.
async fn change_password(
    s: &TestServer,
    token: Option<&str>,
    password: &str,
    new_password: &str,
) -> (StatusCode, Json) {
    let body = json!({"password": password, "new_password": new_password});
    s.call(Method::POST, paths::PASSWORD, token, Some(body))
        .await
}

/// Asks to delete the account of `token`, with `body`; the answer.
async fn delete_account(s: &TestServer, token: &str, body: Json) -> (StatusCode, Json) {
    s.call(Method::DELETE, paths::ACCOUNT, Some(token), Some(body))
        .await
}

/// Whether `token` is accepted (a pull answers).
async fn accepted(s: &TestServer, token: &str) -> bool {
    let (st, b) = s.pull_page(token, None, Some(1), None).await;
    assert!(
        st == StatusCode::OK || st == StatusCode::UNAUTHORIZED,
        "{b}"
    );
    st == StatusCode::OK
}

/// Records of every kind for an account: live ones, a tombstone, and a natural-key merge that
/// leaves an alias behind.
async fn seed(s: &TestServer, token: &str, name: &str) {
    let (device, profile) = (id(), id());
    let (watch, later, twin) = (id(), id(), id());
    s.push(
        token,
        &device,
        json!({
            "profiles": [row("profiles", &profile, &at(1), json!({"name": name, "avatar": "a"}))],
            "lists": [
                row("lists", &watch, &at(2), json!({"profile_id": profile, "name": "Watch"})),
                row("lists", &later, &at(3), json!({"profile_id": profile, "name": "Later"})),
            ],
            "list_items": [row("list_items", &id(), &at(4),
                json!({"list_id": watch, "meta_id": "tt1", "type": "movie", "title": "Été 🎬"}))],
        }),
    )
    .await;
    let results = s
        .push(
            token,
            &device,
            json!({
                "lists": [
                    row("lists", &later, &at(5), json!({"profile_id": profile, "name": "Later", "deleted_at": at(5)})),
                    row("lists", &twin, &at(6), json!({"profile_id": profile, "name": "Watch"})),
                ],
            }),
        )
        .await;
    assert_eq!(status(&results, "lists", 1), "merged", "{results}");
}

/// Rows per table whose `user_id` is `user`, over every table of the database that has that
/// column (found in the catalogue, so a table added later is counted too).
async fn rows_of(s: &TestServer, user: &str) -> BTreeMap<String, i64> {
    let counts = count_rows(s, user).await.unwrap();
    assert!(
        counts.len() >= 11,
        "the synced tables and the runtime's: {counts:?}"
    );
    counts
}

async fn count_rows(
    s: &TestServer,
    user: &str,
) -> Result<BTreeMap<String, i64>, sync_runtime::server::error::ApiError> {
    let user = user.to_owned();
    sync_runtime::with_tx!(&s.server.db, false, |tx| {
        let catalogue = match tx.dialect() {
            sync_runtime::ddl::Dialect::Sqlite => {
                "SELECT m.name FROM sqlite_master m, pragma_table_info(m.name) c \
                     WHERE m.type = 'table' AND c.name = 'user_id'"
            }
            sync_runtime::ddl::Dialect::Postgres => {
                "SELECT table_name::text FROM information_schema.columns \
                     WHERE column_name = 'user_id' AND table_schema = current_schema()"
            }
        };
        let tables = tx.query(catalogue, &[], &[ColumnType::Text]).await?;
        let mut counts = BTreeMap::new();
        for t in tables {
            let Value::Text(table) = &t[0] else { continue };
            let mut q = sea_query::Query::select();
            q.expr(sea_query::Expr::cust("COUNT(*)"))
                .from(table.clone())
                .and_where(sea_query::ExprTrait::eq(
                    sea_query::Expr::col("user_id"),
                    user.as_str(),
                ));
            let n = match tx.fetch(&q, &[ColumnType::Integer]).await?[0][0] {
                Value::Integer(n) => n,
                _ => 0,
            };
            counts.insert(table.clone(), n);
        }
        Ok(counts)
    })
}

async fn a_new_password_signs_out_every_other_session(s: TestServer) {
    let (user, first) = s.register("pw@example.org").await;
    let second = token(&s, "pw@example.org").await;
    let (st, b) = change_password(&s, Some(&first), "wrong guess", "a new secret").await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    let (st, b) = change_password(&s, Some(&first), PASSWORD, "short").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    let (st, b) = change_password(&s, None, PASSWORD, "a new secret").await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    assert!(
        accepted(&s, &first).await && accepted(&s, &second).await,
        "refused changes change nothing"
    );

    let (st, session) = change_password(&s, Some(&first), PASSWORD, "a new secret").await;
    assert_eq!(st, StatusCode::OK, "{session}");
    assert_eq!(session["user_id"], user.as_str());
    let fresh = session["token"].as_str().unwrap();
    assert!(
        !accepted(&s, &first).await,
        "the asking session's old token ends too"
    );
    assert!(!accepted(&s, &second).await, "the other session ends");
    assert!(accepted(&s, fresh).await, "the answer is a new session");
    assert_eq!(
        login(&s, "pw@example.org", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        login(&s, "pw@example.org", "a new secret").await.0,
        StatusCode::OK
    );
}
on_both_backends!(
    password_change,
    a_new_password_signs_out_every_other_session
);

async fn signing_out_everywhere_ends_every_session(s: TestServer) {
    let (_, first) = s.register("all@example.org").await;
    let second = token(&s, "all@example.org").await;
    let (_, other) = s.register("other@example.org").await;
    let (st, b) = s
        .call(Method::POST, paths::LOGOUT_ALL, Some(&second), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    assert!(!accepted(&s, &first).await);
    assert!(
        !accepted(&s, &second).await,
        "the caller's own session ends too"
    );
    assert!(
        accepted(&s, &other).await,
        "another account's session stays"
    );
}
on_both_backends!(logout_all, signing_out_everywhere_ends_every_session);

async fn sessions_are_listed_and_one_can_be_ended(s: TestServer) {
    let (_, first) = s.register("sessions@example.org").await;
    let second = token(&s, "sessions@example.org").await;
    let (_, stranger) = s.register("stranger@example.org").await;
    let (st, list) = s
        .call(Method::GET, paths::SESSIONS, Some(&first), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{list}");
    let sessions = list["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    assert!(
        sessions[0]["current"].as_bool().unwrap() && !sessions[1]["current"].as_bool().unwrap()
    );
    for s in sessions {
        assert!(
            s["created_at"].is_string() && s["expires_at"].is_string(),
            "{s}"
        );
        assert!(!s.to_string().contains(&first) && !s.to_string().contains(&second));
    }
    let other_id = sessions[1]["id"].as_str().unwrap();
    let path = |id: &str| paths::SESSION.replace("{id}", id);
    let (st, b) = s
        .call(Method::DELETE, &path(other_id), Some(&stranger), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "another account's session: {b}");
    let (st, b) = s
        .call(Method::DELETE, &path("not-an-id"), Some(&first), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "{b}");
    assert!(accepted(&s, &second).await);

    let (st, b) = s
        .call(Method::DELETE, &path(other_id), Some(&first), None)
        .await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    assert!(
        !accepted(&s, &second).await,
        "the ended session's token is refused"
    );
    assert!(accepted(&s, &first).await);
    let (_, list) = s
        .call(Method::GET, paths::SESSIONS, Some(&first), None)
        .await;
    assert_eq!(list["sessions"].as_array().unwrap().len(), 1, "{list}");
    let (st, _) = s
        .call(Method::DELETE, &path(other_id), Some(&first), None)
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND, "ended already");
}
on_both_backends!(sessions, sessions_are_listed_and_one_can_be_ended);

async fn deleting_an_account_removes_every_row_it_owns_and_no_other(s: TestServer) {
    let (gone, token_a) = s.register("gone@example.org").await;
    let (kept, token_b) = s.register("kept@example.org").await;
    seed(&s, &token_a, "Alice").await;
    seed(&s, &token_b, "Bob").await;
    let (before_a, before_b) = (rows_of(&s, &gone).await, rows_of(&s, &kept).await);
    for table in [
        "profiles",
        "lists",
        "list_items",
        "sync_aliases",
        "sync_tokens",
        "sync_users",
    ] {
        assert!(
            before_a[table] > 0,
            "{table} holds rows of the account: {before_a:?}"
        );
    }
    let (pulled_b, _) = s.pull_all(&token_b, None, 1000, None).await;

    let (st, b) = delete_account(&s, &token_a, json!({"password": "a wrong one"})).await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{b}");
    let (st, b) = delete_account(&s, &token_a, json!({})).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(
        rows_of(&s, &gone).await,
        before_a,
        "a refused deletion deletes nothing"
    );

    let (st, b) = delete_account(&s, &token_a, json!({"password": PASSWORD})).await;
    assert_eq!(st, StatusCode::NO_CONTENT, "{b}");
    let after_a = rows_of(&s, &gone).await;
    assert!(
        after_a.values().all(|n| *n == 0),
        "rows of the account remain: {after_a:?}"
    );
    assert_eq!(
        rows_of(&s, &kept).await,
        before_b,
        "the other account is untouched"
    );
    assert_eq!(s.pull_all(&token_b, None, 1000, None).await.0, pulled_b);
    assert!(!accepted(&s, &token_a).await);
    assert_eq!(
        login(&s, "gone@example.org", PASSWORD).await.0,
        StatusCode::UNAUTHORIZED
    );
    let (st, b) = delete_account(&s, &token_a, json!({"password": PASSWORD})).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{b}");
    // The email is free again, for a new and empty account.
    let (again, fresh) = s.register("gone@example.org").await;
    assert_ne!(again, gone);
    let (rows, _) = s.pull_all(&fresh, None, 1000, None).await;
    assert!(rows.is_empty(), "{rows:?}");
}
on_both_backends!(
    delete_account,
    deleting_an_account_removes_every_row_it_owns_and_no_other
);

/// Rows per table, sorted by `remote_id`.
fn by_table(rows: impl IntoIterator<Item = (String, Json)>) -> BTreeMap<String, Vec<Json>> {
    let mut out: BTreeMap<String, Vec<Json>> = BTreeMap::new();
    for (table, row) in rows {
        out.entry(table).or_default().push(row);
    }
    for rows in out.values_mut() {
        rows.sort_by_key(|r| r["remote_id"].as_str().unwrap_or_default().to_owned());
    }
    out
}

async fn the_export_holds_what_a_full_pull_gives(s: TestServer) {
    let (user, token) = s.register("export@example.org").await;
    let (_, other) = s.register("someone@example.org").await;
    seed(&s, &token, "Alice").await;
    seed(&s, &other, "Someone").await;
    let (st, export) = s
        .call(Method::GET, paths::ACCOUNT_EXPORT, Some(&token), None)
        .await;
    assert_eq!(st, StatusCode::OK, "{export}");
    assert_eq!(export["account"]["user_id"], user.as_str());
    assert_eq!(export["account"]["email"], "export@example.org");
    assert!(!export.to_string().contains("password"), "{export}");
    let records = export["records"].as_object().unwrap();
    assert_eq!(records.len(), 8, "every synced table is present");
    let exported = by_table(records.iter().flat_map(|(t, rows)| {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| (t.clone(), r.clone()))
    }));
    // A full pull page by page, as a device pulls; tombstones it may carry are not records.
    let (pulled, _) = s.pull_all(&token, None, 2, None).await;
    let pulled = by_table(
        pulled
            .into_iter()
            .filter(|(_, r)| r["deleted_at"].is_null()),
    );
    assert_eq!(exported, pulled);
    assert_eq!(
        exported["lists"].len(),
        1,
        "the tombstone and the merged twin are not records"
    );
    assert!(
        !export.to_string().contains("Someone"),
        "nothing of another account"
    );
    let (st, _) = s.call(Method::GET, paths::ACCOUNT_EXPORT, None, None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
}
on_both_backends!(export, the_export_holds_what_a_full_pull_gives);
