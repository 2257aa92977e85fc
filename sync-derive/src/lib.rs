//! `#[derive(Syncable)]`: describes an entity's table as data and converts the struct to and
//! from column values; the `sync-runtime` crate does the rest generically.
//!
//! See the `sync-runtime` crate's documentation of `Syncable` for the attributes.

mod ast;
mod attr;
mod check;
mod expand;

use proc_macro::TokenStream;

#[proc_macro_derive(Syncable, attributes(sync))]
pub fn derive_syncable(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
