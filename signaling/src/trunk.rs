//! Carriers (config `trunks.<name>`): the SIP trunks to the PSTN and cellular networks. A
//! request from a trunk's signalling address or its allowed networks is the carrier's; anyone
//! else calling a telephone number must be an IP device that proves who it is. Calls out go to
//! the first trunk configured (by name order).

use std::net::SocketAddr;

use domain::E164;
use infra::network::Network;

#[derive(Debug, Clone)]
pub struct Trunk {
    pub name: String,
    /// Where calls for this carrier are sent.
    pub address: SocketAddr,
    pub networks: Vec<Network>,
    /// E.164 prefixes of the numbers the carrier delivers to us (`+` alone: any).
    pub numbers: Vec<String>,
}

impl Trunk {
    pub fn delivers(&self, number: &E164) -> bool {
        self.numbers.iter().any(|p| number.as_str().starts_with(p))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Trunks(Vec<Trunk>);

impl Trunks {
    pub fn new(trunks: Vec<Trunk>) -> Self {
        Self(trunks)
    }

    /// The carrier a request from `source` belongs to, if any: the trunk's own address, or
    /// any address in its allowed networks.
    pub fn of_source(&self, source: SocketAddr) -> Option<&Trunk> {
        self.0
            .iter()
            .find(|t| t.address == source || t.networks.iter().any(|n| n.contains(source.ip())))
    }

    /// The trunk calls to the public network leave through.
    pub fn outbound(&self) -> Option<&Trunk> {
        self.0.first()
    }
}

/// The telephone number a URI's user part names: `+4420…` as is; digits alone (how many
/// carriers send them) taken as E.164 without the `+`. Visual separators are dropped.
pub fn telephone_number(user: &str) -> Option<E164> {
    let digits: String = user
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | '(' | ')' | ' '))
        .collect();
    let candidate = if digits.starts_with('+') {
        digits
    } else if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        format!("+{digits}")
    } else {
        return None;
    };
    E164::parse(&candidate).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trunks_are_found_by_source_network_and_deliver_their_prefixes() {
        let trunks = Trunks::new(vec![Trunk {
            name: "carrier".into(),
            address: "192.0.2.10:5060".parse().unwrap(),
            networks: vec!["192.0.2.0/28".parse().unwrap()],
            numbers: vec!["+4420".into()],
        }]);
        let t = trunks.of_source("192.0.2.3:5060".parse().unwrap()).unwrap();
        assert_eq!(t.name, "carrier");
        assert!(
            trunks
                .of_source("192.0.2.16:5060".parse().unwrap())
                .is_none()
        );
        assert!(t.delivers(&E164::parse("+442071838750").unwrap()));
        assert!(!t.delivers(&E164::parse("+33142278186").unwrap()));
    }

    #[test]
    fn a_trunk_without_networks_is_known_by_its_own_address_only() {
        let trunks = Trunks::new(vec![Trunk {
            name: "loop".into(),
            address: "127.0.0.1:5070".parse().unwrap(),
            networks: vec![],
            numbers: vec!["+".into()],
        }]);
        assert!(
            trunks
                .of_source("127.0.0.1:5070".parse().unwrap())
                .is_some()
        );
        assert!(
            trunks
                .of_source("127.0.0.1:5071".parse().unwrap())
                .is_none()
        );
        assert_eq!(trunks.outbound().map(|t| t.name.as_str()), Some("loop"));
    }

    #[test]
    fn telephone_numbers_are_read_from_uri_users() {
        assert_eq!(
            telephone_number("+44-20-7183-8750").map(|n| n.as_str().to_string()),
            Some("+442071838750".into())
        );
        assert_eq!(
            telephone_number("442071838750").map(|n| n.as_str().to_string()),
            Some("+442071838750".into())
        );
        assert!(telephone_number("alice").is_none());
        assert!(telephone_number("").is_none());
    }
}
