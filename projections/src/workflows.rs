//! The state of the API's multi-stream workflows, from the log: every number claimed for an
//! owner that is not complete yet (table `workflow_steps`, written by the routing projection in
//! its own batches: a projection of its own added a commit, and a disk flush, per batch). Opening an account claims its main number, then opens the
//! account; registering an extension claims the number, then writes the extension's request
//! and the account's attachment. From a `number.claimed` until the owner's steps are all in
//! the log (or the number is released), each missing step is a row. A row that stays past the
//! grace period is a workflow whose process died between its appends: the API's recovery pass
//! finishes or undoes it. `claimed_at` is the claim's `occurred_at` (which an import keeps, so
//! a copied log projects the same rows).
//!
//! Giving numbers back is a workflow too. An extension detached from its account (removed, or
//! its account closed) still holds its number until `number.released`: step `release`, from
//! the detachment's `occurred_at`. A closed account's main number waits out the quarantine:
//! step `quarantine`, from the closing's `occurred_at`; the recovery pass releases it once the
//! quarantine is over. For these two steps `claimed_at` is when the step became due to start.

use domain::account::AccountEvent;
use domain::extension::ExtensionEvent;
use domain::number::{NumberEvent, NumberRole};
use domain::{E164, Event};
use infra::RecordedEvent;

use crate::runner::ProjectionError;
use crate::sql::{entity_id, ts};
use crate::writes::{Value, Writes};

/// The table's statements, part of the routing projection's schema: one row per step a
/// claimed number's workflow still lacks (`open` an account; `request` and `attach` an
/// extension; `release` a detached extension's number; `quarantine` of a closed account's
/// main number).
pub const CREATE_STEPS: &str = "CREATE TABLE IF NOT EXISTS workflow_steps (number TEXT NOT NULL, \
    step TEXT NOT NULL, account_id TEXT NOT NULL, extension_id TEXT, claimed_at TEXT NOT NULL, \
    PRIMARY KEY (number, step))";
/// The recovery pass looks steps up by kind and age (quarantined numbers wait for months).
pub const CREATE_STEPS_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS workflow_steps_by_step ON workflow_steps (step, claimed_at)";

const STEPS: &str = "workflow_steps";
const STEP: &[&str] = &["number", "step"];
const NUMBER: &[&str] = &["number"];
const REST: &[&str] = &["account_id", "extension_id", "claimed_at"];

/// The rows `event` changes (every write is keyed by the number, so one number's writes keep
/// their order within a batch).
pub fn write(
    w: &mut Writes,
    event: &RecordedEvent,
    decoded: &Event,
) -> Result<(), ProjectionError> {
    // A step of `number`'s workflow now due, for `account_id` (and `extension_id`).
    let due = |w: &mut Writes, number: &E164, step: &str, account_id: String, extension_id| {
        let n = number.to_string();
        w.upsert(
            STEPS,
            STEP,
            REST,
            &n,
            vec![
                n.clone().into(),
                step.into(),
                account_id.into(),
                Value::Text(extension_id),
                ts(event.occurred_at).into(),
            ],
        );
    };
    let missing = |w: &mut Writes, number: String, step: &str| {
        w.delete(
            STEPS,
            STEP,
            &number,
            vec![number.clone().into(), step.into()],
        );
    };
    match decoded {
        Event::Number(NumberEvent::Claimed {
            number,
            account_id,
            role,
        }) => {
            let (steps, extension_id): (&[&str], _) = match role {
                NumberRole::Main => (&["open"], None),
                NumberRole::Extension { extension_id } => {
                    (&["request", "attach"], Some(extension_id.to_string()))
                }
                // An access number is one step: nothing to finish.
                NumberRole::Access { .. } => return Ok(()),
            };
            for step in steps {
                due(
                    w,
                    number,
                    step,
                    account_id.to_string(),
                    extension_id.clone(),
                );
            }
        }
        Event::Number(NumberEvent::Released { number, .. }) => {
            let n = number.to_string();
            w.delete(STEPS, NUMBER, &n, vec![n.clone().into()]);
        }
        Event::Account(AccountEvent::Opened { main_number, .. }) => {
            missing(w, main_number.to_string(), "open");
        }
        Event::Account(AccountEvent::ExtensionAttached { number, .. }) => {
            missing(w, number.to_string(), "attach");
        }
        Event::Extension(ExtensionEvent::Requested { number, .. }) => {
            missing(w, number.to_string(), "request");
        }
        Event::Account(AccountEvent::ExtensionDetached {
            extension_id,
            number: Some(number),
        }) => {
            let account_id = entity_id(&event.stream_id)?;
            due(
                w,
                number,
                "release",
                account_id,
                Some(extension_id.to_string()),
            );
        }
        Event::Account(AccountEvent::Closed {
            main_number: Some(number),
            ..
        }) => due(w, number, "quarantine", entity_id(&event.stream_id)?, None),
        _ => {}
    }
    Ok(())
}
