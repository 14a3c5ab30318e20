//! Versioned CQL schema: the migrations in `storage/scylla/cql/NNN_name.cql`, the routine that
//! applies them (`tern migrate`), and the check that refuses to run on an older schema.
//!
//! Applied versions are recorded in `<keyspace>.schema_migrations` with a checksum of the
//! file, so a re-run applies only what is missing and an edited, already applied file is
//! caught instead of silently diverging. Every DDL statement is `IF NOT EXISTS`, so a
//! migration interrupted half-way is simply re-run. Run one `tern migrate` at a time:
//! concurrent schema changes of the same table race in Cassandra before 5.1.

use super::{config::ScyllaConfig, driver_error};
use crate::StoreError;
use scylla::{client::session::Session, statement::unprepared::Statement};
use std::time::Duration;

/// Timeout of one schema change. A DDL statement returns only once the nodes agree on
/// the new schema, which on a busy node takes far longer than a data request (over
/// 12 s was seen on a loaded 2-core test machine); migrations run rarely and by hand.
const DDL_TIMEOUT: Duration = Duration::from_secs(120);

/// `cql` as a statement with the [`DDL_TIMEOUT`].
fn ddl(cql: impl Into<String>) -> Statement {
    let mut st = Statement::new(cql);
    st.set_request_timeout(Some(DDL_TIMEOUT));
    st
}

/// One schema migration: a CQL file of the repository.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Increasing from 1; the file's `NNN` prefix.
    pub version: u32,
    /// The file name without `.cql`.
    pub name: &'static str,
    /// The file's text.
    pub cql: &'static str,
}

/// Every migration, in order. The last one's version is the schema this code needs.
pub const MIGRATIONS: &[Migration] = &[
    Migration { version: 1, name: "001_init", cql: include_str!("../cql/001_init.cql") },
    Migration { version: 2, name: "002_owners", cql: include_str!("../cql/002_owners.cql") },
    Migration { version: 3, name: "003_groups", cql: include_str!("../cql/003_groups.cql") },
    Migration { version: 4, name: "004_group_buckets", cql: include_str!("../cql/004_group_buckets.cql") },
];

/// The schema version this code reads and writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// What [`ScyllaStore::migrate`](super::ScyllaStore::migrate) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// The keyspace migrated.
    pub keyspace: String,
    /// Whether the keyspace was created by this run (else it existed, and its
    /// replication was left as it was).
    pub created_keyspace: bool,
    /// Migrations applied by this run, as (version, name).
    pub applied: Vec<(u32, &'static str)>,
    /// The schema version now recorded (= [`SCHEMA_VERSION`]).
    pub version: u32,
}

impl std::fmt::Display for MigrationReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "keyspace {}", self.keyspace)?;
        if self.created_keyspace {
            write!(f, " (created)")?;
        }
        if self.applied.is_empty() {
            write!(f, ": schema already at version {}, nothing to do", self.version)
        } else {
            let names: Vec<&str> = self.applied.iter().map(|(_, n)| *n).collect();
            write!(f, ": applied {}; schema now at version {}", names.join(", "), self.version)
        }
    }
}

/// The statements of a migration file: whole-line `--` comments dropped, split at `;`
/// ending a line.
pub fn statements(cql: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in cql.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("--") || trimmed.is_empty() {
            continue;
        }
        current.push_str(line);
        current.push('\n');
        if trimmed.ends_with(';') {
            let stmt = current.trim().trim_end_matches(';').trim().to_owned();
            if !stmt.is_empty() {
                out.push(stmt);
            }
            current.clear();
        }
    }
    if !current.trim().is_empty() {
        out.push(current.trim().to_owned());
    }
    out
}

/// FNV-1a of the file: a stable fingerprint (not a security measure) to notice a released
/// migration being edited.
pub fn checksum(cql: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in cql.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

const MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS {ks}.schema_migrations (
    version int PRIMARY KEY,
    name text,
    checksum bigint,
    applied_ms bigint
)";

/// The versions recorded in `schema_migrations`, with their checksums; `None` when the
/// keyspace or the table does not exist.
pub(super) async fn recorded(session: &Session, keyspace: &str) -> Result<Option<Vec<(u32, i64)>>, StoreError> {
    let exists = session
        .query_unpaged(
            "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = 'schema_migrations'",
            (keyspace,),
        )
        .await
        .map_err(|e| driver_error("looking for schema_migrations", e))?
        .into_rows_result()
        .map_err(|e| driver_error("looking for schema_migrations", e))?
        .rows_num()
        > 0;
    if !exists {
        return Ok(None);
    }
    let rows = session
        .query_unpaged(format!("SELECT version, checksum FROM {keyspace}.schema_migrations"), ())
        .await
        .map_err(|e| driver_error("reading schema_migrations", e))?
        .into_rows_result()
        .map_err(|e| driver_error("reading schema_migrations", e))?;
    let mut versions = Vec::new();
    for row in rows.rows::<(i32, Option<i64>)>().map_err(|e| driver_error("reading schema_migrations", e))? {
        let (version, sum) = row.map_err(|e| driver_error("reading schema_migrations", e))?;
        let version =
            u32::try_from(version).map_err(|_| StoreError::corrupt(format!("schema_migrations version {version}")))?;
        versions.push((version, sum.unwrap_or(0)));
    }
    versions.sort_unstable();
    Ok(Some(versions))
}

/// Creates the keyspace if missing, then applies every migration not yet recorded.
pub(super) async fn migrate(session: &Session, config: &ScyllaConfig) -> Result<MigrationReport, StoreError> {
    let ks = &config.keyspace;
    let existed = keyspace_exists(session, ks).await?;
    if !existed {
        let cql = format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {} AND durable_writes = true",
            config.replication.to_cql()
        );
        session.query_unpaged(ddl(cql), ()).await.map_err(|e| driver_error("creating the keyspace", e))?;
    }
    session
        .query_unpaged(ddl(MIGRATIONS_TABLE.replace("{ks}", ks)), ())
        .await
        .map_err(|e| driver_error("creating schema_migrations", e))?;
    let done = recorded(session, ks).await?.unwrap_or_default();
    if let Some(&(newest, _)) = done.last() {
        if newest > SCHEMA_VERSION {
            return Err(StoreError::Schema(format!(
                "keyspace {ks} has schema version {newest}, newer than this build's {SCHEMA_VERSION}: \
                 upgrade tern instead of migrating"
            )));
        }
    }
    session.use_keyspace(ks, true).await.map_err(|e| driver_error("switching to the keyspace", e))?;
    let mut applied = Vec::new();
    for m in MIGRATIONS {
        if let Some(&(_, sum)) = done.iter().find(|(v, _)| *v == m.version) {
            if sum != checksum(m.cql) {
                return Err(StoreError::Schema(format!(
                    "migration {} was changed after keyspace {ks} applied it; released migrations must never be \
                     edited (add a new one instead)",
                    m.name
                )));
            }
            continue;
        }
        for stmt in statements(m.cql) {
            session
                .query_unpaged(ddl(stmt.as_str()), ())
                .await
                .map_err(|e| driver_error(&format!("migration {}: {}", m.name, first_line(&stmt)), e))?;
        }
        data_step(session, ks, m.version).await?;
        // Prepared explicitly: `execute_unpaged` re-prepares when a busy node evicted the
        // statement from its cache, where `query_unpaged` with values failed outright.
        let record = session
            .prepare(format!(
                "INSERT INTO {ks}.schema_migrations (version, name, checksum, applied_ms) VALUES (?, ?, ?, ?)"
            ))
            .await
            .map_err(|e| driver_error("recording a migration", e))?;
        session
            .execute_unpaged(&record, (m.version as i32, m.name, checksum(m.cql), super::now_ms() as i64))
            .await
            .map_err(|e| driver_error("recording a migration", e))?;
        tracing::info!(keyspace = %ks, migration = m.name, "applied schema migration");
        applied.push((m.version, m.name));
    }
    Ok(MigrationReport { keyspace: ks.clone(), created_keyspace: !existed, applied, version: SCHEMA_VERSION })
}

/// The data a migration moves after its DDL (before it is recorded, so an interrupted
/// run redoes it; every step is an idempotent upsert).
async fn data_step(session: &Session, ks: &str, version: u32) -> Result<(), StoreError> {
    if version != 4 {
        return Ok(());
    }
    // 004: every group of 003's one-partition-per-app table into its bucket.
    use futures_util::StreamExt;
    let insert = session
        .prepare(format!("INSERT INTO {ks}.group_records (app_id, bucket, group_id, record) VALUES (?, ?, ?, ?)"))
        .await
        .map_err(|e| driver_error("migration 004: preparing the copy", e))?;
    let mut rows = session
        .query_iter(format!("SELECT app_id, group_id, record FROM {ks}.groups"), ())
        .await
        .map_err(|e| driver_error("migration 004: reading groups", e))?
        .rows_stream::<(i64, String, String)>()
        .map_err(|e| driver_error("migration 004: reading groups", e))?;
    let mut copied = 0u64;
    while let Some(row) = rows.next().await {
        let (app, group, record) = row.map_err(|e| driver_error("migration 004: reading groups", e))?;
        session
            .execute_unpaged(&insert, (app, super::group_bucket(&group), group.as_str(), record.as_str()))
            .await
            .map_err(|e| driver_error("migration 004: copying a group", e))?;
        copied += 1;
    }
    tracing::info!(keyspace = %ks, groups = copied, "migration 004: groups copied into their buckets");
    Ok(())
}

/// Refuses a keyspace whose schema is not exactly the one this code needs.
pub(super) async fn check_current(session: &Session, keyspace: &str) -> Result<(), StoreError> {
    let run_migrate = "run `tern migrate --config FILE` (it creates or upgrades the keyspace and tables)";
    if !keyspace_exists(session, keyspace).await? {
        return Err(StoreError::Schema(format!("keyspace {keyspace} does not exist: {run_migrate}")));
    }
    let found = recorded(session, keyspace).await?.unwrap_or_default().last().map_or(0, |&(v, _)| v);
    match found.cmp(&SCHEMA_VERSION) {
        std::cmp::Ordering::Equal => Ok(()),
        std::cmp::Ordering::Less => Err(StoreError::Schema(format!(
            "keyspace {keyspace} has schema version {found}, older than this build's {SCHEMA_VERSION}: {run_migrate}"
        ))),
        std::cmp::Ordering::Greater => Err(StoreError::Schema(format!(
            "keyspace {keyspace} has schema version {found}, newer than this build's {SCHEMA_VERSION}: \
             run a tern at least as new as the one that migrated it"
        ))),
    }
}

async fn keyspace_exists(session: &Session, keyspace: &str) -> Result<bool, StoreError> {
    Ok(session
        .query_unpaged("SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?", (keyspace,))
        .await
        .map_err(|e| driver_error("looking for the keyspace", e))?
        .into_rows_result()
        .map_err(|e| driver_error("looking for the keyspace", e))?
        .rows_num()
        > 0)
}

fn first_line(stmt: &str) -> &str {
    stmt.lines().next().unwrap_or(stmt).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_and_named_in_order() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1);
            assert!(m.name.starts_with(&format!("{:03}_", m.version)), "{}", m.name);
        }
        assert_eq!(SCHEMA_VERSION as usize, MIGRATIONS.len());
    }

    #[test]
    fn init_splits_into_create_table_statements() {
        let stmts = statements(MIGRATIONS[0].cql);
        assert_eq!(stmts.len(), 11, "{stmts:#?}");
        for s in &stmts {
            assert!(s.starts_with("CREATE TABLE IF NOT EXISTS "), "{s}");
            assert!(!s.contains(';') && !s.contains("--"), "{s}");
        }
    }

    #[test]
    fn owners_migration_only_adds_tables() {
        let stmts = statements(MIGRATIONS[1].cql);
        assert_eq!(stmts.len(), 3, "{stmts:#?}");
        assert!(stmts.iter().all(|s| s.starts_with("CREATE TABLE IF NOT EXISTS ")), "{stmts:#?}");
    }

    #[test]
    fn splitter_handles_comments_and_a_missing_final_semicolon() {
        let got = statements("-- c\nA 1;\n  -- x\nB\n  2;\n\nC");
        assert_eq!(got, vec!["A 1", "B\n  2", "C"]);
        assert_ne!(checksum("a"), checksum("b"));
        assert_eq!(checksum(MIGRATIONS[0].cql), checksum(MIGRATIONS[0].cql));
    }
}
