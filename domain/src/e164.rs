//! E.164 telephone numbers (`+` then 1 to 15 digits, no leading zero) and their country codes.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A validated E.164 number, stored with its leading `+`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct E164(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{0:?} is not an E.164 number (expected + followed by 1 to 15 digits, not starting with 0)"
)]
pub struct InvalidE164(pub String);

impl E164 {
    pub fn parse(text: &str) -> Result<Self, InvalidE164> {
        let digits = text
            .strip_prefix('+')
            .ok_or_else(|| InvalidE164(text.to_owned()))?;
        let valid = (1..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(InvalidE164(text.to_owned()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The digits without the `+`.
    pub fn digits(&self) -> &str {
        &self.0[1..]
    }

    /// The ITU-T country calling code: one digit for zones 1 and 7, two digits for the
    /// two-digit codes assigned in zones 2 to 9, three digits otherwise.
    pub fn country_code(&self) -> &str {
        let d = self.digits();
        if d.starts_with('1') || d.starts_with('7') || d.len() < 2 {
            return &d[..1];
        }
        if TWO_DIGIT_CODES.contains(&&d[..2]) || d.len() < 3 {
            return &d[..2.min(d.len())];
        }
        &d[..3]
    }

    /// Whether a call from a number in `home`'s country to this one crosses a border.
    pub fn is_international_from(&self, home: &E164) -> bool {
        self.country_code() != home.country_code()
    }
}

const TWO_DIGIT_CODES: &[&str] = &[
    "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47",
    "48", "49", "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65",
    "66", "81", "82", "84", "86", "90", "91", "92", "93", "94", "95", "98",
];

impl fmt::Display for E164 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for E164 {
    type Err = InvalidE164;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for E164 {
    type Error = InvalidE164;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<E164> for String {
    fn from(n: E164) -> Self {
        n.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_numbers() {
        for n in ["+14155550100", "+442071838750", "+1", "+123456789012345"] {
            assert_eq!(E164::parse(n).unwrap().as_str(), n);
        }
    }

    #[test]
    fn refuses_invalid_numbers() {
        for n in [
            "14155550100",
            "+",
            "+0123",
            "+1234567890123456",
            "+1 415",
            "+1a",
            "",
        ] {
            assert!(E164::parse(n).is_err(), "{n} should be refused");
        }
    }

    #[test]
    fn country_codes_follow_itu_zones() {
        let cc = |n: &str| E164::parse(n).unwrap().country_code().to_owned();
        assert_eq!(cc("+14155550100"), "1");
        assert_eq!(cc("+74951234567"), "7");
        assert_eq!(cc("+442071838750"), "44");
        assert_eq!(cc("+33142685300"), "33");
        assert_eq!(cc("+353112345678"), "353");
        assert_eq!(cc("+8613912345678"), "86");
        assert_eq!(cc("+85212345678"), "852");
    }

    #[test]
    fn international_is_relative_to_home_country() {
        let home = E164::parse("+442071838750").unwrap();
        assert!(
            !E164::parse("+447700900123")
                .unwrap()
                .is_international_from(&home)
        );
        assert!(
            E164::parse("+14155550100")
                .unwrap()
                .is_international_from(&home)
        );
    }

    #[test]
    fn serde_round_trip_validates() {
        let n: E164 = serde_json::from_str("\"+14155550100\"").unwrap();
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"+14155550100\"");
        assert!(serde_json::from_str::<E164>("\"555\"").is_err());
    }
}
