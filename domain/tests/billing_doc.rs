//! Every worked example of docs/BILLING.md is priced by the domain's rating as the page says.

use chrono::TimeZone;
use domain::rating::{BillableLeg, rate};
use domain::tariff::{Rate, TariffVersion};
use domain::{Currency, E164, Instant};

/// `s` seconds after the examples' instant, `s` a decimal with up to 9 places, maybe negative.
fn seconds(s: &str) -> Instant {
    let base = chrono::Utc
        .with_ymd_and_hms(2026, 11, 20, 10, 0, 0)
        .unwrap();
    let (negative, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (whole, fraction) = s.split_once('.').unwrap_or((s, ""));
    assert!(fraction.len() <= 9, "{s}: at most nanoseconds");
    let nanos: i64 = whole.parse::<i64>().unwrap() * 1_000_000_000
        + format!("{fraction:0<9}").parse::<i64>().unwrap();
    base + chrono::Duration::nanoseconds(if negative { -nanos } else { nanos })
}

/// `prefix=per_minute_millis/connect_fee_minor/first/next`, several separated by spaces.
fn rates(text: &str) -> Vec<Rate> {
    text.trim_matches('`')
        .split_whitespace()
        .map(|r| {
            let (prefix, figures) = r.split_once('=').unwrap();
            let n: Vec<i64> = figures.split('/').map(|f| f.parse().unwrap()).collect();
            Rate {
                prefix: prefix.into(),
                description: prefix.into(),
                per_minute_millis: n[0],
                connect_fee_minor: n[1],
                first_increment_secs: n[2] as u32,
                next_increment_secs: n[3] as u32,
            }
        })
        .collect()
}

#[test]
fn every_worked_example_is_priced_as_the_page_says() {
    let doc = include_str!("../../docs/BILLING.md");
    let section = doc
        .split("## Worked examples")
        .nth(1)
        .expect("BILLING.md has its worked examples")
        .split("\n### ")
        .next()
        .unwrap();
    let mut checked = 0;
    for line in section.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if cells.len() != 8 || !cells[1].starts_with('`') {
            continue;
        }
        let version = TariffVersion {
            version: 1,
            currency: Currency::parse("GBP").unwrap(),
            effective_from: seconds("-3600"),
            rates: rates(cells[1]),
            blocked_prefixes: vec![],
            on_net: None,
        };
        let leg = BillableLeg {
            on_net: false,
            destination: E164::parse(cells[2]).unwrap(),
            answered_at: (cells[3] != "-").then(|| seconds(cells[3])),
            ended_at: seconds(cells[4]),
        };
        let priced = rate(&version, &leg).unwrap();
        let expected: Vec<u64> = cells[5..].iter().map(|c| c.parse().unwrap()).collect();
        assert_eq!(
            vec![
                priced.duration_secs,
                priced.billable_secs,
                priced.charge.minor as u64
            ],
            expected,
            "example {}",
            cells[0]
        );
        checked += 1;
    }
    assert_eq!(checked, 11, "every example row was read");
}
