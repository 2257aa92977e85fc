//! `cfg(postgres)` when `SYNC_TEST_POSTGRES_URL` is set: without it the PostgreSQL tests show
//! as ignored with the reason, not as passing having run nothing.

fn main() {
    println!("cargo::rerun-if-env-changed=SYNC_TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(postgres)");
    if std::env::var_os("SYNC_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres");
    }
}
