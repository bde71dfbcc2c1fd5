//! API keys: who may call the API, and as which role. A key is shown once when it is made
//! (`rlk_<key id>_<secret>`); only a SHA-256 of its secret is kept. Keys are access
//! configuration, not telephone-service facts, so they live in a table beside the projections
//! rather than in the log; every event written with a key names the key's id as its actor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::Row;
use utoipa::ToSchema;
use uuid::Uuid;

use projections::db::ProjectionDb;

const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS api_keys (key_id TEXT PRIMARY KEY, \
    name TEXT NOT NULL, role TEXT NOT NULL, secret_hash TEXT NOT NULL, created_at TEXT NOT NULL, \
    revoked_at TEXT)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Writes accounts, numbers, devices, extensions, tariffs and access numbers.
    Admin,
    /// Reads usage, rated legs and invoices.
    Billing,
    /// Reads events, call history, as-of state and the hash-chain verification.
    Auditor,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Self::Admin => "admin",
            Self::Billing => "billing",
            Self::Auditor => "auditor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "admin" => Some(Self::Admin),
            "billing" => Some(Self::Billing),
            "auditor" => Some(Self::Auditor),
            _ => None,
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub key_id: String,
    pub role: Role,
}

impl Caller {
    /// The `actor` of events this caller writes.
    pub fn actor(&self) -> String {
        format!("key:{}", self.key_id)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CreatedKey {
    pub key_id: String,
    pub name: String,
    pub role: Role,
    /// The full key; shown once, never stored.
    pub token: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key name must be 1 to 100 characters")]
    BadName,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn secret_hash(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Random hex from the operating system's generator (through UUIDv4), `n` UUIDs long.
pub fn random_hex(n: usize) -> String {
    (0..n)
        .map(|_| Uuid::new_v4().simple().to_string())
        .collect()
}

/// How long a verified key is trusted without asking the database again. A key revoked by
/// another process stops working within this time (at once in the revoking process).
const TRUST_FOR: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct KeyStore {
    db: ProjectionDb,
    /// Recently verified keys by the SHA-256 of the whole token.
    verified: Arc<Mutex<HashMap<String, (Caller, Instant)>>>,
}

impl KeyStore {
    pub async fn open(db: ProjectionDb) -> Result<Self, sqlx::Error> {
        sqlx::query(SCHEMA).execute(&db.pool).await?;
        Ok(Self {
            db,
            verified: Arc::default(),
        })
    }

    pub async fn create(&self, role: Role, name: &str) -> Result<CreatedKey, KeyError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 100 {
            return Err(KeyError::BadName);
        }
        let key_id = Uuid::now_v7().simple().to_string();
        let secret = random_hex(2);
        // Printed once to the operator: on disk before it is.
        self.db
            .execute_durably(
                sqlx::query(
                    "INSERT INTO api_keys (key_id, name, role, secret_hash, created_at) \
                     VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(&key_id)
                .bind(name)
                .bind(role.name())
                .bind(secret_hash(&secret))
                .bind(Utc::now().to_rfc3339()),
            )
            .await?;
        Ok(CreatedKey {
            token: format!("rlk_{key_id}_{secret}"),
            key_id,
            name: name.to_owned(),
            role,
        })
    }

    /// The caller a bearer token names, if the token is a live key.
    pub async fn authenticate(&self, token: &str) -> Result<Option<Caller>, sqlx::Error> {
        let digest = secret_hash(token);
        if let Ok(cache) = self.verified.lock()
            && let Some((caller, at)) = cache.get(&digest)
            && at.elapsed() < TRUST_FOR
        {
            return Ok(Some(caller.clone()));
        }
        let caller = self.look_up(token).await?;
        if let (Some(c), Ok(mut cache)) = (&caller, self.verified.lock()) {
            cache.retain(|_, (_, at)| at.elapsed() < TRUST_FOR);
            cache.insert(digest, (c.clone(), Instant::now()));
        }
        Ok(caller)
    }

    async fn look_up(&self, token: &str) -> Result<Option<Caller>, sqlx::Error> {
        let Some((key_id, secret)) = token
            .strip_prefix("rlk_")
            .and_then(|rest| rest.split_once('_'))
        else {
            return Ok(None);
        };
        let row = sqlx::query(
            "SELECT role, secret_hash FROM api_keys WHERE key_id = $1 AND revoked_at IS NULL",
        )
        .bind(key_id)
        .fetch_optional(&self.db.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let stored: String = row.try_get(1)?;
        // Compare digests, not secrets: equal-length hex, so timing reveals nothing useful.
        if stored != secret_hash(secret) {
            return Ok(None);
        }
        let role: String = row.try_get(0)?;
        Ok(Role::parse(&role).map(|role| Caller {
            key_id: key_id.to_owned(),
            role,
        }))
    }

    /// Revokes a key at once; returns whether it existed and was live.
    pub async fn revoke(&self, key_id: &str) -> Result<bool, sqlx::Error> {
        let done = self
            .db
            .execute_durably(
                sqlx::query(
                    "UPDATE api_keys SET revoked_at = $2 WHERE key_id = $1 AND revoked_at IS NULL",
                )
                .bind(key_id)
                .bind(Utc::now().to_rfc3339()),
            )
            .await?;
        if let Ok(mut cache) = self.verified.lock() {
            cache.retain(|_, (caller, _)| caller.key_id != key_id);
        }
        Ok(done.rows_affected() > 0)
    }
}
