//! Seeding for the SIP benchmarks: one account and many IP devices, or many subscribers with
//! extensions, written straight to the log (through the domain's rules), and the SIPp
//! injection files naming them; and the billing totals the mixed benchmark checks.

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
    // The devices' calls go to +33 (France): no call is placed without a price for it.
    let tariff_id = publish_tariff(
        store.as_ref(),
        "SIP benchmark",
        vec![
            rate("33", "France", 1_500),
            rate("44", "United Kingdom", 2_000),
        ],
    )
    .await?;
    let open = AccountCommand::Open {
        account_id,
        name: "SIP benchmark".into(),
        main_number: E164::parse(&format!("+4420{:08}", now.timestamp() % 100_000_000))?,
        tariff_id,
        currency: domain::money::Currency::parse("GBP")?,
        max_extensions: None,
    };
    let (opened, _) = command::execute(
        store.as_ref(),
        &ORIGIN,
        &account_id.stream_id(),
        &open,
        Some(Loaded::empty()),
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
                Some(Loaded::empty()),
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

/// Where the call-throughs of the mixed benchmark go (each account's mapped access number).
const MIX_DESTINATION: &str = "+442079460000";

/// One subscriber of the mixed benchmark: the numbers SIPp calls and calls from.
struct Subscriber {
    main: E164,
    extension: E164,
    access: E164,
}

async fn run<A: Aggregate>(
    store: &dyn infra::EventStore,
    stream: &str,
    state: Option<Loaded<A>>,
    command: A::Command,
) -> anyhow::Result<Loaded<A>> {
    let pin = state.as_ref().map(|s| s.version);
    let (loaded, _) = command::execute::<A>(store, &ORIGIN, stream, &command, state, pin).await?;
    Ok(loaded)
}

/// One account on `tariff_id` with its main number, a verified extension, and an access
/// number mapped to `MIX_DESTINATION`, written through the domain's rules.
async fn seed_subscriber(
    store: &dyn infra::EventStore,
    tariff_id: TariffId,
    s: &Subscriber,
) -> anyhow::Result<()> {
    use domain::extension::{ChallengeMethod, Extension, ExtensionCommand, ExtensionKind};
    use domain::ids::ExtensionId;
    use domain::number::{NumberClaim, NumberCommand, NumberRole, stream_id};
    let account_id = AccountId::from(Uuid::now_v7());
    let open = AccountCommand::Open {
        account_id,
        name: format!("Mix {}", s.main.as_str()),
        main_number: s.main.clone(),
        tariff_id,
        currency: domain::money::Currency::parse("GBP")?,
        max_extensions: None,
    };
    let account = run::<Account>(store, &account_id.stream_id(), Some(Loaded::empty()), open)
        .await?
        .state;
    let extension_id = ExtensionId::from(Uuid::now_v7());
    let claims = [
        (s.main.clone(), NumberRole::Main),
        (s.extension.clone(), NumberRole::Extension { extension_id }),
        (
            s.access.clone(),
            NumberRole::Access {
                destination: Some(E164::parse(MIX_DESTINATION)?),
            },
        ),
    ];
    for (number, role) in claims {
        let claim = NumberCommand::Claim {
            number: number.clone(),
            account_id,
            role,
        };
        run::<NumberClaim>(store, &stream_id(&number), Some(Loaded::empty()), claim).await?;
    }
    let stream = extension_id.stream_id();
    let mut extension: Loaded<Extension> = Loaded::empty();
    for command in [
        ExtensionCommand::Request {
            extension_id,
            account,
            number: s.extension.clone(),
            native_provider: "Benchmark Mobile".into(),
            kind: ExtensionKind::Mobile,
        },
        ExtensionCommand::IssueChallenge {
            method: ChallengeMethod::Sms,
            code: "482913".into(),
            ttl_secs: 300,
        },
        ExtensionCommand::SubmitCode {
            code: "482913".into(),
        },
    ] {
        extension = run::<Extension>(store, &stream, Some(extension), command).await?;
    }
    Ok(())
}

/// A rate per minute (thousandths of a minor unit), billed per minute.
fn rate(prefix: &str, description: &str, per_minute_millis: i64) -> domain::tariff::Rate {
    domain::tariff::Rate {
        prefix: prefix.into(),
        description: description.into(),
        per_minute_millis,
        connect_fee_minor: 0,
        first_increment_secs: 60,
        next_increment_secs: 60,
    }
}

/// Publishes a GBP tariff of `rates`, in force from an hour ago: its id.
async fn publish_tariff(
    store: &dyn infra::EventStore,
    name: &str,
    rates: Vec<domain::tariff::Rate>,
) -> anyhow::Result<TariffId> {
    use domain::tariff::{Tariff, TariffCommand, TariffVersion};
    let tariff_id = TariffId::from(Uuid::now_v7());
    let publish = TariffCommand::Publish {
        tariff_id,
        name: name.into(),
        version: TariffVersion {
            version: 1,
            currency: domain::money::Currency::parse("GBP")?,
            effective_from: chrono::SubsecRound::trunc_subsecs(
                chrono::Utc::now() - chrono::Duration::hours(1),
                6,
            ),
            rates,
            blocked_prefixes: vec![],
            on_net: None,
        },
    };
    run::<Tariff>(
        store,
        &tariff_id.stream_id(),
        Some(Loaded::empty()),
        publish,
    )
    .await?;
    Ok(tariff_id)
}

/// The mixed benchmark's subscribers: a tariff (+44 at 2p a minute, per minute), `count`
/// accounts each with a main number, a verified extension and a mapped access number, and
/// SIPp's injection files: `inbound.csv` (a caller; a main number, whose call goes to the
/// extension over the alternate path, as nobody is registered) and `through.csv` (an
/// extension; its access number, for a call-through).
pub async fn seed_extension_mix(store_url: &str, count: usize, dir: &str) -> anyhow::Result<()> {
    let store = infra::open_store(store_url).await?;
    let began = Instant::now();
    let tariff_id = publish_tariff(
        store.as_ref(),
        "Mix",
        vec![rate("44", "United Kingdom", 2_000)],
    )
    .await?;
    let subscribers: Vec<Subscriber> = (0..count)
        .map(|i| {
            Ok(Subscriber {
                main: E164::parse(&format!("+44207100{i:04}"))?,
                extension: E164::parse(&format!("+44770090{i:04}"))?,
                access: E164::parse(&format!("+44207200{i:04}"))?,
            })
        })
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(count <= 10_000, "at most 10,000 subscribers");
    let write = |name: &str, rows: &mut dyn Iterator<Item = String>| -> anyhow::Result<()> {
        let path = std::path::Path::new(dir).join(name);
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?,
        );
        writeln!(file, "SEQUENTIAL")?;
        for row in rows {
            writeln!(file, "{row}")?;
        }
        file.flush()?;
        Ok(())
    };
    write(
        "inbound.csv",
        &mut subscribers
            .iter()
            .enumerate()
            .map(|(i, s)| format!("+44161500{:04};{};", i % 10_000, s.main.as_str())),
    )?;
    write(
        "through.csv",
        &mut subscribers
            .iter()
            .map(|s| format!("{};{};", s.extension.as_str(), s.access.as_str())),
    )?;
    let seeded = futures::stream::iter(subscribers.iter().map(|s| {
        let store = store.clone();
        async move { seed_subscriber(store.as_ref(), tariff_id, s).await }
    }))
    .buffer_unordered(64)
    .collect::<Vec<_>>()
    .await;
    for r in seeded {
        r?;
    }
    println!(
        "seeded {count} subscribers (main number, verified extension, mapped access number) in {:.1} s; SIPp files in {dir}",
        began.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The billing projection brought up to date, then its rated legs per path: legs, billable
/// seconds and charge, and the legs that could not be rated.
pub async fn billing_totals(store_url: &str) -> anyhow::Result<()> {
    use sqlx::Row;
    let store = infra::open_store(store_url).await?;
    let projections = infra::config::projections_next_to(store_url)
        .context("billing totals need a SQLite or PostgreSQL store")?;
    let db = projections::db::ProjectionDb::connect(&projections).await?;
    let runner = projections::runner::Runner::new(
        db.clone(),
        store,
        std::sync::Arc::new(projections::billing::Billing),
    )
    .await?;
    runner.catch_up().await?;
    let rows = sqlx::query(
        "SELECT path, COUNT(*), CAST(SUM(billable_secs) AS BIGINT), CAST(SUM(charge_minor) AS BIGINT), \
         CAST(SUM(CASE WHEN rating_error IS NULL THEN 0 ELSE 1 END) AS BIGINT) \
         FROM rated_legs GROUP BY path ORDER BY path",
    )
    .fetch_all(&db.pool)
    .await?;
    for r in rows {
        let path: String = r.try_get(0)?;
        let legs: i64 = r.try_get(1)?;
        let secs: Option<i64> = r.try_get(2)?;
        let charge: Option<i64> = r.try_get(3)?;
        let errors: i64 = r.try_get(4)?;
        println!(
            "path={path} legs={legs} billable_secs={} charge_minor={} unrated={errors}",
            secs.unwrap_or(0),
            charge.unwrap_or(0)
        );
    }
    Ok(())
}
