//! Device-engine bugs the simulation found, each pinned by the situation that exposed it.

use entities::*;
use serde_json::json;
use sync_runtime::{Store, Timestamp};
use tests::fixtures::{addon, apply_page, list, list_item, profile, settings_profile};
use tests::server::{at, id, row};

/// A push's `results` as the server writes them.
fn answered(results: serde_json::Value) -> sync_runtime::protocol::push::PushResults {
    serde_json::from_value(results).expect("the protocol's push results")
}

fn store() -> Store {
    Store::open_in_memory(entities::app()).unwrap()
}

fn profile_and_list(s: &mut Store, name: &str) -> (i64, i64) {
    let p = s.insert(&mut profile("P", None)).unwrap();
    let l = s.insert(&mut list(p, name)).unwrap();
    (p, l)
}

fn clean_all(s: &Store) {
    for t in entities::app().schema.synced() {
        s.connection()
            .execute(&format!("UPDATE {} SET dirty = FALSE", t.name), [])
            .unwrap();
    }
}

/// Seed 34: the server deleted an item whose list it had merged away; the device does not know
/// that list's id, and held the tombstone back forever waiting for it.
#[test]
fn a_pulled_tombstone_is_applied_even_when_its_parent_is_unknown_here() {
    let mut s = store();
    let (_, l) = profile_and_list(&mut s, "Favourites");
    let item = s.insert(&mut list_item(l, "tt1")).unwrap();
    clean_all(&s);
    let rid = s.remote_id("list_items", item).unwrap().unwrap();
    let mut tomb = row(
        "list_items",
        &rid,
        &at(5),
        json!({"list_id": id(), "meta_id": "tt1", "type": "movie"}),
    );
    tomb["deleted_at"] = json!(at(5));
    tomb["device_id"] = json!(id());
    let page = json!({"changes": {"list_items": [tomb]}, "cursor": "c1.1.9", "has_more": false});
    let summary = apply_page(&mut s, &page);
    assert_eq!(summary.parked, 0, "nothing held back");
    assert_eq!(s.parked_count().unwrap(), 0);
    assert!(
        s.get::<ListItem>(item).unwrap().is_none(),
        "the item is gone"
    );
    assert_eq!(s.cursor().unwrap().as_deref(), Some("c1.1.9"));
}

/// Seed 34: this device's row was merged on the server into a record the device also holds,
/// under another name locally; taking the winning values clashed with the row's own key.
#[test]
fn a_row_merged_into_a_record_held_here_hands_over_its_values_without_a_key_clash() {
    let mut s = store();
    let (p, survivor) = profile_and_list(&mut s, "Favourites");
    clean_all(&s);
    let mine = s
        .insert(&mut List {
            is_default: Some(true),
            ..list(p, "Kids")
        })
        .unwrap();
    let batch = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    let (mine_rid, survivor_rid) = (
        s.remote_id("lists", mine).unwrap().unwrap(),
        s.remote_id("lists", survivor).unwrap().unwrap(),
    );
    let results = json!({"lists": [{"remote_id": mine_rid, "status": "merged", "canonical_id": survivor_rid}]});
    s.apply_push_results(&batch.rows, &answered(results))
        .unwrap();
    assert!(
        s.get::<List>(mine).unwrap().is_none(),
        "the merged-away row is gone"
    );
    let kept: List = s.get(survivor).unwrap().unwrap();
    assert_eq!(
        (kept.name.as_str(), kept.is_default),
        ("Kids", Some(true)),
        "the winning values moved over"
    );
    assert!(!s.is_dirty("lists", survivor).unwrap());
}

/// Seed 34: a held-back version stayed held back after a newer version of the same record was
/// applied.
#[test]
fn a_newer_version_replaces_a_held_back_one() {
    let mut s = store();
    let (p, l) = profile_and_list(&mut s, "Favourites");
    clean_all(&s);
    let (list_rid, item_rid) = (s.remote_id("lists", l).unwrap().unwrap(), id());
    let _ = p;
    // The first version waits for a list this device does not have yet.
    let mut waiting = row(
        "list_items",
        &item_rid,
        &at(1),
        json!({"list_id": id(), "meta_id": "tt1", "type": "movie"}),
    );
    waiting["device_id"] = json!(id());
    apply_page(
        &mut s,
        &json!({"changes": {"list_items": [waiting]}, "cursor": "c1.1.1", "has_more": true}),
    );
    assert_eq!(s.parked_count().unwrap(), 1);
    // The record's latest version points at a list that is here.
    let mut latest = row(
        "list_items",
        &item_rid,
        &at(2),
        json!({"list_id": list_rid, "meta_id": "tt1", "type": "movie"}),
    );
    latest["device_id"] = json!(id());
    apply_page(
        &mut s,
        &json!({"changes": {"list_items": [latest]}, "cursor": "c1.1.2", "has_more": false}),
    );
    assert_eq!(s.parked_count().unwrap(), 0);
    assert_eq!(s.list::<ListItem>().unwrap().len(), 1);
}

/// Seed 116: both lists held the same movie; when the server merged one list into the other,
/// moving the merged list's items over clashed with the survivor's own item.
#[test]
fn children_of_a_merged_row_join_the_survivors_children_without_a_key_clash() {
    let mut s = store();
    let (p, survivor) = profile_and_list(&mut s, "Favourites");
    let item = |list: i64, title: &str| ListItem {
        title: Some(title.into()),
        ..list_item(list, "tt0111161")
    };
    let kept = s.insert(&mut item(survivor, "survivor's")).unwrap();
    clean_all(&s);
    let mine = s.insert(&mut list(p, "Kids")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(3));
    let moved = s.insert(&mut item(mine, "edited here, unpushed")).unwrap();
    // Only the list goes up in this push; its item is still to push.
    let batch = s.prepare_push(1, &Default::default()).unwrap().unwrap();
    assert_eq!(batch.rows[0].table, "lists");
    let results = json!({"lists": [{"remote_id": s.remote_id("lists", mine).unwrap().unwrap(), "status": "merged",
        "canonical_id": s.remote_id("lists", survivor).unwrap().unwrap()}]});
    s.apply_push_results(&batch.rows, &answered(results))
        .unwrap();
    let items: Vec<ListItem> = s.list().unwrap();
    assert_eq!(items.len(), 1, "one record: {items:?}");
    assert_eq!(items[0].id, Some(kept));
    assert_eq!(
        items[0].title.as_deref(),
        Some("edited here, unpushed"),
        "the newer unpushed edit carried over"
    );
    assert!(
        s.is_dirty("list_items", kept).unwrap(),
        "and it will be pushed"
    );
    assert!(s.get::<ListItem>(moved).unwrap().is_none());
}

/// Seed 219: the app removed an add-on; before its tombstones were pushed, another device's
/// setting for that add-on was pulled. Deleting the removed add-on afterwards took the pulled
/// row with it.
#[test]
fn a_removed_addon_that_the_account_still_uses_is_kept() {
    let mut s = store();
    let (p, _) = profile_and_list(&mut s, "Favourites");
    let url = "https://b.example/manifest.json";
    let addon = s.insert(&mut addon(url, "B")).unwrap();
    s.insert(&mut ProfileAddon {
        id: None,
        profile_id: Some(p),
        addon_id: addon,
        enabled: Some(true),
        priority: Some(0),
        created_at: None,
        updated_at: Timestamp::now(),
        settings_profile_id: None,
    })
    .unwrap();
    clean_all(&s);
    s.delete::<Addon>(addon).unwrap();
    // Another device enabled the same add-on for another profile.
    let other_profile = id();
    let mut prof = row(
        "profiles",
        &other_profile,
        &at(1),
        json!({"name": "Q", "avatar": "q"}),
    );
    prof["device_id"] = json!(id());
    let pulled = id();
    let mut pa = row(
        "profile_addons",
        &pulled,
        &at(2),
        json!({"profile_id": other_profile, "addon_id": url}),
    );
    pa["device_id"] = json!(id());
    apply_page(
        &mut s,
        &json!({"changes": {"profiles": [prof], "profile_addons": [pa]}, "cursor": "c1.1.3", "has_more": false}),
    );
    // The tombstone goes up; removed add-ons nothing points at any more are cleaned up then.
    let batch = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    let results = json!({"profile_addons": batch.rows.iter().map(|r| json!({"remote_id": r.remote_id, "status": "applied"})).collect::<Vec<_>>()});
    s.apply_push_results(&batch.rows, &answered(results))
        .unwrap();
    let live: Vec<ProfileAddon> = s.list().unwrap();
    assert_eq!(live.len(), 1, "the pulled setting survives");
    assert_eq!(
        s.get::<Addon>(live[0].addon_id)
            .unwrap()
            .map(|a| a.manifest_url),
        Some(url.to_owned()),
        "its add-on is back"
    );
}

/// Seed 229: an old version of a record, held back for a parent, was applied after this device
/// had pushed a newer version, and took the row back in time.
#[test]
fn a_held_back_version_never_replaces_a_newer_one() {
    let mut s = store();
    let (_, l) = profile_and_list(&mut s, "Newest name");
    clean_all(&s);
    let list_rid = s.remote_id("lists", l).unwrap().unwrap();
    let unknown_profile = id();
    let mut old = row(
        "lists",
        &list_rid,
        &at(1),
        json!({"profile_id": unknown_profile, "name": "Old name"}),
    );
    old["device_id"] = json!(id());
    apply_page(
        &mut s,
        &json!({"changes": {"lists": [old]}, "cursor": "c1.1.1", "has_more": true}),
    );
    assert_eq!(s.parked_count().unwrap(), 1, "held back for its profile");
    let mut profile = row(
        "profiles",
        &unknown_profile,
        &at(2),
        json!({"name": "Q", "avatar": "q"}),
    );
    profile["device_id"] = json!(id());
    apply_page(
        &mut s,
        &json!({"changes": {"profiles": [profile]}, "cursor": "c1.1.2", "has_more": false}),
    );
    assert_eq!(s.parked_count().unwrap(), 0);
    assert_eq!(s.get::<List>(l).unwrap().unwrap().name, "Newest name");
}

/// Seed 356: on the server a list item's key changed and then the item was deleted; this device
/// held the new key on another row, so applying the tombstone's values clashed, and it waited.
#[test]
fn a_tombstone_whose_last_key_is_taken_here_still_deletes() {
    let mut s = store();
    let (_, l) = profile_and_list(&mut s, "Favourites");
    let item = |meta: &str| list_item(l, meta);
    let a = s.insert(&mut item("tt1")).unwrap();
    s.insert(&mut item("tt2")).unwrap();
    clean_all(&s);
    let (a_rid, list_rid) = (
        s.remote_id("list_items", a).unwrap().unwrap(),
        s.remote_id("lists", l).unwrap().unwrap(),
    );
    let far = Timestamp::now().add_millis(60_000).to_wire();
    let mut tomb = row(
        "list_items",
        &a_rid,
        &far,
        json!({"list_id": list_rid, "meta_id": "tt2", "type": "movie"}),
    );
    tomb["deleted_at"] = json!(far);
    tomb["device_id"] = json!(id());
    apply_page(
        &mut s,
        &json!({"changes": {"list_items": [tomb]}, "cursor": "c1.1.4", "has_more": false}),
    );
    assert_eq!(s.parked_count().unwrap(), 0);
    assert!(s.get::<ListItem>(a).unwrap().is_none(), "deleted");
    assert_eq!(
        s.list::<ListItem>().unwrap().len(),
        1,
        "the other item stays"
    );
}

/// A push between two pages of a full pull (the pull was cut, and the next sync pushes before
/// it resumes). The resumed pages leave out this device's own writes, so the rows the push
/// stored on the server never show in them: the sweep at the pull's end must keep them.
#[test]
fn rows_pushed_while_a_full_pull_is_unfinished_survive_its_sweep() {
    let mut s = store();
    s.restart_full_pull().unwrap();
    let page = json!({"changes": {}, "cursor": "c1.1.5", "has_more": true});
    apply_page(&mut s, &page);
    let (p, l) = profile_and_list(&mut s, "Favourites");
    let batch = s
        .prepare_push(100, &std::collections::HashSet::new())
        .unwrap()
        .expect("two dirty rows");
    let mut results = serde_json::Map::new();
    for r in &batch.rows {
        results
            .entry(r.table.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(json!({"remote_id": r.remote_id, "status": "applied"}));
    }
    s.apply_push_results(&batch.rows, &answered(serde_json::Value::Object(results)))
        .unwrap();
    let last = json!({"changes": {}, "cursor": "c1.1.9", "has_more": false});
    apply_page(&mut s, &last);
    assert!(
        s.get::<Profile>(p).unwrap().is_some(),
        "the pushed profile is kept"
    );
    assert!(
        s.get::<List>(l).unwrap().is_some(),
        "the pushed list is kept"
    );
}

/// Seed 1082: the server stored an item under the survivor of a list merge that this device had
/// not pulled yet, and answered `merged` with that version. Held back for its list, it must be
/// applied once the list arrives, although its stamp is the one the device already holds.
#[test]
fn an_answered_version_held_back_for_its_parent_is_applied_when_the_parent_arrives() {
    let mut s = store();
    let (p, l) = profile_and_list(&mut s, "Favourites");
    let item = s.insert(&mut list_item(l, "tt0068646")).unwrap();
    let batch = s
        .prepare_push(100, &std::collections::HashSet::new())
        .unwrap()
        .unwrap();
    let survivor = id();
    let mut stored =
        serde_json::from_str::<serde_json::Value>(batch.changes.get()).unwrap()["list_items"][0]
            .clone();
    stored["list_id"] = json!(survivor);
    let mut results = serde_json::Map::new();
    for r in &batch.rows {
        let mut answer = json!({"remote_id": r.remote_id, "status": "applied"});
        if r.table == "list_items" {
            answer = json!({"remote_id": r.remote_id, "status": "merged", "canonical_id": r.remote_id, "row": stored});
        }
        results
            .entry(r.table.clone())
            .or_insert_with(|| json!([]))
            .as_array_mut()
            .unwrap()
            .push(answer);
    }
    s.apply_push_results(&batch.rows, &answered(serde_json::Value::Object(results)))
        .unwrap();
    assert_eq!(s.parked_count().unwrap(), 1, "held back for its list");
    let profile_rid = s.remote_id("profiles", p).unwrap().unwrap();
    let page = json!({
        "changes": {"lists": [row("lists", &survivor, &at(5), json!({"profile_id": profile_rid, "name": "Watch later"}))]},
        "cursor": "c1.1.9",
        "has_more": false,
    });
    apply_page(&mut s, &page);
    assert_eq!(s.parked_count().unwrap(), 0);
    let survivor_here: i64 = s
        .connection()
        .query_row(
            "SELECT id FROM lists WHERE remote_id = ?1",
            [&survivor],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        s.get::<ListItem>(item).unwrap().unwrap().list_id,
        survivor_here,
        "the item is under the surviving list"
    );
}

/// Seed 2249: one push answered a list `merged` into a list this device holds, and one of its
/// items `merged` into that list's item of the same movie. Moving the list's children had
/// already merged the item into its twin here; its own answer then failed the whole push.
#[test]
fn an_item_merged_here_by_its_lists_merge_takes_its_own_answer_in_stride() {
    let mut s = store();
    let (p, l1) = profile_and_list(&mut s, "A");
    let mut other = List {
        id: None,
        profile_id: p,
        name: "B".into(),
        is_default: None,
        created_at: None,
        updated_at: Timestamp::now(),
    };
    let l2 = s.insert(&mut other).unwrap();
    let mut first = list_item(l1, "tt1");
    let i1 = s.insert(&mut first).unwrap();
    let i2 = s.insert(&mut list_item(l2, "tt1")).unwrap();
    clean_all(&s);
    // The twin was written long ago: the edit below is newer than it whatever the clock says
    // (two writes in one millisecond may share a stamp).
    s.connection()
        .execute(
            "UPDATE list_items SET updated_at = '2000-01-01T00:00:00.000Z' WHERE id = ?1",
            [i2],
        )
        .unwrap();
    first.title = Some("edited".into());
    s.update(&first).unwrap();
    let mut renamed: List = s.get(l1).unwrap().unwrap();
    renamed.name = "C".into();
    s.update(&renamed).unwrap();
    let batch = s
        .prepare_push(100, &std::collections::HashSet::new())
        .unwrap()
        .unwrap();
    let rid = |t: &str, id: i64| s.remote_id(t, id).unwrap().unwrap();
    let results = json!({
        "lists": [{"remote_id": rid("lists", l1), "status": "merged", "canonical_id": rid("lists", l2)}],
        "list_items": [{"remote_id": rid("list_items", i1), "status": "merged", "canonical_id": rid("list_items", i2)}],
    });
    s.apply_push_results(&batch.rows, &answered(results))
        .unwrap();
    let items = s.list::<ListItem>().unwrap();
    assert_eq!(items.len(), 1, "one item: {items:?}");
    assert_eq!(items[0].id, Some(i2));
    assert_eq!(
        items[0].title.as_deref(),
        Some("edited"),
        "the newer edit carried over"
    );
    assert_eq!(s.list::<List>().unwrap().len(), 1);
}

/// Seed 2654: an item deleted here (and the deletion pushed) still held its natural key when
/// the server sent the same movie under the same list as another record; it waited forever.
#[test]
fn a_pushed_tombstone_gives_its_natural_key_up_to_a_pulled_record() {
    let mut s = store();
    let (_, l) = profile_and_list(&mut s, "Favourites");
    let gone = s.insert(&mut list_item(l, "tt1")).unwrap();
    s.delete::<ListItem>(gone).unwrap();
    clean_all(&s);
    let list_rid = s.remote_id("lists", l).unwrap().unwrap();
    let other = id();
    let page = json!({
        "changes": {"list_items": [row("list_items", &other, &at(9), json!({"list_id": list_rid, "meta_id": "tt1", "type": "movie"}))]},
        "cursor": "c1.1.9",
        "has_more": false,
    });
    let summary = apply_page(&mut s, &page);
    assert_eq!(summary.parked, 0);
    assert_eq!(s.parked_count().unwrap(), 0);
    let items = s.list::<ListItem>().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        s.remote_id("list_items", items[0].id.unwrap()).unwrap(),
        Some(other)
    );
}

/// Simulation seed 6, with purges: a list deleted here (its item with it) and pushed; the
/// server purged the tombstone, then took a new list of the same name as a record of its own.
/// The pulled list waited forever behind the local tombstone, because an item's tombstone
/// hung under it.
#[test]
fn a_pushed_tombstone_with_pushed_tombstones_under_it_gives_its_key_up() {
    let mut s = store();
    let (p, l) = profile_and_list(&mut s, "Favourites");
    s.insert(&mut list_item(l, "tt1")).unwrap();
    s.delete::<List>(l).unwrap();
    clean_all(&s);
    let profile_rid = s.remote_id("profiles", p).unwrap().unwrap();
    let (list, item) = (id(), id());
    let page = json!({
        "changes": {
            "lists": [row("lists", &list, &at(9), json!({"profile_id": profile_rid, "name": "Favourites"}))],
            "list_items": [row("list_items", &item, &at(9), json!({"list_id": list, "meta_id": "tt2", "type": "movie"}))],
        },
        "cursor": "c1.1.9",
        "has_more": false,
    });
    apply_page(&mut s, &page);
    assert_eq!(s.parked_count().unwrap(), 0, "nothing waits");
    let lists = s.list::<List>().unwrap();
    assert_eq!(lists.len(), 1);
    assert_eq!(
        s.remote_id("lists", lists[0].id.unwrap()).unwrap(),
        Some(list)
    );
    assert_eq!(s.list::<ListItem>().unwrap().len(), 1);
}

/// The same, but an item under the local tombstone is not pushed yet: the tombstone keeps the
/// key (deleting it would drop a change the server has not seen), and the pulled list waits.
#[test]
fn a_tombstone_with_an_unpushed_row_under_it_keeps_its_key() {
    let mut s = store();
    let (p, l) = profile_and_list(&mut s, "Favourites");
    let item = s.insert(&mut list_item(l, "tt1")).unwrap();
    s.delete::<List>(l).unwrap();
    clean_all(&s);
    s.connection()
        .execute("UPDATE list_items SET dirty = TRUE WHERE id = ?1", [item])
        .unwrap();
    let profile_rid = s.remote_id("profiles", p).unwrap().unwrap();
    let page = json!({
        "changes": {"lists": [row("lists", &id(), &at(9), json!({"profile_id": profile_rid, "name": "Favourites"}))]},
        "cursor": "c1.1.9",
        "has_more": false,
    });
    apply_page(&mut s, &page);
    assert_eq!(s.parked_count().unwrap(), 1);
}

/// Simulation seed 85, with purges: a profile made offline under a settings profile that
/// another device deleted meanwhile, and whose tombstone the server purged, was rejected (an
/// unknown reference). The full pull that followed removed the settings profile here and
/// nulled the reference, without a new stamp, so the profile was never tried again.
#[test]
fn a_row_rejected_before_a_full_pull_is_tried_again_after_it() {
    let mut s = store();
    let settings = s.insert(&mut settings_profile("Default")).unwrap();
    clean_all(&s);
    let p = s.insert(&mut profile("P", Some(settings))).unwrap();
    let batch = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    s.reject(&batch.rows[0], "settings_profile_id: no such record")
        .unwrap();
    assert!(s.prepare_push(100, &Default::default()).unwrap().is_none());

    // A full pull that does not return the settings profile: it is gone from the account.
    s.restart_full_pull().unwrap();
    apply_page(
        &mut s,
        &json!({"changes": {}, "cursor": "c1.1.9", "has_more": false}),
    );
    let again = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    assert_eq!(again.rows.len(), 1, "the profile is pushed again");
    assert_eq!(again.rows[0].id, p);
    let profile: Profile = s.get(p).unwrap().unwrap();
    assert_eq!(profile.settings_profile_id, None);
    assert!(s.rejected_rows().unwrap().is_empty());
}

/// Simulation seed 881, with purges: an item's old version was held back for a list this
/// device never got; the item was deleted meanwhile. A full pull leaves out tombstones from
/// before it began, so the item's never came, and the held-back version waited forever.
#[test]
fn a_full_pull_drops_held_back_versions_of_records_it_did_not_return() {
    let mut s = store();
    let page = json!({
        "changes": {"list_items": [row("list_items", &id(), &at(1), json!({"list_id": id(), "meta_id": "tt1", "type": "movie"}))]},
        "cursor": "c1.1.3",
        "has_more": false,
    });
    apply_page(&mut s, &page);
    assert_eq!(s.parked_count().unwrap(), 1, "held back for its list");
    s.restart_full_pull().unwrap();
    apply_page(
        &mut s,
        &json!({"changes": {}, "cursor": "c1.1.9", "has_more": false}),
    );
    assert_eq!(s.parked_count().unwrap(), 0);
}

/// Simulation seed 882, with purges: settings edited here while another device deleted their
/// settings profile; the profile's tombstone reached this device, and the server purged it.
/// The server could no longer see the edit as an orphan (a derived tombstone) and rejected it
/// for an unknown reference, for good. The device applies the orphan rule itself.
#[test]
fn a_rejected_orphan_of_a_pushed_tombstone_becomes_a_tombstone() {
    let mut s = store();
    let sp = s.insert(&mut settings_profile("Default")).unwrap();
    let a = s
        .insert(&mut AppearanceSettings {
            id: None,
            settings_profile_id: Some(sp),
            show_imdb_ratings: Some(true),
            show_age_ratings: Some(true),
            updated_at: Timestamp::now(),
        })
        .unwrap();
    clean_all(&s);
    // The settings profile's tombstone was pulled (written as a sync step writes, the capture
    // of local writes paused); the settings were edited here.
    s.connection()
        .execute_batch(&format!(
            "BEGIN; UPDATE sync_capture SET paused = TRUE; \
             UPDATE settings_profiles SET deleted_at = updated_at WHERE id = {sp}; \
             UPDATE sync_capture SET paused = FALSE; COMMIT;"
        ))
        .unwrap();
    s.connection()
        .execute(
            "UPDATE appearance_settings SET dirty = TRUE, show_age_ratings = FALSE WHERE id = ?1",
            [a],
        )
        .unwrap();
    let batch = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    let rid = batch.rows[0].remote_id.clone();
    s.apply_push_results(
        &batch.rows,
        &answered(json!({"appearance_settings": [{"remote_id": rid, "status": "rejected",
            "message": "column `settings_profile_id` references a settings_profiles record this account does not have"}]})),
    )
    .unwrap();
    assert!(s.rejected_rows().unwrap().is_empty(), "not left rejected");
    assert!(
        s.list::<AppearanceSettings>().unwrap().is_empty(),
        "a tombstone now"
    );
    let next = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    assert_eq!(next.rows.len(), 1, "the tombstone goes up next");
    assert!(next.changes.get().contains("\"deleted_at\":\"2"));
}

/// Simulation seed 562, with purges: an add-on setting moved offline under a settings profile
/// that another device deleted, whose tombstone the server purged, was refused (an unknown
/// reference). The full pull that followed returned the record as the server holds it (under
/// its old parent), the refused move stayed here as the newer version, and the sweep removed the
/// unseen parent, which took the row with it: the device lost a record the server holds live.
/// By the orphan rule the moved row is a tombstone now, pushed next.
#[test]
fn a_dirty_row_under_a_parent_the_full_pull_removes_becomes_a_tombstone_to_push() {
    let mut s = store();
    let (p, kept) = profile_and_list(&mut s, "Favourites");
    let gone = s.insert(&mut list(p, "Deleted elsewhere")).unwrap();
    let item = s.insert(&mut list_item(kept, "tt1")).unwrap();
    clean_all(&s);
    // Moved offline under the list another device deleted.
    let mut moved: ListItem = s.get(item).unwrap().unwrap();
    moved.list_id = gone;
    moved.updated_at = Timestamp::now();
    s.update(&moved).unwrap();
    let rid = |t: &str, id: i64| s.remote_id(t, id).unwrap().unwrap();
    let (p_rid, kept_rid, item_rid) = (
        rid("profiles", p),
        rid("lists", kept),
        rid("list_items", item),
    );
    s.restart_full_pull().unwrap();
    let page = json!({
        "changes": {
            "profiles": [row("profiles", &p_rid, &at(1), json!({"name": "P", "avatar": "a"}))],
            "lists": [row("lists", &kept_rid, &at(1), json!({"profile_id": p_rid, "name": "Favourites"}))],
            "list_items": [row("list_items", &item_rid, &at(1), json!({"list_id": kept_rid, "meta_id": "tt1", "type": "movie"}))],
        },
        "cursor": "c1.1.9",
        "has_more": false,
    });
    apply_page(&mut s, &page);
    assert!(s.get::<List>(gone).unwrap().is_none(), "the list is gone");
    let batch = s.prepare_push(100, &Default::default()).unwrap().unwrap();
    let pushed: serde_json::Value = serde_json::from_str(batch.changes.get()).unwrap();
    let items = pushed["list_items"].as_array().cloned().unwrap_or_default();
    assert_eq!(items.len(), 1, "the moved item is pushed: {pushed}");
    assert_eq!(items[0]["remote_id"], item_rid.as_str());
    assert!(
        items[0]["deleted_at"].is_string(),
        "as a tombstone: {}",
        items[0]
    );
}

/// Simulation seed 280, with purges: a settings profile the full pull removes stays here as a
/// tombstone while a dirty row under it waits to be pushed as one; the profiles that pointed
/// at it lose the reference all the same, as its deletion would have nulled it, or their push
/// names a record the server does not have and is refused forever.
#[test]
fn a_parent_kept_for_a_dirty_child_still_releases_its_set_null_references() {
    let mut s = store();
    let settings = s.insert(&mut settings_profile("Gone elsewhere")).unwrap();
    let p = s.insert(&mut profile("P", Some(settings))).unwrap();
    clean_all(&s);
    let appearance = s
        .insert(&mut AppearanceSettings {
            id: None,
            settings_profile_id: Some(settings),
            show_imdb_ratings: Some(false),
            show_age_ratings: None,
            updated_at: Timestamp::now(),
        })
        .unwrap();
    let p_rid = s.remote_id("profiles", p).unwrap().unwrap();
    s.restart_full_pull().unwrap();
    let page = json!({
        "changes": {"profiles": [row("profiles", &p_rid, &at(1), json!({"name": "P", "avatar": "a"}))]},
        "cursor": "c1.1.9",
        "has_more": false,
    });
    apply_page(&mut s, &page);
    assert!(s.get::<SettingsProfile>(settings).unwrap().is_none());
    assert!(
        s.get::<AppearanceSettings>(appearance).unwrap().is_none(),
        "a tombstone now"
    );
    let profile: Profile = s.get(p).unwrap().unwrap();
    assert_eq!(profile.settings_profile_id, None);
}
