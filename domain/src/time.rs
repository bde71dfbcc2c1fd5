//! Time in the model.

/// Instants are UTC everywhere in the model.
pub type Instant = chrono::DateTime<chrono::Utc>;

/// `instant` to the microsecond: what billing compares and subtracts, and what tariff
/// versions take effect at.
pub fn to_micros(instant: Instant) -> Instant {
    chrono::SubsecRound::trunc_subsecs(instant, 6)
}
