//! The database's layout: versioned migrations embedded in the binary, applied in order when a
//! store opens, with each version recorded in `nurture_migrations`. PostgreSQL's DDL is
//! transactional: the pending migrations of one open apply in one transaction, all or none.
//!
//! Several daemons may open one database at the same moment: a transaction-scoped advisory
//! lock makes them migrate one at a time (the second finds the work done). A database written
//! by a newer nurture is refused, never written; one that holds tables but no migration record
//! is not a nurture store and is refused too.

use postgres::Client;

use super::PgError;

/// The migrations, in order; a migration's version is its place in this list, from 1. Never
/// edit a released one: add the next.
const MIGRATIONS: &[(&str, &str)] = &[
    ("initial", include_str!("migrations/0001_initial.sql")),
    (
        "in-flight owner",
        include_str!("migrations/0002_in_flight_owner.sql"),
    ),
];

/// The layout version this build reads and writes.
pub const VERSION: i32 = MIGRATIONS.len() as i32;

/// The advisory lock key opening stores take while they migrate (any constant unlikely to be
/// used by another application on the same database: "nurture" in ASCII).
const MIGRATION_LOCK: i64 = 0x006e_7572_7475_7265;

/// Brings the database (named `database` in errors) up to [`VERSION`], returning the version
/// it found.
pub fn migrate(client: &mut Client, database: &str) -> Result<i32, PgError> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
    let recorded: bool = tx
        .query_one("SELECT to_regclass('nurture_migrations') IS NOT NULL", &[])?
        .get(0);
    if !recorded {
        let tables: i64 = tx
            .query_one(
                "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
                &[],
            )?
            .get(0);
        if tables > 0 {
            return Err(PgError::Foreign {
                database: database.to_owned(),
            });
        }
        tx.batch_execute(
            "CREATE TABLE nurture_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )?;
    }
    let found: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM nurture_migrations",
            &[],
        )?
        .get(0);
    if found > VERSION {
        return Err(PgError::Newer {
            database: database.to_owned(),
            found,
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        let version = index as i32 + 1;
        tx.batch_execute(sql).map_err(|error| PgError::Migration {
            version,
            name,
            error,
        })?;
        tx.execute(
            "INSERT INTO nurture_migrations (version, name) VALUES ($1, $2)",
            &[&version, name],
        )?;
    }
    tx.commit()?;
    Ok(found)
}
