//! The repository explains itself: every Markdown file a doc or a comment names, and every local
//! target of a Markdown link, is a file of the repository. A reader of a clone has nothing else.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The text files that may name a document.
const SCANNED: [&str; 4] = [".md", ".rs", ".toml", ".html"];

fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// The tracked files (`git ls-files`), or, outside a git checkout, every file but `target/` and
/// `.git/`.
fn repository_files(root: &Path) -> Vec<PathBuf> {
    let listed = Command::new("git")
        .arg("-C")
        .arg(root)
        .args(["ls-files", "-z"])
        .output();
    match listed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout)
            .split('\0')
            .filter(|name| !name.is_empty())
            .map(PathBuf::from)
            .collect(),
        _ => {
            let mut files = Vec::new();
            walk(root, root, &mut files);
            files
        }
    }
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() {
            if name != "target" && name != ".git" {
                walk(root, &path, files);
            }
        } else if let Ok(relative) = path.strip_prefix(root) {
            files.push(relative.to_path_buf());
        }
    }
}

/// What `text` names: the local targets of Markdown links (in Markdown files) and every word
/// ending in `.md`, with its line number. URLs are not references to the repository.
fn references(text: &str, markdown: bool, rust: bool) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if markdown {
            let mut rest = line;
            while let Some(start) = rest.find("](") {
                rest = &rest[start + 2..];
                let end = rest.find(')').unwrap_or(rest.len());
                let target = rest[..end].split('#').next().unwrap_or("").trim();
                let target = target.split_whitespace().next().unwrap_or("");
                if !target.is_empty() && !target.contains(':') {
                    found.push((number, target.to_string()));
                }
                rest = &rest[end..];
            }
        }
        let bytes = line.as_bytes();
        let is_path_char = |b: u8| b.is_ascii_alphanumeric() || b"_./-".contains(&b);
        let mut i = 0;
        while i < bytes.len() {
            if !is_path_char(bytes[i]) {
                i += 1;
                continue;
            }
            let start = i;
            while i < bytes.len() && is_path_char(bytes[i]) {
                i += 1;
            }
            let word = line[start..i].trim_end_matches(['.', '/', '-']);
            let after_url_scheme = start > 0 && bytes[start - 1] == b':';
            // In Rust code, a string literal that is just a file name is a path the code builds
            // (`docs.join("bench.md")`), not a pointer for the reader.
            let whole_literal = rust
                && start > 0
                && bytes[start - 1] == b'"'
                && bytes.get(start + word.len()) == Some(&b'"');
            let reference = (number, word.to_string());
            if word.ends_with(".md")
                && word.len() > 3
                && !after_url_scheme
                && !whole_literal
                && !found.contains(&reference)
            {
                found.push(reference);
            }
        }
    }
    found
}

/// Whether `target`, named in `file`, is there: beside `file`, or from the repository's root.
fn resolves(root: &Path, file: &Path, target: &str) -> bool {
    if target.starts_with('/') {
        return false; // outside the repository
    }
    let beside = file.parent().map(|dir| root.join(dir).join(target));
    beside.is_some_and(|path| path.exists()) || root.join(target).exists()
}

#[test]
fn every_referenced_document_is_in_the_repository() {
    let root = repository_root();
    let mut dangling = Vec::new();
    for file in repository_files(&root) {
        let name = file.to_string_lossy();
        if !SCANNED.iter().any(|extension| name.ends_with(extension)) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(root.join(&file)) else {
            continue; // deleted in the working tree, or not text
        };
        let markdown = name.ends_with(".md");
        let rust = name.ends_with(".rs");
        for (line, target) in references(&text, markdown, rust) {
            if !resolves(&root, &file, &target) {
                dangling.push(format!("{name}:{line}: {target}"));
            }
        }
    }
    assert!(
        dangling.is_empty(),
        "{} reference(s) to a file the repository does not hold \
         (point at docs/ instead, or say it without a pointer):\n{}",
        dangling.len(),
        dangling.join("\n")
    );
}

#[test]
fn references_are_found_in_links_and_words_but_not_in_urls() {
    // Written with `{md}` so that this file itself names no document.
    let text = "See [the protocol](docs/P.{md}#push) and notes.{md}.\n\
                A [site](https://example.org/x.{md}), ![chart](chart.svg), http://h/y.{md}\n\
                let p = dir.join(\"bench.{md}\");"
        .replace("{md}", "md");
    let found: Vec<String> = references(&text, true, true)
        .into_iter()
        .map(|(line, target)| format!("{line}:{target}"))
        .collect();
    assert_eq!(
        found,
        ["1:docs/P.{md}", "1:notes.{md}", "2:chart.svg"].map(|r| r.replace("{md}", "md"))
    );
}
