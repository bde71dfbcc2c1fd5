//! SIP digest authentication (RFC 3261 §22, RFC 7616 / RFC 8760): MD5 and SHA-256 with
//! qop=auth, stateless nonces, and the nonce-count check that refuses a replayed response.
//!
//! A nonce is `hex(issued_at || random || HMAC-SHA256(secret, issued_at || random || source
//! IP)[..16])`: any edge holding the same secret can check it without shared state, and it is
//! good only from the address it was issued to (a response captured elsewhere cannot be sent
//! from another host). A nonce older than its lifetime is answered with `stale=true`, so the
//! device retries without asking its user. The nonce counts seen are remembered per edge for
//! the nonce's lifetime; an `nc` at or below one already accepted for that nonce is refused.
//!
//! Only `qop=auth` responses are taken (RFC 7616 §3.4: a server that offered `qop` refuses a
//! response without it): the legacy RFC 2069 form has no nonce count and could be replayed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use md5::Md5;
use sha2::{Digest, Sha256};

use crate::message::header::{split_outside, unquote};

const TAG_LEN: usize = 16;
const NONCE_BYTES: usize = 8 + 8 + TAG_LEN;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The name in a challenge (RFC 8760 spells it `SHA-256`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Reads an `algorithm=` value; `SHA256` (without the dash) is accepted as some clients
    /// and rsip write it.
    pub fn parse(name: &str) -> Option<Self> {
        match name.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" | "SHA256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    pub fn hash(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(data.as_bytes())),
        }
    }
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let mut inner = Sha256::new();
    inner.update(k.map(|b| b ^ 0x36));
    inner.update(message);
    let mut outer = Sha256::new();
    outer.update(k.map(|b| b ^ 0x5c));
    outer.update(inner.finalize());
    outer.finalize().into()
}

/// Constant-time comparison of two ASCII digests.
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()))
            == 0
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// Issued by an edge with our secret, within its lifetime.
    Fresh { tag: u128 },
    /// Ours, but expired: challenge again with `stale=true`.
    Stale,
    /// Not ours (or altered).
    Invalid,
}

/// Issues and checks nonces, and remembers nonce counts.
pub struct Nonces {
    secret: Vec<u8>,
    lifetime_secs: u64,
    seen: Mutex<SeenCounts>,
}

#[derive(Default)]
struct SeenCounts {
    by_tag: HashMap<u128, (u32, u64)>,
    last_prune: u64,
}

impl Nonces {
    pub fn new(secret: impl Into<Vec<u8>>, lifetime_secs: u64) -> Self {
        Self {
            secret: secret.into(),
            lifetime_secs,
            seen: Mutex::default(),
        }
    }

    /// The MAC of a nonce's first 16 bytes for a client at `source`.
    fn mac(&self, head: &[u8], source: IpAddr) -> [u8; 32] {
        let mut message = Vec::with_capacity(16 + 16);
        message.extend_from_slice(head);
        match source {
            IpAddr::V4(ip) => message.extend_from_slice(&ip.octets()),
            IpAddr::V6(ip) => message.extend_from_slice(&ip.octets()),
        }
        hmac_sha256(&self.secret, &message)
    }

    /// A nonce for a client at `source`, good from that address only.
    pub fn issue(&self, now_secs: u64, source: IpAddr) -> String {
        let mut bytes = [0u8; NONCE_BYTES];
        bytes[..8].copy_from_slice(&now_secs.to_be_bytes());
        bytes[8..16].copy_from_slice(&uuid::Uuid::new_v4().as_bytes()[..8]);
        let tag = self.mac(&bytes[..16], source);
        bytes[16..].copy_from_slice(&tag[..TAG_LEN]);
        hex::encode(bytes)
    }

    /// Whether `nonce` is ours, issued to `source`, and still fresh.
    pub fn check(&self, nonce: &str, now_secs: u64, source: IpAddr) -> NonceCheck {
        let mut bytes = [0u8; NONCE_BYTES];
        if hex::decode_to_slice(nonce, &mut bytes).is_err() {
            return NonceCheck::Invalid;
        }
        let tag = self.mac(&bytes[..16], source);
        let mut diff = 0u8;
        for (a, b) in tag[..TAG_LEN].iter().zip(&bytes[16..]) {
            diff |= a ^ b;
        }
        if diff != 0 {
            return NonceCheck::Invalid;
        }
        let issued = u64::from_be_bytes(bytes[..8].try_into().expect("8 bytes"));
        if issued > now_secs + 5 || now_secs - issued.min(now_secs) > self.lifetime_secs {
            return NonceCheck::Stale;
        }
        NonceCheck::Fresh {
            tag: u128::from_be_bytes(bytes[16..].try_into().expect("16 bytes")),
        }
    }

    /// Records `nc` for the nonce; false when it is not above every count already accepted.
    pub fn accept_count(&self, tag: u128, nc: u32, now_secs: u64) -> bool {
        let mut seen = self.seen.lock().expect("nonce counts");
        if now_secs > seen.last_prune + self.lifetime_secs / 4 {
            let horizon = now_secs.saturating_sub(self.lifetime_secs);
            seen.by_tag.retain(|_, (_, at)| *at >= horizon);
            seen.last_prune = now_secs;
        }
        match seen.by_tag.get_mut(&tag) {
            Some((last, at)) if nc > *last => {
                *last = nc;
                *at = now_secs;
                true
            }
            Some(_) => false,
            None => {
                seen.by_tag.insert(tag, (nc, now_secs));
                true
            }
        }
    }
}

/// The parameters of an `Authorization: Digest ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub realm: String,
    pub nonce: String,
    pub uri: String,
    pub response: String,
    pub algorithm: Algorithm,
    pub qop: Option<String>,
    pub cnonce: Option<String>,
    pub nc: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("not a Digest authorization")]
    NotDigest,
    #[error("the authorization has no {0}")]
    Missing(&'static str),
    #[error("algorithm {0:?} is not supported")]
    Algorithm(String),
    #[error("qop {0:?} is not supported (only auth)")]
    Qop(String),
    #[error("nc {0:?} is not 8 hex digits")]
    NonceCount(String),
    #[error("qop=auth is required")]
    NoQop,
}

impl Credentials {
    /// Parses the header's value, by our own rules rather than rsip's: parameter names are
    /// case-insensitive, values may be quoted or not, and `SHA-256` is the algorithm's name.
    pub fn parse(value: &str) -> Result<Self, CredentialsError> {
        let value = value.trim();
        let (scheme, rest) = value
            .split_once(char::is_whitespace)
            .ok_or(CredentialsError::NotDigest)?;
        if !scheme.eq_ignore_ascii_case("Digest") {
            return Err(CredentialsError::NotDigest);
        }
        let mut params: HashMap<String, String> = HashMap::new();
        for part in split_outside(rest, ',') {
            if let Some((k, v)) = part.split_once('=') {
                params.insert(k.trim().to_ascii_lowercase(), unquote(v.trim()).to_string());
            }
        }
        let mut take = |name: &'static str| {
            params
                .remove(name)
                .filter(|v| !v.is_empty() || name == "realm")
                .ok_or(CredentialsError::Missing(name))
        };
        let username = take("username")?;
        let realm = take("realm")?;
        let nonce = take("nonce")?;
        let uri = take("uri")?;
        let response = take("response")?;
        let algorithm = match params.remove("algorithm") {
            None => Algorithm::Md5,
            Some(a) => Algorithm::parse(&a).ok_or(CredentialsError::Algorithm(a))?,
        };
        let qop = params.remove("qop");
        if let Some(q) = &qop
            && !q.eq_ignore_ascii_case("auth")
        {
            return Err(CredentialsError::Qop(q.clone()));
        }
        let nc = params.remove("nc");
        if let Some(n) = &nc
            && (n.len() != 8 || u32::from_str_radix(n, 16).is_err())
        {
            return Err(CredentialsError::NonceCount(n.clone()));
        }
        let cnonce = params.remove("cnonce").filter(|c| !c.is_empty());
        // With qop, the response covers nc and cnonce: one without them is not a qop=auth
        // response (and must not be checked as the legacy form, which a replay could pass).
        if qop.is_some() {
            if nc.is_none() {
                return Err(CredentialsError::Missing("nc"));
            }
            if cnonce.is_none() {
                return Err(CredentialsError::Missing("cnonce"));
            }
        }
        Ok(Self {
            username,
            realm,
            nonce,
            uri,
            response,
            algorithm,
            qop,
            cnonce,
            nc,
        })
    }

    /// The nonce count of a qop=auth response; `NoQop` for a legacy (RFC 2069) response,
    /// which the edge never accepts.
    pub fn nonce_count(&self) -> Result<u32, CredentialsError> {
        if self.qop.is_none() {
            return Err(CredentialsError::NoQop);
        }
        self.nc
            .as_deref()
            .and_then(|n| u32::from_str_radix(n, 16).ok())
            .ok_or(CredentialsError::Missing("nc"))
    }

    /// Whether the digest's `uri` is the request's Request-URI (RFC 2617 §3.2.2.5): a
    /// response computed for one request cannot authorise another. Compared as written,
    /// with the scheme and host part case-insensitive as RFC 3261 §19.1.4 compares them.
    pub fn uri_matches(&self, request_uri: &str) -> bool {
        let (a, b) = (self.uri.trim(), request_uri.trim());
        a == b || uri_parts(a).is_some_and(|p| Some(p) == uri_parts(b))
    }

    /// Whether `response` is right for this method and HA1 (in the credentials' algorithm).
    pub fn verify(&self, method: &str, ha1: &str) -> bool {
        same(&self.expected(method, ha1), &self.response)
    }

    fn expected(&self, method: &str, ha1: &str) -> String {
        let alg = self.algorithm;
        let ha2 = alg.hash(&format!("{method}:{}", self.uri));
        match (&self.qop, &self.cnonce, &self.nc) {
            (Some(qop), Some(cnonce), Some(nc)) => {
                alg.hash(&format!("{ha1}:{}:{nc}:{cnonce}:{qop}:{ha2}", self.nonce))
            }
            (None, _, _) => alg.hash(&format!("{ha1}:{}:{ha2}", self.nonce)),
            // Refused by `parse`; never equal to a response if built by hand.
            (Some(_), _, _) => String::new(),
        }
    }
}

/// A URI as RFC 3261 §19.1.4 compares it, roughly: the scheme and everything after the user
/// part in lower case, the user part as written.
fn uri_parts(uri: &str) -> Option<(String, Option<&str>, String)> {
    let (scheme, rest) = uri.split_once(':')?;
    let (user, host) = match rest.split_once('@') {
        Some((user, host)) => (Some(user), host),
        None => (None, rest),
    };
    Some((scheme.to_ascii_lowercase(), user, host.to_ascii_lowercase()))
}

/// One `WWW-Authenticate` value.
pub fn challenge(realm: &str, nonce: &str, algorithm: Algorithm, stale: bool) -> String {
    let stale = if stale { ", stale=true" } else { "" };
    format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{stale}",
        algorithm.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    const PHONE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));
    const ELSEWHERE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 3));

    #[test]
    fn nonces_are_checked_without_state_and_go_stale() {
        let a = Nonces::new(b"secret".to_vec(), 300);
        let other_edge = Nonces::new(b"secret".to_vec(), 300);
        let n = a.issue(1_000, PHONE);
        assert!(matches!(
            other_edge.check(&n, 1_200, PHONE),
            NonceCheck::Fresh { .. }
        ));
        assert_eq!(a.check(&n, 1_301, PHONE), NonceCheck::Stale);
        assert_eq!(
            Nonces::new(b"other".to_vec(), 300).check(&n, 1_000, PHONE),
            NonceCheck::Invalid
        );
        let mut altered = n.clone().into_bytes();
        altered[3] = if altered[3] == b'0' { b'1' } else { b'0' };
        assert_eq!(
            a.check(std::str::from_utf8(&altered).unwrap(), 1_000, PHONE),
            NonceCheck::Invalid
        );
        assert_eq!(a.check("not hex", 1_000, PHONE), NonceCheck::Invalid);
    }

    #[test]
    fn a_nonce_is_good_only_from_the_address_it_was_issued_to() {
        let a = Nonces::new(b"secret".to_vec(), 300);
        let n = a.issue(1_000, PHONE);
        assert_eq!(a.check(&n, 1_000, ELSEWHERE), NonceCheck::Invalid);
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        let n6 = a.issue(1_000, v6);
        assert!(matches!(a.check(&n6, 1_000, v6), NonceCheck::Fresh { .. }));
        assert_eq!(a.check(&n6, 1_000, PHONE), NonceCheck::Invalid);
    }

    #[test]
    fn a_qop_response_without_cnonce_or_nc_is_refused_not_checked_as_the_legacy_form() {
        // The downgrade: a legacy response (no qop) captured once, resent claiming qop=auth
        // with no cnonce, used to be verified by the legacy formula and accepted.
        let ha1 = Algorithm::Md5.hash("alice:r:pw");
        let legacy = Credentials::parse(
            r#"Digest username="alice", realm="r", nonce="n1", uri="sip:r", response="x""#,
        )
        .unwrap();
        let mut legacy = legacy;
        legacy.response = legacy.expected("REGISTER", &ha1);
        assert!(legacy.verify("REGISTER", &ha1), "the legacy formula itself");
        assert_eq!(legacy.nonce_count(), Err(CredentialsError::NoQop));
        let forged = format!(
            r#"Digest username="alice", realm="r", nonce="n1", uri="sip:r", response="{}", qop=auth, nc=00000002"#,
            legacy.response
        );
        assert_eq!(
            Credentials::parse(&forged),
            Err(CredentialsError::Missing("cnonce"))
        );
        let no_nc = forged.replace(", nc=00000002", r#", cnonce="c""#);
        assert_eq!(
            Credentials::parse(&no_nc),
            Err(CredentialsError::Missing("nc"))
        );
    }

    #[test]
    fn the_digest_uri_must_be_the_request_uri() {
        let creds = Credentials::parse(
            r#"Digest username="a", realm="r", nonce="n", uri="sip:+447700900123@Carrier.example;user=phone", response="x""#,
        )
        .unwrap();
        assert!(creds.uri_matches("sip:+447700900123@Carrier.example;user=phone"));
        assert!(creds.uri_matches("SIP:+447700900123@carrier.EXAMPLE;user=phone"));
        assert!(!creds.uri_matches("sip:+19005550100@carrier.example;user=phone"));
        assert!(!creds.uri_matches("sip:+447700900123@other.example;user=phone"));
        assert!(!creds.uri_matches("garbage"));
        let bare = Credentials::parse(
            r#"Digest username="a", realm="r", nonce="n", uri="garbage", response="x""#,
        )
        .unwrap();
        assert!(
            !bare.uri_matches("rubbish"),
            "two URIs that do not parse are not equal"
        );
    }

    #[test]
    fn a_nonce_count_is_accepted_once_and_only_upwards() {
        let a = Nonces::new(b"s".to_vec(), 300);
        assert!(a.accept_count(7, 1, 10));
        assert!(!a.accept_count(7, 1, 11));
        assert!(a.accept_count(7, 2, 12));
        assert!(!a.accept_count(7, 1, 13));
        assert!(a.accept_count(8, 1, 13));
    }

    #[test]
    fn rfc_2617_example_response_verifies() {
        // RFC 2617 §3.5 (HTTP; the digest is computed the same way for SIP).
        let creds = Credentials::parse(
            r#"Digest username="Mufasa", realm="testrealm@host.com",
               nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth,
               nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1",
               opaque="5ccc069c403ebaf9f0171e9517f40e41""#,
        )
        .unwrap();
        let ha1 = Algorithm::Md5.hash("Mufasa:testrealm@host.com:Circle Of Life");
        assert!(creds.verify("GET", &ha1));
        assert!(!creds.verify("POST", &ha1));
        assert_eq!(creds.nonce_count(), Ok(1));
    }

    #[test]
    fn rfc_7616_sha256_example_response_verifies() {
        let creds = Credentials::parse(
            r#"Digest username="Mufasa", realm="http-auth@example.org", uri="/dir/index.html",
               algorithm=SHA-256, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
               nc=00000001, cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ", qop=auth,
               response="753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
               opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#,
        )
        .unwrap();
        assert_eq!(creds.algorithm, Algorithm::Sha256);
        let ha1 = Algorithm::Sha256.hash("Mufasa:http-auth@example.org:Circle of Life");
        assert!(creds.verify("GET", &ha1));
    }

    #[test]
    fn bad_authorizations_are_refused_with_a_reason() {
        assert_eq!(
            Credentials::parse("Basic QWxhZGRpbg=="),
            Err(CredentialsError::NotDigest)
        );
        assert_eq!(
            Credentials::parse(r#"Digest username="a", realm="r", nonce="n", uri="u""#),
            Err(CredentialsError::Missing("response"))
        );
        assert_eq!(
            Credentials::parse(
                r#"Digest username="a", realm="r", nonce="n", uri="u", response="x", algorithm=MD5-sess"#
            ),
            Err(CredentialsError::Algorithm("MD5-sess".into()))
        );
        assert_eq!(
            Credentials::parse(
                r#"Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth-int"#
            ),
            Err(CredentialsError::Qop("auth-int".into()))
        );
        assert_eq!(
            Credentials::parse(
                r#"Digest username="a", realm="r", nonce="n", uri="u", response="x", qop=auth, nc=1"#
            ),
            Err(CredentialsError::NonceCount("1".into()))
        );
    }
}
