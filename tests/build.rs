//! `cfg(postgres)` when `SYNC_TEST_POSTGRES_URL` is set, `cfg(browser)` when Chromium and
//! chromedriver are at hand: without them those tests show as ignored with the reason, not as
//! passing having run nothing.

use std::env::{split_paths, var_os};

fn main() {
    println!("cargo::rerun-if-env-changed=SYNC_TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(postgres)");
    if var_os("SYNC_TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres");
    }

    // The lookup of tests/tests/settings_page_browser.rs (`find_tool`); with
    // SYNC_REQUIRE_BROWSER the test runs, and fails if the browser is missing.
    for var in [
        "SYNC_REQUIRE_BROWSER",
        "SYNC_TEST_CHROMIUM",
        "SYNC_TEST_CHROMEDRIVER",
        "PATH",
    ] {
        println!("cargo::rerun-if-env-changed={var}");
    }
    println!("cargo::rustc-check-cfg=cfg(browser)");
    let chromium = found(
        "SYNC_TEST_CHROMIUM",
        &["chromium", "chromium-browser", "google-chrome"],
    );
    let driver = found("SYNC_TEST_CHROMEDRIVER", &["chromedriver"]);
    if var_os("SYNC_REQUIRE_BROWSER").is_some() || (chromium && driver) {
        println!("cargo::rustc-cfg=browser");
    }
}

/// Whether the executable named by `var`, else one of `names` on the PATH, exists.
fn found(var: &str, names: &[&str]) -> bool {
    if let Some(path) = var_os(var) {
        return std::path::Path::new(&path).is_file();
    }
    let path = var_os("PATH").unwrap_or_default();
    split_paths(&path).any(|dir| names.iter().any(|name| dir.join(name).is_file()))
}
