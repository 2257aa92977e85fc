//! `#[sync(...)]` attributes parsed into typed values. Every problem is collected, so that one
//! compile reports all of them.

use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Expr, ExprLit, ExprUnary, Ident, Lit, LitStr, Token, Type, UnOp};

/// Collects errors across the whole derive (like serde's `Ctxt`).
#[derive(Default)]
pub struct Ctxt {
    errors: Vec<syn::Error>,
}

impl Ctxt {
    pub fn error(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.errors.push(syn::Error::new(span, msg));
    }

    pub fn push(&mut self, e: syn::Error) {
        self.errors.push(e);
    }

    pub fn finish(self) -> syn::Result<()> {
        let mut it = self.errors.into_iter();
        match it.next() {
            None => Ok(()),
            Some(mut first) => {
                for e in it {
                    first.combine(e);
                }
                Err(first)
            }
        }
    }
}

pub const STRUCT_KEYS: &str = "`table = \"name\"`, `unique(field, ...)` (or `unique = [field, ...]`), \
    `local_only`, `merge = field | row`, `datetime = wire | sqlite`";
pub const FIELD_KEYS: &str = "`id`, `references = Type`, `on_delete = cascade | set_null`, \
    `key = field`, `json`, `default = <literal> | now`, `rename = \"column\"`, `local`, \
    `owner`, `since = N`, `unit = \"name\"`, `datetime = wire | sqlite`";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum MergeMode {
    Field,
    Row,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum DateTimeText {
    Wire,
    Sqlite,
}

#[derive(Default)]
pub struct StructAttrs {
    pub table: Option<LitStr>,
    pub unique: Vec<Vec<Ident>>,
    pub local_only: Option<Span>,
    pub merge: Option<(MergeMode, Span)>,
    pub datetime: Option<(DateTimeText, Span)>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum OnDelete {
    Cascade,
    SetNull,
}

pub enum DefaultLit {
    Text(String),
    Integer(i64),
    Real(f64),
    Boolean(bool),
    Now,
}

#[derive(Default)]
pub struct FieldAttrs {
    pub id: Option<Span>,
    pub references: Option<Type>,
    pub on_delete: Option<(OnDelete, Span)>,
    pub key: Option<Ident>,
    pub json: Option<Span>,
    pub default: Option<(DefaultLit, Span)>,
    pub rename: Option<LitStr>,
    pub local: Option<Span>,
    pub owner: Option<Span>,
    pub since: Option<(u32, Span)>,
    pub unit: Option<LitStr>,
    pub datetime: Option<(DateTimeText, Span)>,
}

/// `datetime = wire | sqlite`, on a struct or a field.
fn parse_datetime(
    cx: &mut Ctxt,
    meta: &syn::meta::ParseNestedMeta<'_>,
) -> syn::Result<Option<(DateTimeText, Span)>> {
    let v: Ident = meta.value()?.parse()?;
    Ok(match v.to_string().as_str() {
        "wire" => Some((DateTimeText::Wire, v.span())),
        "sqlite" => Some((DateTimeText::Sqlite, v.span())),
        _ => {
            cx.error(
                v.span(),
                format!("unknown DATETIME text form `{v}`; help: write `datetime = sqlite` (`2026-11-28 07:49:06`, SQLite's CURRENT_TIMESTAMP) or `datetime = wire` (`2026-11-28T07:49:06.123Z`)"),
            );
            None
        }
    })
}

/// Skips whatever value follows an unknown key, so parsing can go on to the next key.
fn skip_value(meta: &syn::meta::ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        let _content;
        syn::parenthesized!(_content in meta.input);
        let _: proc_macro2::TokenStream = _content.parse()?;
    }
    Ok(())
}

fn set_once<T>(cx: &mut Ctxt, slot: &mut Option<T>, value: T, span: Span, key: &str) {
    if slot.is_some() {
        cx.error(span, format!("duplicate `{key}` attribute"));
    } else {
        *slot = Some(value);
    }
}

pub fn parse_struct_attrs(cx: &mut Ctxt, attrs: &[syn::Attribute]) -> StructAttrs {
    let mut out = StructAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("sync")) {
        let r = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            if meta.path.is_ident("table") {
                let lit: LitStr = meta.value()?.parse()?;
                set_once(cx, &mut out.table, lit, span, "table");
            } else if meta.path.is_ident("unique") {
                // `unique(a, b)`, or `unique = [a, b]`: clippy's `duplicated_attributes` lint
                // flags a field named in two `unique(...)` lists, but leaves brackets alone.
                let content;
                if meta.input.peek(Token![=]) {
                    meta.input.parse::<Token![=]>()?;
                    syn::bracketed!(content in meta.input);
                } else {
                    syn::parenthesized!(content in meta.input);
                }
                let fields = content.parse_terminated(Ident::parse_any_ident, Token![,])?;
                if fields.is_empty() {
                    cx.error(
                        span,
                        "`unique()` needs at least one field: write `#[sync(unique(field, ...))]`",
                    );
                }
                out.unique.push(fields.into_iter().collect());
            } else if meta.path.is_ident("local_only") {
                set_once(cx, &mut out.local_only, span, span, "local_only");
            } else if meta.path.is_ident("merge") {
                let v: Ident = meta.value()?.parse()?;
                match v.to_string().as_str() {
                    "field" => set_once(cx, &mut out.merge, (MergeMode::Field, v.span()), span, "merge"),
                    "row" => set_once(cx, &mut out.merge, (MergeMode::Row, v.span()), span, "merge"),
                    _ => cx.error(
                        v.span(),
                        format!("unknown merge mode `{v}`; help: write `merge = field` (last write wins per field, the default) or `merge = row` (per whole row)"),
                    ),
                }
            } else if meta.path.is_ident("datetime") {
                if let Some(d) = parse_datetime(cx, &meta)? {
                    set_once(cx, &mut out.datetime, d, span, "datetime");
                }
            } else {
                cx.error(
                    span,
                    format!(
                        "unknown sync attribute `{}` on a struct; expected one of {STRUCT_KEYS}",
                        path_name(&meta.path)
                    ),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            cx.push(e);
        }
    }
    out
}

trait ParseAnyIdent {
    fn parse_any_ident(input: syn::parse::ParseStream<'_>) -> syn::Result<Ident>;
}

impl ParseAnyIdent for Ident {
    fn parse_any_ident(input: syn::parse::ParseStream<'_>) -> syn::Result<Ident> {
        use syn::ext::IdentExt;
        Ident::parse_any(input)
    }
}

fn path_name(p: &syn::Path) -> String {
    p.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

fn parse_default(expr: &Expr) -> Option<DefaultLit> {
    match expr {
        Expr::Lit(ExprLit { lit, .. }) => match lit {
            Lit::Str(s) => Some(DefaultLit::Text(s.value())),
            Lit::Int(i) => i.base10_parse().ok().map(DefaultLit::Integer),
            Lit::Float(f) => f.base10_parse().ok().map(DefaultLit::Real),
            Lit::Bool(b) => Some(DefaultLit::Boolean(b.value)),
            _ => None,
        },
        Expr::Unary(ExprUnary {
            op: UnOp::Neg(_),
            expr,
            ..
        }) => match parse_default(expr)? {
            DefaultLit::Integer(i) => Some(DefaultLit::Integer(-i)),
            DefaultLit::Real(f) => Some(DefaultLit::Real(-f)),
            _ => None,
        },
        Expr::Path(p) if p.path.is_ident("now") => Some(DefaultLit::Now),
        _ => None,
    }
}

pub fn parse_field_attrs(cx: &mut Ctxt, attrs: &[syn::Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("sync")) {
        let r = attr.parse_nested_meta(|meta| {
            let span = meta.path.span();
            let p = &meta.path;
            if p.is_ident("id") {
                set_once(cx, &mut out.id, span, span, "id");
            } else if p.is_ident("references") {
                let ty: Type = meta.value()?.parse()?;
                set_once(cx, &mut out.references, ty, span, "references");
            } else if p.is_ident("on_delete") {
                let v: Ident = meta.value()?.parse()?;
                let action = match v.to_string().as_str() {
                    "cascade" => Some(OnDelete::Cascade),
                    "set_null" => Some(OnDelete::SetNull),
                    _ => None,
                };
                match action {
                    Some(a) => set_once(cx, &mut out.on_delete, (a, v.span()), span, "on_delete"),
                    None => cx.error(
                        v.span(),
                        format!("unknown ON DELETE action `{v}`; help: write `on_delete = cascade` or `on_delete = set_null`"),
                    ),
                }
            } else if p.is_ident("key") {
                let v: Ident = meta.value()?.parse()?;
                set_once(cx, &mut out.key, v, span, "key");
            } else if p.is_ident("json") {
                set_once(cx, &mut out.json, span, span, "json");
            } else if p.is_ident("default") {
                let expr: Expr = meta.value()?.parse()?;
                match parse_default(&expr) {
                    Some(d) => set_once(cx, &mut out.default, (d, expr.span()), span, "default"),
                    None => cx.error(
                        expr.span(),
                        "a default must be a literal (`\"text\"`, `-1`, `0.5`, `false`) or `now`",
                    ),
                }
            } else if p.is_ident("rename") {
                let lit: LitStr = meta.value()?.parse()?;
                set_once(cx, &mut out.rename, lit, span, "rename");
            } else if p.is_ident("local") {
                set_once(cx, &mut out.local, span, span, "local");
            } else if p.is_ident("owner") {
                set_once(cx, &mut out.owner, span, span, "owner");
            } else if p.is_ident("account_id") {
                cx.error(
                    span,
                    "`account_id` is now `owner`: the column holds the app's own local user, which never travels and is never rewritten; help: write `#[sync(owner)]`",
                );
            } else if p.is_ident("unit") {
                let lit: LitStr = meta.value()?.parse()?;
                if lit.value().is_empty() {
                    cx.error(lit.span(), "a merge unit needs a name: write `#[sync(unit = \"progress\")]` on each field of the unit");
                }
                set_once(cx, &mut out.unit, lit, span, "unit");
            } else if p.is_ident("datetime") {
                if let Some(d) = parse_datetime(cx, &meta)? {
                    set_once(cx, &mut out.datetime, d, span, "datetime");
                }
            } else if p.is_ident("since") {
                let lit: syn::LitInt = meta.value()?.parse()?;
                match lit.base10_parse::<u32>() {
                    Ok(n) if n >= 1 => set_once(cx, &mut out.since, (n, lit.span()), span, "since"),
                    _ => cx.error(lit.span(), "`since` is a schema version: an integer from 1"),
                }
            } else {
                cx.error(
                    span,
                    format!("unknown sync attribute `{}` on a field; expected one of {FIELD_KEYS}", path_name(p)),
                );
                skip_value(&meta)?;
            }
            Ok(())
        });
        if let Err(e) = r {
            cx.push(e);
        }
    }
    out
}
