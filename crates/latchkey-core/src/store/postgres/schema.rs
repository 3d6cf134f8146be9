//! The versioned schema, migrated forward at open and by `latchkey migrate`.
//!
//! Version 1: `latchkey_kv (k bytea PRIMARY KEY, v bytea NOT NULL)` holds every record of
//! the store's ordered keyspace (`layout.rs`), the list indexes included: the primary key's
//! B-tree is the index of every list, filter and sort of the API, as a range of keys.
//! `latchkey_schema` holds the version, one row.
//!
//! Version 2: `latchkey_followers (id bytea PRIMARY KEY, applied bigint, seen timestamptz)`,
//! each process's acknowledgement of the changes it applied (`follow.rs`).
//!
//! Version 3: no new table; it marks the list indexes' second layout (positions packed in
//! chunks, `chunks.rs`), which the store rebuilds at open. A process of version 2 would
//! read those chunks as single positions and rebuild them back: the version keeps it from
//! opening the database at all (`SchemaTooNew`), so every process is upgraded together.
//!
//! Version 4: no new table; it marks the index of users by tenant (`user_index.rs`), built at
//! open. A process of version 3 would write users without it, leaving them out of their
//! tenant's lists: the version keeps it from opening the database.
//!
//! Version 5: no new table; it marks the index of users by group (`user_index.rs`), which
//! a change to a group reads its members from. A process of version 4 would write users
//! without it, and a group's change would not see them: the version keeps it from
//! opening the database.
//!
//! Version 6: no new table; it marks the credit epoch in each key's usage-control version
//! (`controls.rs`): a set balance starts a new epoch, any other change keeps the slices
//! other processes hold. A process of version 5 would write a set as an ordinary change,
//! and a process of this version would keep, and give back, slices the set had voided:
//! the version keeps it from opening the database.

use super::client::{Pg, pg_error};
use crate::error::StoreError;

/// The newest schema version this build knows.
pub(crate) const SCHEMA: u32 = 6;

/// Each version's statements; `MIGRATIONS[n]` takes the schema from version `n` to `n + 1`.
const MIGRATIONS: [&str; SCHEMA as usize] = [
    "CREATE TABLE latchkey_kv (k bytea PRIMARY KEY, v bytea NOT NULL)",
    // The processes following the database: how far each applied the changes, and when it
    // last said so (a write waits for the live ones).
    "CREATE TABLE latchkey_followers (\
     id bytea PRIMARY KEY, applied bigint NOT NULL, seen timestamptz NOT NULL)",
    // The list indexes in chunks (index layout 2): only a mark, for older processes.
    "COMMENT ON TABLE latchkey_kv IS 'latchkey: list indexes in chunks (index layout 2)'",
    // The index of users by tenant: only a mark, for older processes.
    "COMMENT ON TABLE latchkey_kv IS \
     'latchkey: list indexes in chunks (index layout 2), users by tenant'",
    // The index of users by group: only a mark, for older processes.
    "COMMENT ON TABLE latchkey_kv IS \
     'latchkey: list indexes in chunks (index layout 2), users by tenant and group'",
    // Credit epochs in the usage-control versions: only a mark, for older processes.
    "COMMENT ON TABLE latchkey_kv IS \
     'latchkey: list indexes in chunks (index layout 2), users by tenant and group, \
     credit epochs'",
];

/// The first version with `latchkey_followers`.
const FOLLOWERS_SINCE: u32 = 2;

/// Serializes migrations of several processes starting at once.
const MIGRATE_LOCK: i64 = 0x6c6b_6d69_6772_6174; // "lkmigrat"

/// Brings the schema to [`SCHEMA`] and returns it; refuses a newer one, changing nothing.
/// A schema already at [`SCHEMA`] is only read: a database that takes no writes (a
/// standby, a replica a backup is taken from) opens.
pub(super) fn migrate(pg: &Pg) -> Result<u32, StoreError> {
    let mut client = pg.client()?;
    let current = pg.run(async {
        let exists = client
            .query_one("SELECT to_regclass('latchkey_schema') IS NOT NULL", &[])
            .await
            .map_err(pg_error)?
            .get::<_, bool>(0);
        if !exists {
            return Ok(None);
        }
        let row = client
            .query_opt("SELECT version FROM latchkey_schema", &[])
            .await
            .map_err(pg_error)?;
        Ok(row.map(|row| u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX)))
    })?;
    match current {
        Some(SCHEMA) => return Ok(SCHEMA),
        // Said before any write is tried: on a read-only database, the write's refusal
        // would hide it.
        Some(found) if found > SCHEMA => {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA,
            });
        }
        _ => {}
    }
    pg.run(async {
        let tx = client.transaction().await.map_err(pg_error)?;
        tx.query("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])
            .await
            .map_err(pg_error)?;
        // No NOTICE ("already exists, skipping") in the process's log at every start.
        tx.batch_execute("SET LOCAL client_min_messages = warning")
            .await
            .map_err(pg_error)?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS latchkey_schema (\
             one boolean PRIMARY KEY DEFAULT true CHECK (one), version integer NOT NULL)",
        )
        .await
        .map_err(pg_error)?;
        let found: u32 = match tx
            .query_opt("SELECT version FROM latchkey_schema", &[])
            .await
            .map_err(pg_error)?
        {
            Some(row) => u32::try_from(row.get::<_, i32>(0)).unwrap_or(u32::MAX),
            None => 0,
        };
        if found > SCHEMA {
            return Err(StoreError::SchemaTooNew {
                found,
                supported: SCHEMA,
            });
        }
        for (from, statements) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            tx.batch_execute(statements).await.map_err(pg_error)?;
            tracing::info!(
                version = from + 1,
                "migrated the database's latchkey schema"
            );
        }
        // Processes that followed the database within the last seconds and did not leave
        // (older daemons, which keep serving on the schema they know): what the
        // CHANGELOG says to stop first, said where it happens.
        if (FOLLOWERS_SINCE..SCHEMA).contains(&found) {
            let beside: i64 = tx
                .query_one(
                    "SELECT count(*) FROM latchkey_followers \
                     WHERE seen > now() - interval '10 seconds'",
                    &[],
                )
                .await
                .map_err(pg_error)?
                .get(0);
            if beside > 0 {
                tracing::warn!(
                    from = found,
                    to = SCHEMA,
                    processes = beside,
                    "migrated the database's latchkey schema while other processes follow it: \
                     stop every daemon of an older version (it keeps serving on the schema it \
                     knows; credits and rate limits it holds may be spent twice), as the \
                     CHANGELOG's Upgrading says"
                );
            }
        }
        let version = i32::try_from(SCHEMA).unwrap_or(i32::MAX);
        tx.execute(
            "INSERT INTO latchkey_schema (version) VALUES ($1) \
             ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version",
            &[&version],
        )
        .await
        .map_err(pg_error)?;
        tx.commit().await.map_err(pg_error)?;
        Ok(SCHEMA)
    })
}
