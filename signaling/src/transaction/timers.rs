//! RFC 3261's timer values (§17.1.1.1, Table 4), from which every transaction timer is made.

use std::time::Duration;

/// RTT estimate (RFC 3261 §17.1.1.1).
pub const T1: Duration = Duration::from_millis(500);
/// The longest retransmit interval for non-INVITE requests and INVITE responses.
pub const T2: Duration = Duration::from_secs(4);
/// How long a message may remain in the network.
pub const T4: Duration = Duration::from_secs(5);
