//! An account as it stood at past instants, folded from the log.

use std::time::Duration;

use domain::account::{Account, AccountCommand};
use domain::extension::{ChallengeMethod, Extension, ExtensionCommand, ExtensionKind};
use domain::ids::{AccountId, ExtensionId, TariffId};
use domain::{Currency, E164};
use projections::as_of::{AsOfError, account_as_of};
use ringledger_tests::harness::{Backend, record};
use uuid::Uuid;

async fn pause() -> chrono::DateTime<chrono::Utc> {
    tokio::time::sleep(Duration::from_millis(20)).await;
    let t = chrono::Utc::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    t
}

#[tokio::test]
async fn the_account_as_it_stood_at_each_instant() {
    let b = Backend::sqlite().await;
    let store = b.open().await;
    let account_id = AccountId(Uuid::now_v7());
    let before_anything = pause().await;
    let mut account = Account::default();
    record(
        store.as_ref(),
        &account_id.stream_id(),
        &mut account,
        AccountCommand::Open {
            account_id,
            name: "Grace Hopper".into(),
            main_number: E164::parse("+14155550123").unwrap(),
            tariff_id: TariffId(Uuid::now_v7()),
            currency: Currency::parse("USD").unwrap(),
            max_extensions: None,
        },
        chrono::Utc::now(),
    )
    .await;
    let extension_id = ExtensionId(Uuid::now_v7());
    let mut ext = Extension::default();
    let stream = extension_id.stream_id();
    record(
        store.as_ref(),
        &stream,
        &mut ext,
        ExtensionCommand::Request {
            extension_id,
            account: account.clone(),
            number: E164::parse("+14155550199").unwrap(),
            native_provider: "Verizon".into(),
            kind: ExtensionKind::Mobile,
        },
        chrono::Utc::now(),
    )
    .await;
    record(
        store.as_ref(),
        &stream,
        &mut ext,
        ExtensionCommand::IssueChallenge {
            method: ChallengeMethod::Sms,
            code: "5521".into(),
            ttl_secs: 300,
        },
        chrono::Utc::now(),
    )
    .await;
    let pending = pause().await;
    record(
        store.as_ref(),
        &stream,
        &mut ext,
        ExtensionCommand::SubmitCode {
            code: "5521".into(),
        },
        chrono::Utc::now(),
    )
    .await;
    record(
        store.as_ref(),
        &account_id.stream_id(),
        &mut account,
        AccountCommand::Suspend {
            reason: "unpaid".into(),
        },
        chrono::Utc::now(),
    )
    .await;
    let later = pause().await;

    assert!(matches!(
        account_as_of(store.as_ref(), account_id, before_anything, None).await,
        Err(AsOfError::NoSuchAccount(_))
    ));
    let then = account_as_of(store.as_ref(), account_id, pending, None)
        .await
        .unwrap();
    assert_eq!(then["status"], "active");
    assert_eq!(then["extensions"][0]["status"], "pending");
    assert_eq!(then["name"], "Grace Hopper");
    let now = account_as_of(store.as_ref(), account_id, later, None)
        .await
        .unwrap();
    assert_eq!(now["status"], "suspended");
    assert_eq!(now["extensions"][0]["status"], "verified");
    assert_eq!(now["extensions"][0]["number"], "+14155550199");
}
