//! The struct as a small model of a table and its columns, keeping each field's tokens for
//! error spans.

use crate::attr::{self, Ctxt, FieldAttrs, StructAttrs};
use proc_macro2::Span;
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Fields, Ident, Type};

pub struct Entity<'a> {
    pub ident: &'a Ident,
    pub table: String,
    pub attrs: StructAttrs,
    pub id: Option<Field<'a>>,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub ident: &'a Ident,
    pub ty: &'a Type,
    /// The column name: `rename`, else the field name without `r#`.
    pub column: String,
    pub column_span: Span,
    pub attrs: FieldAttrs,
}

impl Field<'_> {
    /// Whether the field's type is `Option<...>`, read from the syntax tree.
    pub fn is_option(&self) -> bool {
        option_inner(self.ty).is_some()
    }
}

/// The `T` of `Option<T>` (also `std::option::Option<T>` and `core::option::Option<T>`).
pub fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(p) = ty else { return None };
    if p.qself.is_some() {
        return None;
    }
    let segs: Vec<_> = p.path.segments.iter().collect();
    let last = segs.last()?;
    let prefix_ok = match segs.len() {
        1 => true,
        3 => {
            matches!(segs[0].ident.to_string().as_str(), "std" | "core")
                && segs[1].ident == "option"
        }
        _ => false,
    };
    if !prefix_ok || last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        syn::PathArguments::AngleBracketed(a) if a.args.len() == 1 => match &a.args[0] {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        },
        _ => None,
    }
}

fn snake_case(s: &str) -> String {
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if ch.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(ch.to_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

pub fn parse<'a>(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<Entity<'a>> {
    let named = match &input.data {
        Data::Struct(s) => match &s.fields {
            Fields::Named(n) => Some(&n.named),
            _ => None,
        },
        _ => None,
    };
    let Some(named) = named else {
        cx.error(
            input.ident.span(),
            "`Syncable` can only be derived for a struct with named fields, one per column",
        );
        return None;
    };
    if !input.generics.params.is_empty() {
        cx.error(
            input.generics.span(),
            "a Syncable entity cannot be generic: it describes one table",
        );
    }
    let attrs = attr::parse_struct_attrs(cx, &input.attrs);
    let table = attrs
        .table
        .as_ref()
        .map_or_else(|| snake_case(&input.ident.to_string()), |l| l.value());
    let mut id = None;
    let mut fields = Vec::new();
    for f in named {
        let Some(ident) = f.ident.as_ref() else {
            continue;
        };
        let fattrs = attr::parse_field_attrs(cx, &f.attrs);
        let (column, column_span) = match &fattrs.rename {
            Some(l) => (l.value(), l.span()),
            None => (
                ident.to_string().trim_start_matches("r#").to_owned(),
                ident.span(),
            ),
        };
        let field = Field {
            ident,
            ty: &f.ty,
            column,
            column_span,
            attrs: fattrs,
        };
        let is_id =
            field.attrs.id.is_some() || (id.is_none() && *ident == "id" && !has_explicit_id(named));
        if is_id {
            if id.is_some() {
                cx.error(
                    ident.span(),
                    "only one field can be the local primary key `#[sync(id)]`",
                );
            } else {
                id = Some(field);
            }
        } else {
            fields.push(field);
        }
    }
    Some(Entity {
        ident: &input.ident,
        table,
        attrs,
        id,
        fields,
    })
}

fn has_explicit_id(named: &syn::punctuated::Punctuated<syn::Field, syn::token::Comma>) -> bool {
    named.iter().any(|f| {
        f.attrs
            .iter()
            .filter(|a| a.path().is_ident("sync"))
            .any(|a| {
                let mut found = false;
                let _ = a.parse_nested_meta(|m| {
                    if m.path.is_ident("id") {
                        found = true;
                    }
                    // Skip values so other keys do not stop the scan.
                    if m.input.peek(syn::Token![=]) {
                        let _: syn::Expr = m.value()?.parse()?;
                    } else if m.input.peek(syn::token::Paren) {
                        let c;
                        syn::parenthesized!(c in m.input);
                        let _: proc_macro2::TokenStream = c.parse()?;
                    }
                    Ok(())
                });
                found
            })
    })
}
