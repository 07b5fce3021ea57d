//! PostgreSQL databases of a test's own on the shared server.

/// The shared server's admin database (`HERALD_TEST_DATABASE_URL`, else the
/// local one).
pub fn database_url() -> String {
    std::env::var("HERALD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A fresh database on the shared server, dropped (with its connections)
/// when this is.
#[derive(Debug)]
pub struct Database {
    /// Where it is.
    pub url: String,
    /// Its name.
    pub name: String,
    admin: String,
}

impl Database {
    /// Creates it (PostgreSQL must be up).
    pub async fn create() -> Database {
        let admin = database_url();
        let name = format!("herald_test_{:016x}", rand::random::<u64>());
        let pool = sqlx::PgPool::connect(&admin)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {admin} is required: {e}"));
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Database {
            url: format!("{base}/{name}"),
            name,
            admin,
        }
    }
}

impl Drop for Database {
    fn drop(&mut self) {
        // best effort
        let (admin, name) = (self.admin.clone(), self.name.clone());
        crate::block_on_own_thread(async move {
            if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&pool)
                .await;
            }
        });
    }
}
