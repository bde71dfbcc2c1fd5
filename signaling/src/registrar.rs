//! REGISTER (RFC 3261 §10): digest authentication against the HA1 in the `RoutingView`, then
//! the bindings as device events, appended and durable before the 200 is built.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;

use std::sync::Arc;

use domain::device::{ContactLimit, DataPath, Device, DeviceCommand, Transport, WhenFull};
use domain::ids::DeviceId;
use infra::EventStore;
use infra::command::{self, CommandError, Loaded, Origin};
use rsip::headers::UntypedHeader;

use crate::answer::Answer;
use crate::auth::{Authenticator, Scheme};
use crate::message::RawMessage;
use crate::message::header::{self, name_addr, split_outside, uri_user};
use crate::view::SharedView;

/// The REGISTER header a device reports its data path with (`good`, `poor`, `none`).
pub const DATA_PATH_HEADER: &str = "Ringledger-Data-Path";

/// Registrar limits (config `sip.min_expires`, `sip.max_expires`).
#[derive(Debug, Clone)]
pub struct RegistrarSettings {
    /// Shorter requested expiries are refused with 423 and this Min-Expires.
    pub min_expires: u32,
    /// Longer ones are shortened to it; also the expiry when the request names none.
    pub max_expires: u32,
    /// A REGISTER naming more Contacts than this is refused with 400.
    pub max_contacts_per_request: usize,
    /// The bindings a device may hold, and whether one more replaces the oldest or is
    /// refused with 403 (config `sip.max_contacts_per_aor`, `sip.replace_oldest_contact`).
    pub contact_limit: ContactLimit,
}

pub struct Registrar {
    settings: RegistrarSettings,
    auth: Arc<Authenticator>,
    /// Each device's state and stream version after this edge last wrote it, so a refresh
    /// does not re-read the device's whole stream. Only a cache: the append still names the
    /// version, and a device another edge changed meanwhile is re-read after the conflict.
    devices: Mutex<HashMap<DeviceId, (Device, u64)>>,
}

/// Whether `device` holds at most `max` bindings once `bindings` are applied.
fn within_limit(device: &Device, bindings: &[Binding], max: usize) -> bool {
    let mut uris: std::collections::BTreeSet<&str> =
        device.contacts.keys().map(String::as_str).collect();
    for binding in bindings {
        match binding {
            Binding::Set { uri, .. } => {
                uris.insert(uri);
            }
            Binding::Remove { uri } => {
                uris.remove(uri.as_str());
            }
            Binding::RemoveAll => uris.clear(),
        }
    }
    uris.len() <= max
}

/// One Contact of the request, read and checked before anything is written.
#[derive(Debug, PartialEq)]
enum Binding {
    Set { uri: String, expires: u32 },
    Remove { uri: String },
    RemoveAll,
}

impl Registrar {
    pub fn new(settings: RegistrarSettings, auth: Arc<Authenticator>) -> Self {
        Self {
            settings,
            auth,
            devices: Mutex::default(),
        }
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
            .take(self.settings.max_contacts_per_request + 1)
            .collect();
        if contacts.len() > self.settings.max_contacts_per_request {
            return Err(Answer::with_reason(
                400,
                format!(
                    "Bad Request (more than {} Contacts)",
                    self.settings.max_contacts_per_request
                ),
            ));
        }
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
                return Err(Answer::status(423).header(rsip::Header::MinExpires(
                    rsip::headers::MinExpires::new(self.settings.min_expires.to_string()),
                )));
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
        // The request is read whole before it is authenticated: a malformed one gets its 400
        // rather than a challenge.
        let bindings = match self.bindings(request) {
            Ok(b) => b,
            Err(answer) => return answer,
        };
        // A device may say how its data path is (DATA_PATH_HEADER: good, poor or none):
        // calls then avoid it until it says otherwise.
        let data_path = match request.header(DATA_PATH_HEADER) {
            None => None,
            Some(v) => match DataPath::parse(v) {
                Some(q) => Some(q),
                None => {
                    return Answer::with_reason(400, format!("Bad {DATA_PATH_HEADER}"));
                }
            },
        };
        let device_id = match self
            .auth
            .authenticate(request, Scheme::Www, view, now_secs, source)
        {
            Ok(who) => {
                // The address-of-record registered must be the device's own.
                let aor_user = request
                    .header("To")
                    .and_then(name_addr)
                    .and_then(|n| uri_user(n.uri));
                if aor_user != Some(who.username.as_str()) {
                    return Answer::with_reason(
                        403,
                        "Forbidden (To is not the authenticated user)",
                    );
                }
                who.device_id
            }
            Err(answer) => return answer,
        };
        let user_agent = request.header("User-Agent").map(str::to_string);
        let stream = device_id.stream_id();
        let origin = Origin {
            actor,
            correlation_id: None,
            observe_append: None,
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
        // Refused bindings are refused whole: a REGISTER that would take the device past its
        // limit writes none of its Contacts (the domain refuses each one past it, but by then
        // the ones before would be written).
        if self.settings.contact_limit.when_full == WhenFull::Refuse {
            if loaded.is_none() {
                match command::load::<Device>(store, &stream).await {
                    Ok(l) => loaded = Some(l),
                    Err(e) => {
                        tracing::error!(error = %e, %stream, "bindings could not be read");
                        return Answer::status(500);
                    }
                }
            }
            let held = loaded.as_ref().map(|l| &l.state);
            if !held.is_some_and(|d| within_limit(d, &bindings, self.settings.contact_limit.max)) {
                return Answer::with_reason(
                    403,
                    format!(
                        "Forbidden (more than {} bindings)",
                        self.settings.contact_limit.max
                    ),
                );
            }
        }
        let commands = bindings
            .into_iter()
            .map(|binding| match binding {
                Binding::Set { uri, expires } => DeviceCommand::BindContact {
                    contact_uri: uri,
                    source: source.to_string(),
                    transport,
                    user_agent: user_agent.clone(),
                    expires_secs: expires,
                    limit: self.settings.contact_limit,
                },
                Binding::Remove { uri } => DeviceCommand::UnbindContact { contact_uri: uri },
                Binding::RemoveAll => DeviceCommand::UnbindAll,
            })
            .chain(data_path.map(|quality| DeviceCommand::ReportDataPath { quality }));
        for cmd in commands {
            match command::execute::<Device>(store, &origin, &stream, &cmd, loaded.take(), None)
                .await
            {
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
                    return Answer::status(500).header(rsip::Header::RetryAfter(
                        rsip::headers::RetryAfter::new("5"),
                    ));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn registrar() -> Registrar {
        let auth = crate::auth::Authenticator::new(
            crate::auth::AuthSettings {
                realm: "ringledger".into(),
                algorithms: vec![crate::digest::Algorithm::Md5],
            },
            b"k".to_vec(),
            300,
            Default::default(),
        )
        .0;
        let settings = RegistrarSettings {
            min_expires: 60,
            max_expires: 3600,
            max_contacts_per_request: 2,
            contact_limit: ContactLimit {
                max: 5,
                when_full: WhenFull::ReplaceOldest,
            },
        };
        Registrar::new(settings, Arc::new(auth))
    }

    /// A REGISTER with these extra header lines.
    fn register(headers: &str) -> RawMessage {
        let text = format!(
            "REGISTER sip:ringledger SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5062;branch=z9hG4bKr\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@ringledger>;tag=1\r\nTo: <sip:alice@ringledger>\r\n\
             Call-ID: reg@test\r\nCSeq: 1 REGISTER\r\n{headers}Content-Length: 0\r\n\r\n"
        );
        match crate::message::parse(text.as_bytes(), "127.0.0.1:5062".parse().unwrap()) {
            Ok(crate::message::Message::Request(r)) => r.raw,
            _ => panic!("not a request: {text}"),
        }
    }

    /// The bindings a REGISTER asks for, or the status refusing it.
    fn asked(r: &Registrar, headers: &str) -> Result<Vec<Binding>, u16> {
        r.bindings(&register(headers)).map_err(|a| a.status)
    }

    fn set(uri: &str, expires: u32) -> Binding {
        Binding::Set {
            uri: uri.into(),
            expires,
        }
    }

    #[test]
    fn expiries_are_kept_within_the_registrars_bounds() {
        let r = registrar();
        let phone = "sip:alice@127.0.0.1:5062";
        // None named: the longest; too long: shortened; a Contact's own beats the header's.
        assert_eq!(
            asked(&r, &format!("Contact: <{phone}>\r\n")),
            Ok(vec![set(phone, 3600)])
        );
        assert_eq!(
            asked(&r, &format!("Contact: <{phone}>\r\nExpires: 86400\r\n")),
            Ok(vec![set(phone, 3600)])
        );
        assert_eq!(
            asked(
                &r,
                &format!("Contact: <{phone}>;expires=120\r\nExpires: 600\r\n")
            ),
            Ok(vec![set(phone, 120)])
        );
        // Too short: 423 naming the shortest allowed.
        let short = r
            .bindings(&register(&format!("Contact: <{phone}>;expires=30\r\n")))
            .unwrap_err();
        assert_eq!(short.status, 423);
        assert!(format!("{:?}", short.headers).contains("60"), "{short:?}");
        // Zero removes that binding.
        assert_eq!(
            asked(&r, &format!("Contact: <{phone}>;expires=0\r\n")),
            Ok(vec![Binding::Remove { uri: phone.into() }])
        );
    }

    #[test]
    fn malformed_or_oversized_registrations_are_refused_before_anything_is_written() {
        let r = registrar();
        let status = |headers: &str| r.bindings(&register(headers)).map_err(|a| a.status);
        assert_eq!(
            status("Contact: *\r\nExpires: 0\r\n"),
            Ok(vec![Binding::RemoveAll])
        );
        // * only with Expires: 0 (and alone: the parser already refuses `*, <uri>`).
        assert_eq!(status("Contact: *\r\n"), Err(400));
        assert_eq!(
            status("Contact: <sip:a@127.0.0.1>\r\nExpires: soon\r\n"),
            Err(400)
        );
        assert_eq!(status("Contact: <sip:a@127.0.0.1>;expires=x\r\n"), Err(400));
        // More Contacts than a request may name (2 here).
        assert_eq!(
            status("Contact: <sip:a@127.0.0.1>, <sip:b@127.0.0.1>, <sip:c@127.0.0.1>\r\n"),
            Err(400)
        );
    }
}
