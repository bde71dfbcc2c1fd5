//! Seeding for the SIP benchmarks: one account and many IP devices written straight to the
//! log (through the domain's rules), and the SIPp injection file naming them.

use std::io::Write;
use std::time::Instant;

use anyhow::Context;
use domain::account::{Account, AccountCommand};
use domain::device::{Device, DeviceCommand};
use domain::ids::{AccountId, DeviceId, TariffId};
use domain::{Aggregate, E164};
use futures::StreamExt;
use infra::{ExpectedVersion, NewEvent};
use uuid::Uuid;

/// Writes `count` devices (`bench0`, `bench1`, ...) of one new account and the CSV SIPp reads
/// with `-inf` (field0 username, field1 password, field2 realm).
pub async fn seed_devices(
    store_url: &str,
    realm: &str,
    count: usize,
    csv: &str,
) -> anyhow::Result<()> {
    let store = infra::open_store(store_url).await?;
    let now = chrono::Utc::now();
    let account_id = AccountId::from(Uuid::now_v7());
    let mut account = Account::default();
    let open = AccountCommand::Open {
        account_id,
        name: "SIP benchmark".into(),
        main_number: E164::parse(&format!("+4420{:08}", now.timestamp() % 100_000_000))?,
        tariff_id: TariffId::from(Uuid::now_v7()),
        currency: domain::money::Currency::parse("GBP")?,
        max_extensions: None,
    };
    let events = account.decide(&open, now)?;
    for e in &events {
        account.apply(e);
    }
    let new = events
        .iter()
        .map(|e| NewEvent::from_domain(e, now, "bench"))
        .collect();
    store
        .append(&account_id.stream_id(), ExpectedVersion::NoStream, new)
        .await?;
    let began = Instant::now();
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(csv).with_context(|| format!("creating {csv}"))?,
    );
    writeln!(file, "SEQUENTIAL")?;
    let users: Vec<(String, String)> = (0..count)
        .map(|i| (format!("bench{i}"), format!("bench-password-{i}")))
        .collect();
    for (user, password) in &users {
        writeln!(file, "{user};{password};{realm};")?;
    }
    file.flush()?;
    let appends = futures::stream::iter(users.into_iter().map(|(user, password)| {
        let store = store.clone();
        let account = account.clone();
        let realm = realm.to_string();
        async move {
            let device_id = DeviceId::from(Uuid::now_v7());
            let command = DeviceCommand::Provision {
                device_id,
                account,
                sip_username: user,
                realm,
                password,
            };
            let events = Device::default().decide(&command, now)?;
            let new = events
                .iter()
                .map(|e| NewEvent::from_domain(e, now, "bench"))
                .collect();
            store
                .append(&device_id.stream_id(), ExpectedVersion::NoStream, new)
                .await?;
            anyhow::Ok(())
        }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    for r in appends {
        r?;
    }
    println!(
        "seeded {count} devices of account {account_id} in realm {realm} in {:.1} s; SIPp users in {csv}",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}
