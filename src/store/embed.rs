//! The schema's migration files, embedded in the binary: what `sqlx::migrate!` would do,
//! without compiling sqlx's drivers a second time for its proc macro (`store/codec.rs` says
//! why). A file's version and description are read from its name as sqlx reads them
//! (`0003_steps_pid.sql` is version 3, "steps pid"), and its checksum is sqlx's, so stores
//! migrated by `migrate!` open unchanged.
//!
//! A migration file is frozen once released (its checksum is kept in `_sqlx_migrations`); a
//! change of schema is a new file in each dialect's folder, listed once in [`migrations!`]. A
//! test holds the list against both folders.

use std::borrow::Cow;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};

/// The migrations of `migrations/$dialect/`: the same files, version for version, in each
/// dialect's folder (`migrations/README.md`), by file name without `.sql`.
macro_rules! migrations {
    ($dialect:literal) => {
        $crate::store::embed::migrations!(
            $dialect:
            "0001_deliveries_journal_steps",
            "0002_webhook_deliveries_tracker_seen",
            "0003_steps_pid",
            "0004_drop_hook_decisions",
            "0005_webhook_events",
            "0006_pipeline",
            "0007_leases_active_task_step_logs",
            "0008_alerts",
            "0009_steps_runner_build",
            "0010_commit_statuses",
            "0011_autotests",
            "0012_showrooms",
            "0013_showrooms_task_status",
            "0014_autotests_runner_build",
        )
    };
    ($dialect:literal: $($file:literal),* $(,)?) => {
        $crate::store::embed::migrator(&[$(
            (
                $file,
                include_str!(concat!(
                    env!("CARGO_MANIFEST_DIR"), "/migrations/", $dialect, "/", $file, ".sql"
                )),
            )
        ),*])
    };
}
pub(super) use migrations;

/// A migrator over `files`, each `(name, sql)`.
pub(super) fn migrator(files: &[(&'static str, &'static str)]) -> Migrator {
    Migrator::with_migrations(
        files
            .iter()
            .map(|&(name, sql)| migration(name, sql))
            .collect(),
    )
}

fn migration(name: &'static str, sql: &'static str) -> Migration {
    let (version, description) = name
        .split_once('_')
        .and_then(|(v, d)| Some((v.parse().ok()?, d.replace('_', " "))))
        .unwrap_or_else(|| panic!("migration `{name}` is not named NNNN_description"));
    Migration::new(
        version,
        Cow::Owned(description),
        MigrationType::Simple,
        sqlx::AssertSqlSafe(sql).into_sql_str(),
        sql.starts_with("-- no-transaction"),
    )
}

#[cfg(test)]
mod tests {
    /// The files each dialect's list names are the files of its folder, in order.
    #[test]
    fn the_lists_name_every_migration_file() {
        for (dialect, migrator) in [
            ("sqlite", &*super::super::sqlite::MIGRATOR),
            ("postgres", &*super::super::postgres::MIGRATOR),
        ] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(dialect);
            let mut on_disk: Vec<(i64, String, Vec<u8>)> = std::fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|x| x == "sql"))
                .map(|p| {
                    let stem = p.file_stem().unwrap().to_str().unwrap().to_string();
                    let (v, d) = stem.split_once('_').unwrap();
                    let sql = std::fs::read_to_string(&p).unwrap();
                    (
                        v.parse().unwrap(),
                        d.replace('_', " "),
                        <sha2::Sha384 as sha2::Digest>::digest(&sql).to_vec(),
                    )
                })
                .collect();
            on_disk.sort();
            let embedded: Vec<(i64, String, Vec<u8>)> = migrator
                .iter()
                .map(|m| (m.version, m.description.to_string(), m.checksum.to_vec()))
                .collect();
            assert_eq!(
                embedded, on_disk,
                "migrations/{dialect}/ and its list in store/"
            );
        }
    }
}
