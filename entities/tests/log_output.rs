//! The server's logs carry colour codes only on a terminal: written to a pipe or a file, they
//! are plain text.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[test]
fn logs_written_to_a_pipe_carry_no_colour_codes() {
    let dir = std::env::temp_dir().join(format!("log-output-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let database = format!("sqlite://{}", dir.join("server.sqlite").display());
    let mut child = Command::new(env!("CARGO_BIN_EXE_sync-server"))
        .args(["--listen", "127.0.0.1:0", "--database", &database])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sync-server");
    let mut lines = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        let started = line.starts_with("listening on http://");
        lines.push(line);
        if started {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    let logged = lines.join("\n");
    assert!(
        logged.contains("sync server listening"),
        "no log line before the address:\n{logged}"
    );
    assert!(
        !logged.contains('\u{1b}'),
        "an escape code in logs written to a pipe:\n{logged:?}"
    );
}
