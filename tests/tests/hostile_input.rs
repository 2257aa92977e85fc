//! Input that is well-formed enough to reach the push, but that no backend should store: a NUL
//! in text, a value over the size limit, a stamp from a clock far ahead, a table named twice.
//! Each is refused with the protocol's answer, the same on SQLite and PostgreSQL.

use axum::http::{Method, StatusCode};
use serde_json::{Value as Json, json};
use sync_runtime::Timestamp;
use sync_runtime::schema::ColumnType;
use tests::server::{Backend, TestServer, at, id, row};
use tests::{by_backend, on_both_backends};

fn first(results: &Json, table: &str) -> Json {
    results[table][0].clone()
}

async fn a_nul_in_any_text_rejects_its_row_alone(s: TestServer) {
    let (_, token) = s.register("nul@example.org").await;
    let device = id();
    let (settings, profile, list) = (id(), id(), id());
    s.push(
        &token,
        &device,
        json!({
            "settings_profiles": [row("settings_profiles", &settings, &at(0), json!({"name": "S"}))],
            "profiles": [row("profiles", &profile, &at(0), json!({"name": "P", "avatar": "p"}))],
            "lists": [row("lists", &list, &at(0), json!({"profile_id": profile, "name": "L"}))],
        }),
    )
    .await;
    // Every text column of every table, and the add-on key.
    let parents = json!({"profile_id": profile, "settings_profile_id": settings, "list_id": list,
        "addon_id": "https://addon.example/manifest.json"});
    for table in entities::app().schema.synced() {
        for c in table
            .columns
            .iter()
            .filter(|c| c.on_wire() && c.ty == ColumnType::Text && c.reference.is_none())
            .chain(
                table
                    .columns
                    .iter()
                    .filter(|c| c.reference.as_ref().is_some_and(|r| r.by_key.is_some())),
            )
        {
            let mut fields = json!({});
            for col in &table.columns {
                if let Some(v) = parents.get(&col.name)
                    && col.reference.is_some()
                {
                    fields[&col.name] = v.clone();
                }
            }
            let good = row(&table.name, &id(), &at(1), fields.clone());
            fields[&c.name] = json!("before\u{0}after");
            let bad = row(&table.name, &id(), &at(1), fields);
            let (st, b) = s
                .push_raw(&token, &device, json!({table.name.clone(): [bad, good]}))
                .await;
            assert_eq!(st, StatusCode::OK, "{}.{}: {b}", table.name, c.name);
            let r = &b["results"][&table.name];
            assert_eq!(r[0]["status"], "rejected", "{}.{}: {b}", table.name, c.name);
            assert!(
                r[0]["message"].as_str().unwrap().contains("NUL"),
                "{}.{}: {b}",
                table.name,
                c.name
            );
            assert_ne!(
                r[1]["status"], "rejected",
                "the other row is not held back: {b}"
            );
        }
    }
    // A NUL inside a JSON document is an escape in its text: stored and returned as sent.
    let doc = id();
    let r = s
        .push(
            &token,
            &device,
            json!({"settings_profiles": [row("settings_profiles", &doc, &at(2),
                json!({"name": "J", "tmdb_catalog_config": {"k": "a\u{0}b"}}))]}),
        )
        .await;
    assert_eq!(first(&r, "settings_profiles")["status"], "applied", "{r}");
}
on_both_backends!(nul_in_text, a_nul_in_any_text_rejects_its_row_alone);

/// A JSON document is stored and pulled as the text it was sent as (spacing, key order, digits),
/// and one that a JSON tree cannot hold (a number beyond a double, a lone surrogate escape) is
/// refused for its row alone: stored, it would fail every device that reads it.
async fn documents_travel_as_sent_and_unreadable_ones_are_refused_alone(s: TestServer) {
    let (_, token) = s.register("documents@example.org").await;
    let device = id();
    let kept = r#"{"z": 1,  "a": [1.50, "\u00e9", "é"], "n": 123456789012345678901234567890}"#;
    let rows = [
        (id(), kept),
        (id(), r#"{"big": 1e400}"#),
        (id(), r#"["\ud800"]"#),
        (id(), "null"),
    ];
    let body: Vec<String> = rows
        .iter()
        .enumerate()
        .map(|(i, (rid, doc))| {
            // The row as the helper fills it, with the document's text put in as it is.
            let fields = json!({"name": format!("D{i}"), "tmdb_catalog_config": "DOCUMENT"});
            row("settings_profiles", rid, &at(i as i64), fields)
                .to_string()
                .replace("\"DOCUMENT\"", doc)
        })
        .collect();
    let body = format!(
        r#"{{"device_id": "{device}", "schema_version": 1, "changes": {{"settings_profiles": [{}]}}}}"#,
        body.join(", ")
    );
    let (st, b) = s.push_body(&token, body).await;
    assert_eq!(st, StatusCode::OK, "{b}");
    let results = &b["results"]["settings_profiles"];
    let statuses: Vec<&str> = (0..4)
        .map(|i| results[i]["status"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["applied", "rejected", "rejected", "applied"],
        "{b}"
    );
    for i in [1, 2] {
        assert!(
            results[i]["message"]
                .as_str()
                .unwrap()
                .contains("tmdb_catalog_config"),
            "{b}"
        );
    }
    let (st, page) = s.pull_text(&token).await;
    assert_eq!(st, StatusCode::OK, "{page}");
    assert!(
        page.contains(&format!(r#""tmdb_catalog_config":{kept}"#)),
        "the document as sent: {page}"
    );
    let page: Json = serde_json::from_str(&page).unwrap();
    let pulled = page["changes"]["settings_profiles"].as_array().unwrap();
    let ids: Vec<&str> = pulled
        .iter()
        .map(|r| r["remote_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [rows[0].0.as_str(), rows[3].0.as_str()],
        "nothing else stored"
    );
    assert_eq!(pulled[1].get("tmdb_catalog_config"), Some(&Json::Null));
}
on_both_backends!(
    documents,
    documents_travel_as_sent_and_unreadable_ones_are_refused_alone
);

async fn a_nul_in_an_email_is_400(s: TestServer) {
    for path in ["/api/auth/register", "/api/auth/login"] {
        let (st, b) = s
            .call(
                Method::POST,
                path,
                None,
                Some(json!({"email": "a\u{0}b@example.org", "password": "long enough"})),
            )
            .await;
        assert_eq!(
            (st, b["error"].as_str()),
            (StatusCode::BAD_REQUEST, Some("bad_request")),
            "{path}: {b}"
        );
    }
}
on_both_backends!(nul_in_email, a_nul_in_an_email_is_400);

async fn a_table_named_twice_in_changes_is_400(s: TestServer) {
    let (_, token) = s.register("twice@example.org").await;
    let (a, b) = (id(), id());
    let body = format!(
        r#"{{"device_id": "{}", "schema_version": 1, "changes": {{"settings_profiles": [{}], "settings_profiles": [{}]}}}}"#,
        id(),
        row("settings_profiles", &a, &at(0), json!({"name": "A"})),
        row("settings_profiles", &b, &at(0), json!({"name": "B"})),
    );
    let (st, body) = s.push_body(&token, body).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("twice"),
        "{body}"
    );
    assert!(
        s.pull_all(&token, None, 1000, None).await.0.is_empty(),
        "nothing was stored"
    );
}
on_both_backends!(table_twice, a_table_named_twice_in_changes_is_400);

async fn a_stamp_far_ahead_of_the_server_clock_is_rejected_and_the_record_stays_editable(
    s: TestServer,
) {
    let (_, token) = s.register("future@example.org").await;
    let device = id();
    let sp = id();
    let now = Timestamp::now();
    let push = |stamp: String, name: &str| json!({"settings_profiles": [row("settings_profiles", &sp, &stamp, json!({"name": name}))]});
    let r = s.push(&token, &device, push(now.to_wire(), "today")).await;
    assert_eq!(first(&r, "settings_profiles")["status"], "applied");
    let r = s
        .push(
            &token,
            &device,
            push("9999-12-31T23:59:59.999Z".into(), "broken clock"),
        )
        .await;
    let answer = first(&r, "settings_profiles");
    assert_eq!(answer["status"], "rejected", "{r}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("1 day(s) ahead"),
        "{r}"
    );
    // A tombstone stamped far ahead likewise.
    let mut dead = row(
        "settings_profiles",
        &sp,
        &now.add_millis(1).to_wire(),
        json!({"name": "x"}),
    );
    dead["deleted_at"] = json!("9999-01-01T00:00:00.000Z");
    let r = s
        .push(&token, &device, json!({"settings_profiles": [dead]}))
        .await;
    assert_eq!(first(&r, "settings_profiles")["status"], "rejected", "{r}");
    // A clock a few hours fast is within the bound; the record can still be edited after it.
    let r = s
        .push(
            &token,
            &device,
            push(now.add_millis(3 * 3_600_000).to_wire(), "fast clock"),
        )
        .await;
    assert_eq!(first(&r, "settings_profiles")["status"], "applied", "{r}");
    let r = s
        .push(
            &token,
            &device,
            push(now.add_millis(3 * 3_600_000 + 1).to_wire(), "edited"),
        )
        .await;
    assert_eq!(first(&r, "settings_profiles")["status"], "applied", "{r}");
}
on_both_backends!(
    future_stamp,
    a_stamp_far_ahead_of_the_server_clock_is_rejected_and_the_record_stays_editable
);

async fn values_over_the_size_limit_are_rejected(s: TestServer) {
    let (_, token) = s.register("big@example.org").await;
    let device = id();
    let limit = s.server.config.max_value_bytes;
    let big = "x".repeat(limit + 1);
    let (a, b, c) = (id(), id(), id());
    let r = s
        .push(
            &token,
            &device,
            json!({"settings_profiles": [
                row("settings_profiles", &a, &at(0), json!({"name": big})),
                row("settings_profiles", &b, &at(0), json!({"name": "J", "tmdb_catalog_config": {"pad": big}})),
                row("settings_profiles", &c, &at(0), json!({"name": "x".repeat(limit)})),
            ]}),
        )
        .await;
    for i in 0..2 {
        assert_eq!(r["settings_profiles"][i]["status"], "rejected", "{i}");
        assert!(
            r["settings_profiles"][i]["message"]
                .as_str()
                .unwrap()
                .contains("at most"),
            "{i}"
        );
    }
    assert_eq!(
        r["settings_profiles"][2]["status"], "applied",
        "at the limit"
    );
    let (st, health) = s.call(Method::GET, "/api/health", None, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(health["max_value_bytes"], json!(limit));
}
on_both_backends!(value_size, values_over_the_size_limit_are_rejected);

/// A pull's query string is read as a form (percent-encoding and `+` decoded, unknown keys
/// ignored); anything that does not read as one, or repeats a key, is a 400 with the JSON
/// error, and changes nothing: the same token pulls the same page after it.
async fn a_malformed_pull_query_is_400_and_changes_nothing(s: TestServer) {
    let (_, token) = s.register("query@example.org").await;
    let device = id();
    let profile = row(
        "profiles",
        &id(),
        &at(0),
        json!({"name": "Q", "avatar": "Q", "is_default": false}),
    );
    s.push(&token, &device, json!({"profiles": [profile]}))
        .await;
    let (st, first) = s.pull_query(&token, "limit=1").await;
    assert_eq!(st, StatusCode::OK, "{first}");
    let cursor = first["cursor"].as_str().unwrap().to_owned();
    for q in [
        "limit=abc",
        "limit=0",
        "limit=-1",
        "limit=1.5",
        "limit=1&limit=2",
        "since=a&since=b",
        "wait=%FF",
        "since=%ZZ",
        "since=c1.1.0%00",
        "device_id=%FF%FE",
        "device_id=not-a-uuid",
    ] {
        let (st, body) = s.pull_query(&token, q).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{q}: {body}");
        assert_eq!(body["error"], "bad_request", "{q}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Percent-encoded, a cursor is the same cursor; an unknown key is ignored.
    let encoded = cursor.replace('.', "%2E");
    for q in [
        format!("since={encoded}"),
        format!("since={cursor}&colour=blue"),
    ] {
        let (st, page) = s.pull_query(&token, &q).await;
        assert_eq!(st, StatusCode::OK, "{q}: {page}");
        assert_eq!(page["has_more"], false, "{q}");
        assert_eq!(page["cursor"], cursor.as_str(), "{q}");
    }
    let (st, again) = s.pull_query(&token, "limit=1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(again["changes"], first["changes"]);
    assert_eq!(again["cursor"], first["cursor"]);
}
on_both_backends!(
    malformed_query,
    a_malformed_pull_query_is_400_and_changes_nothing
);

/// The answers to a run of awkward inputs, with what differs by nature (times, tokens, user
/// ids) left out.
async fn answers(s: &TestServer, ids: &[String]) -> Vec<Json> {
    let mut out = Vec::new();
    let (_, token) = s.register("same@example.org").await;
    let device = &ids[0];
    let strip = |mut b: Json| {
        if let Some(m) = b.as_object_mut() {
            for k in ["server_time", "token", "user_id", "expires_at", "cursor"] {
                m.remove(k);
            }
        }
        b
    };
    let texts = [
        "plain",
        "é 🎬 中文",
        "a\u{0}b",
        "\u{1}\u{1f}",
        "'; DROP TABLE profiles; --",
        "\\u0000",
        "",
        " ",
    ];
    for (i, t) in texts.iter().enumerate() {
        let rid = &ids[i + 1];
        let (st, b) = s
            .push_raw(
                &token,
                device,
                json!({"settings_profiles": [row("settings_profiles", rid, &at(i as i64), json!({"name": t,
                    "tmdb_catalog_config": {"t": t, "n": [1.5, -0.0, 1e300, i64::MAX]}}))]}),
            )
            .await;
        out.push(json!([st.as_u16(), strip(b)]));
    }
    for email in [
        "x\u{0}@example.org",
        "\u{7f}@example.org",
        "ok@exa\u{200b}mple.org",
    ] {
        let (st, b) = s
            .call(
                Method::POST,
                "/api/auth/register",
                None,
                Some(json!({"email": email, "password": "long enough"})),
            )
            .await;
        out.push(json!([st.as_u16(), strip(b)]));
    }
    for q in [
        "limit=1",
        "since=c1.1.0",
        "limit=99999999999999999999",
        "device_id=%00",
    ] {
        let (st, b) = s.pull_query(&token, q).await;
        let mut b = strip(b);
        // Rows carry their writer and stamps, which are the same inputs: kept.
        if let Some(changes) = b.get_mut("changes") {
            *changes = json!(changes.as_object().map(|m| {
                m.values()
                    .map(|v| v.as_array().map_or(0, Vec::len))
                    .sum::<usize>()
            }));
        }
        out.push(json!([st.as_u16(), q, b]));
    }
    out
}

#[cfg_attr(
    not(postgres),
    ignore = "needs PostgreSQL: set SYNC_TEST_POSTGRES_URL (.ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_backends_answer_the_same_awkward_inputs_alike() {
    let ids: Vec<String> = (0..16).map(|_| id()).collect();
    let Some(lite) = TestServer::start(Backend::Sqlite, "same_answers").await else {
        return;
    };
    let on_sqlite = answers(&lite, &ids).await;
    for a in &on_sqlite {
        assert!(a[0].as_u64().unwrap() < 500, "{a}");
    }
    let Some(pg) = TestServer::start(Backend::Postgres, "same_answers").await else {
        return;
    };
    let on_postgres = answers(&pg, &ids).await;
    for (l, p) in on_sqlite.iter().zip(&on_postgres) {
        assert_eq!(l, p, "SQLite and PostgreSQL answer differently");
    }
}

by_backend!(
    pull_pages_stop_at_the_byte_limit_but_hold_at_least_one_record,
    page_bytes
);
/// Pages of at most `max_page_bytes` (900): small records share a page, a record bigger than a
/// page travels alone, and every record comes once.
async fn page_bytes(backend: Backend) {
    let config = sync_runtime::server::ServerConfig {
        max_page_bytes: 900,
        ..Default::default()
    };
    let Some(s) = TestServer::start_with(backend, "page_bytes", entities::app(), config).await
    else {
        return;
    };
    let (_, token) = s.register("page-bytes@example.org").await;
    let device = id();
    let mut sent = Vec::new();
    for i in 0..12 {
        let rid = id();
        // Every fourth record is bigger than a page on its own.
        let name = if i % 4 == 0 {
            "x".repeat(2000)
        } else {
            format!("small {i}")
        };
        let r = s
            .push(
                &token,
                &device,
                json!({"settings_profiles": [row("settings_profiles", &rid, &at(i), json!({"name": name}))]}),
            )
            .await;
        assert_eq!(first(&r, "settings_profiles")["status"], "applied");
        sent.push(rid);
    }
    let mut cursor: Option<String> = None;
    let mut pulled = Vec::new();
    let mut sizes = Vec::new();
    loop {
        let (st, page) = s
            .pull_page(&token, cursor.as_deref(), Some(1000), None)
            .await;
        assert_eq!(st, StatusCode::OK, "{page}");
        let rows = page["changes"]["settings_profiles"].as_array().unwrap();
        assert!(!rows.is_empty(), "a page holds at least one record");
        let big = rows.iter().any(|r| r["name"].as_str().unwrap().len() > 900);
        assert!(
            !big || rows.len() == 1,
            "a record bigger than a page travels alone"
        );
        sizes.push(rows.len());
        pulled.extend(
            rows.iter()
                .map(|r| r["remote_id"].as_str().unwrap().to_owned()),
        );
        cursor = Some(page["cursor"].as_str().unwrap().to_owned());
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(pulled, sent, "every record once, in order");
    assert!(
        sizes.iter().any(|n| *n > 1),
        "small records share a page: {sizes:?}"
    );
    assert!(sizes.len() >= 6, "cut by bytes, not by rows: {sizes:?}");
    let (_, health) = s.call(Method::GET, "/api/health", None, None).await;
    assert_eq!(health["max_page_bytes"], 900);
}

/// Two accounts push a record of the same new id at the same moment (a forged or reused id),
/// each beside a record of its own. One account gets it; the other's push is refused whole with
/// 403, and nothing of it is stored. On PostgreSQL both pushes run at once, so the loser often
/// finds the record only when its upsert meets the winner's, the upsert's own guard.
async fn two_accounts_racing_for_one_new_id_leave_it_to_one(s: TestServer) {
    let (_, alice) = s.register("race-a@example.org").await;
    let (_, bob) = s.register("race-b@example.org").await;
    let (alice_device, bob_device) = (id(), id());
    let push = |token: String, device: String, shared: String, own: String, name: &'static str| {
        let s = &s;
        async move {
            let rows = json!({"settings_profiles": [
                row("settings_profiles", &own, &at(1), json!({"name": name})),
                row("settings_profiles", &shared, &at(2), json!({"name": name})),
            ]});
            s.push_raw(&token, &device, rows).await
        }
    };
    let mut owned = [Vec::new(), Vec::new()];
    for _ in 0..20 {
        let (shared, alice_own, bob_own) = (id(), id(), id());
        let ((a, a_body), (b, b_body)) = tokio::join!(
            push(
                alice.clone(),
                alice_device.clone(),
                shared.clone(),
                alice_own.clone(),
                "alice"
            ),
            push(
                bob.clone(),
                bob_device.clone(),
                shared.clone(),
                bob_own.clone(),
                "bob"
            ),
        );
        let statuses = [a, b];
        assert!(
            statuses.contains(&StatusCode::OK) && statuses.contains(&StatusCode::FORBIDDEN),
            "one wins, one is refused: {a} {a_body} / {b} {b_body}"
        );
        let loser_body = if a == StatusCode::OK {
            &b_body
        } else {
            &a_body
        };
        assert_eq!(loser_body["error"], "forbidden", "{loser_body}");
        let winner = usize::from(a != StatusCode::OK);
        owned[winner].extend([shared, if winner == 0 { alice_own } else { bob_own }]);
    }
    for (token, owned, name) in [(&alice, &owned[0], "alice"), (&bob, &owned[1], "bob")] {
        let (rows, _) = s.pull_all(token, None, 1000, None).await;
        let mut stored: Vec<&str> = rows
            .iter()
            .map(|(table, r)| {
                assert_eq!(table, "settings_profiles");
                assert_eq!(r["name"], name, "only the account's own writes: {r}");
                r["remote_id"].as_str().unwrap()
            })
            .collect();
        stored.sort_unstable();
        let mut expected: Vec<&str> = owned.iter().map(String::as_str).collect();
        expected.sort_unstable();
        assert_eq!(
            stored, expected,
            "{name} holds what it won, and nothing of what it lost"
        );
    }
}
on_both_backends!(
    racing_for_one_id,
    two_accounts_racing_for_one_new_id_leave_it_to_one
);
