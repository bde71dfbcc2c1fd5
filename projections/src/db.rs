//! Where projections keep their tables: SQLite or PostgreSQL through sqlx's `Any` driver, with
//! SQL written once (`$1` placeholders, types both databases share: TEXT and BIGINT; times as
//! RFC 3339 text, booleans as 0/1).

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyPool, Transaction};
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Sqlite,
    Postgres,
}

#[derive(Clone, Debug)]
pub struct ProjectionDb {
    pub pool: AnyPool,
    pub kind: DbKind,
    pub url: String,
}

const CHECKPOINTS: &str = "CREATE TABLE IF NOT EXISTS projection_checkpoints (\
    name TEXT PRIMARY KEY, position BIGINT NOT NULL, status TEXT NOT NULL, error TEXT)";

impl ProjectionDb {
    /// Connects to `url` (`sqlite://…` or `postgres://…`) and creates the checkpoint table.
    pub async fn connect(url: &str) -> Result<Self, sqlx::Error> {
        let sqlite = url.starts_with("sqlite:");
        Self::connect_pool(url, if sqlite { 2 } else { 4 }).await
    }

    /// The same with a pool of `max_connections` (readers such as the API want more).
    pub async fn connect_pool(url: &str, max_connections: u32) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            DbKind::Sqlite
        } else {
            DbKind::Postgres
        };
        let mut options = AnyConnectOptions::from_str(url)?;
        if kind == DbKind::Sqlite {
            // Created if missing (the file may also be the event log's own), with its folder
            // (`keys create` may run before anything else made `data/`).
            let path = url
                .trim_start_matches("sqlite:")
                .trim_start_matches("//")
                .split('?')
                .next()
                .unwrap_or_default();
            if let Some(dir) = std::path::Path::new(path).parent()
                && !dir.as_os_str().is_empty()
                && path != ":memory:"
            {
                tokio::fs::create_dir_all(dir)
                    .await
                    .map_err(sqlx::Error::Io)?;
            }
            options = AnyConnectOptions::from_str(&with_param(url, "mode", "rwc"))?;
        }
        let pool = AnyPoolOptions::new()
            .max_connections(max_connections)
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if kind == DbKind::Sqlite {
                        sqlx::query("PRAGMA busy_timeout = 10000")
                            .execute(&mut *conn)
                            .await?;
                        // Readers (the API) and the runners' writes do not block each other.
                        sqlx::query("PRAGMA journal_mode = WAL")
                            .execute(&mut *conn)
                            .await?;
                        // Projections are rebuilt from the log, and each commit carries its
                        // checkpoint: a commit lost to a power cut is simply applied again.
                        // NORMAL skips the fsync that FULL adds to every commit.
                        sqlx::query("PRAGMA synchronous = NORMAL")
                            .execute(&mut *conn)
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        sqlx::query(CHECKPOINTS).execute(&pool).await?;
        Ok(Self {
            pool,
            kind,
            url: url.to_owned(),
        })
    }

    /// A write transaction. On SQLite it takes the write lock at once (`BEGIN IMMEDIATE`), so
    /// it waits for the log's writer instead of failing on a lock upgrade.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, sqlx::Error> {
        match self.kind {
            DbKind::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            DbKind::Postgres => self.pool.begin().await,
        }
    }

    /// Runs `q` as a commit that is on disk when it returns, for the rows that are not
    /// projections and cannot be rebuilt (API keys): on SQLite with `synchronous = FULL` for
    /// this one statement (the pool's connections use NORMAL); PostgreSQL commits are durable.
    pub async fn execute_durably(
        &self,
        q: sqlx::query::Query<'_, Any, sqlx::any::AnyArguments>,
    ) -> Result<sqlx::any::AnyQueryResult, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        if self.kind == DbKind::Sqlite {
            sqlx::query("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await?;
        }
        let result = q.execute(&mut *conn).await;
        if self.kind == DbKind::Sqlite {
            sqlx::query("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    pub async fn execute_schema(&self, statements: &[&'static str]) -> Result<(), sqlx::Error> {
        for s in statements {
            sqlx::query(*s).execute(&self.pool).await?;
        }
        Ok(())
    }
}

fn with_param(url: &str, key: &str, value: &str) -> String {
    if url.contains(&format!("{key}=")) {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&{key}={value}")
    } else {
        format!("{url}?{key}={value}")
    }
}
