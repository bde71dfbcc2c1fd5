//! Typed identifiers. Ids are minted outside the model (UUIDv7 by infra) and passed in commands,
//! so `decide` stays deterministic.

use serde::{Deserialize, Serialize};
use std::fmt;
use uuid::Uuid;

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident, $stream_prefix:literal) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// The category of the streams this id names, e.g. `account` for `account-{id}`.
            pub const STREAM_CATEGORY: &'static str = $stream_prefix;

            /// The event stream holding this entity's history.
            pub fn stream_id(&self) -> String {
                format!("{}-{}", $stream_prefix, self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl From<Uuid> for $name {
            fn from(id: Uuid) -> Self {
                Self(id)
            }
        }
    };
}

id_type!(
    /// A customer account: the one that pays.
    AccountId,
    "account"
);
id_type!(
    /// An IP device (softphone, desk phone) that registers over SIP.
    DeviceId,
    "device"
);
id_type!(
    /// A phone served by another provider, registered as an extension of an account.
    ExtensionId,
    "extension"
);
id_type!(
    /// One call, with all its legs.
    CallId,
    "call"
);
id_type!(
    /// A published price list and its versions.
    TariffId,
    "tariff"
);

/// One leg of a call (the edge's side of one SIP dialog). Unique within its call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LegId(pub Uuid);

impl fmt::Display for LegId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}
