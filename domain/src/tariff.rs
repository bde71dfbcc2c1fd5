//! Tariffs: versioned price lists. A version is in force from its `effective_from`; a later
//! version with the same start corrects an earlier one (and a rebuild re-rates with it).

use serde::{Deserialize, Serialize};

use crate::aggregate::Aggregate;
use crate::e164::E164;
use crate::error::DomainError;
use crate::event::domain_events;
use crate::ids::TariffId;
use crate::money::Currency;
use crate::time::Instant;

/// The price of calls to destinations starting with `prefix` (digits after the `+`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rate {
    pub prefix: String,
    pub description: String,
    /// Price per minute in thousandths of a minor unit (1250 = 1.25 pence a minute).
    pub per_minute_millis: i64,
    /// Charged once per answered leg, in minor units.
    pub connect_fee_minor: i64,
    /// The first billing block in seconds (60 for 60/60, 1 for 1/1, 30 for 30/6).
    pub first_increment_secs: u32,
    /// Every later block in seconds.
    pub next_increment_secs: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TariffVersion {
    pub version: u32,
    pub currency: Currency,
    pub effective_from: Instant,
    pub rates: Vec<Rate>,
    /// Destinations no one may call on this tariff (premium rate), as digit prefixes.
    pub blocked_prefixes: Vec<String>,
    /// The price of calls to numbers the service's own accounts hold (routed on-net, no
    /// carrier); its prefix is ignored. None: such calls are free.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_net: Option<Rate>,
}

impl TariffVersion {
    /// The rate whose prefix is the longest match for `destination`.
    pub fn rate_for(&self, destination: &E164) -> Option<&Rate> {
        let digits = destination.digits();
        self.rates
            .iter()
            .filter(|r| digits.starts_with(&r.prefix))
            .max_by_key(|r| r.prefix.len())
    }

    pub fn is_blocked(&self, destination: &E164) -> bool {
        let digits = destination.digits();
        self.blocked_prefixes.iter().any(|p| digits.starts_with(p))
    }

    fn validate(&self) -> Result<(), DomainError> {
        // Call instants are compared with versions at the precision billing keeps them
        // (microseconds): a start between two microseconds would be missed.
        if !self
            .effective_from
            .timestamp_subsec_nanos()
            .is_multiple_of(1_000)
        {
            return Err(DomainError::invalid(
                "effective_from",
                "must be a whole number of microseconds",
            ));
        }
        let is_prefix =
            |p: &str| (1..=15).contains(&p.len()) && p.bytes().all(|b| b.is_ascii_digit());
        if self.rates.is_empty() {
            return Err(DomainError::invalid(
                "rates",
                "a tariff needs at least one rate",
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for r in &self.rates {
            if !is_prefix(&r.prefix) {
                return Err(DomainError::invalid(
                    "rates.prefix",
                    format!("{:?} is not 1 to 15 digits", r.prefix),
                ));
            }
            if !seen.insert(r.prefix.as_str()) {
                return Err(DomainError::invalid(
                    "rates.prefix",
                    format!("{} appears twice", r.prefix),
                ));
            }
            if r.per_minute_millis < 0 || r.connect_fee_minor < 0 {
                return Err(DomainError::invalid("rates", "prices must not be negative"));
            }
            let ok = |s: u32| (1..=3600).contains(&s);
            if !ok(r.first_increment_secs) || !ok(r.next_increment_secs) {
                return Err(DomainError::invalid(
                    "rates.increment",
                    "billing increments must be 1 to 3600 seconds",
                ));
            }
        }
        if let Some(r) = &self.on_net {
            let ok = |s: u32| (1..=3600).contains(&s);
            if r.per_minute_millis < 0 || r.connect_fee_minor < 0 {
                return Err(DomainError::invalid(
                    "on_net",
                    "prices must not be negative",
                ));
            }
            if !ok(r.first_increment_secs) || !ok(r.next_increment_secs) {
                return Err(DomainError::invalid(
                    "on_net.increment",
                    "billing increments must be 1 to 3600 seconds",
                ));
            }
        }
        if let Some(p) = self.blocked_prefixes.iter().find(|p| !is_prefix(p)) {
            return Err(DomainError::invalid(
                "blocked_prefixes",
                format!("{p:?} is not 1 to 15 digits"),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tariff {
    pub id: Option<TariffId>,
    pub name: String,
    pub versions: Vec<TariffVersion>,
}

impl Tariff {
    /// The version in force at `instant` (to the microsecond): the latest start at or before
    /// it, and among versions with that start the highest (a correction).
    pub fn in_force_at(&self, instant: Instant) -> Option<&TariffVersion> {
        let instant = crate::time::to_micros(instant);
        self.versions
            .iter()
            .filter(|v| v.effective_from <= instant)
            .max_by_key(|v| (v.effective_from, v.version))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum TariffCommand {
    Publish {
        tariff_id: TariffId,
        name: String,
        version: TariffVersion,
    },
}

domain_events! {
    /// Published price lists (stream `tariff-{id}`).
    pub enum TariffEvent {
        Published { tariff_id: TariffId, name: String, version: TariffVersion } = ("tariff.published", 1),
    }
}

impl Aggregate for Tariff {
    type Command = TariffCommand;
    type Event = TariffEvent;

    fn decide(
        &self,
        command: &TariffCommand,
        _now: Instant,
    ) -> Result<Vec<TariffEvent>, DomainError> {
        let TariffCommand::Publish {
            tariff_id,
            name,
            version,
        } = command;
        let expected = self.versions.last().map_or(1, |v| v.version + 1);
        if version.version != expected {
            return Err(DomainError::TariffVersionOutOfOrder {
                expected,
                got: version.version,
            });
        }
        if let Some(first) = self.versions.first()
            && first.currency != version.currency
        {
            return Err(DomainError::invalid(
                "currency",
                format!("this tariff is priced in {}", first.currency),
            ));
        }
        if name.trim().is_empty() {
            return Err(DomainError::invalid("name", "must not be empty"));
        }
        version.validate()?;
        Ok(vec![TariffEvent::Published {
            tariff_id: *tariff_id,
            name: name.trim().to_owned(),
            version: version.clone(),
        }])
    }

    fn apply(&mut self, event: &TariffEvent) {
        let TariffEvent::Published {
            tariff_id,
            name,
            version,
        } = event;
        self.id = Some(*tariff_id);
        self.name = name.clone();
        self.versions.push(version.clone());
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testing::{at, given};
    use uuid::Uuid;

    pub fn rate(prefix: &str, per_minute_millis: i64, connect: i64, first: u32, next: u32) -> Rate {
        Rate {
            prefix: prefix.into(),
            description: format!("+{prefix}"),
            per_minute_millis,
            connect_fee_minor: connect,
            first_increment_secs: first,
            next_increment_secs: next,
        }
    }

    pub fn version(n: u32, effective_from: Instant, rates: Vec<Rate>) -> TariffVersion {
        TariffVersion {
            version: n,
            currency: Currency::parse("GBP").unwrap(),
            effective_from,
            rates,
            blocked_prefixes: vec!["4490".into()],
            on_net: None,
        }
    }

    fn publish(v: TariffVersion) -> TariffCommand {
        TariffCommand::Publish {
            tariff_id: TariffId(Uuid::from_u128(2)),
            name: "Standard".into(),
            version: v,
        }
    }

    fn published(v: TariffVersion) -> TariffEvent {
        TariffEvent::Published {
            tariff_id: TariffId(Uuid::from_u128(2)),
            name: "Standard".into(),
            version: v,
        }
    }

    #[test]
    fn a_version_starts_on_a_whole_microsecond() {
        let mut v = version(1, at(0), vec![rate("44", 1_000, 0, 60, 60)]);
        v.effective_from += chrono::Duration::nanoseconds(1_500);
        given::<Tariff>([])
            .when(publish(v.clone()))
            .then_error(DomainError::invalid(
                "effective_from",
                "must be a whole number of microseconds",
            ));
        v.effective_from -= chrono::Duration::nanoseconds(500);
        assert!(given::<Tariff>([]).when(publish(v)).events().len() == 1);
    }

    #[test]
    fn versions_are_published_in_order() {
        let v1 = version(1, at(0), vec![rate("44", 1000, 0, 60, 60)]);
        given::<Tariff>([])
            .when(publish(v1.clone()))
            .then([published(v1.clone())]);
        given::<Tariff>([published(v1.clone())])
            .when(publish(version(
                3,
                at(0),
                vec![rate("44", 1000, 0, 60, 60)],
            )))
            .then_error(DomainError::TariffVersionOutOfOrder {
                expected: 2,
                got: 3,
            });
    }

    #[test]
    fn the_currency_of_a_tariff_never_changes() {
        let v1 = version(1, at(0), vec![rate("44", 1000, 0, 60, 60)]);
        let mut v2 = version(2, at(10), vec![rate("44", 1000, 0, 60, 60)]);
        v2.currency = Currency::parse("EUR").unwrap();
        given::<Tariff>([published(v1)])
            .when(publish(v2))
            .then_error(DomainError::invalid(
                "currency",
                "this tariff is priced in GBP",
            ));
    }

    #[test]
    fn duplicate_prefixes_and_zero_increments_are_refused() {
        given::<Tariff>([])
            .when(publish(version(
                1,
                at(0),
                vec![rate("44", 1, 0, 60, 60), rate("44", 2, 0, 60, 60)],
            )))
            .then_error(DomainError::invalid("rates.prefix", "44 appears twice"));
        given::<Tariff>([])
            .when(publish(version(1, at(0), vec![rate("44", 1, 0, 0, 60)])))
            .then_error(DomainError::invalid(
                "rates.increment",
                "billing increments must be 1 to 3600 seconds",
            ));
    }

    #[test]
    fn longest_prefix_wins() {
        let v = version(
            1,
            at(0),
            vec![rate("44", 1000, 0, 60, 60), rate("447", 8000, 0, 60, 60)],
        );
        let rate_of = |n: &str| {
            v.rate_for(&E164::parse(n).unwrap())
                .map(|r| r.prefix.clone())
        };
        assert_eq!(rate_of("+447700900123").as_deref(), Some("447"));
        assert_eq!(rate_of("+442071838750").as_deref(), Some("44"));
        assert_eq!(rate_of("+14155550100"), None);
        assert!(v.is_blocked(&E164::parse("+449012345678").unwrap()));
    }

    #[test]
    fn the_version_in_force_is_the_latest_start_and_corrections_win() {
        let t = Tariff::from_events(&[
            published(version(1, at(0), vec![rate("44", 1000, 0, 60, 60)])),
            published(version(2, at(100), vec![rate("44", 2000, 0, 60, 60)])),
            published(version(3, at(100), vec![rate("44", 1500, 0, 60, 60)])),
        ]);
        assert_eq!(t.in_force_at(at(-1)).map(|v| v.version), None);
        assert_eq!(t.in_force_at(at(99)).map(|v| v.version), Some(1));
        assert_eq!(t.in_force_at(at(100)).map(|v| v.version), Some(3));
    }
}
