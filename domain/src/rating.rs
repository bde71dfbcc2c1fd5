//! Rating: the price of one billable leg under one tariff version. Pure and exact.
//!
//! The rule, in full (docs/BILLING.md, with worked examples that are tests):
//! 0. Instants are taken to the microsecond, anything finer dropped, before they are compared
//!    or subtracted (billing keeps microseconds; the log may hold nanoseconds).
//! 1. Duration is answer to end, with any part of a second counted as a whole second.
//!    An unanswered leg lasts 0 s and costs nothing (no connect fee either).
//! 2. Billable seconds: 0 for 0 s; otherwise the first increment, plus as many next
//!    increments as needed to cover the rest (60/60, 1/1, 30/6 ...).
//! 3. Charge = connect fee + per-minute price x billable seconds / 60, computed exactly in
//!    integers, then **rounded up to the next whole minor unit, once per leg**, so a leg is
//!    never billed less than its exact price and rounding never accumulates across legs.

use serde::{Deserialize, Serialize};

use crate::e164::E164;
use crate::money::Money;
use crate::tariff::{Rate, TariffVersion};
use crate::time::Instant;

/// What rating needs to know about a leg.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BillableLeg {
    pub destination: E164,
    /// Routed on-net (to a number of the service's own accounts): priced by the tariff's
    /// on-net rate, free without one.
    pub on_net: bool,
    pub answered_at: Option<Instant>,
    pub ended_at: Instant,
}

/// The priced leg: every figure a billing team needs to check it by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RatedCharge {
    pub tariff_version: u32,
    pub prefix: String,
    pub duration_secs: u64,
    pub billable_secs: u64,
    pub per_minute_millis: i64,
    pub connect_fee_minor: i64,
    pub charge: Money,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RatingError {
    #[error("tariff version {version} has no rate for {destination}")]
    NoRate { version: u32, destination: E164 },
    #[error("the leg ends before it was answered")]
    EndsBeforeAnswer,
    #[error("the charge overflows")]
    Overflow,
}

pub use crate::time::to_micros;

/// Seconds from answer to end (each to the microsecond), rounding any part second up.
pub fn duration_secs(answered_at: Instant, ended_at: Instant) -> Result<u64, RatingError> {
    let micros = (to_micros(ended_at) - to_micros(answered_at))
        .num_microseconds()
        .ok_or(RatingError::Overflow)?;
    let micros = u64::try_from(micros).map_err(|_| RatingError::EndsBeforeAnswer)?;
    Ok(micros.div_ceil(1_000_000))
}

/// Billable seconds for a duration under first/next increments.
pub fn billable_secs(duration: u64, first: u32, next: u32) -> u64 {
    let (first, next) = (u64::from(first), u64::from(next.max(1)));
    if duration == 0 {
        0
    } else if duration <= first {
        first
    } else {
        first + (duration - first).div_ceil(next) * next
    }
}

/// What an on-net call costs on a tariff without an on-net rate: nothing.
static FREE_ON_NET: Rate = Rate {
    prefix: String::new(),
    description: String::new(),
    per_minute_millis: 0,
    connect_fee_minor: 0,
    first_increment_secs: 1,
    next_increment_secs: 1,
};

/// The prefix a rated on-net leg shows (it is priced by the on-net rate, not by a prefix).
pub const ON_NET_PREFIX: &str = "on-net";

pub fn rate(version: &TariffVersion, leg: &BillableLeg) -> Result<RatedCharge, RatingError> {
    let r = if leg.on_net {
        version.on_net.as_ref().unwrap_or(&FREE_ON_NET)
    } else {
        version
            .rate_for(&leg.destination)
            .ok_or_else(|| RatingError::NoRate {
                version: version.version,
                destination: leg.destination.clone(),
            })?
    };
    let duration = match leg.answered_at {
        Some(answered) => duration_secs(answered, leg.ended_at)?,
        None => 0,
    };
    let billable = billable_secs(duration, r.first_increment_secs, r.next_increment_secs);
    let charge_minor = if billable == 0 {
        0
    } else {
        // In units of 1/60000 of a minor unit: connect fee x 60000 + millis/minute x seconds.
        let billable = i128::from(billable);
        let exact =
            i128::from(r.connect_fee_minor) * 60_000 + i128::from(r.per_minute_millis) * billable;
        let rounded_up = (exact + 59_999).div_euclid(60_000);
        i64::try_from(rounded_up).map_err(|_| RatingError::Overflow)?
    };
    Ok(RatedCharge {
        tariff_version: version.version,
        prefix: if leg.on_net {
            ON_NET_PREFIX.to_string()
        } else {
            r.prefix.clone()
        },
        duration_secs: duration,
        billable_secs: billable,
        per_minute_millis: r.per_minute_millis,
        connect_fee_minor: r.connect_fee_minor,
        charge: Money::new(charge_minor, version.currency),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tariff::tests::{rate as r, version};
    use crate::testing::at;

    fn leg(dest: &str, answered: Option<i64>, ended: i64) -> BillableLeg {
        BillableLeg {
            destination: E164::parse(dest).unwrap(),
            on_net: false,
            answered_at: answered.map(at),
            ended_at: at(ended),
        }
    }

    #[test]
    fn an_on_net_leg_is_priced_by_the_on_net_rate_or_free() {
        let on_net = BillableLeg {
            on_net: true,
            ..leg("+442079460000", Some(0), 61)
        };
        // No on-net rate: free, whatever the destination's prefix costs.
        let free = charge(vec![r("44", 10_000, 5, 60, 60)], on_net.clone());
        assert_eq!(
            (free.charge.minor, free.prefix.as_str()),
            (0, ON_NET_PREFIX)
        );
        // An on-net rate: 1p a minute, per second after a first minute.
        let mut v = version(1, at(0), vec![r("44", 10_000, 5, 60, 60)]);
        v.on_net = Some(r("", 1_000, 0, 60, 1));
        let priced = rate(&v, &on_net).unwrap();
        assert_eq!((priced.billable_secs, priced.charge.minor), (61, 2));
        // A number no rate covers is still rated on-net (no carrier is paid).
        let unrated = BillableLeg {
            on_net: true,
            ..leg("+33142278186", Some(0), 10)
        };
        assert_eq!(rate(&v, &unrated).unwrap().charge.minor, 1);
    }

    fn charge(rates: Vec<crate::tariff::Rate>, l: BillableLeg) -> RatedCharge {
        rate(&version(1, at(0), rates), &l).unwrap()
    }

    #[test]
    fn increments_60_60() {
        assert_eq!(billable_secs(1, 60, 60), 60);
        assert_eq!(billable_secs(60, 60, 60), 60);
        assert_eq!(billable_secs(61, 60, 60), 120);
        assert_eq!(billable_secs(0, 60, 60), 0);
    }

    #[test]
    fn increments_1_1_and_30_6() {
        assert_eq!(billable_secs(37, 1, 1), 37);
        assert_eq!(billable_secs(10, 30, 6), 30);
        assert_eq!(billable_secs(31, 30, 6), 36);
        assert_eq!(billable_secs(36, 30, 6), 36);
        assert_eq!(billable_secs(37, 30, 6), 42);
    }

    #[test]
    fn a_61_second_call_at_10p_a_minute_60_60_costs_20p() {
        // 61 s -> 120 billable s -> 2 minutes x 10.000p = 20p.
        let c = charge(
            vec![r("44", 10_000, 0, 60, 60)],
            leg("+442079460000", Some(0), 61),
        );
        assert_eq!(
            (c.duration_secs, c.billable_secs, c.charge.minor),
            (61, 120, 20)
        );
    }

    #[test]
    fn per_second_billing_with_connect_fee_rounds_up_once() {
        // 37 s at 1.25p/min, 1/1, connect 5p: 5 + 1.25 x 37/60 = 5 + 0.7708.. = 5.77.. -> 6p.
        let c = charge(
            vec![r("44", 1_250, 5, 1, 1)],
            leg("+442079460000", Some(0), 37),
        );
        assert_eq!((c.billable_secs, c.charge.minor), (37, 6));
    }

    #[test]
    fn thirty_six_billing_of_a_mobile_call() {
        // 95 s on 30/6 -> 30 + ceil(65/6)=11 x 6 = 96 s; 96 s x 8.4p/min = 13.44p -> 14p.
        let c = charge(
            vec![r("44", 1_000, 0, 60, 60), r("447", 8_400, 0, 30, 6)],
            leg("+447700900123", Some(0), 95),
        );
        assert_eq!(
            (c.prefix.as_str(), c.billable_secs, c.charge.minor),
            ("447", 96, 14)
        );
    }

    #[test]
    fn an_exact_charge_is_not_rounded() {
        // 120 s at 6p/min, 60/60 = exactly 12p.
        let c = charge(
            vec![r("1", 6_000, 0, 60, 60)],
            leg("+14155550100", Some(0), 120),
        );
        assert_eq!(c.charge.minor, 12);
    }

    #[test]
    fn part_seconds_count_as_whole_seconds() {
        let mut l = leg("+14155550100", Some(0), 60);
        l.ended_at += chrono::Duration::milliseconds(1);
        let c = charge(vec![r("1", 6_000, 0, 1, 1)], l);
        // 60.001 s -> 61 s x 6p/min = 6.1p -> 7p.
        assert_eq!((c.duration_secs, c.charge.minor), (61, 7));
    }

    #[test]
    fn instants_count_to_the_microsecond() {
        // Answered 900 ns and ended 60.000001 s after a whole second: 60.0000001 s apart, but
        // to the microsecond (0 and 60.000001) that is over 60 s -> 61 s.
        let mut l = leg("+14155550100", Some(0), 60);
        l.answered_at = l
            .answered_at
            .map(|a| a + chrono::Duration::nanoseconds(900));
        l.ended_at += chrono::Duration::microseconds(1);
        let c = charge(vec![r("1", 6_000, 0, 1, 1)], l.clone());
        assert_eq!(c.duration_secs, 61);
        // Nanoseconds alone never make a second.
        l.answered_at = Some(at(0) + chrono::Duration::nanoseconds(100));
        l.ended_at = at(60) + chrono::Duration::nanoseconds(900);
        assert_eq!(charge(vec![r("1", 6_000, 0, 1, 1)], l).duration_secs, 60);
    }

    #[test]
    fn an_unanswered_leg_costs_nothing_not_even_the_connect_fee() {
        let c = charge(
            vec![r("44", 10_000, 15, 60, 60)],
            leg("+442079460000", None, 30),
        );
        assert_eq!((c.billable_secs, c.charge.minor), (0, 0));
    }

    #[test]
    fn a_destination_without_rate_is_an_error() {
        let v = version(1, at(0), vec![r("44", 1, 0, 60, 60)]);
        assert!(matches!(
            rate(&v, &leg("+14155550100", Some(0), 10)),
            Err(RatingError::NoRate { .. })
        ));
    }

    #[test]
    fn a_leg_ending_before_its_answer_is_an_error() {
        let v = version(1, at(0), vec![r("44", 1, 0, 60, 60)]);
        assert_eq!(
            rate(&v, &leg("+442079460000", Some(10), 5)),
            Err(RatingError::EndsBeforeAnswer)
        );
    }
}
