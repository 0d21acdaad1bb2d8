//! Rebuilds when a migration file is added: `sqlx::migrate!` embeds the files of
//! `migrations/` at build time, and cargo cannot see a new file by itself.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
