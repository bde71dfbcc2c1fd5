//! A relay's durable cursor, kept in the store's own SQL database: the last global position
//! the relay knows Kafka has acknowledged.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Row};

pub struct RelayCursor {
    pool: AnyPool,
    name: String,
}

impl RelayCursor {
    /// Opens (creating the table if needed) the cursor `name` in the database at `url`.
    pub async fn open(url: &str, name: &str) -> Result<Self, sqlx::Error> {
        sqlx::any::install_default_drivers();
        let options = AnyConnectOptions::from_str(url)?;
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await?;
        sqlx::query(
            "CREATE TABLE IF NOT EXISTS relay_cursors (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
        )
        .execute(&pool)
        .await?;
        Ok(Self {
            pool,
            name: name.to_owned(),
        })
    }

    pub async fn get(&self) -> Result<u64, sqlx::Error> {
        let row = sqlx::query("SELECT position FROM relay_cursors WHERE name = $1")
            .bind(&self.name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(r) => r.try_get::<i64, _>(0)? as u64,
            None => 0,
        })
    }

    pub async fn set(&self, position: u64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO relay_cursors (name, position) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET position = excluded.position",
        )
        .bind(&self.name)
        .bind(position as i64)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
