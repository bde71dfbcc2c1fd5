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
use infra::command::{self, Loaded, Origin};
use uuid::Uuid;

const ORIGIN: Origin<'static> = Origin {
    actor: "bench",
    correlation_id: None,
    observe_append: None,
};

/// A stream about to be created: decided on the empty state, written only if it is new.
fn new_stream<A: Aggregate>() -> Loaded<A> {
    Loaded {
        state: A::default(),
        version: 0,
    }
}

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
    let open = AccountCommand::Open {
        account_id,
        name: "SIP benchmark".into(),
        main_number: E164::parse(&format!("+4420{:08}", now.timestamp() % 100_000_000))?,
        tariff_id: TariffId::from(Uuid::now_v7()),
        currency: domain::money::Currency::parse("GBP")?,
        max_extensions: None,
    };
    let (opened, _) = command::execute(
        store.as_ref(),
        &ORIGIN,
        &account_id.stream_id(),
        &open,
        Some(new_stream()),
        Some(0),
    )
    .await?;
    let account: Account = opened.state;
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
            command::execute::<Device>(
                store.as_ref(),
                &ORIGIN,
                &device_id.stream_id(),
                &command,
                Some(new_stream()),
                Some(0),
            )
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
