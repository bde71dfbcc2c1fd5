//! Digits keyed on a phone, as a telephone number: the dialling rules of the country an
//! account's main number is in (its international and national prefixes), so a caller keys a
//! number as they would at home.
//!
//! - North American Numbering Plan (+1): international prefix `011`; `1` + ten digits, or ten
//!   digits alone, is a number in the plan.
//! - Everywhere else: international prefix `00`, national (trunk) prefix `0`.
//!
//! A leading `+` is not on a keypad; `*` and `#` are the menu's, not the number's.

use crate::e164::E164;

/// How numbers are keyed in one country.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiallingRules {
    country_code: String,
    international_prefix: &'static str,
    national_prefix: Option<&'static str>,
    /// Digits a national number has without its prefix, when the plan fixes it (NANP: 10).
    national_length: Option<usize>,
}

impl DiallingRules {
    /// The rules of the country `home` is in.
    pub fn of(home: &E164) -> Self {
        let country_code = home.country_code().to_owned();
        if country_code == "1" {
            Self {
                country_code,
                international_prefix: "011",
                national_prefix: Some("1"),
                national_length: Some(10),
            }
        } else {
            Self {
                country_code,
                international_prefix: "00",
                national_prefix: Some("0"),
                national_length: None,
            }
        }
    }

    /// The number `digits` (0-9 only) names under these rules, or None when it names none
    /// (a local number without its area code, a prefix alone, too long).
    pub fn normalise(&self, digits: &str) -> Option<E164> {
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if let Some(rest) = digits.strip_prefix(self.international_prefix) {
            return E164::parse(&format!("+{rest}")).ok();
        }
        let national = match self.national_prefix {
            Some(prefix) if digits.starts_with(prefix) => &digits[prefix.len()..],
            _ => match self.national_length {
                // NANP: the ten digits alone are a number too.
                Some(len) if digits.len() == len => digits,
                _ => return None,
            },
        };
        if self
            .national_length
            .is_some_and(|len| national.len() != len)
        {
            return None;
        }
        if national.is_empty() || national.starts_with('0') {
            return None;
        }
        E164::parse(&format!("+{}{national}", self.country_code)).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(home: &str) -> DiallingRules {
        DiallingRules::of(&E164::parse(home).unwrap())
    }

    fn keyed(home: &str, digits: &str) -> Option<String> {
        rules(home).normalise(digits).map(|n| n.as_str().to_owned())
    }

    #[test]
    fn a_uk_caller_keys_national_and_international_numbers() {
        let uk = "+442071234567";
        assert_eq!(keyed(uk, "02079460000").as_deref(), Some("+442079460000"));
        assert_eq!(keyed(uk, "07700900123").as_deref(), Some("+447700900123"));
        assert_eq!(keyed(uk, "0033142685300").as_deref(), Some("+33142685300"));
        assert_eq!(keyed(uk, "0012125550100").as_deref(), Some("+12125550100"));
        // A local number without its area code, a prefix alone, a zero after the prefix,
        // more than 15 digits, a non-digit.
        for digits in [
            "9460000",
            "0",
            "00",
            "000441234",
            "00441234567890123456",
            "02079*",
            "",
        ] {
            assert_eq!(keyed(uk, digits), None, "{digits}");
        }
    }

    #[test]
    fn a_north_american_caller_keys_ten_digits_one_plus_ten_or_011() {
        let us = "+12125550100";
        assert_eq!(keyed(us, "4155550123").as_deref(), Some("+14155550123"));
        assert_eq!(keyed(us, "14155550123").as_deref(), Some("+14155550123"));
        assert_eq!(
            keyed(us, "011442079460000").as_deref(),
            Some("+442079460000")
        );
        // Seven digits (no area code), 1 + nine digits, 00 is not the prefix here.
        for digits in ["5550123", "1415555012", "00442079460000"] {
            assert_eq!(keyed(us, digits), None, "{digits}");
        }
    }

    #[test]
    fn other_countries_use_00_and_0() {
        let fr = "+33142685300";
        assert_eq!(keyed(fr, "0142685300").as_deref(), Some("+33142685300"));
        assert_eq!(
            keyed(fr, "00442079460000").as_deref(),
            Some("+442079460000")
        );
    }
}
