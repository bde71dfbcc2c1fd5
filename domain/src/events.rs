//! Every event of the model in one enum, for readers of the whole log (projections, audit):
//! the catalogue of event types and the decoding of a stored event by its type's category.

use serde_json::Value;

use crate::event::{DecodeError, DomainEvent, EncodedEvent};
use crate::{account, call, device, edge, extension, import, number, tariff};

/// Any event of the model, for readers of the whole log (projections, audit).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Account(account::AccountEvent),
    Device(device::DeviceEvent),
    Extension(extension::ExtensionEvent),
    Number(number::NumberEvent),
    Call(call::CallEvent),
    Tariff(tariff::TariffEvent),
    Import(import::ImportEvent),
    Edge(edge::EdgeEvent),
}

impl Event {
    /// Every event type with its current schema version, across the model.
    pub fn catalogue() -> Vec<(&'static str, u16)> {
        [
            account::AccountEvent::SCHEMA,
            device::DeviceEvent::SCHEMA,
            extension::ExtensionEvent::SCHEMA,
            number::NumberEvent::SCHEMA,
            call::CallEvent::SCHEMA,
            tariff::TariffEvent::SCHEMA,
            import::ImportEvent::SCHEMA,
            edge::EdgeEvent::SCHEMA,
        ]
        .concat()
    }

    pub fn decode(event_type: &str, version: u16, payload: Value) -> Result<Self, DecodeError> {
        let category = event_type.split('.').next().unwrap_or_default();
        Ok(match category {
            "account" => Self::Account(DomainEvent::decode(event_type, version, payload)?),
            "device" => Self::Device(DomainEvent::decode(event_type, version, payload)?),
            "extension" => Self::Extension(DomainEvent::decode(event_type, version, payload)?),
            "number" => Self::Number(DomainEvent::decode(event_type, version, payload)?),
            "call" => Self::Call(DomainEvent::decode(event_type, version, payload)?),
            "tariff" => Self::Tariff(DomainEvent::decode(event_type, version, payload)?),
            "import" => Self::Import(DomainEvent::decode(event_type, version, payload)?),
            "edge" => Self::Edge(DomainEvent::decode(event_type, version, payload)?),
            _ => return Err(DecodeError::UnknownType(event_type.to_owned())),
        })
    }

    pub fn encode(&self) -> EncodedEvent {
        match self {
            Self::Account(e) => e.encode(),
            Self::Device(e) => e.encode(),
            Self::Extension(e) => e.encode(),
            Self::Number(e) => e.encode(),
            Self::Call(e) => e.encode(),
            Self::Tariff(e) => e.encode(),
            Self::Import(e) => e.encode(),
            Self::Edge(e) => e.encode(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalogue_names_are_unique_and_categorised() {
        let cat = Event::catalogue();
        let mut names: Vec<_> = cat.iter().map(|(n, _)| *n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cat.len());
        for (name, _) in &cat {
            let category = name.split('.').next().unwrap();
            assert!(
                [
                    "account",
                    "device",
                    "extension",
                    "number",
                    "call",
                    "tariff",
                    "import",
                    "edge"
                ]
                .contains(&category),
                "{name}"
            );
        }
    }

    #[test]
    fn unknown_types_and_future_versions_are_refused() {
        assert!(matches!(
            Event::decode("account.renamed", 1, serde_json::json!({})),
            Err(DecodeError::UnknownType(_))
        ));
        assert!(matches!(
            Event::decode("account.reinstated", 9, serde_json::json!({})),
            Err(DecodeError::FutureVersion { .. })
        ));
    }

    #[test]
    fn payload_with_unknown_field_is_refused() {
        let err = Event::decode("account.reinstated", 1, serde_json::json!({"surprise": 1}));
        assert!(matches!(err, Err(DecodeError::Payload { .. })), "{err:?}");
    }
}
