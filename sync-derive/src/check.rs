//! Checks that need several fields at once.

use crate::ast::Entity;
use crate::attr::{Ctxt, OnDelete};
use std::collections::HashMap;

/// Columns the framework adds itself.
const RESERVED: &[&str] = &[
    "remote_id",
    "deleted_at",
    "dirty",
    "device_id",
    "seq",
    "field_stamps",
    "writer",
];

pub fn check(cx: &mut Ctxt, e: &Entity<'_>) {
    let synced = e.attrs.local_only.is_none();
    match &e.id {
        None => cx.error(
            e.ident.span(),
            format!(
                "`{}` has no local primary key; help: add `pub id: Option<i64>`, or mark the key field `#[sync(id)]`",
                e.ident
            ),
        ),
        Some(id) => {
            if id.attrs.references.is_some() || id.attrs.json.is_some() || id.attrs.default.is_some() {
                cx.error(id.ident.span(), "the local primary key takes no other sync attributes");
            }
        }
    }

    let mut columns: HashMap<&str, &syn::Ident> = HashMap::new();
    if let Some(id) = &e.id {
        columns.insert(id.column.as_str(), id.ident);
    }
    for f in &e.fields {
        if let Some(first) = columns.get(f.column.as_str()) {
            cx.error(
                f.column_span,
                format!(
                    "column `{}` is already mapped from field `{first}`; help: give one of them another column with `#[sync(rename = \"...\")]`",
                    f.column
                ),
            );
        } else {
            columns.insert(f.column.as_str(), f.ident);
        }
        if RESERVED.contains(&f.column.as_str()) {
            cx.error(
                f.column_span,
                format!("column name `{}` is reserved for sync bookkeeping; help: `#[sync(rename = \"...\")]`", f.column),
            );
        }
        let a = &f.attrs;
        if a.references.is_none() {
            if let Some((_, span)) = a.on_delete {
                cx.error(span, "`on_delete` goes with a reference: write `#[sync(references = Parent, on_delete = ...)]`");
            }
            if let Some(k) = &a.key {
                cx.error(k.span(), "`key` goes with a reference: write `#[sync(references = Parent, key = column)]`");
            }
        } else {
            if let (Some((OnDelete::SetNull, span)), false) = (a.on_delete, f.is_option()) {
                cx.error(span, "`on_delete = set_null` needs a nullable reference; help: make the field `Option<i64>`");
            }
            if a.json.is_some() {
                cx.error(
                    f.ident.span(),
                    "a reference holds a local id and cannot be `json`",
                );
            }
        }
        if let (Some(l), Some(_)) = (a.local, a.owner) {
            cx.error(l, "a field is either `local` or `owner`, not both");
        }
        if (a.local.is_some() || a.owner.is_some()) && a.references.is_some() {
            cx.error(
                f.ident.span(),
                "a reference travels on the wire; it cannot be `local` or `owner`",
            );
        }
        if !synced
            && (a.local.is_some() || a.owner.is_some() || a.since.is_some() || a.unit.is_some())
        {
            cx.error(f.ident.span(), "a `local_only` table does not sync; its fields take no `local`, `owner`, `since` or `unit`");
        }
        if let Some(u) = &a.unit {
            if a.local.is_some() || a.owner.is_some() || f.column == "updated_at" {
                cx.error(u.span(), "only a field that travels on the wire merges, so only such a field belongs to a unit");
            }
            if let Some((crate::attr::MergeMode::Row, _)) = e.attrs.merge {
                cx.error(
                    u.span(),
                    "the table merges whole rows (`merge = row`): its fields form one unit already",
                );
            }
        }
    }
    let owners: Vec<&syn::Ident> = e
        .fields
        .iter()
        .filter(|f| f.attrs.owner.is_some())
        .map(|f| f.ident)
        .collect();
    if owners.len() > 1 {
        cx.error(owners[1].span(), "a table has at most one `owner` column");
    }
    if let (false, Some((_, span))) = (synced, e.attrs.merge) {
        cx.error(
            span,
            "a `local_only` table does not sync, so it does not merge",
        );
    }

    if synced && !e.fields.iter().any(|f| f.column == "updated_at") {
        cx.error(
            e.ident.span(),
            format!(
                "`{}` has no `updated_at` field, the merge clock of every synced entity; help: add `pub updated_at: sync_runtime::Timestamp`",
                e.ident
            ),
        );
    }

    for key in &e.attrs.unique {
        for k in key {
            let name = k.to_string();
            let known = e
                .fields
                .iter()
                .any(|f| *f.ident == name || f.column == name.trim_start_matches("r#"));
            if !known {
                cx.error(
                    k.span(),
                    format!("`unique({name})` names no field of `{}`; help: list the fields that form the natural key", e.ident),
                );
            }
        }
    }
}
