//! The two SQL adapters. PostgreSQL and SQLite (3.35+) understand the same
//! statements here — `$n` parameters, `ON CONFLICT … DO UPDATE`,
//! `RETURNING` — so one implementation is stamped out for both pools.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions};

use super::{DeliveryState, DeviceStatus, StoreError, TokenStore};
use crate::device::{CheckedDevice, Device, Environment, Platform};

/// Users asked about in one `users_with_devices` query (well under both
/// databases' parameter limits).
const USERS_PER_QUERY: usize = 500;

/// Schema versions, applied in order, each once.
const MIGRATIONS: &[(i64, &str)] = &[
    (
        1,
        "CREATE TABLE IF NOT EXISTS herald_devices (
            id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            platform TEXT NOT NULL,
            token TEXT NOT NULL,
            p256dh TEXT,
            auth TEXT,
            app TEXT NOT NULL,
            environment TEXT NOT NULL,
            locale TEXT,
            created_ms BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            last_seen_ms BIGINT NOT NULL,
            UNIQUE (platform, token)
        )",
    ),
    (
        2,
        "CREATE INDEX IF NOT EXISTS herald_devices_user ON herald_devices (user_id)",
    ),
    (
        3,
        "CREATE TABLE IF NOT EXISTS herald_notification_status (
            notification_id TEXT NOT NULL,
            device_id TEXT NOT NULL,
            platform TEXT NOT NULL,
            state TEXT NOT NULL,
            reason TEXT NOT NULL,
            attempts BIGINT NOT NULL,
            updated_ms BIGINT NOT NULL,
            PRIMARY KEY (notification_id, device_id)
        )",
    ),
];

/// The device columns, as a literal so statements stay `&'static str`.
macro_rules! columns {
    () => {
        "id, user_id, platform, token, p256dh, auth, app, environment, locale, \
         created_ms, updated_ms, last_seen_ms"
    };
}

/// The one place that decides whose fault a database error is.
///
/// Only what the caller sent can be its fault: a value the database refuses
/// (PostgreSQL SQLSTATE classes 22 "data exception" and 23 "integrity
/// constraint violation"; SQLite `SQLITE_TOOBIG`, `SQLITE_CONSTRAINT`,
/// `SQLITE_MISMATCH`). Everything else is the store's: a lost connection or
/// I/O error, a pool that timed out or closed, a server shutting down or
/// restarting (class 08 "connection exception", 57P01 admin shutdown, 57P02
/// crash shutdown, 57P03 cannot connect now), out of resources (class 53),
/// a busy or locked SQLite file, or a bug of ours — and the caller may try
/// again ([`StoreError::Unavailable`]: 503 with `Retry-After` over HTTP,
/// `UNAVAILABLE` over gRPC). Never 400 for those.
pub(crate) fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if is_callers_fault(db.as_ref()) => {
            StoreError::Invalid(db.message().to_owned())
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

/// Whether the database refused the caller's data (see [`classify`]).
fn is_callers_fault(db: &dyn sqlx::error::DatabaseError) -> bool {
    if let Some(pg) = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>() {
        // a SQLSTATE's first two characters are its class
        let class = pg.code().get(..2).unwrap_or_default();
        return class == "22" || class == "23";
    }
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        // SQLite's primary result code is the low byte of the extended one
        const SQLITE_TOOBIG: i64 = 18;
        const SQLITE_CONSTRAINT: i64 = 19;
        const SQLITE_MISMATCH: i64 = 20;
        return db
            .code()
            .and_then(|c| c.parse::<i64>().ok())
            .is_some_and(|extended| {
                matches!(
                    extended & 0xff,
                    SQLITE_TOOBIG | SQLITE_CONSTRAINT | SQLITE_MISMATCH
                )
            });
    }
    false
}

fn now_ms() -> i64 {
    herald_core::time::unix_millis() as i64
}

fn device_of<R: Row>(row: &R) -> Result<Device, StoreError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |col: &str| row.try_get::<String, _>(col).map_err(classify);
    let platform = text("platform")?;
    let environment = text("environment")?;
    Ok(Device {
        id: text("id")?,
        user: text("user_id")?,
        platform: Platform::parse(&platform)
            .ok_or_else(|| StoreError::Invalid(format!("unknown platform {platform}")))?,
        token: text("token")?,
        p256dh: row.try_get("p256dh").map_err(classify)?,
        auth: row.try_get("auth").map_err(classify)?,
        app: text("app")?,
        environment: Environment::parse(&environment).unwrap_or_default(),
        locale: row.try_get("locale").map_err(classify)?,
        created_ms: row.try_get::<i64, _>("created_ms").map_err(classify)? as u64,
        updated_ms: row.try_get::<i64, _>("updated_ms").map_err(classify)? as u64,
        last_seen_ms: row.try_get::<i64, _>("last_seen_ms").map_err(classify)? as u64,
    })
}

fn status_of<R: Row>(row: &R) -> Result<DeviceStatus, StoreError>
where
    for<'c> &'c str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let text = |col: &str| row.try_get::<String, _>(col).map_err(classify);
    Ok(DeviceStatus {
        device_id: text("device_id")?,
        platform: text("platform")?,
        state: DeliveryState::parse(&text("state")?),
        reason: text("reason")?,
        attempts: row.try_get::<i64, _>("attempts").map_err(classify)? as u32,
        updated_ms: row.try_get::<i64, _>("updated_ms").map_err(classify)? as u64,
    })
}

/// Applies the migrations not yet applied, inside the transaction `$tx`
/// (the same statements on both databases; a macro because sqlx's
/// executors are typed per database).
macro_rules! apply_migrations {
    ($tx:ident) => {
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS herald_migrations (version BIGINT PRIMARY KEY, applied_ms BIGINT NOT NULL)",
        )
        .execute(&mut *$tx)
        .await
        .map_err(classify)?;
        for (version, statement) in MIGRATIONS {
            let done = sqlx::query("SELECT 1 FROM herald_migrations WHERE version = $1")
                .bind(version)
                .fetch_optional(&mut *$tx)
                .await
                .map_err(classify)?;
            if done.is_none() {
                sqlx::query(*statement)
                    .execute(&mut *$tx)
                    .await
                    .map_err(classify)?;
                sqlx::query("INSERT INTO herald_migrations (version, applied_ms) VALUES ($1, $2)")
                    .bind(version)
                    .bind(now_ms())
                    .execute(&mut *$tx)
                    .await
                    .map_err(classify)?;
            }
        }
    };
}

macro_rules! sql_store {
    ($name:ident, $pool:ty) => {
        /// The token store over this database.
        #[derive(Clone)]
        pub struct $name {
            pool: $pool,
        }

        impl $name {
            /// The connection pool.
            pub fn pool(&self) -> &$pool {
                &self.pool
            }
        }

        #[async_trait]
        impl TokenStore for $name {
            async fn ping(&self) -> Result<(), StoreError> {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                Ok(())
            }

            async fn register(
                &self,
                d: CheckedDevice,
                max_per_user: usize,
            ) -> Result<Device, StoreError> {
                let now = now_ms();
                let mut tx = self.pool.begin().await.map_err(classify)?;
                let row = sqlx::query(concat!(
                    "INSERT INTO herald_devices (",
                    columns!(),
                    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $10)
                     ON CONFLICT (platform, token) DO UPDATE SET
                        user_id = excluded.user_id, p256dh = excluded.p256dh,
                        auth = excluded.auth, app = excluded.app,
                        environment = excluded.environment, locale = excluded.locale,
                        updated_ms = excluded.updated_ms, last_seen_ms = excluded.last_seen_ms
                     RETURNING ",
                    columns!()
                ))
                .bind(format!("{:032x}", rand::random::<u128>()))
                .bind(d.user.as_str())
                .bind(d.platform.name())
                .bind(&d.token)
                .bind(&d.p256dh)
                .bind(&d.auth)
                .bind(&d.app)
                .bind(d.environment.name())
                .bind(&d.locale)
                .bind(now)
                .fetch_one(&mut *tx)
                .await
                .map_err(classify)?;
                let device = device_of(&row)?;
                sqlx::query(
                    "DELETE FROM herald_devices WHERE user_id = $1 AND id NOT IN (
                        SELECT id FROM herald_devices WHERE user_id = $1
                        ORDER BY last_seen_ms DESC, id LIMIT $2)",
                )
                .bind(d.user.as_str())
                .bind(max_per_user.max(1) as i64)
                .execute(&mut *tx)
                .await
                .map_err(classify)?;
                tx.commit().await.map_err(classify)?;
                Ok(device)
            }

            async fn unregister(&self, id: &str) -> Result<bool, StoreError> {
                let done = sqlx::query("DELETE FROM herald_devices WHERE id = $1")
                    .bind(id)
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                Ok(done.rows_affected() > 0)
            }

            async fn get(&self, id: &str) -> Result<Option<Device>, StoreError> {
                let row = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM herald_devices WHERE id = $1"
                ))
                    .bind(id)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(classify)?;
                row.as_ref().map(device_of).transpose()
            }

            async fn list(&self, user: &str) -> Result<Vec<Device>, StoreError> {
                let rows = sqlx::query(concat!(
                    "SELECT ",
                    columns!(),
                    " FROM herald_devices WHERE user_id = $1 ORDER BY last_seen_ms DESC, id"
                ))
                .bind(user)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                rows.iter().map(device_of).collect()
            }

            async fn users_with_devices(
                &self,
                users: &[String],
            ) -> Result<HashSet<String>, StoreError> {
                let mut found = HashSet::new();
                for batch in users.chunks(USERS_PER_QUERY) {
                    let placeholders: Vec<String> =
                        (1..=batch.len()).map(|i| format!("${i}")).collect();
                    let sql = format!(
                        "SELECT DISTINCT user_id FROM herald_devices WHERE user_id IN ({})",
                        placeholders.join(",")
                    );
                    // only generated placeholders go into the text; the users are bound
                    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
                    for user in batch {
                        query = query.bind(user);
                    }
                    let rows = query.fetch_all(&self.pool).await.map_err(classify)?;
                    for row in rows {
                        found.insert(row.try_get::<String, _>("user_id").map_err(classify)?);
                    }
                }
                Ok(found)
            }

            async fn remove_dead(&self, id: &str, dead_since_ms: u64) -> Result<bool, StoreError> {
                // Saturate: `u64::MAX as i64` would be -1, and "registered
                // before -1" is never true.
                let dead_since = i64::try_from(dead_since_ms).unwrap_or(i64::MAX);
                let done = sqlx::query("DELETE FROM herald_devices WHERE id = $1 AND updated_ms < $2")
                    .bind(id)
                    .bind(dead_since)
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                Ok(done.rows_affected() > 0)
            }

            async fn set_environment(
                &self,
                id: &str,
                environment: Environment,
            ) -> Result<(), StoreError> {
                sqlx::query("UPDATE herald_devices SET environment = $2 WHERE id = $1")
                    .bind(id)
                    .bind(environment.name())
                    .execute(&self.pool)
                    .await
                    .map_err(classify)?;
                Ok(())
            }

            async fn record(&self, notification: &str, s: &DeviceStatus) -> Result<(), StoreError> {
                sqlx::query(
                    "INSERT INTO herald_notification_status
                        (notification_id, device_id, platform, state, reason, attempts, updated_ms)
                     VALUES ($1, $2, $3, $4, $5, $6, $7)
                     ON CONFLICT (notification_id, device_id) DO UPDATE SET
                        state = excluded.state, reason = excluded.reason,
                        attempts = excluded.attempts, updated_ms = excluded.updated_ms",
                )
                .bind(notification)
                .bind(&s.device_id)
                .bind(&s.platform)
                .bind(s.state.name())
                .bind(&s.reason)
                .bind(i64::from(s.attempts))
                .bind(s.updated_ms as i64)
                .execute(&self.pool)
                .await
                .map_err(classify)?;
                Ok(())
            }

            async fn status(&self, notification: &str) -> Result<Vec<DeviceStatus>, StoreError> {
                let rows = sqlx::query(
                    "SELECT device_id, platform, state, reason, attempts, updated_ms
                     FROM herald_notification_status WHERE notification_id = $1
                     ORDER BY device_id",
                )
                .bind(notification)
                .fetch_all(&self.pool)
                .await
                .map_err(classify)?;
                rows.iter().map(status_of).collect()
            }
        }
    };
}

sql_store!(PostgresStore, PgPool);
sql_store!(SqliteStore, SqlitePool);

/// How long a caller waits for a database connection before being told to
/// retry.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);

impl PostgresStore {
    /// Connects to PostgreSQL at `url` and migrates the schema (one replica
    /// at a time).
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect(url)
            .await
            .map_err(classify)?;
        let store = PostgresStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        // Replicas starting together take turns.
        sqlx::query("SELECT pg_advisory_xact_lock(4813)")
            .execute(&mut *tx)
            .await
            .map_err(classify)?;
        apply_migrations!(tx);
        tx.commit().await.map_err(classify)
    }
}

impl SqliteStore {
    /// Opens (or creates) the SQLite file `url` names and migrates it.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let options: SqliteConnectOptions = url
            .parse::<SqliteConnectOptions>()
            .map_err(classify)?
            .create_if_missing(true)
            .busy_timeout(ACQUIRE_TIMEOUT)
            // WAL: readers do not wait for the writer, and a commit is one
            // append, not a rewrite of the journal.
            .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Normal);
        // One connection: SQLite takes one writer at a time anyway, and
        // writers waiting on each other sleep in growing steps (SQLITE_BUSY).
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(classify)?;
        let store = SqliteStore { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await.map_err(classify)?;
        apply_migrations!(tx);
        tx.commit().await.map_err(classify)
    }
}

/// Opens the store a database URL names: `postgres://…` or `sqlite:…`.
pub async fn open(url: &str) -> Result<Arc<dyn TokenStore>, StoreError> {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url).await?))
    } else {
        Err(StoreError::Invalid(format!(
            "database URL must start with postgres:// or sqlite: (got {url:?})"
        )))
    }
}
