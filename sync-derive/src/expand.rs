//! Code generation: the `Syncable` impl, the table description, and compile-time assertions that
//! point at the user's tokens.

use crate::ast::{self, Entity, Field};
use crate::attr::{Ctxt, DateTimeText, DefaultLit, MergeMode, OnDelete};
use crate::check;
use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;

pub fn derive(input: &syn::DeriveInput) -> syn::Result<TokenStream> {
    let mut cx = Ctxt::default();
    let entity = ast::parse(&mut cx, input);
    if let Some(e) = &entity {
        check::check(&mut cx, e);
    }
    cx.finish()?;
    let Some(e) = entity else {
        unreachable!("a parse failure always reports an error")
    };
    Ok(expand(&e))
}

fn default_tokens(d: &DefaultLit) -> TokenStream {
    let p = quote!(::sync_runtime::__private);
    match d {
        DefaultLit::Text(s) => quote!(#p::DefaultValue::Text(#p::ToOwned::to_owned(#s))),
        DefaultLit::Integer(i) => quote!(#p::DefaultValue::Integer(#i)),
        DefaultLit::Real(f) => quote!(#p::DefaultValue::Real(#f)),
        DefaultLit::Boolean(b) => quote!(#p::DefaultValue::Boolean(#b)),
        DefaultLit::Now => quote!(#p::DefaultValue::Now),
    }
}

fn column_tokens(e: &Entity<'_>, f: &Field<'_>) -> TokenStream {
    let p = quote!(::sync_runtime::__private);
    let ty = f.ty;
    let name = &f.column;
    let a = &f.attrs;
    let (col_ty, nullable) = if a.json.is_some() {
        let nullable = f.is_option();
        (quote!(#p::ColumnType::Json), quote!(#nullable))
    } else {
        (
            quote_spanned!(ty.span()=> <#ty as #p::FieldType>::TYPE),
            quote_spanned!(ty.span()=> <#ty as #p::FieldType>::NULLABLE),
        )
    };
    let default = match &a.default {
        Some((d, _)) => {
            let d = default_tokens(d);
            quote!(::core::option::Option::Some(#d))
        }
        None => quote!(::core::option::Option::None),
    };
    let reference = match &a.references {
        Some(parent) => {
            let on_delete = match a.on_delete.map(|(o, _)| o) {
                Some(OnDelete::SetNull) => quote!(#p::OnDelete::SetNull),
                // A nullable reference defaults to SET NULL, a required one to CASCADE.
                None if f.is_option() => quote!(#p::OnDelete::SetNull),
                _ => quote!(#p::OnDelete::Cascade),
            };
            let by_key = match &a.key {
                Some(k) => {
                    let k = k.to_string();
                    quote!(::core::option::Option::Some(#p::ToOwned::to_owned(#k)))
                }
                None => quote!(::core::option::Option::None),
            };
            let table = quote_spanned!(parent.span()=> <#parent as #p::Syncable>::TABLE_NAME);
            quote!(::core::option::Option::Some(#p::Reference {
                table: #p::ToOwned::to_owned(#table),
                on_delete: #on_delete,
                by_key: #by_key,
            }))
        }
        None => quote!(::core::option::Option::None),
    };
    let role = if a.local.is_some() {
        quote!(#p::ColumnRole::Local)
    } else if a.owner.is_some() {
        quote!(#p::ColumnRole::Owner)
    } else {
        quote!(#p::ColumnRole::Data)
    };
    let since = a.since.map_or(1, |(n, _)| n);
    let unit = match &a.unit {
        Some(u) => quote!(::core::option::Option::Some(#p::ToOwned::to_owned(#u))),
        None => quote!(::core::option::Option::None),
    };
    // A field's own form, else the struct's; it applies to DATETIME columns only, whose type
    // the runtime knows from the field's type.
    let datetime = match a.datetime.or(e.attrs.datetime).map(|(d, _)| d) {
        Some(DateTimeText::Sqlite) => {
            quote_spanned!(ty.span()=> #p::datetime_text::<#ty>(#p::DateTimeText::Sqlite))
        }
        _ => quote!(#p::DateTimeText::Wire),
    };
    quote! {
        #p::Column {
            name: #p::ToOwned::to_owned(#name),
            ty: #col_ty,
            nullable: #nullable,
            default: #default,
            reference: #reference,
            role: #role,
            since: #since,
            unit: #unit,
            datetime_text: #datetime,
        }
    }
}

fn expand(e: &Entity<'_>) -> TokenStream {
    let p = quote!(::sync_runtime::__private);
    let ident = e.ident;
    let table = &e.table;
    let synced = e.attrs.local_only.is_none();
    let id =
        e.id.as_ref()
            .expect("checked: the entity has a primary key");
    let (id_ident, id_ty, id_col) = (id.ident, id.ty, &id.column);

    let columns: Vec<TokenStream> = e.fields.iter().map(|f| column_tokens(e, f)).collect();
    let merge = match e.attrs.merge.map(|(m, _)| m) {
        Some(MergeMode::Row) => quote!(#p::MergeMode::Row),
        _ => quote!(#p::MergeMode::Field),
    };
    let natural_keys: Vec<TokenStream> = e
        .attrs
        .unique
        .iter()
        .map(|key| {
            let cols = key.iter().map(|k| {
                let name = k.to_string();
                let col = e.fields.iter().find(|f| *f.ident == name).map_or_else(
                    || name.trim_start_matches("r#").to_owned(),
                    |f| f.column.clone(),
                );
                quote!(#p::ToOwned::to_owned(#col))
            });
            quote!(::std::vec![#(#cols),*])
        })
        .collect();

    let to_values = e.fields.iter().map(|f| {
        let (fi, ty) = (f.ident, f.ty);
        if f.attrs.json.is_some() {
            quote!(#p::json_to_value(&self.#fi))
        } else {
            quote_spanned!(ty.span()=> <#ty as #p::FieldType>::to_value(&self.#fi))
        }
    });
    let from_values = e.fields.iter().map(|f| {
        let (fi, ty, col) = (f.ident, f.ty, &f.column);
        let take = quote!(#p::next_value(&mut __values, #col)?);
        let decode = if f.attrs.json.is_some() {
            quote!(#p::json_from_value::<#ty>(#take))
        } else {
            quote_spanned!(ty.span()=> <#ty as #p::FieldType>::from_value(#take))
        };
        quote!(#fi: #p::in_column(#decode, #col)?)
    });

    let mut asserts = Vec::new();
    for f in &e.fields {
        let ty = f.ty;
        // A parent that is not Syncable is reported once, by `<Parent as Syncable>::TABLE_NAME`
        // in the table description, at the parent's span.
        if f.attrs.references.is_some() {
            asserts.push(quote_spanned!(ty.span()=> #p::assert_reference_field::<#ty>();));
        }
        if f.attrs.datetime.is_some() {
            asserts.push(quote_spanned!(ty.span()=> #p::assert_datetime_field::<#ty>();));
        }
        if synced && f.column == "updated_at" {
            asserts.push(quote_spanned!(ty.span()=> #p::assert_merge_clock::<#ty>();));
        }
    }
    let id_assert = quote_spanned!(id_ty.span()=> #p::assert_local_id::<#id_ty>(););

    quote! {
        const _: () = {
            #[automatically_derived]
            impl #p::Syncable for #ident {
                const TABLE_NAME: &'static str = #table;

                fn table() -> &'static #p::Table {
                    static __TABLE: #p::OnceLock<#p::Table> = #p::OnceLock::new();
                    __TABLE.get_or_init(|| #p::Table {
                        name: #p::ToOwned::to_owned(#table),
                        synced: #synced,
                        id_column: #p::ToOwned::to_owned(#id_col),
                        columns: ::std::vec![#(#columns),*],
                        natural_keys: ::std::vec![#(#natural_keys),*],
                        merge: #merge,
                    })
                }

                fn local_id(&self) -> ::core::option::Option<i64> {
                    <#id_ty as #p::LocalId>::get(&self.#id_ident)
                }

                fn set_local_id(&mut self, __id: i64) {
                    <#id_ty as #p::LocalId>::set(&mut self.#id_ident, __id)
                }

                fn to_values(&self) -> #p::Vec<#p::Value> {
                    ::std::vec![#(#to_values),*]
                }

                fn from_values(
                    __id: i64,
                    __values: #p::Vec<#p::Value>,
                ) -> ::core::result::Result<Self, #p::ValueError> {
                    let mut __values = __values.into_iter();
                    ::core::result::Result::Ok(Self {
                        #id_ident: <#id_ty as #p::LocalId>::from_id(__id),
                        #(#from_values,)*
                    })
                }
            }

            #[allow(dead_code)]
            const fn __sync_assertions() {
                #id_assert
                #(#asserts)*
            }
        };
    }
}
