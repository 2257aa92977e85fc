//! `cargo xtask screenshots`: the settings page's pictures in the README, taken by its browser
//! test in headless Chromium, so they show the page as it is.

use std::process::{Command, ExitCode};

pub fn run() -> ExitCode {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "test",
            "--quiet",
            "--package",
            "tests",
            "--test",
            "settings_page_browser",
        ])
        // Write docs/screenshots/, and fail rather than skip without Chromium.
        .env("SYNC_UPDATE_SCREENSHOTS", "1")
        .env("SYNC_REQUIRE_BROWSER", "1")
        .status();
    match status {
        Ok(s) if s.success() => {
            println!("wrote docs/screenshots/*.png");
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!("error: the browser test failed; docs/screenshots/ may be incomplete");
            ExitCode::FAILURE
        }
    }
}
