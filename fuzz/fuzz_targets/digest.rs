//! Any text as an Authorization header value: parsing, the nonce count, the URI comparison
//! and verification. None may panic, and a parsed header with qop always carries nc and
//! cnonce (the legacy form must never be checked for a qop response).
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::digest::{Algorithm, Credentials, Nonces};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(creds) = Credentials::parse(text) {
        if creds.qop.is_some() {
            assert!(creds.nc.is_some() && creds.cnonce.is_some());
            assert!(creds.nonce_count().is_ok());
        } else {
            assert!(creds.nonce_count().is_err());
        }
        let _ = creds.uri_matches(&creds.uri.clone());
        let _ = creds.uri_matches(text);
        let ha1 = Algorithm::Md5.hash("alice:realm:pw");
        let _ = creds.verify("REGISTER", &ha1);
        let nonces = Nonces::new(b"fuzz".to_vec(), 300);
        let _ = nonces.check(&creds.nonce, 1_000, "192.0.2.7".parse().unwrap());
    }
});
