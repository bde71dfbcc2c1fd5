//! REGISTER (RFC 3261 §10): digest authentication against the HA1 in the `RoutingView`, then
//! the bindings as device events, appended and durable before the 200 is built.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use domain::account::AccountStatus;
use domain::device::{Device, DeviceCommand, Transport};
use domain::ids::DeviceId;
use infra::EventStore;
use infra::command::{self, CommandError, Loaded, Origin};
use rsip::headers::UntypedHeader;

use crate::digest::{Algorithm, Credentials, NonceCheck, Nonces, challenge};
use crate::message::RawMessage;
use crate::message::header::{self, name_addr, split_outside, uri_user};
use crate::view::SharedView;

/// Registrar limits (config `sip.min_expires`, `sip.max_expires`).
#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    pub realm: String,
    /// Shorter requested expiries are refused with 423 and this Min-Expires.
    pub min_expires: u32,
    /// Longer ones are shortened to it; also the expiry when the request names none.
    pub max_expires: u32,
    /// The order algorithms are offered in; the first is preferred.
    pub algorithms: Vec<Algorithm>,
}

/// A status with its extra headers: what the registrar answers.
pub struct Answer {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<rsip::Header>,
}

impl Answer {
    fn status(status: u16) -> Self {
        Self {
            status,
            reason: None,
            headers: vec![],
        }
    }

    fn with_reason(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: Some(reason.into()),
            headers: vec![],
        }
    }
}

pub struct Registrar {
    settings: RegistrarSettings,
    nonces: Nonces,
    /// Each device's state and stream version after this edge last wrote it, so a refresh
    /// does not re-read the device's whole stream. Only a cache: the append still names the
    /// version, and a device another edge changed meanwhile is re-read after the conflict.
    devices: Mutex<HashMap<DeviceId, (Device, u64)>>,
}

/// One Contact of the request, read and checked before anything is written.
enum Binding {
    Set { uri: String, expires: u32 },
    Remove { uri: String },
    RemoveAll,
}

impl Registrar {
    pub fn new(
        settings: RegistrarSettings,
        nonce_secret: Vec<u8>,
        nonce_lifetime_secs: u64,
    ) -> Self {
        Self {
            settings,
            nonces: Nonces::new(nonce_secret, nonce_lifetime_secs),
            devices: Mutex::default(),
        }
    }

    fn unauthorized(&self, stale: bool, now_secs: u64) -> Answer {
        let nonce = self.nonces.issue(now_secs);
        let headers = self
            .settings
            .algorithms
            .iter()
            .map(|a| {
                rsip::Header::WwwAuthenticate(rsip::headers::WwwAuthenticate::new(challenge(
                    &self.settings.realm,
                    &nonce,
                    *a,
                    stale,
                )))
            })
            .collect();
        Answer {
            status: 401,
            reason: None,
            headers,
        }
    }

    /// Authenticates a REGISTER and returns the device it proves to be, or the answer to send.
    fn authenticate(
        &self,
        request: &RawMessage,
        view: &SharedView,
        now_secs: u64,
    ) -> Result<(DeviceId, Device), Answer> {
        let Some(authorization) = request.header("Authorization") else {
            return Err(self.unauthorized(false, now_secs));
        };
        let creds = match Credentials::parse(authorization) {
            Ok(c) => c,
            Err(
                crate::digest::CredentialsError::Algorithm(_)
                | crate::digest::CredentialsError::NotDigest,
            ) => {
                return Err(self.unauthorized(false, now_secs));
            }
            Err(e) => return Err(Answer::with_reason(400, format!("Bad Authorization: {e}"))),
        };
        if creds.realm != self.settings.realm
            || !self.settings.algorithms.contains(&creds.algorithm)
        {
            return Err(self.unauthorized(false, now_secs));
        }
        let tag = match self.nonces.check(&creds.nonce, now_secs) {
            NonceCheck::Fresh { tag } => tag,
            NonceCheck::Stale => return Err(self.unauthorized(true, now_secs)),
            NonceCheck::Invalid => return Err(self.unauthorized(false, now_secs)),
        };
        // qop=auth is what we offer; without it a response could be replayed within the
        // nonce's lifetime.
        let Some(nc) = creds.nonce_count().filter(|_| creds.qop.is_some()) else {
            return Err(self.unauthorized(false, now_secs));
        };
        let (device_id, device) = {
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
            (id, device.clone())
        };
        let Some(ha1) = device.ha1.as_ref() else {
            return Err(Answer::with_reason(403, "Forbidden (unknown credentials)"));
        };
        let ha1 = match creds.algorithm {
            Algorithm::Md5 => &ha1.md5,
            Algorithm::Sha256 => &ha1.sha256,
        };
        let method = request.method().unwrap_or("REGISTER");
        if device.realm != self.settings.realm || !creds.verify(method, ha1) {
            return Err(Answer::with_reason(403, "Forbidden (bad credentials)"));
        }
        if !self.nonces.accept_count(tag, nc, now_secs) {
            tracing::warn!(username = %creds.username, nc, "replayed nonce count refused");
            return Err(self.unauthorized(false, now_secs));
        }
        // The address-of-record registered must be the device's own.
        let aor_user = request
            .header("To")
            .and_then(name_addr)
            .and_then(|n| uri_user(n.uri).map(str::to_string));
        if aor_user.as_deref() != Some(device.sip_username.as_str()) {
            return Err(Answer::with_reason(
                403,
                "Forbidden (To is not the authenticated user)",
            ));
        }
        Ok((device_id, device))
    }

    fn bindings(&self, request: &RawMessage) -> Result<Vec<Binding>, Answer> {
        let header_expires = match request.header("Expires") {
            Some(v) => Some(
                v.trim()
                    .parse::<u32>()
                    .map_err(|_| Answer::with_reason(400, "Bad Expires"))?,
            ),
            None => None,
        };
        let contacts: Vec<&str> = request
            .headers_named("Contact")
            .flat_map(|v| split_outside(v, ','))
            .collect();
        if contacts.iter().any(|c| c.trim() == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(Answer::with_reason(
                    400,
                    "Contact * needs Expires: 0 and no other Contact",
                ));
            }
            return Ok(vec![Binding::RemoveAll]);
        }
        let mut out = Vec::with_capacity(contacts.len());
        for c in contacts {
            let addr = name_addr(c).ok_or_else(|| Answer::with_reason(400, "Bad Contact"))?;
            let expires = match header::param(addr.params, "expires") {
                Some(Some(v)) => v
                    .parse::<u32>()
                    .map_err(|_| Answer::with_reason(400, "Bad Contact expires"))?,
                Some(None) => return Err(Answer::with_reason(400, "Bad Contact expires")),
                None => header_expires.unwrap_or(self.settings.max_expires),
            };
            let uri = addr.uri.to_string();
            if expires == 0 {
                out.push(Binding::Remove { uri });
            } else if expires < self.settings.min_expires {
                let mut answer = Answer::status(423);
                answer
                    .headers
                    .push(rsip::Header::MinExpires(rsip::headers::MinExpires::new(
                        self.settings.min_expires.to_string(),
                    )));
                return Err(answer);
            } else {
                out.push(Binding::Set {
                    uri,
                    expires: expires.min(self.settings.max_expires),
                });
            }
        }
        Ok(out)
    }

    /// Handles one REGISTER that arrived from `source` over `transport`.
    pub async fn register(
        &self,
        store: &dyn EventStore,
        view: &SharedView,
        actor: &str,
        request: &RawMessage,
        source: SocketAddr,
        transport: Transport,
    ) -> Answer {
        let now = chrono::Utc::now();
        let now_secs = now.timestamp().max(0) as u64;
        let (device_id, _) = match self.authenticate(request, view, now_secs) {
            Ok(d) => d,
            Err(answer) => return answer,
        };
        let bindings = match self.bindings(request) {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        let user_agent = request.header("User-Agent").map(str::to_string);
        let stream = device_id.stream_id();
        let origin = Origin {
            actor,
            correlation_id: None,
        };
        let mut loaded = self
            .devices
            .lock()
            .expect("device cache")
            .get(&device_id)
            .map(|(state, version)| Loaded {
                state: state.clone(),
                version: *version,
            });
        for binding in bindings {
            let cmd = match binding {
                Binding::Set { uri, expires } => DeviceCommand::BindContact {
                    contact_uri: uri,
                    source: source.to_string(),
                    transport,
                    user_agent: user_agent.clone(),
                    expires_secs: expires,
                },
                Binding::Remove { uri } => DeviceCommand::UnbindContact { contact_uri: uri },
                Binding::RemoveAll => DeviceCommand::UnbindAll,
            };
            match command::execute::<Device>(store, &origin, &stream, &cmd, loaded.take()).await {
                Ok((l, _)) => {
                    self.devices
                        .lock()
                        .expect("device cache")
                        .insert(device_id, (l.state.clone(), l.version));
                    loaded = Some(l);
                }
                Err(CommandError::Domain(e)) => {
                    return Answer::with_reason(403, format!("Forbidden ({e})"));
                }
                Err(e) => {
                    self.devices
                        .lock()
                        .expect("device cache")
                        .remove(&device_id);
                    tracing::error!(error = %e, %stream, "REGISTER could not be recorded");
                    let mut answer = Answer::status(500);
                    answer
                        .headers
                        .push(rsip::Header::RetryAfter(rsip::headers::RetryAfter::new(
                            "5",
                        )));
                    return answer;
                }
            }
        }
        let device = match loaded {
            Some(l) => l.state,
            None => match command::load::<Device>(store, &stream).await {
                Ok(l) => l.state,
                Err(e) => {
                    tracing::error!(error = %e, %stream, "bindings could not be read");
                    return Answer::status(500);
                }
            },
        };
        let mut answer = Answer::status(200);
        for (uri, binding) in device.live_contacts(now) {
            let left = (binding.expires_at - now).num_seconds().max(1);
            answer
                .headers
                .push(rsip::Header::Contact(rsip::headers::Contact::new(format!(
                    "<{uri}>;expires={left}"
                ))));
        }
        answer
    }
}
