//! What docs/BILLING.md says a leg costs, written from the page and not from the code, for
//! tests that compare the billing projection with it.

use domain::Instant;
use domain::tariff::TariffVersion;

/// The price of one answered leg: (tariff version, prefix matched, duration, billable
/// seconds, charge in minor units).
pub type Priced = (u32, String, i64, i64, i64);

/// What one answered leg costs, or `None` when it has no price (no version in force at the
/// call's start, or no rate for the destination).
pub fn reference(
    versions: &[TariffVersion],
    call_started: Instant,
    destination: &str,
    answered: Instant,
    ended: Instant,
) -> Option<Priced> {
    // Instants to the microsecond, anything finer dropped.
    let micros =
        |t: Instant| t.timestamp() * 1_000_000 + i64::from(t.timestamp_subsec_nanos() / 1_000);
    let start = micros(call_started);
    // The latest start at or before the call's; among equal starts the highest version.
    let v = versions
        .iter()
        .filter(|v| micros(v.effective_from) <= start)
        .max_by_key(|v| (micros(v.effective_from), v.version))?;
    // The longest prefix the destination's digits start with.
    let digits = destination.trim_start_matches('+');
    let r = v
        .rates
        .iter()
        .filter(|r| digits.starts_with(r.prefix.as_str()))
        .max_by_key(|r| r.prefix.len())?;
    // Any part of a second is a whole second.
    let duration = (micros(ended) - micros(answered) + 999_999) / 1_000_000;
    let (first, next) = (
        i64::from(r.first_increment_secs),
        i64::from(r.next_increment_secs),
    );
    let billable = if duration == 0 {
        0
    } else if duration <= first {
        first
    } else {
        first + (duration - first + next - 1) / next * next
    };
    let charge = if billable == 0 {
        0
    } else {
        // connect fee + per_minute_millis / 1000 × billable / 60, rounded up once: in units
        // of 1/60,000 of a minor unit.
        let exact = i128::from(r.connect_fee_minor) * 60_000
            + i128::from(r.per_minute_millis) * i128::from(billable);
        i64::try_from((exact + 59_999) / 60_000).expect("a charge that fits")
    };
    Some((v.version, r.prefix.clone(), duration, billable, charge))
}
