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
