//! Natural keys within one push, on both backends: the server reads the holders of a batch's
//! keys in a few statements, and each row's check must still see what the rows before it in
//! the same push wrote.

use serde_json::{Value as Json, json};
use tests::on_both_backends;
use tests::server::{TestServer, at, id, row, status};

fn list(remote_id: &str, ms: i64, profile: &str, name: &str) -> Json {
    row(
        "lists",
        remote_id,
        &at(ms),
        json!({"profile_id": profile, "name": name}),
    )
}

/// An account with one profile; returns (token, device, profile).
async fn account(s: &TestServer, email: &str) -> (String, String, String) {
    let (_, token) = s.register(email).await;
    let (device, profile) = (id(), id());
    let p = row(
        "profiles",
        &profile,
        &at(0),
        json!({"name": "P", "avatar": "p"}),
    );
    s.push(&token, &device, json!({"profiles": [p]})).await;
    (token, device, profile)
}

async fn rows_of_one_push_sharing_a_natural_key_are_merged(s: TestServer) {
    let (token, device, profile) = account(&s, "same-key@example.org").await;
    let (first, second) = (id(), id());
    let r = s
        .push(
            &token,
            &device,
            json!({"lists": [list(&first, 10, &profile, "Favourites"), list(&second, 20, &profile, "Favourites")]}),
        )
        .await;
    assert_eq!(status(&r, "lists", 0), "applied");
    assert_eq!(status(&r, "lists", 1), "merged", "{r}");
    assert_eq!(r["lists"][1]["canonical_id"], json!(first));
}
on_both_backends!(
    same_key_in_one_push,
    rows_of_one_push_sharing_a_natural_key_are_merged
);

async fn a_key_given_up_earlier_in_the_push_is_free_for_a_later_row(s: TestServer) {
    let (token, device, profile) = account(&s, "given-up@example.org").await;
    let old = id();
    s.push(
        &token,
        &device,
        json!({"lists": [list(&old, 10, &profile, "A")]}),
    )
    .await;
    // The record holding "A" is renamed, then a new record takes "A", in one push.
    let new = id();
    let r = s
        .push(
            &token,
            &device,
            json!({"lists": [list(&old, 20, &profile, "B"), list(&new, 20, &profile, "A")]}),
        )
        .await;
    assert_eq!(status(&r, "lists", 0), "applied", "{r}");
    assert_eq!(status(&r, "lists", 1), "applied", "{r}");
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    let names: Vec<(&Json, &Json)> = rows
        .iter()
        .filter(|(t, _)| t == "lists")
        .map(|(_, r)| (&r["remote_id"], &r["name"]))
        .collect();
    assert_eq!(names.len(), 2, "two records: {names:?}");
}
on_both_backends!(
    key_given_up,
    a_key_given_up_earlier_in_the_push_is_free_for_a_later_row
);

async fn a_key_taken_earlier_in_the_push_merges_a_later_row(s: TestServer) {
    let (token, device, profile) = account(&s, "taken@example.org").await;
    let old = id();
    s.push(
        &token,
        &device,
        json!({"lists": [list(&old, 10, &profile, "A")]}),
    )
    .await;
    // The record is renamed to "B", and a new record named "B" comes after it in one push.
    let new = id();
    let r = s
        .push(
            &token,
            &device,
            json!({"lists": [list(&old, 20, &profile, "B"), list(&new, 30, &profile, "B")]}),
        )
        .await;
    assert_eq!(status(&r, "lists", 0), "applied", "{r}");
    assert_eq!(status(&r, "lists", 1), "merged", "{r}");
    assert_eq!(r["lists"][1]["canonical_id"], json!(old));
}
on_both_backends!(
    key_taken,
    a_key_taken_earlier_in_the_push_merges_a_later_row
);

/// Natural-key text that quoting, escaping or normalising would break. On PostgreSQL a push's
/// keys travel to the lookup as one JSON document; on SQLite as bound parameters.
const AWKWARD_NAMES: [&str; 20] = [
    "plain",
    "O'Brien",
    "say \"hi\"",
    "back\\slash",
    "back\\\\slash",
    "\\u0041",
    "A",
    "tab\there",
    "line\nbreak",
    "\u{1}\u{1f}\u{7f}",
    "\u{e9}",
    "e\u{301}",
    "trailing ",
    "trailing",
    "'; DROP TABLE lists; --",
    "{\"name\": null}",
    "null",
    "",
    "a\u{200b}b 🎬 中文",
    "%_*?",
];

/// More keys than one lookup statement takes, each an awkward name made distinct by a prefix
/// (which keeps a trailing space or a combining accent where it was).
fn awkward_names() -> Vec<String> {
    let long = "x\\\"'".repeat(250);
    (0..55)
        .flat_map(|k| {
            AWKWARD_NAMES
                .iter()
                .map(move |n| format!("{k}{n}"))
                .chain(std::iter::once(format!("{k}{long}")))
        })
        .collect()
}

async fn awkward_natural_keys_merge_on_equal_text_and_only_on_equal_text(s: TestServer) {
    let (token, device, profile) = account(&s, "awkward-keys@example.org").await;
    let names = awkward_names();
    assert!(names.len() > 1_000, "past one lookup statement's keys");
    let first: Vec<String> = names.iter().map(|_| id()).collect();
    let lists: Vec<Json> = names
        .iter()
        .zip(&first)
        .enumerate()
        .map(|(i, (name, rid))| list(rid, 10 + i as i64, &profile, name))
        .collect();
    let r = s.push(&token, &device, json!({ "lists": lists })).await;
    for (i, name) in names.iter().enumerate() {
        assert_eq!(
            status(&r, "lists", i),
            "applied",
            "{name:?} is a key of its own"
        );
    }
    // A second device creates the same lists, in the other order: each merges into the first
    // device's record of exactly its name.
    let second: Vec<String> = names.iter().map(|_| id()).collect();
    let lists: Vec<Json> = names
        .iter()
        .zip(&second)
        .enumerate()
        .rev()
        .map(|(i, (name, rid))| list(rid, 100_000 + i as i64, &profile, name))
        .collect();
    let r = s.push(&token, &id(), json!({ "lists": lists })).await;
    for (j, i) in (0..names.len()).rev().enumerate() {
        assert_eq!(status(&r, "lists", j), "merged", "{:?}: {r}", names[i]);
        assert_eq!(
            r["lists"][j]["canonical_id"],
            json!(first[i]),
            "{:?} merged into the record of its own name",
            names[i]
        );
    }
    let (rows, _) = s.pull_all(&token, None, 1000, None).await;
    let mut stored: Vec<(String, String)> = rows
        .iter()
        .filter(|(table, _)| table == "lists")
        .map(|(_, r)| {
            (
                r["remote_id"].as_str().unwrap().to_owned(),
                r["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    stored.sort();
    let mut expected: Vec<(String, String)> = first.into_iter().zip(names).collect();
    expected.sort();
    assert_eq!(stored, expected, "one record per name, its text as sent");
}
on_both_backends!(
    awkward_keys,
    awkward_natural_keys_merge_on_equal_text_and_only_on_equal_text
);
