//! Call history for auditors: every call with its legs, and every call event in order as a
//! timeline.

use async_trait::async_trait;
use domain::Event;
use domain::call::{CallEvent, LegRole};
use infra::RecordedEvent;
use sqlx::{AnyConnection, query};

use crate::runner::{BatchError, Decoded, Projection, ProjectionError};
use crate::sql::{entity_id, json, name, ts};
use crate::writes::Writes;

pub struct CallHistory;

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS calls (call_id TEXT PRIMARY KEY, account_id TEXT NOT NULL, extension_id TEXT, \
     direction TEXT NOT NULL, from_number TEXT NOT NULL, to_number TEXT NOT NULL, origin TEXT NOT NULL, \
     path TEXT NOT NULL, started_at TEXT NOT NULL, answered_at TEXT, ended_at TEXT, end_cause TEXT, end_side TEXT)",
    "CREATE TABLE IF NOT EXISTS call_legs (leg_id TEXT PRIMARY KEY, call_id TEXT NOT NULL, target TEXT NOT NULL, \
     path TEXT NOT NULL, role TEXT NOT NULL, status TEXT NOT NULL, started_at TEXT NOT NULL, answered_at TEXT, \
     ended_at TEXT, sip_status BIGINT, failure TEXT)",
    "CREATE INDEX IF NOT EXISTS call_legs_by_call ON call_legs (call_id)",
    "CREATE TABLE IF NOT EXISTS call_timeline (position BIGINT PRIMARY KEY, call_id TEXT NOT NULL, \
     at TEXT NOT NULL, event_type TEXT NOT NULL, detail TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS call_timeline_by_call ON call_timeline (call_id, position)",
];

const TABLES: &[(&str, &str)] = &[
    ("calls", "call_id"),
    ("call_legs", "leg_id"),
    ("call_timeline", "position"),
];

#[async_trait]
impl Projection for CallHistory {
    fn name(&self) -> &'static str {
        "call_history"
    }

    fn schema(&self) -> &'static [&'static str] {
        SCHEMA
    }

    fn tables(&self) -> &'static [(&'static str, &'static str)] {
        TABLES
    }

    fn handles(&self, event_type: &str) -> bool {
        event_type.starts_with("call.")
    }

    async fn apply_batch(
        &self,
        conn: &mut AnyConnection,
        events: &[Decoded<'_>],
    ) -> Result<(), BatchError> {
        // The timeline is only ever appended to: its rows go together at the end.
        let mut timeline = Writes::default();
        for d in events {
            apply(conn, &mut timeline, d.recorded, &d.event)
                .await
                .map_err(|e| BatchError::at(d.index, e))?;
        }
        timeline.flush(conn).await?;
        Ok(())
    }
}

async fn apply(
    conn: &mut AnyConnection,
    timeline: &mut Writes,
    event: &RecordedEvent,
    decoded: &Event,
) -> Result<(), ProjectionError> {
    let Event::Call(e) = decoded else {
        return Ok(());
    };
    let call_id = entity_id(&event.stream_id)?;
    let position = event.global_position as i64;
    timeline.insert(
        "call_timeline",
        &["position", "call_id", "at", "event_type", "detail"],
        &position.to_string(),
        vec![
            position.into(),
            call_id.clone().into(),
            ts(e.at()).into(),
            event.event_type.clone().into(),
            infra::store::hash::canonical_json(&event.payload).into(),
        ],
    );
    match e {
        CallEvent::Started {
            direction,
            from,
            to,
            origin,
            path,
            account_id,
            extension_id,
            at,
            ..
        } => {
            query("INSERT INTO calls (call_id, account_id, extension_id, direction, from_number, to_number, origin, path, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
                    .bind(call_id).bind(account_id.to_string()).bind(extension_id.map(|x| x.to_string())).bind(name(direction))
                    .bind(from.clone()).bind(to.clone()).bind(json(origin)).bind(name(path)).bind(ts(*at))
                    .execute(&mut *conn).await?;
        }
        CallEvent::LegStarted {
            leg_id,
            target,
            path,
            role,
            at,
        } => {
            query("INSERT INTO call_legs (leg_id, call_id, target, path, role, status, started_at) VALUES ($1, $2, $3, $4, $5, 'trying', $6)")
                    .bind(leg_id.to_string()).bind(call_id).bind(json(target)).bind(name(path)).bind(name(role)).bind(ts(*at))
                    .execute(&mut *conn).await?;
        }
        CallEvent::LegRinging { leg_id, .. } => {
            query("UPDATE call_legs SET status = 'ringing' WHERE leg_id = $1")
                .bind(leg_id.to_string())
                .execute(&mut *conn)
                .await?;
        }
        CallEvent::LegAnswered { leg_id, at } => {
            query("UPDATE call_legs SET status = 'answered', answered_at = $2 WHERE leg_id = $1")
                .bind(leg_id.to_string())
                .bind(ts(*at))
                .execute(&mut *conn)
                .await?;
            // The call took the path of the callee leg that answered first (data, the
            // alternate call-out, a call-in, a call-through, a callback, the public network),
            // whatever path it started out on.
            query(
                "UPDATE calls SET path = COALESCE((SELECT path FROM call_legs WHERE leg_id = $3), path), \
                       answered_at = $2 WHERE call_id = $1 AND answered_at IS NULL \
                       AND EXISTS (SELECT 1 FROM call_legs WHERE leg_id = $3 AND role = $4)",
            )
            .bind(call_id)
            .bind(ts(*at))
            .bind(leg_id.to_string())
            .bind(name(&LegRole::Callee))
            .execute(&mut *conn)
            .await?;
        }
        CallEvent::LegFailed {
            leg_id,
            sip_status,
            failure,
            at,
        } => {
            query("UPDATE call_legs SET status = 'failed', ended_at = $2, sip_status = $3, failure = $4 WHERE leg_id = $1")
                    .bind(leg_id.to_string()).bind(ts(*at)).bind(i64::from(*sip_status)).bind(name(failure))
                    .execute(&mut *conn).await?;
        }
        CallEvent::Ended { cause, side, at } => {
            query(
                "UPDATE calls SET ended_at = $2, end_cause = $3, end_side = $4 WHERE call_id = $1",
            )
            .bind(call_id.clone())
            .bind(ts(*at))
            .bind(name(cause))
            .bind(name(side))
            .execute(&mut *conn)
            .await?;
            query(
                "UPDATE call_legs SET status = 'ended', ended_at = $2 WHERE call_id = $1 \
                       AND status IN ('trying', 'ringing', 'answered')",
            )
            .bind(call_id)
            .bind(ts(*at))
            .execute(&mut *conn)
            .await?;
        }
        CallEvent::LegEnded { leg_id, at } => {
            query("UPDATE call_legs SET status = 'ended', ended_at = $2 WHERE leg_id = $1")
                .bind(leg_id.to_string())
                .bind(ts(*at))
                .execute(&mut *conn)
                .await?;
        }
        // A destination keyed in at the access-number menu is the number the call is to.
        CallEvent::DestinationCollected { destination, .. } => {
            query("UPDATE calls SET to_number = $2 WHERE call_id = $1")
                .bind(call_id)
                .bind(destination.to_string())
                .execute(&mut *conn)
                .await?;
        }
        // The timeline shows who transferred to whom (a new leg is listed as it starts),
        // which calls were joined, and each step of the access-number menu.
        CallEvent::MenuEntered { .. }
        | CallEvent::MenuPinAccepted { .. }
        | CallEvent::MenuPinRefused { .. }
        | CallEvent::MenuAbandoned { .. }
        | CallEvent::AlternatePathChosen { .. }
        | CallEvent::CallInAwaited { .. }
        | CallEvent::Bridged { .. }
        | CallEvent::Transferred { .. }
        | CallEvent::Joined { .. } => {}
    }
    Ok(())
}
