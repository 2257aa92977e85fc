//! `sync-server admin ...` against the database of a running `sync-server`, on both backends:
//! list, summary, disable and enable, set a new password, export, delete.

mod common;

use common::address;
use serde_json::{Value as Json, json};
use std::io::Write;
use std::process::{Command, Stdio};

/// `sync-server admin <args> --database <database>` with `stdin`: (success, stdout, stderr).
fn admin(database: &str, args: &[&str], stdin: &str) -> (bool, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sync-server"))
        .arg("admin")
        .args(args)
        .args(["--database", database])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The JSON an admin command that must succeed prints.
fn admin_json(database: &str, args: &[&str]) -> Json {
    let (ok, out, err) = admin(database, args, "");
    assert!(ok, "admin {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|_| panic!("admin {args:?} printed {out}"))
}

struct Http(String);

impl Http {
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Json) -> (u16, Json) {
        common::http(&self.0, method, path, token, &body.to_string())
    }

    fn login(&self, email: &str, password: &str) -> u16 {
        self.call(
            "POST",
            "/api/auth/login",
            None,
            json!({"email": email, "password": password}),
        )
        .0
    }

    /// Registers `email` and pushes one profile named `name`; the token.
    fn account_with_a_profile(&self, email: &str, name: &str) -> String {
        let (st, session) = self.call(
            "POST",
            "/api/auth/register",
            None,
            json!({"email": email, "password": "first secret"}),
        );
        assert_eq!(st, 201, "{session}");
        let token = session["token"].as_str().unwrap().to_owned();
        let at = "2026-11-28T07:49:06.123Z";
        let profile = json!({"remote_id": uuid::Uuid::now_v7().to_string(), "updated_at": at,
            "deleted_at": null, "name": name, "avatar": "a", "avatar_type": null, "avatar_style": null,
            "is_default": null, "settings_profile_id": null, "created_at": at});
        let push = json!({"device_id": uuid::Uuid::now_v7().to_string(), "schema_version": 1,
            "changes": {"profiles": [profile]}});
        let (st, res) = self.call("POST", "/api/sync/push", Some(&token), push);
        assert_eq!(st, 200, "{res}");
        token
    }

    fn pull_status(&self, token: &str) -> u16 {
        self.call("GET", "/api/sync/pull", Some(token), Json::Null)
            .0
    }
}

fn operator_commands_work_against_a_running_servers_database(database: &str) {
    let (_server, url) = common::server(database);
    let http = Http(address(&url));
    let alice = http.account_with_a_profile("alice@example.org", "Alice");
    let bob = http.account_with_a_profile("bob@example.org", "Bob");

    let list = admin_json(database, &["list", "--json"]);
    let emails: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["alice@example.org", "bob@example.org"], "{list}");
    assert_eq!(list[0]["records"], 1, "{list}");
    assert_eq!(list[0]["tokens"], 1, "{list}");
    let summary = admin_json(database, &["summary", "--json"]);
    assert_eq!(summary["accounts"], 2, "{summary}");
    assert_eq!(summary["records"]["profiles"], 2, "{summary}");
    let (ok, text, _) = admin(database, &["list"], "");
    assert!(ok && text.contains("alice@example.org\t"), "{text}");

    // Disabled: no sign-in, and its session ends; enabled again, it signs in.
    let (ok, _, err) = admin(database, &["disable", "ALICE@example.org"], "");
    assert!(ok, "{err}");
    assert_eq!(http.pull_status(&alice), 401);
    assert_eq!(http.login("alice@example.org", "first secret"), 401);
    assert_eq!(http.pull_status(&bob), 200, "another account is untouched");
    let (ok, _, err) = admin(database, &["enable", "alice@example.org"], "");
    assert!(ok, "{err}");
    assert_eq!(http.login("alice@example.org", "first secret"), 200);

    // A new password from standard input; a short one is refused and changes nothing.
    let (ok, _, err) = admin(database, &["set-password", "alice@example.org"], "short\n");
    assert!(!ok && err.contains("8 characters"), "{err}");
    assert_eq!(http.login("alice@example.org", "first secret"), 200);
    let (ok, _, err) = admin(
        database,
        &["set-password", "alice@example.org"],
        "second secret\n",
    );
    assert!(ok, "{err}");
    assert_eq!(http.login("alice@example.org", "first secret"), 401);
    assert_eq!(http.login("alice@example.org", "second secret"), 200);

    // The export is the one the account gets from the API.
    let (_, session) = http.call(
        "POST",
        "/api/auth/login",
        None,
        json!({"email": "alice@example.org", "password": "second secret"}),
    );
    let token = session["token"].as_str().unwrap();
    let (st, own) = http.call("GET", "/api/account/export", Some(token), Json::Null);
    assert_eq!(st, 200, "{own}");
    let exported = admin_json(database, &["export", "alice@example.org"]);
    assert_eq!(exported["records"], own["records"]);
    assert_eq!(exported["records"]["profiles"][0]["name"], "Alice");
    assert_eq!(exported["account"], own["account"]);

    // Deleting wants --yes; then the account and its records are gone, and nothing else.
    let (ok, _, err) = admin(database, &["delete", "alice@example.org"], "");
    assert!(!ok && err.contains("--yes"), "{err}");
    assert_eq!(
        admin_json(database, &["list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (ok, _, err) = admin(database, &["delete", "alice@example.org", "--yes"], "");
    assert!(ok, "{err}");
    let list = admin_json(database, &["list", "--json"]);
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["email"], "bob@example.org");
    let summary = admin_json(database, &["summary", "--json"]);
    assert_eq!(summary["records"]["profiles"], 1, "{summary}");
    assert_eq!(http.pull_status(token), 401);
    assert_eq!(http.pull_status(&bob), 200);

    let (ok, _, err) = admin(database, &["export", "nobody@example.org"], "");
    assert!(!ok && err.contains("no account"), "{err}");
}

#[test]
fn operator_commands_on_sqlite() {
    let dir = common::temp_dir("admin-cli");
    let database = format!("sqlite://{}", dir.join("server.sqlite").display());
    operator_commands_work_against_a_running_servers_database(&database);
    let (ok, _, err) = admin(
        &format!("sqlite://{}", dir.join("typo.sqlite").display()),
        &["list"],
        "",
    );
    assert!(
        !ok && err.contains("does not exist"),
        "a wrong path makes no database: {err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[test]
fn operator_commands_on_postgres() {
    let Ok(url) = std::env::var("SYNC_TEST_POSTGRES_URL") else {
        eprintln!("skipped: needs PostgreSQL; set SYNC_TEST_POSTGRES_URL (as .ci/run does)");
        return;
    };
    let schema = format!("admin_cli_{}", std::process::id());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let run = |sql: String| {
        rt.block_on(async {
            common::postgres(&url)
                .await
                .batch_execute(&sql)
                .await
                .unwrap();
        })
    };
    run(format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ));
    let sep = if url.contains('?') { '&' } else { '?' };
    let scoped = format!("{url}{sep}options=-c%20search_path%3D{schema}");
    operator_commands_work_against_a_running_servers_database(&scoped);
    run(format!("DROP SCHEMA {schema} CASCADE"));
}
