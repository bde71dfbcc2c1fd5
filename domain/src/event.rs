//! How events cross the boundary to the log: a stable `event_type` name, a `schema_version`,
//! and a JSON payload. Older schema versions are upcast on read, so the model only ever sees
//! the current shape.

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

/// An event ready for the log: what the store needs besides the envelope it adds.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedEvent {
    pub event_type: &'static str,
    pub schema_version: u16,
    pub payload: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error(
        "{event_type} schema version {version} is newer than this build understands ({current})"
    )]
    FutureVersion {
        event_type: String,
        version: u16,
        current: u16,
    },
    #[error("{event_type} schema version {version} has no upcaster")]
    NoUpcaster { event_type: String, version: u16 },
    #[error("{event_type} v{version} payload does not match its schema: {source}")]
    Payload {
        event_type: String,
        version: u16,
        source: serde_json::Error,
    },
}

/// For upcasters: the older `payload` of `event_type` with `field` added as null (an optional
/// field added since); `None` for a version that has no upcaster.
pub(crate) fn with_null_field(
    event_type: &str,
    version: u16,
    payload: Value,
    field: Option<&str>,
) -> Result<Value, DecodeError> {
    match (payload, field) {
        (Value::Object(mut old), Some(field)) => {
            old.entry(field).or_insert(Value::Null);
            Ok(Value::Object(old))
        }
        _ => Err(DecodeError::NoUpcaster {
            event_type: event_type.to_owned(),
            version,
        }),
    }
}

/// Implemented by every aggregate's event enum (through `domain_events!`).
pub trait DomainEvent: Serialize + DeserializeOwned + Clone + std::fmt::Debug + PartialEq {
    /// Every event type this enum can hold, with its current schema version.
    const SCHEMA: &'static [(&'static str, u16)];

    fn event_type(&self) -> &'static str;

    fn schema_version(&self) -> u16 {
        let t = self.event_type();
        Self::SCHEMA
            .iter()
            .find(|(name, _)| *name == t)
            .map_or(1, |(_, v)| *v)
    }

    /// Rewrites a payload of an older schema version into the next version's shape.
    /// Enums whose events have never changed keep the default, which knows no old versions.
    fn upcast_once(event_type: &str, version: u16, _payload: Value) -> Result<Value, DecodeError> {
        Err(DecodeError::NoUpcaster {
            event_type: event_type.to_owned(),
            version,
        })
    }

    fn encode(&self) -> EncodedEvent {
        // Adjacently tagged enums serialise as {"event_type": .., "payload": {..}}.
        let payload = match serde_json::to_value(self) {
            Ok(Value::Object(mut map)) => map.remove("payload").unwrap_or(Value::Null),
            _ => Value::Null,
        };
        EncodedEvent {
            event_type: self.event_type(),
            schema_version: self.schema_version(),
            payload,
        }
    }

    fn decode(event_type: &str, version: u16, payload: Value) -> Result<Self, DecodeError> {
        let current = Self::SCHEMA
            .iter()
            .find(|(name, _)| *name == event_type)
            .map(|(_, v)| *v)
            .ok_or_else(|| DecodeError::UnknownType(event_type.to_owned()))?;
        if version > current {
            return Err(DecodeError::FutureVersion {
                event_type: event_type.to_owned(),
                version,
                current,
            });
        }
        let mut payload = payload;
        for v in version..current {
            payload = Self::upcast_once(event_type, v, payload)?;
        }
        let tagged = serde_json::json!({ "event_type": event_type, "payload": payload });
        serde_json::from_value(tagged).map_err(|source| DecodeError::Payload {
            event_type: event_type.to_owned(),
            version,
            source,
        })
    }
}

/// Declares an aggregate's event enum: each variant with its stable name and schema version,
/// and (`upcast = path;`) the function that rewrites older versions' payloads, if any.
macro_rules! domain_events {
    (
        $(upcast = $upcast:path;)?
        $(#[$meta:meta])*
        pub enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident { $($body:tt)* } = ($type_name:literal, $version:literal)
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(tag = "event_type", content = "payload", deny_unknown_fields)]
        pub enum $name {
            $(
                $(#[$vmeta])*
                #[serde(rename = $type_name)]
                $variant { $($body)* },
            )*
        }

        impl $name {
            fn type_name(&self) -> &'static str {
                match self {
                    $( Self::$variant { .. } => $type_name, )*
                }
            }
        }

        impl $crate::event::DomainEvent for $name {
            const SCHEMA: &'static [(&'static str, u16)] = &[$( ($type_name, $version) ),*];

            fn event_type(&self) -> &'static str {
                self.type_name()
            }

            $(
                fn upcast_once(
                    event_type: &str,
                    version: u16,
                    payload: serde_json::Value,
                ) -> Result<serde_json::Value, $crate::event::DecodeError> {
                    $upcast(event_type, version, payload)
                }
            )?
        }
    };
}
pub(crate) use domain_events;
