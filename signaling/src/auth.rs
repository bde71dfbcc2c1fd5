//! Digest authentication of a request against the HA1s in the `RoutingView`: REGISTER
//! (`Authorization`, 401) and requests from IP devices such as INVITE (`Proxy-Authorization`,
//! 407).

use domain::account::AccountStatus;
use domain::ids::DeviceId;
use rsip::headers::UntypedHeader;

use crate::answer::Answer;
use crate::digest::{Algorithm, Credentials, CredentialsError, NonceCheck, Nonces, challenge};
use crate::message::RawMessage;
use crate::view::SharedView;

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
}

impl Authenticator {
    pub fn new(settings: AuthSettings, nonce_secret: Vec<u8>, nonce_lifetime_secs: u64) -> Self {
        Self {
            settings,
            nonces: Nonces::new(nonce_secret, nonce_lifetime_secs),
        }
    }

    /// A 401 (or 407 for a proxy challenge) with one challenge per algorithm offered.
    pub fn challenge(&self, scheme: Scheme, stale: bool, now_secs: u64) -> Answer {
        let nonce = self.nonces.issue(now_secs);
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
    /// challenge): the device they prove, or the answer to send.
    pub fn authenticate(
        &self,
        request: &RawMessage,
        scheme: Scheme,
        view: &SharedView,
        now_secs: u64,
    ) -> Result<Authenticated, Answer> {
        let Some(authorization) = request.header(scheme.credentials_header()) else {
            return Err(self.challenge(scheme, false, now_secs));
        };
        let creds = match Credentials::parse(authorization) {
            Ok(c) => c,
            Err(CredentialsError::Algorithm(_) | CredentialsError::NotDigest) => {
                return Err(self.challenge(scheme, false, now_secs));
            }
            Err(e) => return Err(Answer::with_reason(400, format!("Bad Authorization: {e}"))),
        };
        if creds.realm != self.settings.realm
            || !self.settings.algorithms.contains(&creds.algorithm)
        {
            return Err(self.challenge(scheme, false, now_secs));
        }
        let tag = match self.nonces.check(&creds.nonce, now_secs) {
            NonceCheck::Fresh { tag } => tag,
            NonceCheck::Stale => return Err(self.challenge(scheme, true, now_secs)),
            NonceCheck::Invalid => return Err(self.challenge(scheme, false, now_secs)),
        };
        // qop=auth is what we offer; without it a response could be replayed within the
        // nonce's lifetime.
        let Some(nc) = creds.nonce_count().filter(|_| creds.qop.is_some()) else {
            return Err(self.challenge(scheme, false, now_secs));
        };
        let device_id = {
            let view = view.read().expect("routing view");
            let Some((id, device)) = view.device_by_username(&creds.username) else {
                return Err(Answer::with_reason(403, "Forbidden (unknown credentials)"));
            };
            let active = device
                .account_id
                .and_then(|a| view.account(a))
                .is_some_and(|a| a.status == AccountStatus::Active);
            if !active {
                return Err(Answer::with_reason(403, "Forbidden (account not active)"));
            }
            let Some(ha1) = device.ha1.as_ref() else {
                return Err(Answer::with_reason(403, "Forbidden (unknown credentials)"));
            };
            let ha1 = match creds.algorithm {
                Algorithm::Md5 => &ha1.md5,
                Algorithm::Sha256 => &ha1.sha256,
            };
            let method = request.method().unwrap_or_default();
            if device.realm != self.settings.realm || !creds.verify(method, ha1) {
                return Err(Answer::with_reason(403, "Forbidden (bad credentials)"));
            }
            id
        };
        if !self.nonces.accept_count(tag, nc, now_secs) {
            tracing::warn!(username = %creds.username, nc, "replayed nonce count refused");
            return Err(self.challenge(scheme, false, now_secs));
        }
        Ok(Authenticated {
            device_id,
            username: creds.username,
        })
    }
}
