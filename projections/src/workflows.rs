//! The state of the API's multi-stream workflows, from the log: every number claimed for an
//! owner that is not complete yet (table `workflow_steps`, written by the routing projection in
//! its own batches: a projection of its own added a commit, and a disk flush, per batch). Opening an account claims its main number, then opens the
//! account; registering an extension claims the number, then writes the extension's request
//! and the account's attachment. From a `number.claimed` until the owner's steps are all in
//! the log (or the number is released), each missing step is a row. A row that stays past the
//! grace period is a workflow whose process died between its appends: the API's recovery pass
//! finishes or undoes it. `claimed_at` is the claim's `occurred_at` (which an import keeps, so
//! a copied log projects the same rows).

use domain::Event;
use domain::account::AccountEvent;
use domain::extension::ExtensionEvent;
use domain::number::{NumberEvent, NumberRole};
use infra::RecordedEvent;

use crate::sql::ts;
use crate::writes::Writes;

/// The table's statements, part of the routing projection's schema: one row per step a
/// claimed number's workflow still lacks (`open` an account; `request` and `attach` an
/// extension).
pub const CREATE_STEPS: &str = "CREATE TABLE IF NOT EXISTS workflow_steps (number TEXT NOT NULL, \
    step TEXT NOT NULL, account_id TEXT NOT NULL, extension_id TEXT, claimed_at TEXT NOT NULL, \
    PRIMARY KEY (number, step))";
pub const CREATE_STEPS_INDEX: &str =
    "CREATE INDEX IF NOT EXISTS workflow_steps_by_age ON workflow_steps (claimed_at)";

const STEPS: &str = "workflow_steps";
const STEP: &[&str] = &["number", "step"];
const NUMBER: &[&str] = &["number"];
const REST: &[&str] = &["account_id", "extension_id", "claimed_at"];

/// The rows `event` changes (every write is keyed by the number, so one number's writes keep
/// their order within a batch).
pub fn write(w: &mut Writes, event: &RecordedEvent, decoded: &Event) {
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
                NumberRole::Access { .. } => return,
            };
            let n = number.to_string();
            for step in steps {
                w.upsert(
                    STEPS,
                    STEP,
                    REST,
                    &n,
                    vec![
                        n.clone().into(),
                        (*step).into(),
                        account_id.to_string().into(),
                        extension_id.clone().into(),
                        ts(event.occurred_at).into(),
                    ],
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
        _ => {}
    }
}
