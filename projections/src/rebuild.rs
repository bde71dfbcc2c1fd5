//! Rebuilding a projection from position 0 into a fresh place (a new SQLite file next to the
//! live one, or a new PostgreSQL schema), and verifying it against the live tables: a
//! checksum per table and, when they differ, the first differing row.

use std::sync::Arc;

use infra::EventStore;
use sha2::{Digest, Sha256};
use sqlx::any::AnyRow;
use sqlx::{AssertSqlSafe, Row};

use crate::billing::Billing;
use crate::call_history::CallHistory;
use crate::db::{DbKind, ProjectionDb};
use crate::routing_tables::RoutingTables;
use crate::runner::{Projection, Runner, RunnerError};

/// Every SQL projection, by name.
pub fn all_projections() -> Vec<Arc<dyn Projection>> {
    vec![
        Arc::new(RoutingTables),
        Arc::new(Billing),
        Arc::new(CallHistory),
    ]
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableReport {
    pub table: String,
    pub live_rows: usize,
    pub rebuilt_rows: usize,
    pub live_checksum: String,
    pub rebuilt_checksum: String,
    /// The first row (in key order) that differs, as `live | rebuilt`.
    pub first_difference: Option<String>,
}

impl TableReport {
    pub fn identical(&self) -> bool {
        self.live_checksum == self.rebuilt_checksum
    }
}

#[derive(Debug)]
pub struct RebuildReport {
    pub projection: &'static str,
    pub position: u64,
    pub target: String,
    pub tables: Vec<TableReport>,
}

impl RebuildReport {
    pub fn identical(&self) -> bool {
        self.tables.iter().all(TableReport::identical)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Runner(#[from] RunnerError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The fresh place a rebuild of `name` goes to, next to the live database at `live_url`.
pub async fn fresh_target(live: &ProjectionDb, name: &str) -> Result<ProjectionDb, sqlx::Error> {
    match live.kind {
        DbKind::Sqlite => {
            let path = live
                .url
                .trim_start_matches("sqlite://")
                .trim_start_matches("sqlite:");
            let path = path.split('?').next().unwrap_or(path);
            let target = format!("{path}.rebuild-{name}.db");
            for suffix in ["", "-wal", "-shm"] {
                let _ = tokio::fs::remove_file(format!("{target}{suffix}")).await;
            }
            ProjectionDb::connect(&format!("sqlite://{target}")).await
        }
        DbKind::Postgres => {
            let schema = format!("rebuild_{name}");
            let drop = format!("DROP SCHEMA IF EXISTS {schema} CASCADE");
            sqlx::query(AssertSqlSafe(drop)).execute(&live.pool).await?;
            let create = format!("CREATE SCHEMA {schema}");
            sqlx::query(AssertSqlSafe(create))
                .execute(&live.pool)
                .await?;
            let sep = if live.url.contains('?') { '&' } else { '?' };
            ProjectionDb::connect(&format!(
                "{}{sep}options=-c%20search_path%3D{schema}",
                live.url
            ))
            .await
        }
    }
}

/// Rebuilds `projection` from 0 and, with `verify`, compares it with the live tables at the
/// same position (catching the live projection up first when it is behind).
pub async fn rebuild(
    store: Arc<dyn EventStore>,
    live: &ProjectionDb,
    projection: Arc<dyn Projection>,
    verify: bool,
) -> Result<RebuildReport, RebuildError> {
    let target = fresh_target(live, projection.name()).await?;
    let rebuilt = Runner::new(target.clone(), store.clone(), projection.clone()).await?;
    let mut position = rebuilt.catch_up().await?;
    let mut tables = Vec::new();
    if verify {
        let live_runner = Runner::new(live.clone(), store, projection.clone()).await?;
        // Bring both to one position: whichever is behind catches up, until they agree.
        loop {
            let live_at = live_runner.catch_up().await?;
            if live_at == position {
                break;
            }
            position = rebuilt.catch_up().await?;
            if live_at == position {
                break;
            }
        }
        tables = compare_tables(live, &target, projection.as_ref()).await?;
    }
    Ok(RebuildReport {
        projection: projection.name(),
        position,
        target: target.url.clone(),
        tables,
    })
}

/// A row as text, column by column, whatever the column types.
fn row_text(row: &AnyRow) -> String {
    (0..row.columns().len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                v.map_or("NULL".into(), |v| v.to_string())
            } else if let Ok(v) = row.try_get::<Option<String>, _>(i) {
                v.map_or("NULL".into(), |v| format!("{v:?}"))
            } else if let Ok(v) = row.try_get::<Option<f64>, _>(i) {
                v.map_or("NULL".into(), |v| v.to_string())
            } else {
                "?".into()
            }
        })
        .collect::<Vec<_>>()
        .join(" | ")
}

async fn table_rows(
    db: &ProjectionDb,
    table: &str,
    order: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let sql = format!("SELECT * FROM {table} ORDER BY {order}");
    Ok(sqlx::query(AssertSqlSafe(sql))
        .fetch_all(&db.pool)
        .await?
        .iter()
        .map(row_text)
        .collect())
}

fn checksum(rows: &[String]) -> String {
    let mut h = Sha256::new();
    for r in rows {
        h.update(r.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Compares a projection's tables in two databases (live first), table by table.
pub async fn compare_tables(
    live: &ProjectionDb,
    other: &ProjectionDb,
    projection: &dyn Projection,
) -> Result<Vec<TableReport>, sqlx::Error> {
    let mut tables = Vec::new();
    for (table, order) in projection.tables() {
        tables.push(compare(live, other, table, order).await?);
    }
    Ok(tables)
}

async fn compare(
    live: &ProjectionDb,
    rebuilt: &ProjectionDb,
    table: &str,
    order: &str,
) -> Result<TableReport, sqlx::Error> {
    let (a, b) = (
        table_rows(live, table, order).await?,
        table_rows(rebuilt, table, order).await?,
    );
    let first_difference = (0..a.len().max(b.len()))
        .find(|i| a.get(*i) != b.get(*i))
        .map(|i| {
            format!(
                "live: {} / rebuilt: {}",
                a.get(i).map_or("(no row)", String::as_str),
                b.get(i).map_or("(no row)", String::as_str)
            )
        });
    Ok(TableReport {
        table: table.to_owned(),
        live_rows: a.len(),
        rebuilt_rows: b.len(),
        live_checksum: checksum(&a),
        rebuilt_checksum: checksum(&b),
        first_difference,
    })
}
