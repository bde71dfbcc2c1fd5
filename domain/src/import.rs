//! A log copied from another store (`ringledger events import`): the copy opens with
//! `import.started` (what the export holds, so a copy cut short is recognisable) and closes with
//! `import.completed`, both on stream `import-{uuid}`. A log whose first event is an
//! `import.started` without its `import.completed` is an incomplete copy.

use crate::event::domain_events;

/// The stream of the import `id`.
pub fn stream_id(id: uuid::Uuid) -> String {
    format!("import-{id}")
}

domain_events! {
    /// The start and end of a copied log (stream `import-{uuid}`).
    pub enum ImportEvent {
        Started { source_events: u64, source_head_hash: String } = ("import.started", 1),
        Completed { events: u64, source_head_hash: String } = ("import.completed", 1),
    }
}
