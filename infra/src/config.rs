//! Configuration: one TOML file whose every key has an embedded default, each overridable by
//! an environment variable `RINGLEDGER_` + the key path in capitals with `__` between levels
//! (`store.url` -> `RINGLEDGER_STORE__URL`). A bad value is reported as one line naming the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::{Table, Value};

/// Every key and its default. Tools and tests rely on these names.
pub const DEFAULTS: &str = r#"
[store]
url = "sqlite://data/ringledger.db"
# Before serving, `serve` verifies the log's hash chain: "refuse" (a broken chain stops the
# start, naming the first bad position), "warn" (logged as an error, then served) or "skip".
verify_on_start = "refuse"

[projections]
# Where the SQL projections (routing, billing, call history) and the API's keys live: a SQLite
# file or a PostgreSQL database. Empty: next to the store — for a SQLite store, a file of its
# own beside the log's (data/ringledger.db -> data/ringledger-projections.db), so projection
# commits never wait for the log's write lock; for PostgreSQL, the store's own database. An
# EventStoreDB store needs one set here.
url = ""

[api]
listen = "127.0.0.1:8080"
# How extension verification codes reach the user: "send" (SMS codes to sms_webhook_url, flash
# calls placed by the SIP edge through the outbound trunk); for development and tests only,
# "log" (every code to the server log) or "response" (returned in the API response).
code_delivery = "send"
# The SMS gateway's webhook (http://...); empty: SMS codes go to the server log.
sms_webhook_url = ""
# Connections: at most max_connections open at once and max_connections_per_source from one
# IP address (0: no per-source cap); more are closed as soon as they are accepted. A client
# has header_read_timeout_secs to send a request's headers, which is also the longest a
# kept-alive connection may sit idle between two requests.
max_connections = 1024
max_connections_per_source = 256
header_read_timeout_secs = 10
# An authenticated request's body must arrive within body_read_timeout_secs (408 after); it is
# read whole before the request counts against the caps below.
body_read_timeout_secs = 10
# Authenticated requests in flight at once, by what they cost: hash-chain verifications (each
# reads the whole log), other reads, and commands. One over its cap is answered 503 with
# Retry-After at once (nothing queues), logged and counted. Live tails have their own cap.
max_concurrent_verifications = 2
max_concurrent_reads = 64
max_concurrent_writes = 256
# A workflow of several appends (open an account, register an extension) interrupted by a
# crash is finished or undone by the recovery pass, which runs at start-up and every
# recovery_interval_secs and settles workflows older than workflow_grace_secs. The same pass
# frees Idempotency-Keys whose request died with its process, and forgets completed
# Idempotency-Key records after idempotency_retention_hours.
workflow_grace_secs = 30
recovery_interval_secs = 10
idempotency_retention_hours = 24
# A closed account's extensions are removed and their numbers released at once (the phones
# are the users' own); its main number is kept this many days, so the old customer's callers
# do not reach a new one, then released by the recovery pass (0: at its next pass).
number_quarantine_days = 90
# /readyz answers 503 while a projection is stopped, or while the oldest event it has not
# applied is older than ready_max_lag_secs (it is stuck or far behind).
ready_max_lag_secs = 30
# Live tails (GET /v1/audit/events/live) open at once; more are answered 503. One falling more
# than live_tail_buffer events behind is ended with a `lagged` event naming where to resume.
max_live_tails = 64
live_tail_buffer = 1024

[sip]
listen = "127.0.0.1:5060"
realm = "ringledger"
# The HMAC key of digest nonces. Edges that share it accept each other's nonces; empty means
# a random key per process (fine for one edge).
nonce_secret = ""
nonce_lifetime_secs = 300
# Offered in this order in 401 challenges, one WWW-Authenticate each; RFC 8760 clients take the
# first they support. Older clients break on a SHA-256 challenge: SIPp 3.6 answers only the
# first, baresip 1.0 gives up (ENOSYS) if any is SHA-256. So MD5 alone by default;
# ["SHA-256", "MD5"] where every phone is known to cope.
digest_algorithms = ["MD5"]
min_expires = 60
max_expires = 3600
# How long an incoming call rings (all its legs at once) before it ends unanswered.
ring_timeout_secs = 60
# How long a caller is kept ringing while the user's extension is asked to call in (alternate
# path "call_in"); then the edge calls the extension out instead. Must be less than
# ring_timeout_secs; a call waits at most half the ring time it has left (the account's ring
# timeout may be shorter), so calling out still has as long to ring.
call_in_timeout_secs = 15
# A call-in is found by the caller ID the carrier delivers and the access number dialled. Caller
# ID is easily spoofed on the public network: so by default the edge answers the call-in alone
# and bridges it only once the token the user was sent is keyed in (DTMF). true bridges a
# call-in at once on caller ID alone, trusting every carrier's caller ID.
call_in_trust_caller_id = false
# A phone of an account may transfer its calls (REFER); an extension calling through a carrier
# may too when this is true (the transferred leg is billed to the account either way).
allow_extension_transfer = false
# The longest an answered call lasts: then the edge hangs up both sides (call.ended cause
# max_duration). Also ends calls with no media to watch (no audio stream, or media not relayed).
max_call_duration_secs = 14400
# While it has calls, the edge records edge.alive this often; a call whose edge has been silent
# for three heartbeats is ended by any other edge (or the next start) as edge_lost, billed up
# to the edge's last heartbeat.
heartbeat_secs = 10
# On SIGTERM/SIGINT the edge refuses new calls and hangs up the ones in progress
# (edge_shutdown), waiting at most this long for them to end before it exits.
drain_secs = 10
# Where call-in notices are also POSTed as JSON (a push gateway for the user's app; http://);
# with one set, a call-in is offered even when no device of the user is registered.
call_in_webhook_url = ""
# Flash-call verification: the edge calls the extension with this number followed by the
# 4-digit code as caller ID, and hangs up once it rings.
flash_call_prefix = "+4480055"
# A REGISTER naming more Contacts than this is refused (400).
max_contacts_per_request = 5
# Bindings one device (address of record) holds at most. Binding one more replaces its oldest
# (a phone that moved keeps working), or, with replace_oldest_contact = false, the REGISTER is
# refused (403) and none of its Contacts is bound.
max_contacts_per_aor = 5
replace_oldest_contact = true

[security]
# Password guessing: this many authentication failures (wrong password or unknown user) within
# auth_failure_window_secs block the source address, or the username (from every address but
# the ones it last registered from), for auth_block_secs. Blocked requests get 403 without a
# digest being computed; each block is a log line (target ringledger::security).
auth_failures_per_source = 10
auth_failures_per_username = 20
auth_failure_window_secs = 60
auth_block_secs = 600
# Sources and usernames tracked at most (each); memory stays bounded under a spray.
auth_tracked_max = 100000
# TCP: connections in all and per source address (past either, a new one is closed at once);
# a message must arrive whole within tcp_message_timeout_secs of its first byte (and a new
# connection's first message within that of the accept); a connection quiet for
# tcp_idle_timeout_secs is closed (CRLF keep-alives count).
tcp_max_connections = 4096
tcp_max_connections_per_source = 128
tcp_message_timeout_secs = 10
tcp_idle_timeout_secs = 300
# Calls that place a billable leg (to the public or cellular network) in progress at once, per
# account and per extension; each also holds its first billing increment against the daily
# spend limits until it ends, so concurrent calls cannot pass a limit together.
max_calls_per_account = 20
max_calls_per_extension = 4
# Answers kept for retransmission (UDP server transactions keep theirs up to 32 s), in all, in
# MiB; past it new answers are sent but not kept (a retransmitted request then goes unanswered).
# An answer over 8 KiB (a request stuffed with echoed headers) is never kept.
kept_responses_max_mb = 128
# No call without a price: a call out to a destination the account's tariff in force has no
# rate for is refused 403 (call.ended cause no_rate, counted, logged). true places it anyway;
# its legs are then kept with no charge and listed as unrated (rated-legs?unrated=true).
allow_unrated_calls = false
# The access-number menu takes a destination keyed in only after the extension's PIN: an
# extension without one is refused (403) there, since its number alone (a caller ID, which
# can be spoofed) would let anyone call anywhere on the account. true lets it key without.
keypad_without_pin = false

[media]
# Relay RTP through the edge (rewriting session descriptions); false: media flows end to end.
relay = true
# The address media is relayed on and named in session descriptions; empty: sip.listen's.
address = ""
ports = "20000-20999"
# A relayed call whose media (RTP or RTCP, either way) stops for this long is ended.
timeout_secs = 60
# The operator's voice prompts for the keypad menu: WAV files (8 kHz mono; 16-bit PCM, µ-law or
# A-law; 60 s at most each) played before the menu's tones, read once at start (a file that
# cannot be used stops the start, naming it). Empty: tones alone. For the PIN, the number, a
# call-in's token, and an entry refused.
prompt_pin = ""
prompt_number = ""
prompt_token = ""
prompt_refused = ""

[bus.kafka]
brokers = ""
topic = "ringledger.events"

[trunks]
"#;

const ENV_PREFIX: &str = "RINGLEDGER_";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

impl ConfigError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct Config {
    pub store: StoreConfig,
    pub projections: ProjectionsConfig,
    pub api: ApiConfig,
    pub sip: SipConfig,
    pub security: SecurityConfig,
    pub media: MediaConfig,
    pub bus: BusConfig,
    /// Carriers (SIP trunks to the PSTN and cellular networks) by name.
    pub trunks: BTreeMap<String, TrunkConfig>,
}

/// One carrier: where the edge sends calls for it, the source networks its requests may come
/// from, and the numbers it delivers to us (E.164 prefixes; `+` alone: any).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrunkConfig {
    pub address: SocketAddr,
    /// Networks besides `address` its requests may come from (none: `address` only).
    #[serde(default)]
    pub allowed_networks: Vec<String>,
    #[serde(default)]
    pub numbers: Vec<String>,
}

impl TrunkConfig {
    pub fn networks(&self) -> Result<Vec<crate::network::Network>, crate::network::InvalidNetwork> {
        self.allowed_networks.iter().map(|n| n.parse()).collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreConfig {
    pub url: String,
    pub verify_on_start: VerifyOnStart,
}

/// What `serve` does about the log's hash chain before serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VerifyOnStart {
    /// A broken chain stops the start.
    Refuse,
    /// A broken chain is logged as an error; the server starts.
    Warn,
    Skip,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProjectionsConfig {
    pub url: String,
}

impl Config {
    /// Where the SQL projections live (`projections.url`, or next to the store); `None` for a
    /// store with no SQL database of its own and no `projections.url`.
    pub fn projections_url(&self) -> Option<String> {
        if self.projections.url.is_empty() {
            projections_next_to(&self.store.url)
        } else {
            Some(self.projections.url.clone())
        }
    }
}

/// The projections' default place for the store at `store_url`: for SQLite a file of its own
/// beside the log's (`…/name.db` -> `…/name-projections.db`), for PostgreSQL the same database.
pub fn projections_next_to(store_url: &str) -> Option<String> {
    if store_url.starts_with("sqlite:") {
        let (path, query) = store_url.split_once('?').unwrap_or((store_url, ""));
        let stem = path.strip_suffix(".db").unwrap_or(path);
        let query = if query.is_empty() {
            String::new()
        } else {
            format!("?{query}")
        };
        Some(format!("{stem}-projections.db{query}"))
    } else if store_url.starts_with("postgres") {
        Some(store_url.to_owned())
    } else {
        None
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    pub code_delivery: CodeDelivery,
    pub sms_webhook_url: String,
    pub max_connections: u32,
    pub max_connections_per_source: u32,
    pub header_read_timeout_secs: u64,
    pub body_read_timeout_secs: u64,
    pub max_concurrent_verifications: u32,
    pub max_concurrent_reads: u32,
    pub max_concurrent_writes: u32,
    pub workflow_grace_secs: u64,
    pub recovery_interval_secs: u64,
    pub idempotency_retention_hours: u64,
    pub number_quarantine_days: u64,
    pub ready_max_lag_secs: u64,
    pub max_live_tails: u32,
    pub live_tail_buffer: u32,
}

/// Where a freshly drawn extension verification code goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CodeDelivery {
    /// Through the SMS webhook or the edge's flash call.
    Send,
    Log,
    Response,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SipConfig {
    pub listen: SocketAddr,
    /// The digest realm devices authenticate in (part of every stored HA1).
    pub realm: String,
    pub nonce_secret: String,
    pub nonce_lifetime_secs: u64,
    pub digest_algorithms: Vec<String>,
    pub min_expires: u32,
    pub max_expires: u32,
    pub ring_timeout_secs: u64,
    pub call_in_timeout_secs: u32,
    pub call_in_trust_caller_id: bool,
    pub allow_extension_transfer: bool,
    pub max_call_duration_secs: u64,
    pub heartbeat_secs: u64,
    pub drain_secs: u64,
    pub call_in_webhook_url: String,
    pub flash_call_prefix: String,
    pub max_contacts_per_request: u32,
    pub max_contacts_per_aor: u32,
    pub replace_oldest_contact: bool,
}

/// The SIP edge's defences (see OPERATIONS, "Security").
#[derive(Debug, Clone, Deserialize)]
pub struct SecurityConfig {
    pub auth_failures_per_source: u32,
    pub auth_failures_per_username: u32,
    pub auth_failure_window_secs: u64,
    pub auth_block_secs: u64,
    pub auth_tracked_max: usize,
    pub tcp_max_connections: usize,
    pub tcp_max_connections_per_source: usize,
    pub tcp_message_timeout_secs: u64,
    pub tcp_idle_timeout_secs: u64,
    pub max_calls_per_account: usize,
    pub max_calls_per_extension: usize,
    pub kept_responses_max_mb: usize,
    pub allow_unrated_calls: bool,
    pub keypad_without_pin: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct MediaConfig {
    pub relay: bool,
    pub address: String,
    pub ports: String,
    pub timeout_secs: u64,
    pub prompt_pin: String,
    pub prompt_number: String,
    pub prompt_token: String,
    pub prompt_refused: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct BusConfig {
    pub kafka: KafkaConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct KafkaConfig {
    /// Comma-separated `host:port` list; empty means the in-process bus.
    pub brokers: String,
    pub topic: String,
}

impl MediaConfig {
    /// The address media is relayed on: `media.address`, else `sip.listen`'s, which must then
    /// name one interface.
    pub fn relay_address(&self, sip_listen: SocketAddr) -> Result<std::net::IpAddr, ConfigError> {
        if !self.address.is_empty() {
            return self.address.parse().map_err(|_| {
                ConfigError::new(
                    "media.address",
                    format!("{:?} is not an IP address", self.address),
                )
            });
        }
        if sip_listen.ip().is_unspecified() {
            return Err(ConfigError::new(
                "media.address",
                "must be set when sip.listen is a wildcard address",
            ));
        }
        Ok(sip_listen.ip())
    }

    /// The inclusive RTP port range.
    pub fn port_range(&self) -> Result<(u16, u16), ConfigError> {
        let bad = || {
            ConfigError::new(
                "media.ports",
                format!("{:?} is not a range like 20000-20999", self.ports),
            )
        };
        let (lo, hi) = self.ports.split_once('-').ok_or_else(bad)?;
        let lo: u16 = lo.trim().parse().map_err(|_| bad())?;
        let hi: u16 = hi.trim().parse().map_err(|_| bad())?;
        if lo == 0 || lo > hi || !lo.is_multiple_of(2) {
            return Err(ConfigError::new(
                "media.ports",
                "must start at an even port above 0 and not end below its start",
            ));
        }
        Ok((lo, hi))
    }
}

impl Config {
    /// Defaults, then `file` if given, then the environment.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let file_text = match file {
            Some(path) => Some(std::fs::read_to_string(path).map_err(|e| {
                ConfigError::new("--config", format!("cannot read {}: {e}", path.display()))
            })?),
            None => None,
        };
        Self::from_sources(file_text.as_deref(), std::env::vars())
    }

    /// The same, with the file's text and the environment given (for tests).
    pub fn from_sources(
        file_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut merged: Table = DEFAULTS
            .parse()
            .map_err(|e| ConfigError::new("(defaults)", format!("{e}")))?;
        let defaults = merged.clone();
        if let Some(text) = file_text {
            let file: Table = text
                .parse()
                .map_err(|e: toml::de::Error| ConfigError::new("(file)", e.message().to_owned()))?;
            merge(&mut merged, file, &defaults, "")?;
        }
        for (name, value) in env {
            let Some(path) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let keys: Vec<String> = path.split("__").map(str::to_lowercase).collect();
            set_from_env(&mut merged, &defaults, &keys, value)?;
        }
        for (section, key) in [("api", "listen"), ("sip", "listen")] {
            if let Some(Value::String(addr)) = merged.get(section).and_then(|t| t.get(key))
                && addr.parse::<SocketAddr>().is_err()
            {
                return Err(ConfigError::new(
                    format!("{section}.{key}"),
                    format!("{addr:?} is not an address like 127.0.0.1:8080"),
                ));
            }
        }
        if let Some(Value::String(d)) = merged.get("api").and_then(|t| t.get("code_delivery"))
            && !["send", "log", "response"].contains(&d.as_str())
        {
            return Err(ConfigError::new(
                "api.code_delivery",
                format!("{d:?} must be \"send\", \"log\" or \"response\""),
            ));
        }
        if let Some(Value::String(v)) = merged.get("store").and_then(|t| t.get("verify_on_start"))
            && !["refuse", "warn", "skip"].contains(&v.as_str())
        {
            return Err(ConfigError::new(
                "store.verify_on_start",
                format!("{v:?} must be \"refuse\", \"warn\" or \"skip\""),
            ));
        }
        let config: Config = Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new("(config)", e.message().to_owned()))?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = &self.store.url;
        if ![
            "sqlite:",
            "postgres:",
            "postgresql:",
            "esdb:",
            "esdb+discover:",
        ]
        .iter()
        .any(|p| url.starts_with(p))
        {
            return Err(ConfigError::new(
                "store.url",
                format!("{url:?} must start with sqlite:, postgres:, esdb: or esdb+discover:"),
            ));
        }
        self.media.port_range()?;
        if self.media.relay {
            self.media.relay_address(self.sip.listen)?;
        }
        if self.media.timeout_secs == 0 {
            return Err(ConfigError::new("media.timeout_secs", "must be at least 1"));
        }
        if let Some(a) = self
            .sip
            .digest_algorithms
            .iter()
            .find(|a| !["MD5", "SHA-256"].contains(&a.as_str()))
        {
            return Err(ConfigError::new(
                "sip.digest_algorithms",
                format!("{a:?} is not MD5 or SHA-256"),
            ));
        }
        for (name, trunk) in &self.trunks {
            if let Err(e) = trunk.networks() {
                return Err(ConfigError::new(
                    format!("trunks.{name}.allowed_networks"),
                    e.to_string(),
                ));
            }
            if let Some(n) = trunk
                .numbers
                .iter()
                .find(|n| !n.starts_with('+') || !n[1..].bytes().all(|b| b.is_ascii_digit()))
            {
                return Err(ConfigError::new(
                    format!("trunks.{name}.numbers"),
                    format!("{n:?} is not an E.164 prefix like +4420"),
                ));
            }
        }
        if self.sip.digest_algorithms.is_empty() {
            return Err(ConfigError::new(
                "sip.digest_algorithms",
                "must name at least one",
            ));
        }
        if !(1..=600).contains(&self.sip.ring_timeout_secs) {
            return Err(ConfigError::new(
                "sip.ring_timeout_secs",
                "must be between 1 and 600",
            ));
        }
        for (key, webhook) in [
            ("api.sms_webhook_url", &self.api.sms_webhook_url),
            ("sip.call_in_webhook_url", &self.sip.call_in_webhook_url),
        ] {
            if !webhook.is_empty() && !webhook.starts_with("http://") {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{webhook:?} must be empty or an http:// URL (no TLS client is built in)"
                    ),
                ));
            }
        }
        let prefix = &self.sip.flash_call_prefix;
        if !prefix.starts_with('+')
            || prefix.len() > 12
            || !prefix[1..].bytes().all(|b| b.is_ascii_digit())
        {
            return Err(ConfigError::new(
                "sip.flash_call_prefix",
                format!("{prefix:?} must be + and at most 11 digits (4 code digits follow)"),
            ));
        }
        if !(5..=300).contains(&self.sip.call_in_timeout_secs) {
            return Err(ConfigError::new(
                "sip.call_in_timeout_secs",
                "must be between 5 and 300",
            ));
        }
        if u64::from(self.sip.call_in_timeout_secs) >= self.sip.ring_timeout_secs {
            return Err(ConfigError::new(
                "sip.call_in_timeout_secs",
                "must be less than sip.ring_timeout_secs (the extension is called out after it)",
            ));
        }
        for (key, value, range) in [
            (
                "sip.max_call_duration_secs",
                self.sip.max_call_duration_secs,
                5..=86_400,
            ),
            ("sip.heartbeat_secs", self.sip.heartbeat_secs, 1..=300),
            ("sip.drain_secs", self.sip.drain_secs, 1..=300),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError::new(
                    key,
                    format!("must be between {} and {}", range.start(), range.end()),
                ));
            }
        }
        let sec = &self.security;
        for (key, value) in [
            (
                "security.auth_failures_per_source",
                u64::from(sec.auth_failures_per_source),
            ),
            (
                "security.auth_failures_per_username",
                u64::from(sec.auth_failures_per_username),
            ),
            (
                "security.auth_failure_window_secs",
                sec.auth_failure_window_secs,
            ),
            ("security.auth_block_secs", sec.auth_block_secs),
            ("security.auth_tracked_max", sec.auth_tracked_max as u64),
            (
                "security.tcp_max_connections",
                sec.tcp_max_connections as u64,
            ),
            (
                "security.tcp_max_connections_per_source",
                sec.tcp_max_connections_per_source as u64,
            ),
            (
                "security.tcp_message_timeout_secs",
                sec.tcp_message_timeout_secs,
            ),
            ("security.tcp_idle_timeout_secs", sec.tcp_idle_timeout_secs),
            (
                "security.max_calls_per_account",
                sec.max_calls_per_account as u64,
            ),
            (
                "security.max_calls_per_extension",
                sec.max_calls_per_extension as u64,
            ),
            (
                "security.kept_responses_max_mb",
                sec.kept_responses_max_mb as u64,
            ),
            (
                "sip.max_contacts_per_request",
                u64::from(self.sip.max_contacts_per_request),
            ),
            ("api.max_connections", u64::from(self.api.max_connections)),
            (
                "api.header_read_timeout_secs",
                self.api.header_read_timeout_secs,
            ),
            ("api.workflow_grace_secs", self.api.workflow_grace_secs),
            (
                "api.body_read_timeout_secs",
                self.api.body_read_timeout_secs,
            ),
            (
                "api.max_concurrent_verifications",
                u64::from(self.api.max_concurrent_verifications),
            ),
            (
                "api.max_concurrent_reads",
                u64::from(self.api.max_concurrent_reads),
            ),
            (
                "api.max_concurrent_writes",
                u64::from(self.api.max_concurrent_writes),
            ),
            ("api.ready_max_lag_secs", self.api.ready_max_lag_secs),
            ("api.max_live_tails", u64::from(self.api.max_live_tails)),
            ("api.live_tail_buffer", u64::from(self.api.live_tail_buffer)),
            (
                "api.recovery_interval_secs",
                self.api.recovery_interval_secs,
            ),
            (
                "api.idempotency_retention_hours",
                self.api.idempotency_retention_hours,
            ),
            (
                "sip.max_contacts_per_aor",
                u64::from(self.sip.max_contacts_per_aor),
            ),
        ] {
            if value == 0 {
                return Err(ConfigError::new(key, "must be at least 1"));
            }
        }
        if self.api.number_quarantine_days > 3650 {
            return Err(ConfigError::new(
                "api.number_quarantine_days",
                "must be at most 3650 (ten years)",
            ));
        }
        if self.sip.min_expires == 0 || self.sip.min_expires > self.sip.max_expires {
            return Err(ConfigError::new(
                "sip.min_expires",
                "must be at least 1 and at most sip.max_expires",
            ));
        }
        Ok(())
    }
}

fn type_name(v: &Value) -> &'static str {
    v.type_str()
}

/// Merges `over` into `base`, refusing keys the defaults do not know (except under `trunks`,
/// whose keys name carriers) and values of the wrong type.
fn merge(base: &mut Table, over: Table, defaults: &Table, prefix: &str) -> Result<(), ConfigError> {
    for (k, v) in over {
        let key = if prefix.is_empty() {
            k.clone()
        } else {
            format!("{prefix}.{k}")
        };
        let free_form = key == "trunks" || key.starts_with("trunks.");
        match (defaults.get(&k), base.get_mut(&k), v) {
            (Some(Value::Table(d)), Some(Value::Table(b)), Value::Table(o)) if !free_form => {
                merge(b, o, d, &key)?
            }
            (_, _, v) if free_form => {
                base.insert(k, v);
            }
            (Some(d), _, v) if type_name(d) == type_name(&v) => {
                base.insert(k, v);
            }
            (Some(d), _, v) => {
                return Err(ConfigError::new(
                    key,
                    format!("expected a {}, found a {}", type_name(d), type_name(&v)),
                ));
            }
            (None, _, _) => return Err(ConfigError::new(key, "unknown key")),
        }
    }
    Ok(())
}

fn set_from_env(
    merged: &mut Table,
    defaults: &Table,
    keys: &[String],
    raw: String,
) -> Result<(), ConfigError> {
    let key = keys.join(".");
    let env_name = format!("{ENV_PREFIX}{}", keys.join("__").to_uppercase());
    let mut default: Option<&Value> = None;
    let mut table = defaults;
    for (i, k) in keys.iter().enumerate() {
        match table.get(k) {
            Some(Value::Table(t)) if i + 1 < keys.len() => table = t,
            Some(v) if i + 1 == keys.len() => default = Some(v),
            _ if keys.first().is_some_and(|k| k == "trunks") => break,
            _ => {
                return Err(ConfigError::new(
                    key,
                    format!("unknown key (from {env_name})"),
                ));
            }
        }
    }
    let value = match default {
        Some(Value::Integer(_)) => Value::Integer(raw.parse().map_err(|_| {
            ConfigError::new(key.clone(), format!("{env_name}={raw:?} is not an integer"))
        })?),
        Some(Value::Boolean(_)) => Value::Boolean(raw.parse().map_err(|_| {
            ConfigError::new(
                key.clone(),
                format!("{env_name}={raw:?} is not true or false"),
            )
        })?),
        // A list from the environment is comma-separated: `MD5,SHA-256`.
        Some(Value::Array(_)) => Value::Array(
            raw.split(',')
                .map(|s| Value::String(s.trim().to_string()))
                .filter(|v| v.as_str() != Some(""))
                .collect(),
        ),
        _ => Value::String(raw),
    };
    let (last, parents) = keys
        .split_last()
        .ok_or_else(|| ConfigError::new(key.clone(), "empty key"))?;
    let mut table = merged;
    for k in parents {
        table = match table
            .entry(k.clone())
            .or_insert_with(|| Value::Table(Table::new()))
        {
            Value::Table(t) => t,
            _ => return Err(ConfigError::new(key, "is not a table")),
        };
    }
    table.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_key_has_a_default() {
        let c = Config::from_sources(None, env(&[])).unwrap();
        assert_eq!(c.store.url, "sqlite://data/ringledger.db");
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.sip.listen.to_string(), "127.0.0.1:5060");
        assert_eq!(c.media.port_range().unwrap(), (20000, 20999));
        assert_eq!(c.bus.kafka.brokers, "");
        assert!(c.trunks.is_empty());
    }

    #[test]
    fn the_file_overrides_defaults_and_the_environment_overrides_the_file() {
        let file = "[store]\nurl = \"postgres://127.0.0.1/ringledger\"\n[api]\nlisten = \"0.0.0.0:9000\"\n";
        let c = Config::from_sources(
            Some(file),
            env(&[
                ("RINGLEDGER_API__LISTEN", "127.0.0.1:9100"),
                ("RINGLEDGER_BUS__KAFKA__BROKERS", "127.0.0.1:9092"),
                ("UNRELATED", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(c.store.url, "postgres://127.0.0.1/ringledger");
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(c.bus.kafka.brokers, "127.0.0.1:9092");
    }

    #[test]
    fn projections_live_next_to_the_store_unless_told() {
        let with = |pairs: &[(&str, &str)]| {
            Config::from_sources(None, env(pairs))
                .unwrap()
                .projections_url()
        };
        assert_eq!(
            with(&[]).as_deref(),
            Some("sqlite://data/ringledger-projections.db")
        );
        assert_eq!(
            with(&[("RINGLEDGER_STORE__URL", "sqlite:///var/lib/rl/log?mode=rwc")]).as_deref(),
            Some("sqlite:///var/lib/rl/log-projections.db?mode=rwc")
        );
        let pg = "postgres://127.0.0.1/ringledger";
        assert_eq!(with(&[("RINGLEDGER_STORE__URL", pg)]).as_deref(), Some(pg));
        let esdb = ("RINGLEDGER_STORE__URL", "esdb://127.0.0.1:2113?tls=false");
        assert_eq!(with(&[esdb]), None);
        assert_eq!(
            with(&[esdb, ("RINGLEDGER_PROJECTIONS__URL", pg)]).as_deref(),
            Some(pg)
        );
    }

    #[test]
    fn trunks_are_named_by_the_operator_and_checked() {
        let file = "[trunks.carrier]\naddress = \"127.0.0.1:5070\"\nallowed_networks = [\"127.0.0.0/8\"]\nnumbers = [\"+4420\"]\n";
        let c = Config::from_sources(Some(file), env(&[])).unwrap();
        let t = &c.trunks["carrier"];
        assert_eq!(t.address.to_string(), "127.0.0.1:5070");
        assert!(t.networks().unwrap()[0].contains("127.9.9.9".parse().unwrap()));
        assert_eq!(t.numbers, vec!["+4420".to_string()]);
        let err = |file: &str| {
            Config::from_sources(Some(file), env(&[]))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("[trunks.c]\naddress = \"127.0.0.1:5070\"\nallowed_networks = [\"10.0.0.0/40\"]\n")
                .starts_with("config: trunks.c.allowed_networks: "),
        );
        assert!(
            err("[trunks.c]\naddress = \"127.0.0.1:5070\"\nallowed_networks = [\"10.0.0.0/8\"]\nnumbers = [\"4420\"]\n")
                .starts_with("config: trunks.c.numbers: "),
        );
        assert!(
            err("[trunks.c]\naddress = \"127.0.0.1:5070\"\nallowed_networks = [\"10.0.0.0/8\"]\nrealm = \"x\"\n")
                .contains("realm"),
        );
    }

    #[test]
    fn sip_lists_come_from_the_environment_comma_separated() {
        let c = Config::from_sources(
            None,
            env(&[("RINGLEDGER_SIP__DIGEST_ALGORITHMS", "SHA-256, MD5")]),
        )
        .unwrap();
        assert_eq!(c.sip.digest_algorithms, vec!["SHA-256", "MD5"]);
        let e = Config::from_sources(None, env(&[("RINGLEDGER_SIP__DIGEST_ALGORITHMS", "SHA-1")]))
            .unwrap_err();
        assert!(
            e.to_string().starts_with("config: sip.digest_algorithms: "),
            "{e}"
        );
    }

    #[test]
    fn code_delivery_settings_are_checked() {
        let err = |e: &[(&str, &str)]| Config::from_sources(None, env(e)).unwrap_err().to_string();
        assert!(
            err(&[(
                "RINGLEDGER_API__SMS_WEBHOOK_URL",
                "https://sms.example/send"
            )])
            .starts_with("config: api.sms_webhook_url: "),
        );
        assert!(
            err(&[("RINGLEDGER_SIP__CALL_IN_WEBHOOK_URL", "ftp://x")])
                .starts_with("config: sip.call_in_webhook_url: "),
        );
        assert!(
            err(&[("RINGLEDGER_SIP__FLASH_CALL_PREFIX", "0800")])
                .starts_with("config: sip.flash_call_prefix: "),
        );
        let c = Config::from_sources(
            None,
            env(&[("RINGLEDGER_API__SMS_WEBHOOK_URL", "http://127.0.0.1:9/sms")]),
        )
        .unwrap();
        assert_eq!(c.api.code_delivery, CodeDelivery::Send);
        assert_eq!(c.api.sms_webhook_url, "http://127.0.0.1:9/sms");
    }

    #[test]
    fn the_call_in_wait_leaves_time_to_call_the_extension_out() {
        let err = |e: &[(&str, &str)]| Config::from_sources(None, env(e)).unwrap_err().to_string();
        let defaults = Config::from_sources(None, vec![]).unwrap();
        assert!(
            u64::from(defaults.sip.call_in_timeout_secs) < defaults.sip.ring_timeout_secs,
            "the defaults leave no time to call out"
        );
        assert!(!defaults.sip.call_in_trust_caller_id);
        assert!(!defaults.sip.allow_extension_transfer);
        assert!(
            err(&[
                ("RINGLEDGER_SIP__RING_TIMEOUT_SECS", "20"),
                ("RINGLEDGER_SIP__CALL_IN_TIMEOUT_SECS", "20"),
            ])
            .starts_with("config: sip.call_in_timeout_secs: must be less than"),
        );
        assert!(
            err(&[("RINGLEDGER_SIP__MAX_CALL_DURATION_SECS", "2")])
                .starts_with("config: sip.max_call_duration_secs: "),
        );
        assert!(
            err(&[("RINGLEDGER_SIP__HEARTBEAT_SECS", "0")])
                .starts_with("config: sip.heartbeat_secs: "),
        );
    }

    #[test]
    fn bad_config_names_the_key() {
        let err = |file: Option<&str>, e: &[(&str, &str)]| {
            Config::from_sources(file, env(e)).unwrap_err().to_string()
        };
        assert_eq!(
            err(Some("[store]\nulr = \"x\"\n"), &[]),
            "config: store.ulr: unknown key"
        );
        assert_eq!(
            err(Some("[api]\nlisten = 8080\n"), &[]),
            "config: api.listen: expected a string, found a integer"
        );
        assert!(
            err(None, &[("RINGLEDGER_STORE__URL", "mysql://x")]).starts_with("config: store.url: ")
        );
        assert!(
            err(None, &[("RINGLEDGER_MEDIA__PORTS", "9-3")]).starts_with("config: media.ports: ")
        );
        assert_eq!(
            err(None, &[("RINGLEDGER_STORE__PATH", "x")]),
            "config: store.path: unknown key (from RINGLEDGER_STORE__PATH)"
        );
        assert_eq!(
            err(None, &[("RINGLEDGER_SIP__LISTEN", "localhost")]),
            "config: sip.listen: \"localhost\" is not an address like 127.0.0.1:8080"
        );
        assert_eq!(
            err(None, &[("RINGLEDGER_API__CODE_DELIVERY", "sms")]),
            "config: api.code_delivery: \"sms\" must be \"send\", \"log\" or \"response\""
        );
    }
}
