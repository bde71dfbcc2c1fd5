//! Secrets the service must check but never keep: SIP digest HA1s (RFC 2617 / RFC 8760),
//! verification codes and PINs, kept only as hashes.

use md5::Md5;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The HA1 values a registrar needs for MD5 and SHA-256 digest authentication:
/// `H(username ":" realm ":" password)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ha1Digests {
    pub md5: String,
    pub sha256: String,
}

impl Ha1Digests {
    pub fn from_password(username: &str, realm: &str, password: &str) -> Self {
        let a1 = format!("{username}:{realm}:{password}");
        Self {
            md5: hex::encode(Md5::digest(a1.as_bytes())),
            sha256: hex::encode(Sha256::digest(a1.as_bytes())),
        }
    }
}

/// A one-way hash of a short secret (verification code, PIN), salted with what it protects
/// (the extension's id and a purpose), so equal codes of two extensions never hash alike.
pub fn secret_hash(purpose: &str, salt: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(salt.as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ha1_matches_rfc_2617_example() {
        // RFC 2617 section 3.5: Mufasa / testrealm@host.com / Circle Of Life.
        let ha1 = Ha1Digests::from_password("Mufasa", "testrealm@host.com", "Circle Of Life");
        assert_eq!(ha1.md5, "939e7578ed9e3c518a452acee763bce9");
    }

    #[test]
    fn ha1_sha256_matches_rfc_7616_example() {
        // RFC 7616 section 3.9.1: Mufasa / http-auth@example.org / Circle of Life.
        let ha1 = Ha1Digests::from_password("Mufasa", "http-auth@example.org", "Circle of Life");
        assert_eq!(
            ha1.sha256,
            "7987c64c30e25f1b74be53f966b49b90f2808aa92faf9a00262392d7b4794232"
        );
    }

    #[test]
    fn secret_hash_depends_on_salt() {
        assert_ne!(
            secret_hash("code", "a", "1234"),
            secret_hash("code", "b", "1234")
        );
        assert_eq!(
            secret_hash("code", "a", "1234"),
            secret_hash("code", "a", "1234")
        );
    }
}
