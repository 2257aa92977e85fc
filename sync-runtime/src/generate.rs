//! The migration files an app crate keeps, written and checked by `cargo xtask migrations`:
//!
//! - `migrations/<target>/NNNN_<name>.sql`, one numbered file per target (`device`,
//!   `server_sqlite`, `server_postgres`);
//! - `migrations/schema.json`, the schema the latest migration produces, which the next run
//!   diffs against;
//! - `src/migrations.rs`, the list of files compiled into the app.

use crate::migrate::{self, GENERATED_HEADER, Target};
use crate::schema::Schema;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// What to tell the developer when the committed files are stale.
pub const STALE_HINT: &str = "run `cargo xtask migrations` and commit";

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plan(#[from] migrate::PlanError),
    #[error("{path}: not a schema snapshot: {source}")]
    Snapshot {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("migrations are stale: {reason}; {STALE_HINT}")]
    Stale { reason: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> GenerateError + '_ {
    move |source| GenerateError::Io {
        path: path.to_owned(),
        source,
    }
}

fn snapshot_path(crate_dir: &Path) -> PathBuf {
    crate_dir.join("migrations").join("schema.json")
}

fn listing_path(crate_dir: &Path) -> PathBuf {
    crate_dir.join("src").join("migrations.rs")
}

/// The committed migration files of `target`: (version, file stem), by version.
fn files(crate_dir: &Path, target: Target) -> Result<Vec<(u32, String)>, GenerateError> {
    let dir = crate_dir.join("migrations").join(target.dir());
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(&dir)(e)),
    };
    for entry in entries {
        let path = entry.map_err(io(&dir))?.path();
        let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        let version = stem.split('_').next().and_then(|n| n.parse().ok());
        if let (true, Some(v)) = (path.extension().is_some_and(|e| e == "sql"), version) {
            out.push((v, stem.to_owned()));
        }
    }
    out.sort();
    Ok(out)
}

fn read_snapshot(crate_dir: &Path) -> Result<Option<Schema>, GenerateError> {
    let path = snapshot_path(crate_dir);
    match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| GenerateError::Snapshot { path, source }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io(&path)(e)),
    }
}

fn snapshot_text(schema: &Schema) -> String {
    let mut s = serde_json::to_string_pretty(schema).unwrap_or_default();
    s.push('\n');
    s
}

/// The text of `src/migrations.rs` for the committed files.
fn listing(crate_dir: &Path) -> Result<String, GenerateError> {
    let mut out = String::new();
    let _ = writeln!(out, "{}", GENERATED_HEADER.replacen("--", "//", 1));
    out.push_str("//! The committed migrations of each target, oldest first.\n\n");
    out.push_str("use sync_runtime::migrate::Migration;\n");
    for (target, name, doc) in [
        (Target::Device, "DEVICE", "The device's SQLite database."),
        (
            Target::ServerSqlite,
            "SERVER_SQLITE",
            "The server on its embedded SQLite.",
        ),
        (
            Target::ServerPostgres,
            "SERVER_POSTGRES",
            "The server on PostgreSQL.",
        ),
    ] {
        let _ = write!(out, "\n/// {doc}\npub static {name}: &[Migration] = &[\n");
        for (v, stem) in files(crate_dir, target)? {
            let _ = writeln!(
                out,
                "    Migration::new({v}, \"{stem}\", include_str!(\"../migrations/{}/{stem}.sql\")),",
                target.dir()
            );
        }
        out.push_str("];\n");
    }
    Ok(out)
}

/// A file name for a migration from `previous` to `current`.
fn migration_name(previous: Option<&Schema>, current: &Schema) -> String {
    let Some(prev) = previous else {
        return "init".into();
    };
    let changed: Vec<&str> = current
        .tables
        .iter()
        .filter(|t| prev.table(&t.name) != Some(*t))
        .map(|t| t.name.as_str())
        .collect();
    if changed.is_empty() {
        // Only the layout of the server's indexes changed.
        return "server_indexes".into();
    }
    let mut name = format!("update_{}", changed.join("_"));
    name.truncate(60);
    name
}

/// Writes the next migration (if the entities changed), the snapshot and the listing. Returns
/// the files written.
pub fn update(crate_dir: &Path, schema: &Schema) -> Result<Vec<PathBuf>, GenerateError> {
    let previous = read_snapshot(crate_dir)?;
    let mut written = Vec::new();
    if let Some(plan) = migrate::plan(previous.as_ref(), schema)? {
        let next = Target::ALL
            .iter()
            .map(|t| files(crate_dir, *t).map(|f| f.last().map_or(0, |(v, _)| *v)))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .max()
            .unwrap_or(0)
            + 1;
        let stem = format!("{next:04}_{}", migration_name(previous.as_ref(), schema));
        for target in Target::ALL {
            let dir = crate_dir.join("migrations").join(target.dir());
            std::fs::create_dir_all(&dir).map_err(io(&dir))?;
            let path = dir.join(format!("{stem}.sql"));
            std::fs::write(&path, plan.for_target(target)).map_err(io(&path))?;
            written.push(path);
        }
        let path = snapshot_path(crate_dir);
        std::fs::write(&path, snapshot_text(schema)).map_err(io(&path))?;
        written.push(path);
    }
    let path = listing_path(crate_dir);
    let text = listing(crate_dir)?;
    if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, text).map_err(io(&path))?;
        written.push(path);
    }
    Ok(written)
}

/// Fails unless the committed files are exactly what [`update`] would leave: no entity change
/// without its migration, every target with the same migrations, and the listing current.
pub fn check(crate_dir: &Path, schema: &Schema) -> Result<(), GenerateError> {
    let stale = |reason: String| Err(GenerateError::Stale { reason });
    match read_snapshot(crate_dir)? {
        None => return stale("there is no migrations/schema.json yet".into()),
        Some(s) if s != *schema => {
            return stale("the entities changed since the last migration was written".into());
        }
        Some(_) => {}
    }
    let device = files(crate_dir, Target::Device)?;
    for t in [Target::ServerSqlite, Target::ServerPostgres] {
        if files(crate_dir, t)? != device {
            return stale(format!(
                "migrations/{} and migrations/device hold different migrations",
                t.dir()
            ));
        }
    }
    let want = listing(crate_dir)?;
    let path = listing_path(crate_dir);
    if std::fs::read_to_string(&path).ok().as_deref() != Some(want.as_str()) {
        return stale(format!(
            "{} does not list the migration files",
            path.display()
        ));
    }
    Ok(())
}
