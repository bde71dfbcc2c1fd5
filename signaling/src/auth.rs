//! Digest authentication of a request against the HA1s in the `RoutingView`: REGISTER
//! (`Authorization`, 401) and requests from IP devices such as INVITE (`Proxy-Authorization`,
//! 407).
//!
//! What a guesser learns is nothing: an unknown username and a wrong password get the same
//! 403 with the same reason, after the same work (a digest is computed against a stand-in
//! HA1 for an unknown user). Failures are counted by the `Lockout`; a blocked source or
//! username is refused before any digest is computed, and every block is logged (target
//! `ringledger::security`, one line an operator can feed to fail2ban).

use std::net::SocketAddr;
use std::time::Instant;

use domain::account::AccountStatus;
use domain::ids::{AccountId, DeviceId};
use rsip::headers::UntypedHeader;
use tokio::sync::mpsc;

use crate::answer::Answer;
use crate::digest::{Algorithm, Credentials, CredentialsError, NonceCheck, Nonces, challenge};
use crate::lockout::{BlockStarted, Lockout, LockoutSettings};
use crate::message::RawMessage;
use crate::view::SharedView;

/// The one refusal of credentials that do not prove a device, whatever was wrong with them.
const FORBIDDEN: &str = "Forbidden";

/// How many username blocks may wait to be recorded on their accounts.
const BLOCK_QUEUE: usize = 256;

/// A username blocked for failed authentications, to be recorded on its account's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsernameBlocked {
    pub account_id: AccountId,
    pub device_id: DeviceId,
    pub username: String,
    pub last_source: std::net::IpAddr,
    pub block_secs: u64,
}

/// Which challenge: a registrar's (401, WWW-Authenticate / Authorization) or a proxy's (407,
/// Proxy-Authenticate / Proxy-Authorization).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Www,
    Proxy,
}

impl Scheme {
    fn status(self) -> u16 {
        match self {
            Scheme::Www => 401,
            Scheme::Proxy => 407,
        }
    }

    fn credentials_header(self) -> &'static str {
        match self {
            Scheme::Www => "Authorization",
            Scheme::Proxy => "Proxy-Authorization",
        }
    }
}

/// The realm and the algorithms offered (config `sip.realm`, `sip.digest_algorithms`).
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub realm: String,
    /// In the order offered; the first is preferred.
    pub algorithms: Vec<Algorithm>,
}

/// The device a request proved to be.
pub struct Authenticated {
    pub device_id: DeviceId,
    /// Its SIP username.
    pub username: String,
}

pub struct Authenticator {
    settings: AuthSettings,
    nonces: Nonces,
    pub lockout: Lockout,
    /// Username blocks for the task that records them on accounts (dropped, and counted in
    /// the log, when that task falls behind).
    blocked_users: mpsc::Sender<UsernameBlocked>,
}

impl Authenticator {
    /// The authenticator, and where the username blocks it starts arrive.
    pub fn new(
        settings: AuthSettings,
        nonce_secret: Vec<u8>,
        nonce_lifetime_secs: u64,
        lockout: LockoutSettings,
    ) -> (Self, mpsc::Receiver<UsernameBlocked>) {
        let (blocked_users, rx) = mpsc::channel(BLOCK_QUEUE);
        let auth = Self {
            settings,
            nonces: Nonces::new(nonce_secret, nonce_lifetime_secs),
            lockout: Lockout::new(lockout),
            blocked_users,
        };
        (auth, rx)
    }

    /// A 401 (or 407 for a proxy challenge) with one challenge per algorithm offered, its
    /// nonce good from `source`'s address only.
    pub fn challenge(
        &self,
        scheme: Scheme,
        stale: bool,
        now_secs: u64,
        source: SocketAddr,
    ) -> Answer {
        let nonce = self.nonces.issue(now_secs, source.ip());
        let headers = self
            .settings
            .algorithms
            .iter()
            .map(|a| {
                let value = challenge(&self.settings.realm, &nonce, *a, stale);
                match scheme {
                    Scheme::Www => {
                        rsip::Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(value))
                    }
                    Scheme::Proxy => rsip::Header::ProxyAuthenticate(
                        rsip::headers::ProxyAuthenticate::new(value),
                    ),
                }
            })
            .collect();
        Answer {
            headers,
            ..Answer::status(scheme.status())
        }
    }

    /// Checks the request's credentials (`Authorization`, or `Proxy-Authorization` for a proxy
    /// challenge) sent from `source`: the device they prove, or the answer to send.
    pub fn authenticate(
        &self,
        request: &RawMessage,
        scheme: Scheme,
        view: &SharedView,
        now_secs: u64,
        source: SocketAddr,
    ) -> Result<Authenticated, Answer> {
        let now = Instant::now();
        let challenge = |stale| self.challenge(scheme, stale, now_secs, source);
        if self.lockout.admit(source.ip(), None, now).is_err() {
            return Err(Answer::with_reason(403, FORBIDDEN));
        }
        let Some(authorization) = request.header(scheme.credentials_header()) else {
            return Err(challenge(false));
        };
        let creds = match Credentials::parse(authorization) {
            Ok(c) => c,
            Err(CredentialsError::Algorithm(_) | CredentialsError::NotDigest) => {
                return Err(challenge(false));
            }
            Err(e) => return Err(Answer::with_reason(400, format!("Bad Authorization: {e}"))),
        };
        if creds.realm != self.settings.realm
            || !self.settings.algorithms.contains(&creds.algorithm)
        {
            return Err(challenge(false));
        }
        // Only the qop=auth form is taken (the legacy form has no count and can be replayed);
        // a client that sent it is challenged again, with qop offered.
        let Ok(nc) = creds.nonce_count() else {
            return Err(challenge(false));
        };
        let request_uri = request.start_line.split(' ').nth(1).unwrap_or_default();
        if !creds.uri_matches(request_uri) {
            return Err(Answer::with_reason(
                400,
                "Bad Authorization: uri is not the Request-URI",
            ));
        }
        let tag = match self.nonces.check(&creds.nonce, now_secs, source.ip()) {
            NonceCheck::Fresh { tag } => tag,
            NonceCheck::Stale => return Err(challenge(true)),
            NonceCheck::Invalid => return Err(challenge(false)),
        };
        if self
            .lockout
            .admit(source.ip(), Some(&creds.username), now)
            .is_err()
        {
            return Err(Answer::with_reason(403, FORBIDDEN));
        }
        let method = request.method().unwrap_or_default();
        let proven = {
            let view = view.read().expect("routing view");
            let device = view.device_by_username(&creds.username);
            let ha1 = device
                .and_then(|(_, d)| d.ha1.as_ref().filter(|_| d.realm == self.settings.realm))
                .map(|ha1| match creds.algorithm {
                    Algorithm::Md5 => ha1.md5.as_str(),
                    Algorithm::Sha256 => ha1.sha256.as_str(),
                });
            let right = match ha1 {
                Some(ha1) => creds.verify(method, ha1),
                None => {
                    // An unknown user costs the same digest as a known one, so timing tells
                    // nothing.
                    let stand_in = creds.algorithm.hash("ringledger:no such user");
                    let _ = creds.verify(method, &stand_in);
                    false
                }
            };
            match device {
                Some((id, device)) if right => Some((
                    id,
                    device
                        .account_id
                        .and_then(|a| view.account(a))
                        .is_some_and(|a| a.status == AccountStatus::Active),
                )),
                _ => None,
            }
        };
        let Some((device_id, active)) = proven else {
            self.failed(source, &creds.username, view);
            return Err(Answer::with_reason(403, FORBIDDEN));
        };
        self.lockout.succeeded(source.ip(), &creds.username);
        if !active {
            // Told only to whoever knows the password.
            return Err(Answer::with_reason(403, "Forbidden (account not active)"));
        }
        if !self.nonces.accept_count(tag, nc, now_secs) {
            tracing::warn!(username = %creds.username, nc, "replayed nonce count refused");
            return Err(challenge(false));
        }
        Ok(Authenticated {
            device_id,
            username: creds.username,
        })
    }

    /// Counts a failure; logs each block it starts, and hands a username block over to be
    /// recorded on the account.
    fn failed(&self, source: SocketAddr, username: &str, view: &SharedView) {
        let block_secs = self.lockout.settings().block.as_secs();
        for started in self.lockout.failed(source.ip(), username, Instant::now()) {
            match started {
                BlockStarted::Source { source, username } => tracing::warn!(
                    target: "ringledger::security",
                    %source, %username, block_secs,
                    "SIP authentication failures: source blocked"
                ),
                BlockStarted::Username {
                    username,
                    last_source,
                } => {
                    tracing::warn!(
                        target: "ringledger::security",
                        source = %last_source, %username, block_secs,
                        "SIP authentication failures: username blocked"
                    );
                    let owner = view
                        .read()
                        .expect("routing view")
                        .device_by_username(&username)
                        .and_then(|(id, d)| Some((id, d.account_id?)));
                    if let Some((device_id, account_id)) = owner {
                        let block = UsernameBlocked {
                            account_id,
                            device_id,
                            username,
                            last_source,
                            block_secs,
                        };
                        if self.blocked_users.try_send(block).is_err() {
                            tracing::warn!(
                                target: "ringledger::security",
                                "a username block could not be queued for its account's log"
                            );
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::account::AccountEvent;
    use domain::credentials::Ha1Digests;
    use domain::device::DeviceEvent;
    use domain::ids::{AccountId, TariffId};

    const TO: &str = "sip:+442079460000@127.0.0.1";
    const NOW: u64 = 1_800_000_000;

    fn authenticator() -> Authenticator {
        let settings = AuthSettings {
            realm: "ringledger".into(),
            algorithms: vec![Algorithm::Md5],
        };
        Authenticator::new(settings, b"k".to_vec(), 300, Default::default()).0
    }

    /// alice's device (password "secret") on an active account.
    fn view() -> (SharedView, DeviceId) {
        let account = AccountId(uuid::Uuid::from_u128(1));
        let device = DeviceId(uuid::Uuid::from_u128(3));
        let log = vec![
            (
                account.stream_id(),
                domain::Event::Account(AccountEvent::Opened {
                    account_id: account,
                    name: "Ada".into(),
                    main_number: domain::E164::parse("+442000000001").unwrap(),
                    tariff_id: TariffId(uuid::Uuid::from_u128(9)),
                    currency: domain::Currency::parse("GBP").unwrap(),
                    max_extensions: 5,
                }),
            ),
            (
                device.stream_id(),
                domain::Event::Device(DeviceEvent::Provisioned {
                    device_id: device,
                    account_id: account,
                    sip_username: "alice".into(),
                    realm: "ringledger".into(),
                    ha1: Ha1Digests::from_password("alice", "ringledger", "secret"),
                }),
            ),
        ];
        (crate::view::view_of(log), device)
    }

    /// An INVITE from alice, with `authorization` if any.
    fn invite(authorization: Option<String>) -> RawMessage {
        let auth = authorization.map_or(String::new(), |a| format!("Proxy-Authorization: {a}\r\n"));
        let text = format!(
            "INVITE {TO} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKa\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@ringledger>;tag=1\r\nTo: <{TO}>\r\n\
             Call-ID: auth@test\r\nCSeq: 1 INVITE\r\n{auth}Content-Length: 0\r\n\r\n"
        );
        match crate::message::parse(text.as_bytes(), "127.0.0.1:5062".parse().unwrap()) {
            Ok(crate::message::Message::Request(r)) => r.raw,
            _ => panic!("not a request: {text}"),
        }
    }

    /// The nonce of a 407's challenge.
    fn nonce_of(answer: &Answer) -> String {
        let challenge = format!("{:?}", answer.headers);
        let start = challenge.find("nonce=\\\"").expect("a nonce") + "nonce=\\\"".len();
        challenge[start..].split('\\').next().unwrap().to_string()
    }

    /// alice's credentials for `nonce`, with `password`, nonce count `nc`.
    fn credentials(nonce: &str, password: &str, nc: u32) -> String {
        let md5 = Algorithm::Md5;
        let ha1 = md5.hash(&format!("alice:ringledger:{password}"));
        let ha2 = md5.hash(&format!("INVITE:{TO}"));
        let response = md5.hash(&format!("{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}"));
        format!(
            "Digest username=\"alice\", realm=\"ringledger\", nonce=\"{nonce}\", uri=\"{TO}\", \
             response=\"{response}\", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce=\"c0ffee\""
        )
    }

    #[test]
    fn a_device_proves_itself_once_per_nonce_count_and_only_with_its_password() {
        let (view, device) = view();
        let auth = authenticator();
        let phone: SocketAddr = "127.0.0.1:5062".parse().unwrap();
        let check = |request: &RawMessage, from: SocketAddr| {
            auth.authenticate(request, Scheme::Proxy, &view, NOW, from)
        };
        // No credentials: challenged.
        let challenge = check(&invite(None), phone).map(|_| ()).unwrap_err();
        assert_eq!(challenge.status, 407);
        let nonce = nonce_of(&challenge);
        // The right password: proven.
        let proven = check(&invite(Some(credentials(&nonce, "secret", 1))), phone).unwrap();
        assert_eq!(
            (proven.device_id, proven.username.as_str()),
            (device, "alice")
        );
        // The same nonce count again (a replay): challenged, not proven.
        let replay = check(&invite(Some(credentials(&nonce, "secret", 1))), phone);
        assert_eq!(replay.map(|_| ()).unwrap_err().status, 407);
        // The next count: proven.
        assert!(check(&invite(Some(credentials(&nonce, "secret", 2))), phone).is_ok());
        // A wrong password: refused.
        let wrong = check(&invite(Some(credentials(&nonce, "guess", 3))), phone);
        assert_eq!(wrong.map(|_| ()).unwrap_err().status, 403);
        // The nonce from another address: challenged afresh.
        let elsewhere: SocketAddr = "127.0.0.9:5062".parse().unwrap();
        let foreign = check(&invite(Some(credentials(&nonce, "secret", 4))), elsewhere);
        assert_eq!(foreign.map(|_| ()).unwrap_err().status, 407);
    }
}
