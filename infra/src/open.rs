//! Opening the event store a URL names: the backend chosen by the URL's scheme.

use std::sync::Arc;

use crate::store::{EventStore, StoreError};

/// Opens the store named by `url`, creating and migrating its schema as needed.
pub async fn open_store(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(
            crate::store::sqlite::SqliteStore::open(url).await?,
        ))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(Arc::new(
            crate::store::postgres::PostgresStore::open(url).await?,
        ))
    } else if url.starts_with("esdb:") || url.starts_with("esdb+discover:") {
        open_eventstoredb(url).await
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

#[cfg(feature = "eventstoredb")]
async fn open_eventstoredb(url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    Ok(Arc::new(
        crate::store::eventstoredb::EventStoreDbStore::open(url).await?,
    ))
}

#[cfg(not(feature = "eventstoredb"))]
async fn open_eventstoredb(_url: &str) -> Result<Arc<dyn EventStore>, StoreError> {
    Err(StoreError::EventStoreDb(
        "this build has no EventStoreDB backend; rebuild with --features eventstoredb".into(),
    ))
}
