//! `#[derive(Syncable)]` misuse is a compile error pointing at the field or attribute at fault;
//! correct use compiles and works. `TRYBUILD=overwrite` regenerates the expected `.stderr` files.

#[test]
fn derive_misuse_is_a_compile_error_and_correct_use_compiles() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/fail/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
