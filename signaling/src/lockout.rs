//! The defence against password guessing (SIPVicious-style scanners): authentication failures
//! are counted per source address and per username within a window; past a threshold the
//! source, or the username, is blocked for a cooling period. A blocked request is refused
//! before any digest is computed. A blocked username still accepts the sources it was last
//! proven from, so an attack on a user's password does not lock the user's own phones out.
//!
//! Memory is bounded: at most `max_tracked` sources and usernames each; past that the entries
//! with nothing to remember are forgotten, and new ones go untracked until room is made. The
//! addresses a username was proven from are kept only for usernames that proved their
//! password (at most one entry per provisioned device, `GOOD_SOURCES` addresses each).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The thresholds (config `security.*`).
#[derive(Debug, Clone)]
pub struct LockoutSettings {
    /// Failures from one address within `window` that block it.
    pub failures_per_source: u32,
    /// Failures for one username (from any address) within `window` that block it.
    pub failures_per_username: u32,
    pub window: Duration,
    /// How long a block lasts.
    pub block: Duration,
    /// Sources and usernames tracked at most (each).
    pub max_tracked: usize,
}

impl Default for LockoutSettings {
    fn default() -> Self {
        Self {
            failures_per_source: 10,
            failures_per_username: 20,
            window: Duration::from_secs(60),
            block: Duration::from_secs(600),
            max_tracked: 100_000,
        }
    }
}

/// Addresses a username was last proven from, kept per username.
const GOOD_SOURCES: usize = 8;

#[derive(Debug, Default)]
struct Window {
    failures: u32,
    since: Option<Instant>,
    blocked_until: Option<Instant>,
}

impl Window {
    fn blocked(&self, now: Instant) -> bool {
        self.blocked_until.is_some_and(|t| now < t)
    }

    /// Counts one failure; true when it starts a block.
    fn fail(&mut self, now: Instant, limit: u32, settings: &LockoutSettings) -> bool {
        if self
            .since
            .is_none_or(|s| now.duration_since(s) >= settings.window)
        {
            self.failures = 0;
            self.since = Some(now);
        }
        self.failures = self.failures.saturating_add(1);
        if self.failures >= limit && !self.blocked(now) {
            self.blocked_until = Some(now + settings.block);
            self.failures = 0;
            self.since = None;
            return true;
        }
        false
    }

    fn forgettable(&self, now: Instant, window: Duration) -> bool {
        !self.blocked(now) && self.since.is_none_or(|s| now.duration_since(s) >= window)
    }
}

#[derive(Default)]
struct State {
    sources: HashMap<IpAddr, Window>,
    users: HashMap<String, Window>,
    good: HashMap<String, Vec<IpAddr>>,
    /// When a full table was last swept for room (at most once a second: a sweep is a pass
    /// over the whole table, which a spray of new addresses must not trigger per request).
    swept_at: Option<Instant>,
}

/// How often a full table may be swept for room.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// The address failures are counted under: an IPv6 client is counted by its /64 (one host's
/// usual allocation, which it can spread itself across at no cost).
fn counted_as(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
    }
}

/// Why a request is refused without being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blocked {
    Source,
    Username,
}

/// A block that has just started, for the log, the metrics and (for a username) the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockStarted {
    Source {
        source: IpAddr,
        username: String,
    },
    Username {
        username: String,
        last_source: IpAddr,
    },
}

/// What the lockout counted (reported in `/metrics`).
#[derive(Debug, Default)]
pub struct LockoutStats {
    pub failures: AtomicU64,
    pub source_blocks: AtomicU64,
    pub username_blocks: AtomicU64,
    pub refused: AtomicU64,
}

pub struct Lockout {
    settings: LockoutSettings,
    state: Mutex<State>,
    pub stats: LockoutStats,
}

impl Lockout {
    pub fn new(settings: LockoutSettings) -> Self {
        Self {
            settings,
            state: Mutex::default(),
            stats: LockoutStats::default(),
        }
    }

    pub fn settings(&self) -> &LockoutSettings {
        &self.settings
    }

    /// Whether a request from `source` (for `username`, once it is known) may be checked.
    pub fn admit(
        &self,
        source: IpAddr,
        username: Option<&str>,
        now: Instant,
    ) -> Result<(), Blocked> {
        let state = self.state.lock().expect("lockout");
        let verdict = if state
            .sources
            .get(&counted_as(source))
            .is_some_and(|w| w.blocked(now))
        {
            Err(Blocked::Source)
        } else if let Some(user) = username
            && state.users.get(user).is_some_and(|w| w.blocked(now))
            && !state.good.get(user).is_some_and(|g| g.contains(&source))
        {
            Err(Blocked::Username)
        } else {
            Ok(())
        };
        if verdict.is_err() {
            self.stats.refused.fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// Counts a failed authentication (wrong password or unknown user); the blocks it starts.
    pub fn failed(&self, source: IpAddr, username: &str, now: Instant) -> Vec<BlockStarted> {
        self.stats.failures.fetch_add(1, Ordering::Relaxed);
        let settings = &self.settings;
        let mut state = self.state.lock().expect("lockout");
        let state = &mut *state;
        let mut started = Vec::new();
        let swept_at = &mut state.swept_at;
        if let Some(window) = tracked(
            &mut state.sources,
            &counted_as(source),
            settings,
            now,
            swept_at,
        ) && window.fail(now, settings.failures_per_source, settings)
        {
            self.stats.source_blocks.fetch_add(1, Ordering::Relaxed);
            started.push(BlockStarted::Source {
                source,
                username: username.to_string(),
            });
        }
        if let Some(window) = tracked(&mut state.users, username, settings, now, swept_at)
            && window.fail(now, settings.failures_per_username, settings)
        {
            self.stats.username_blocks.fetch_add(1, Ordering::Relaxed);
            started.push(BlockStarted::Username {
                username: username.to_string(),
                last_source: source,
            });
        }
        started
    }

    /// A successful authentication: the source is one the username may use while blocked.
    pub fn succeeded(&self, source: IpAddr, username: &str) {
        let mut state = self.state.lock().expect("lockout");
        if let Some(good) = state.good.get_mut(username) {
            if let Some(i) = good.iter().position(|g| *g == source) {
                good.remove(i);
            } else if good.len() == GOOD_SOURCES {
                good.remove(0);
            }
            good.push(source);
        } else {
            state.good.insert(username.to_string(), vec![source]);
        }
    }

    /// Sources and usernames tracked (for tests and metrics).
    pub fn tracked(&self) -> (usize, usize) {
        let state = self.state.lock().expect("lockout");
        (state.sources.len(), state.users.len())
    }
}

/// The window of `key`, made room for if the table is full (by a sweep, if none was made in
/// the last `SWEEP_EVERY`); `None` when there is no room.
fn tracked<'a, K, Q>(
    table: &'a mut HashMap<K, Window>,
    key: &Q,
    settings: &LockoutSettings,
    now: Instant,
    swept_at: &mut Option<Instant>,
) -> Option<&'a mut Window>
where
    K: std::borrow::Borrow<Q> + std::hash::Hash + Eq,
    Q: ToOwned<Owned = K> + std::hash::Hash + Eq + ?Sized,
{
    if !table.contains_key(key) {
        if table.len() >= settings.max_tracked {
            if swept_at.is_some_and(|t| now.duration_since(t) < SWEEP_EVERY) {
                return None;
            }
            *swept_at = Some(now);
            table.retain(|_, w| !w.forgettable(now, settings.window));
            if table.len() >= settings.max_tracked {
                return None;
            }
        }
        table.insert(key.to_owned(), Window::default());
    }
    table.get_mut(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> LockoutSettings {
        LockoutSettings {
            failures_per_source: 3,
            failures_per_username: 5,
            window: Duration::from_secs(60),
            block: Duration::from_secs(300),
            max_tracked: 4,
        }
    }

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, n])
    }

    #[test]
    fn a_source_is_blocked_at_its_threshold_for_the_cooling_period() {
        let l = Lockout::new(settings());
        let t = Instant::now();
        assert!(l.failed(ip(1), "alice", t).is_empty());
        assert!(l.failed(ip(1), "bob", t).is_empty());
        assert_eq!(
            l.failed(ip(1), "carol", t),
            vec![BlockStarted::Source {
                source: ip(1),
                username: "carol".into()
            }]
        );
        assert_eq!(l.admit(ip(1), None, t), Err(Blocked::Source));
        assert_eq!(l.admit(ip(2), Some("alice"), t), Ok(()));
        assert_eq!(
            l.admit(ip(1), None, t + Duration::from_secs(299)),
            Err(Blocked::Source)
        );
        assert_eq!(l.admit(ip(1), None, t + Duration::from_secs(300)), Ok(()));
        assert_eq!(l.stats.refused.load(Ordering::Relaxed), 2);
        assert_eq!(l.stats.source_blocks.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn failures_spread_beyond_the_window_do_not_add_up() {
        let l = Lockout::new(settings());
        let t = Instant::now();
        for i in 0..10 {
            assert!(
                l.failed(ip(1), "alice", t + Duration::from_secs(31 * i))
                    .iter()
                    .all(|b| !matches!(b, BlockStarted::Source { .. })),
                "two failures a minute never block"
            );
        }
    }

    #[test]
    fn a_username_under_attack_is_blocked_except_from_where_it_was_proven() {
        let l = Lockout::new(settings());
        let t = Instant::now();
        l.failed(ip(9), "alice", t);
        l.succeeded(ip(9), "alice");
        let mut started = Vec::new();
        for n in 1..=5 {
            started.extend(l.failed(ip(n), "alice", t));
        }
        assert_eq!(
            started,
            vec![BlockStarted::Username {
                username: "alice".into(),
                last_source: ip(4)
            }],
            "one failure short of the per-source threshold each; five in all block alice"
        );
        assert_eq!(l.admit(ip(7), Some("alice"), t), Err(Blocked::Username));
        assert_eq!(l.admit(ip(9), Some("alice"), t), Ok(()), "her own phone");
        assert_eq!(l.admit(ip(7), Some("bob"), t), Ok(()));
    }

    #[test]
    fn an_ipv6_client_is_counted_by_its_slash_64() {
        let l = Lockout::new(settings());
        let t = Instant::now();
        for n in 1..=3u16 {
            let v6 = IpAddr::from([0x2001, 0xdb8, 0, 1, 0, 0, 0, n]);
            l.failed(v6, "alice", t);
        }
        let neighbour: IpAddr = "2001:db8:0:1::ffff".parse().unwrap();
        let elsewhere: IpAddr = "2001:db8:0:2::1".parse().unwrap();
        assert_eq!(l.admit(neighbour, None, t), Err(Blocked::Source));
        assert_eq!(l.admit(elsewhere, None, t), Ok(()));
    }

    #[test]
    fn memory_is_bounded_and_idle_entries_make_room() {
        let l = Lockout::new(settings());
        let t = Instant::now();
        for n in 0..50 {
            l.failed(ip(n), &format!("user{n}"), t);
        }
        for n in 0..50 {
            l.succeeded(ip(n), "alice");
        }
        let (sources, users) = l.tracked();
        assert!(sources <= 4 && users <= 4, "{sources} {users}");
        assert_eq!(l.state.lock().unwrap().good["alice"].len(), GOOD_SOURCES);
        let later = t + Duration::from_secs(61);
        l.failed(ip(200), "late", later);
        l.failed(ip(200), "late", later);
        l.failed(ip(200), "late", later);
        assert_eq!(
            l.admit(ip(200), None, later),
            Err(Blocked::Source),
            "idle entries were forgotten to track the new source"
        );
    }
}
