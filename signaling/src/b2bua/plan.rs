//! What an INVITE asks of the edge: who is calling (a carrier, known by its source; or an IP
//! device, proven by digest), the main account the call belongs to and is billed to, and the
//! legs to place. Anything that cannot become a call gets its answer here.

use std::net::SocketAddr;
use std::time::Duration;

use domain::E164;
use domain::account::Account;
use domain::call::{AlternateReason, Direction, EndCause, LegTarget, Origin, Path};
use domain::device::{DataPath, Transport};
use domain::extension::{AlternateMode, CallerIdShown, Extension};
use domain::ids::{DeviceId, ExtensionId};
use domain::number::NumberRole;
use projections::routing_view::RoutingView;

use super::attempts::Attempts;
use super::on_net::{OnNet, OnNetCaller};
use crate::answer::Answer;
use crate::auth::{Authenticator, Scheme};
use crate::media::tones::Country;
use crate::message::RawMessage;
use crate::message::header::{name_addr, uri_user};
use crate::trunk::{Trunk, Trunks, telephone_number};
use crate::view::SharedView;

/// A call to set up.
#[derive(Debug, Clone)]
pub struct Plan {
    pub direction: Direction,
    pub origin: Origin,
    pub path: Path,
    pub account: Account,
    /// The caller and the called party as the call records them.
    pub from: String,
    pub to: String,
    /// The user part of the From the legs present (caller ID).
    pub caller_id: String,
    /// Rung at once (or after their delay); the first to answer wins.
    pub targets: Vec<Target>,
    /// Why the call goes (also) over the alternate network, when it does.
    pub alternate: Option<AlternateReason>,
    /// The account's ring timeout (the edge's `sip.ring_timeout_secs` caps it).
    pub ring_timeout: Option<Duration>,
    /// The extension the call comes through (call-through), checked when the call starts.
    pub extension: Option<Extension>,
    /// The dial intent that named the destination of a call-through.
    pub dial_intent: Option<uuid::Uuid>,
    /// Why the call is refused once recorded (fraud controls): the caller's answer and the
    /// cause the call ends with.
    pub refusal: Option<(Answer, EndCause)>,
    /// Alternate path (b): an extension asked to call in instead of being called.
    pub call_in: Option<CallInPlan>,
    /// The access-number menu: the edge answers the caller itself and the destination is
    /// keyed in (no targets until then).
    pub menu: Option<MenuPlan>,
}

/// An access-number menu to run (docs/OPERATIONS.md, "Keypad call-through").
#[derive(Debug, Clone)]
pub struct MenuPlan {
    /// The extension has a PIN: it is keyed in first.
    pub pin: bool,
    /// Whose tones the caller hears (the account's country).
    pub tones: Country,
}

/// A call-in to wait for (docs/OPERATIONS.md, "Call-in").
#[derive(Debug, Clone)]
pub struct CallInPlan {
    pub extension_id: ExtensionId,
    /// The extension's number: the caller ID the call-in must come from.
    pub number: E164,
    /// The account's access number it is to call.
    pub access_number: E164,
    /// The account's live contacts the device is told at: URI, address, transport.
    pub notify: Vec<(String, SocketAddr, Transport)>,
    /// The call-out leg placed instead when the extension does not call in in time.
    pub fallback: Target,
    /// The call-in proves itself by keying its token, hearing this country's tones (None:
    /// the carrier's caller ID is trusted, `sip.call_in_trust_caller_id`).
    pub keyed: Option<Country>,
}

/// One leg to place.
#[derive(Debug, Clone)]
pub struct Target {
    pub target: LegTarget,
    pub path: Path,
    pub request_uri: String,
    /// Where the INVITE goes (a contact's real source address, or the trunk), and how.
    pub destination: SocketAddr,
    pub transport: Transport,
    /// How long after the call starts the leg is placed.
    pub delay: Duration,
    /// The extension the leg rings (checked to be serving when the leg is recorded).
    pub extension: Option<Extension>,
    /// Headers its INVITE carries besides the edge's own (the on-net mark).
    pub headers: Vec<(String, String)>,
}

/// What the operator allows when planning calls.
#[derive(Debug, Clone, Copy, Default)]
pub struct Policy {
    /// A call-in notice can also go to a webhook.
    pub call_in_webhook: bool,
    /// Calls to destinations the tariff in force has no rate for are placed (and listed as
    /// unrated) instead of refused (`security.allow_unrated_calls`).
    pub allow_unrated_calls: bool,
    /// A call-in is matched on the carrier's caller ID alone (`sip.call_in_trust_caller_id`);
    /// without it the call-in proves itself by keying the token its device was sent.
    pub call_in_trusts_caller_id: bool,
    /// An extension calling through a carrier may transfer its calls
    /// (`sip.allow_extension_transfer`).
    pub extension_transfers: bool,
    /// An extension without a PIN may key a destination at the access-number menu
    /// (`security.keypad_without_pin`); otherwise only its PIN proves the caller is the user.
    pub keypad_without_pin: bool,
}

/// What to do with an INVITE from `source` at `now`: the call to set up, or the answer that
/// refuses it.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    request: &RawMessage,
    source: SocketAddr,
    trunks: &Trunks,
    auth: &Authenticator,
    view: &SharedView,
    attempts: &Attempts,
    on_net: &OnNet,
    policy: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan, Answer> {
    let number = dialled_number(request);
    if let Some(from) = on_net.caller(request, source) {
        // An on-net leg this edge placed: a call in to the account holding the number.
        let view = view.read().expect("routing view");
        let Some((account, number)) = number.and_then(|n| main_number_account(&view, n)) else {
            return Err(Answer::with_reason(
                404,
                "Not Found (number not in service)",
            ));
        };
        let origin = Origin::OnNet {
            account_id: from.account_id,
        };
        let mut call = call_in_to(&view, account, number, origin, request, trunks, policy, now);
        // A phone calling its own account's number rings the account's other phones only.
        call.targets.retain(|t| {
            !matches!(t.target, LegTarget::Contact { .. }) || Some(t.destination) != from.phone
        });
        if call.targets.is_empty() && call.call_in.is_none() && account.id == Some(from.account_id)
        {
            return Err(Answer::with_reason(
                486,
                "Busy Here (calling your own number, with no other phone to ring)",
            ));
        }
        return Ok(call);
    }
    if let Some(trunk) = trunks.of_source(source) {
        // A carrier delivers a call: it must be for a number it serves, held by an account.
        let Some(number) = number else {
            return Err(Answer::with_reason(
                404,
                "Not Found (not a telephone number)",
            ));
        };
        if !trunk.delivers(&number) {
            return Err(Answer::with_reason(
                404,
                "Not Found (not a number of this trunk)",
            ));
        }
        let view = view.read().expect("routing view");
        let Some(holder) = view.holder(&number) else {
            return Err(Answer::with_reason(
                404,
                "Not Found (number not in service)",
            ));
        };
        if let NumberRole::Access { destination } = &holder.role {
            let through = CallThrough {
                request,
                trunks,
                trunk: &trunk.name,
                attempts,
                access_account: holder.account_id,
                mapped: destination.as_ref(),
                access_number: &number,
                on_net,
            };
            return call_through(&view, &through, policy, now);
        }
        if !matches!(holder.role, NumberRole::Main) {
            return Err(Answer::with_reason(
                480,
                "Temporarily Unavailable (calls to extension numbers are not routed yet)",
            ));
        }
        let Some((account, number)) = main_number_account(&view, number) else {
            return Err(Answer::with_reason(
                404,
                "Not Found (number not in service)",
            ));
        };
        let origin = Origin::Pstn {
            trunk: trunk.name.clone(),
        };
        return Ok(call_in_to(
            &view, account, number, origin, request, trunks, policy, now,
        ));
    }
    // Anyone else calls out only as an IP device that proves who it is (invariant 8): a 407
    // challenge first, 403 for credentials that do not hold.
    let now_secs = now.timestamp().max(0) as u64;
    let caller = auth.authenticate(request, Scheme::Proxy, view, now_secs, source)?;
    let Some(number) = number else {
        return Err(Answer::with_reason(
            404,
            "Not Found (not a telephone number)",
        ));
    };
    let view = view.read().expect("routing view");
    let account = view
        .device_by_username(&caller.username)
        .and_then(|(_, d)| d.account_id)
        .and_then(|id| view.account(id))
        .ok_or_else(|| Answer::status(403))?;
    let (Some(main_number), Some(_)) = (account.main_number.clone(), account.id) else {
        return Err(Answer::status(403));
    };
    let Placed { target, refusal } = outbound_target(
        &view,
        &Dialling {
            trunks,
            on_net,
            account,
            extension: None,
            phone: source,
        },
        &number,
        policy,
        now,
    )?;
    Ok(Plan {
        direction: Direction::Outbound,
        origin: Origin::IpDevice {
            device_id: caller.device_id,
        },
        path: Path::Data,
        account: account.clone(),
        from: main_number.as_str().to_string(),
        to: number.as_str().to_string(),
        caller_id: main_number.as_str().to_string(),
        targets: vec![target],
        alternate: None,
        ring_timeout: None,
        extension: None,
        dial_intent: None,
        refusal,
        call_in: None,
        menu: None,
    })
}

/// Who places a call to a number: an account, from one of its phones (or through one of its
/// extensions), with the edge's trunks and on-net routing.
pub(crate) struct Dialling<'a> {
    pub trunks: &'a Trunks,
    pub on_net: &'a OnNet,
    pub account: &'a Account,
    pub extension: Option<(ExtensionId, &'a Extension)>,
    /// Where the phone is (a phone calling its own account's number is not rung).
    pub phone: SocketAddr,
}

/// Where such a call goes, and the fraud controls' refusal of it, if any.
pub(crate) struct Placed {
    pub target: Target,
    pub refusal: Option<(Answer, EndCause)>,
}

/// The leg of a call `dialling` places to `number` (an IP device's call, or a transfer one
/// of the account's phones asked for): on-net to a number of one of the service's accounts,
/// else through the outbound trunk (503 without one).
pub(crate) fn outbound_target(
    view: &RoutingView,
    dialling: &Dialling,
    number: &E164,
    policy: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Placed, Answer> {
    let account_id = dialling.account.id.ok_or_else(|| Answer::status(403))?;
    let on_net_call = main_number_account(view, number.clone()).is_some();
    let target = if on_net_call {
        let from = OnNetCaller {
            account_id,
            phone: Some(dialling.phone),
        };
        on_net_target(dialling.on_net, number.clone(), from)
    } else {
        let Some(trunk) = dialling.trunks.outbound() else {
            return Err(Answer::with_reason(503, "Service Unavailable (no trunk)"));
        };
        pstn_target(number.clone(), trunk, Path::Pstn)
    };
    let refusal = fraud_check(
        view,
        dialling.account,
        dialling.extension,
        number,
        on_net_call,
        policy,
        now,
    );
    Ok(Placed { target, refusal })
}

/// The account whose main number `number` is, if one is (and the view knows it).
fn main_number_account(view: &RoutingView, number: E164) -> Option<(&Account, E164)> {
    let holder = view.holder(&number)?;
    if !matches!(holder.role, NumberRole::Main) {
        return None;
    }
    Some((view.account(holder.account_id)?, number))
}

/// A call in to `account`'s main `number` from `origin` (a carrier, or another account
/// on-net): its devices and extensions rung as the account's policy says, perhaps a call-in
/// awaited.
#[allow(clippy::too_many_arguments)]
fn call_in_to(
    view: &RoutingView,
    account: &Account,
    number: E164,
    origin: Origin,
    request: &RawMessage,
    trunks: &Trunks,
    policy: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Plan {
    let caller = caller_user(request).unwrap_or("anonymous").to_string();
    let (mut targets, alternate) = inbound_targets(view, account, trunks, policy, now);
    let call_in = alternate.and_then(|_| call_in_plan(view, account, &mut targets, policy, now));
    Plan {
        direction: Direction::Inbound,
        origin,
        path: Path::Data,
        account: account.clone(),
        from: caller.clone(),
        to: number.as_str().to_string(),
        caller_id: caller,
        targets,
        alternate,
        ring_timeout: Some(Duration::from_secs(u64::from(
            account.ring_policy.ring_timeout_secs,
        ))),
        extension: None,
        dial_intent: None,
        refusal: None,
        call_in,
        menu: None,
    }
}

/// The telephone number an INVITE's request-URI names, if it names one.
pub(crate) fn dialled_number(request: &RawMessage) -> Option<E164> {
    let uri = request.start_line.split(' ').nth(1)?;
    telephone_number(uri_user(uri)?)
}

/// The user part of an INVITE's From: the caller's number, as a carrier presents it.
pub(crate) fn caller_user(request: &RawMessage) -> Option<&str> {
    request
        .header("From")
        .and_then(name_addr)
        .and_then(|n| uri_user(n.uri))
}

/// The fraud controls checked before a call to the public network is placed (docs/OPERATIONS.md,
/// "Fraud controls"): a destination the account's tariff blocks (premium rate), one it has no
/// price for (no call without a price, unless the operator allows unrated calls), and the
/// daily spend limits of the account and of the extension it comes through, against what the
/// day's ended calls cost.
pub(super) fn fraud_check(
    view: &RoutingView,
    account: &Account,
    extension: Option<(ExtensionId, &Extension)>,
    destination: &E164,
    on_net: bool,
    policy: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<(Answer, EndCause)> {
    let account_id = account.id?;
    // An on-net call has its own price (free without one) and reaches no premium line: only
    // the spend limits apply.
    let tariff = view.tariff_in_force(account_id, now).filter(|_| !on_net);
    if tariff.is_some_and(|v| v.is_blocked(destination)) {
        return Some((
            Answer::with_reason(403, "Forbidden (destination blocked)"),
            EndCause::Rejected,
        ));
    }
    if !on_net
        && !policy.allow_unrated_calls
        && tariff.and_then(|v| v.rate_for(destination)).is_none()
    {
        tracing::warn!(
            target: "ringledger::security",
            account = %account_id, destination = %destination.as_str(),
            "call refused: no rate for the destination in the tariff in force"
        );
        return Some((
            Answer::with_reason(403, "Forbidden (no rate for this destination)"),
            EndCause::NoRate,
        ));
    }
    let (account_spent, extension_spent) =
        view.spent_on_day_of(account_id, extension.map(|(id, _)| id), now);
    let over = account
        .daily_spend_limit_minor
        .is_some_and(|limit| account_spent >= limit)
        || extension
            .and_then(|(_, e)| e.settings.daily_limit_minor)
            .is_some_and(|limit| extension_spent >= limit);
    over.then(|| {
        (
            Answer::with_reason(403, "Forbidden (daily spend limit reached)"),
            EndCause::SpendLimit,
        )
    })
}

/// A leg to `number` on the public network, through `trunk`; `path` says how the call got
/// there (`pstn` from an IP device; `call_through` from an extension, which the bill shows).
fn pstn_target(number: E164, trunk: &Trunk, path: Path) -> Target {
    Target {
        request_uri: format!("sip:{}@{}", number.as_str(), trunk.address),
        target: LegTarget::Pstn { number },
        path,
        destination: trunk.address,
        transport: Transport::Udp,
        delay: Duration::ZERO,
        extension: None,
        headers: vec![],
    }
}

/// A leg to `number` placed on-net by `caller`: sent to the edge itself, marked.
fn on_net_target(on_net: &OnNet, number: E164, caller: OnNetCaller) -> Target {
    Target {
        request_uri: format!("sip:{}@{}", number.as_str(), on_net.local),
        target: LegTarget::Pstn { number },
        path: Path::OnNet,
        destination: on_net.local,
        transport: Transport::Udp,
        delay: Duration::ZERO,
        extension: None,
        headers: vec![on_net.mark(caller)],
    }
}

/// A carrier's call to an access number.
struct CallThrough<'a> {
    request: &'a RawMessage,
    trunks: &'a Trunks,
    /// The trunk the call came in on.
    trunk: &'a str,
    attempts: &'a Attempts,
    access_account: domain::ids::AccountId,
    /// The destination a mapped access number always calls.
    mapped: Option<&'a E164>,
    access_number: &'a E164,
    on_net: &'a OnNet,
}

/// The key a caller's call-through attempts are counted under: its number in E.164 however
/// it was spelt (separators, no `+`, percent-escapes), so spellings of one number share one
/// allowance; callers whose user part is no number share one allowance per trunk.
fn attempt_key(caller_user: &str, trunk: &str) -> String {
    match telephone_number(&percent_decoded(caller_user)) {
        Some(number) => number.as_str().to_string(),
        None => format!("not a number via {trunk}"),
    }
}

/// `%XX` escapes decoded (RFC 3261 §19.1.2 allows them in the user part); a malformed escape
/// is kept as written.
fn percent_decoded(user: &str) -> String {
    let bytes = user.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Call-through (docs/OPERATIONS.md, "Call-through"): the caller must be a verified extension of the
/// access number's account (known by its number, which its own carrier vouches for); the
/// destination is the dial intent it staged over data, else the access number's mapping,
/// else what the caller keys in at the menu the edge answers with. Whether it may call there
/// (PIN, international, account active) is the domain's to say when the call starts (or when
/// the destination is keyed in): a dial intent stands in for the PIN.
fn call_through(
    view: &RoutingView,
    through: &CallThrough<'_>,
    policy: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Plan, Answer> {
    let caller_user = caller_user(through.request).unwrap_or("anonymous");
    if !through.attempts.allow(
        &attempt_key(caller_user, through.trunk),
        std::time::Instant::now(),
    ) {
        // Not recorded: a flood must not fill the log.
        return Err(Answer::with_reason(
            403,
            "Forbidden (too many call-through attempts)",
        ));
    }
    let Some(account) = view.account(through.access_account) else {
        return Err(Answer::with_reason(
            403,
            "Forbidden (caller not recognised)",
        ));
    };
    let known = telephone_number(caller_user)
        .and_then(|caller| Some((view.extension_by_number(&caller)?, caller)))
        .filter(|((_, e), _)| e.account_id == Some(through.access_account))
        .filter(|((_, e), _)| e.status == domain::extension::ExtensionStatus::Verified);
    let Some(((extension_id, extension), caller)) = known else {
        // A stranger (another account's extension, or one not verified or removed) calling
        // an access number: refused, and recorded as a refused call to the access number.
        return Ok(Plan {
            direction: Direction::Inbound,
            origin: Origin::Pstn {
                trunk: through.trunk.to_string(),
            },
            path: Path::CallThrough,
            account: account.clone(),
            from: caller_user.to_string(),
            to: through.access_number.as_str().to_string(),
            caller_id: caller_user.to_string(),
            targets: vec![],
            alternate: None,
            ring_timeout: None,
            extension: None,
            dial_intent: None,
            refusal: Some((
                Answer::with_reason(403, "Forbidden (caller not recognised)"),
                EndCause::Rejected,
            )),
            call_in: None,
            menu: None,
        });
    };
    let caller_id = match extension.settings.caller_id {
        CallerIdShown::Main => account.main_number.clone(),
        CallerIdShown::Own => Some(caller.clone()),
    }
    .map(|n| n.as_str().to_string())
    .unwrap_or_else(|| caller.as_str().to_string());
    let (dial_intent, destination) = match view.dial_intent_of_caller(&caller, now) {
        Some((intent, destination)) => (Some(intent), destination.clone()),
        None => match through.mapped {
            Some(destination) => (None, destination.clone()),
            None => {
                // Neither staged nor mapped: the destination is keyed in at the menu, after the
                // PIN (a caller ID alone, spoofable, must not open every destination).
                let pin = extension.settings.pin_hash.is_some();
                if !pin && !policy.keypad_without_pin {
                    tracing::info!(target: "ringledger::security", caller = %caller.as_str(), %extension_id, "keypad call-through refused: the extension has no PIN");
                    return Err(Answer::with_reason(
                        403,
                        "Forbidden (a PIN is needed to key a destination; none is set)",
                    ));
                }
                let tones = Country::of(account.main_number.as_ref());
                tracing::debug!(access_number = %through.access_number.as_str(), %extension_id, "call-through by keypad");
                return Ok(Plan {
                    direction: Direction::Outbound,
                    origin: Origin::Extension { extension_id },
                    path: Path::CallThrough,
                    account: account.clone(),
                    from: caller.as_str().to_string(),
                    to: through.access_number.as_str().to_string(),
                    caller_id,
                    targets: vec![],
                    alternate: None,
                    ring_timeout: None,
                    extension: Some(extension.clone()),
                    dial_intent: None,
                    refusal: None,
                    call_in: None,
                    menu: Some(MenuPlan { pin, tones }),
                });
            }
        },
    };
    // To a number of the service's own accounts: on-net, as a device's call would be.
    let on_net_call = main_number_account(view, destination.clone()).is_some();
    let target = if on_net_call {
        let from = OnNetCaller {
            account_id: through.access_account,
            phone: None,
        };
        on_net_target(through.on_net, destination.clone(), from)
    } else {
        let Some(trunk) = through.trunks.outbound() else {
            return Err(Answer::with_reason(503, "Service Unavailable (no trunk)"));
        };
        pstn_target(destination.clone(), trunk, Path::CallThrough)
    };
    let refusal = fraud_check(
        view,
        account,
        Some((extension_id, extension)),
        &destination,
        on_net_call,
        policy,
        now,
    );
    tracing::debug!(access_number = %through.access_number.as_str(), %extension_id, "call-through");
    Ok(Plan {
        direction: Direction::Outbound,
        origin: Origin::Extension { extension_id },
        path: Path::CallThrough,
        account: account.clone(),
        from: caller.as_str().to_string(),
        to: destination.as_str().to_string(),
        caller_id,
        targets: vec![target],
        alternate: None,
        ring_timeout: None,
        extension: Some(extension.clone()),
        dial_intent,
        refusal,
        call_in: None,
        menu: None,
    })
}

/// Alternate path (b): the first extension set to `call_in` whose leg would be placed at
/// once over the alternate path is not called; it is asked to call in instead — given an
/// access number of the account to call, and a way to tell the user: a live contact (a
/// device that reported no data at all cannot be told), or the call-in webhook. Its leg
/// becomes the fallback.
fn call_in_plan(
    view: &RoutingView,
    account: &Account,
    targets: &mut Vec<Target>,
    policy: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<CallInPlan> {
    let index = targets.iter().position(|t| {
        t.delay.is_zero()
            && t.extension
                .as_ref()
                .is_some_and(|e| e.settings.alternate_path == AlternateMode::CallIn)
    })?;
    let account_id = account.id?;
    let access_number = view.call_in_number(account_id)?.clone();
    let unreachable: Vec<DeviceId> = view
        .devices_of(account_id)
        .into_iter()
        .filter(|(_, d)| d.data_path.is_some_and(|(q, _)| q == DataPath::None))
        .map(|(id, _)| id)
        .collect();
    let notify: Vec<_> = view
        .live_contacts(account_id, now)
        .into_iter()
        .filter(|(id, _, _)| !unreachable.contains(id))
        .filter(|(_, _, c)| matches!(c.transport, Transport::Udp | Transport::Tcp))
        .filter_map(|(_, uri, c)| Some((uri.to_string(), c.source.parse().ok()?, c.transport)))
        .collect();
    if notify.is_empty() && !policy.call_in_webhook {
        return None;
    }
    let fallback = targets.remove(index);
    let LegTarget::Extension {
        extension_id,
        number,
    } = fallback.target.clone()
    else {
        targets.insert(index, fallback);
        return None;
    };
    Some(CallInPlan {
        extension_id,
        number,
        access_number,
        notify,
        fallback,
        keyed: (!policy.call_in_trusts_caller_id)
            .then(|| Country::of(account.main_number.as_ref())),
    })
}

/// Who a call to an account's main number rings, and why it uses the alternate network if it
/// does (docs/OPERATIONS.md, "Calls in"):
/// - the live contacts of its devices, over data (a contact registered over TCP over the
///   connection it registered on, if that is still open) — unless the account prefers the
///   alternate path, or the device reported its data path poor or gone (`poor_data` when
///   that leaves no data leg);
/// - its serving extensions that ring on inbound, through the outbound trunk, after the
///   account's `extension_delay_secs` or the extension's own `ring_delay_secs` (the longer);
///   at once, and all serving extensions if none rings on inbound, when no data leg rings
///   (no live contact, or the account prefers the alternate path); at once, too, for an
///   extension that prefers the alternate path; none once the account or the extension has
///   reached its daily spend limit.
fn inbound_targets(
    view: &RoutingView,
    account: &Account,
    trunks: &Trunks,
    operator: Policy,
    now: chrono::DateTime<chrono::Utc>,
) -> (Vec<Target>, Option<AlternateReason>) {
    let Some(account_id) = account.id else {
        return (vec![], None);
    };
    let policy = &account.ring_policy;
    // Devices that said their data path is poor or gone are not rung over it.
    let unfit: Vec<DeviceId> = view
        .devices_of(account_id)
        .into_iter()
        .filter(|(_, d)| d.data_path.is_some_and(|(q, _)| q.is_unfit()))
        .map(|(id, _)| id)
        .collect();
    let live = view.live_contacts(account_id, now);
    let poor_data = live.iter().any(|(id, _, _)| unfit.contains(id));
    let mut targets: Vec<Target> = if policy.prefer_alternate_path {
        vec![]
    } else {
        live.into_iter()
            .filter(|(id, _, _)| !unfit.contains(id))
            .filter(|(_, _, c)| matches!(c.transport, Transport::Udp | Transport::Tcp))
            .filter_map(|(device_id, uri, c)| {
                Some(Target {
                    target: LegTarget::Contact {
                        device_id,
                        contact_uri: uri.to_string(),
                    },
                    path: Path::Data,
                    request_uri: uri.to_string(),
                    destination: c.source.parse().ok()?,
                    transport: c.transport,
                    delay: Duration::ZERO,
                    extension: None,
                    headers: vec![],
                })
            })
            .collect()
    };
    let data_rings = !targets.is_empty();
    let Some(trunk) = trunks.outbound() else {
        return (targets, None);
    };
    // The cellular legs are paid for: not placed once the account or the extension has
    // spent its daily limit (fraud controls).
    let (account_spent, _) = view.spent_on_day_of(account_id, None, now);
    if account
        .daily_spend_limit_minor
        .is_some_and(|limit| account_spent >= limit)
    {
        return (targets, None);
    }
    // Nor is an extension whose number has no price in the tariff in force (no call without
    // a price), unless the operator allows unrated calls.
    let tariff = view.tariff_in_force(account_id, now);
    let serving: Vec<_> = view
        .serving_extensions(account_id)
        .into_iter()
        .filter(|(id, e)| {
            let (_, spent) = view.spent_on_day_of(account_id, Some(*id), now);
            e.settings
                .daily_limit_minor
                .is_none_or(|limit| spent < limit)
        })
        .filter(|(id, e)| {
            let priced = operator.allow_unrated_calls
                || e.number
                    .as_ref()
                    .is_some_and(|n| tariff.and_then(|v| v.rate_for(n)).is_some());
            if !priced {
                tracing::warn!(
                    target: "ringledger::security",
                    account = %account_id, extension = %id,
                    "extension not called out: no rate for its number in the tariff in force"
                );
            }
            priced
        })
        .collect();
    let mut ringing: Vec<_> = serving
        .iter()
        .filter(|(_, e)| e.settings.ring_on_inbound)
        .collect();
    if ringing.is_empty() && !data_rings {
        ringing = serving.iter().collect();
    }
    let mut alternate = None;
    if !data_rings && !ringing.is_empty() {
        alternate = Some(if policy.prefer_alternate_path {
            AlternateReason::AccountPreference
        } else if poor_data {
            AlternateReason::PoorData
        } else {
            AlternateReason::NoLiveContact
        });
    }
    for (extension_id, extension) in ringing {
        let Some(number) = extension.number.clone() else {
            continue;
        };
        let prefers = extension.settings.prefers_alternate_path;
        if prefers && alternate.is_none() {
            alternate = Some(AlternateReason::ExtensionPreference);
        }
        let delay = if !data_rings || prefers {
            Duration::ZERO
        } else {
            Duration::from_secs(u64::from(
                policy
                    .extension_delay_secs
                    .max(extension.settings.ring_delay_secs),
            ))
        };
        targets.push(Target {
            request_uri: format!("sip:{}@{}", number.as_str(), trunk.address),
            target: LegTarget::Extension {
                extension_id: *extension_id,
                number,
            },
            path: Path::AlternateCallOut,
            destination: trunk.address,
            transport: Transport::Udp,
            delay,
            extension: Some((*extension).clone()),
            headers: vec![],
        });
    }
    (targets, alternate)
}

#[cfg(test)]
mod tests {
    use super::*;

    use domain::E164;
    use domain::account::AccountEvent;
    use domain::extension::{ExtensionEvent, ExtensionKind, ExtensionSettings};
    use domain::ids::{AccountId, ExtensionId, TariffId};
    use domain::number::NumberEvent;

    const MAIN: &str = "+442000000001";
    const MOBILE: &str = "+447700000001";
    const ACCESS: &str = "+442030000000";

    fn t0() -> chrono::DateTime<chrono::Utc> {
        chrono::DateTime::parse_from_rfc3339("2026-11-01T09:00:00Z")
            .unwrap()
            .into()
    }

    /// The carrier: whoever sends from 127.0.0.2, reached at 127.0.0.2:5060, every number.
    fn trunks() -> Trunks {
        Trunks::new(vec![crate::trunk::Trunk {
            name: "carrier".into(),
            address: "127.0.0.2:5060".parse().unwrap(),
            networks: vec!["127.0.0.2/32".parse().unwrap()],
            numbers: vec!["+".into()],
        }])
    }

    fn auth() -> Authenticator {
        let settings = crate::auth::AuthSettings {
            realm: "ringledger".into(),
            algorithms: vec![crate::digest::Algorithm::Md5],
        };
        Authenticator::new(settings, b"k".to_vec(), 300, Default::default()).0
    }

    /// Ada's account (main number MAIN) with one verified mobile extension set as `settings`
    /// says, and an access number to call in to; no device registered.
    fn view(settings: ExtensionSettings) -> SharedView {
        let n = |s: &str| E164::parse(s).unwrap();
        let account = AccountId(uuid::Uuid::from_u128(1));
        let ext = ExtensionId(uuid::Uuid::from_u128(2));
        let claimed = |number: &str, role| NumberEvent::Claimed {
            number: n(number),
            account_id: account,
            role,
        };
        let mut log: Vec<(String, domain::Event)> = vec![
            (
                format!("number-{MAIN}"),
                domain::Event::Number(claimed(MAIN, NumberRole::Main)),
            ),
            (
                account.stream_id(),
                domain::Event::Account(AccountEvent::Opened {
                    account_id: account,
                    name: "Ada".into(),
                    main_number: n(MAIN),
                    tariff_id: TariffId(uuid::Uuid::from_u128(9)),
                    currency: domain::Currency::parse("GBP").unwrap(),
                    max_extensions: 5,
                }),
            ),
            (
                format!("number-{ACCESS}"),
                domain::Event::Number(claimed(ACCESS, NumberRole::Access { destination: None })),
            ),
            (
                format!("number-{MOBILE}"),
                domain::Event::Number(claimed(MOBILE, NumberRole::Extension { extension_id: ext })),
            ),
        ];
        for e in [
            ExtensionEvent::Requested {
                extension_id: ext,
                account_id: account,
                number: n(MOBILE),
                native_provider: "O2".into(),
                kind: ExtensionKind::Mobile,
            },
            ExtensionEvent::Verified {},
            ExtensionEvent::SettingsChanged { settings },
        ] {
            log.push((ext.stream_id(), domain::Event::Extension(e)));
        }
        crate::view::view_of(log)
    }

    fn invite(to: &str, from: &str, source: SocketAddr) -> RawMessage {
        let text = format!(
            "INVITE sip:{to}@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bKp1\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{from}@{source}>;tag=a\r\nTo: <sip:{to}@127.0.0.1>\r\n\
             Call-ID: plan@test\r\nCSeq: 1 INVITE\r\nContact: <sip:x@{source}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        match crate::message::parse(text.as_bytes(), source) {
            Ok(crate::message::Message::Request(r)) => r.raw,
            _ => panic!("not a request: {text}"),
        }
    }

    fn plan_at(
        view: &SharedView,
        to: &str,
        from: &str,
        source: &str,
        policy: Policy,
    ) -> Result<Plan, Answer> {
        let source: SocketAddr = source.parse().unwrap();
        plan(
            &invite(to, from, source),
            source,
            &trunks(),
            &auth(),
            view,
            &Attempts::default(),
            &OnNet::new("127.0.0.1:5060".parse().unwrap()),
            policy,
            t0(),
        )
    }

    #[test]
    fn an_on_net_leg_goes_to_the_edge_itself_marked_by_it() {
        let local: SocketAddr = "192.0.2.5:5060".parse().unwrap();
        let on_net = OnNet::new(local);
        let caller = OnNetCaller {
            account_id: domain::ids::AccountId(uuid::Uuid::from_u128(1)),
            phone: Some("198.51.100.7:5062".parse().unwrap()),
        };
        let target = on_net_target(&on_net, E164::parse("+4930222").unwrap(), caller);
        assert_eq!(target.destination, local);
        assert_eq!(target.path, Path::OnNet);
        assert_eq!(target.request_uri, "sip:+4930222@192.0.2.5:5060");
        let (name, value) = &target.headers[0];
        let invite = crate::message::from_text(&format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bKon\r\n\
             From: <sip:+4930111@{local}>;tag=a\r\nTo: <{uri}>\r\nCall-ID: on-net\r\n\
             CSeq: 1 INVITE\r\n{name}: {value}\r\nContent-Length: 0\r\n\r\n",
            uri = target.request_uri
        ));
        assert_eq!(on_net.caller(&invite, local), Some(caller));
    }

    const CARRIER: &str = "127.0.0.2:5060";
    const PRICED: Policy = Policy {
        call_in_webhook: true,
        allow_unrated_calls: true,
        call_in_trusts_caller_id: false,
        extension_transfers: false,
        keypad_without_pin: false,
    };

    #[test]
    fn the_carrier_reaches_only_numbers_in_service() {
        let view = view(ExtensionSettings::default());
        let refused = |to: &str| {
            plan_at(&view, to, "+14155550100", CARRIER, PRICED)
                .err()
                .map(|a| a.status)
        };
        assert_eq!(refused("+442000000999"), Some(404), "a number nobody holds");
        assert_eq!(refused("alice"), Some(404), "not a telephone number");
        assert_eq!(
            refused(MOBILE),
            Some(480),
            "extension numbers are not routed"
        );
    }

    #[test]
    fn with_no_phone_live_the_extension_is_called_out_at_once() {
        let view = view(ExtensionSettings::default());
        let plan = plan_at(&view, MAIN, "+14155550100", CARRIER, PRICED).unwrap();
        assert_eq!(plan.alternate, Some(AlternateReason::NoLiveContact));
        assert_eq!(plan.targets.len(), 1);
        let leg = &plan.targets[0];
        assert_eq!(
            (leg.path, leg.delay),
            (Path::AlternateCallOut, Duration::ZERO)
        );
        assert_eq!(leg.destination, CARRIER.parse().unwrap());
        assert!(
            leg.request_uri.starts_with(&format!("sip:{MOBILE}@")),
            "{}",
            leg.request_uri
        );
        assert_eq!(plan.ring_timeout, Some(Duration::from_secs(30)));
    }

    #[test]
    fn an_extension_set_to_call_in_is_awaited_and_proved_by_keypad_unless_the_carrier_is_trusted() {
        let settings = ExtensionSettings {
            alternate_path: AlternateMode::CallIn,
            ..Default::default()
        };
        let view = view(settings);
        // By default: awaited on the access number, the call-in to key its token (tones of
        // the account's country), its call-out kept as the fallback.
        let plan = plan_at(&view, MAIN, "+14155550100", CARRIER, PRICED).unwrap();
        let call_in = plan.call_in.expect("a call-in awaited");
        assert_eq!(call_in.access_number.as_str(), ACCESS);
        assert_eq!(call_in.fallback.path, Path::AlternateCallOut);
        assert_eq!(
            call_in.keyed,
            Some(Country::Uk),
            "a +44 account hears UK tones"
        );
        assert!(plan.targets.is_empty());
        // Trusted: matched on caller ID alone, nothing keyed.
        let trusted = Policy {
            call_in_trusts_caller_id: true,
            ..PRICED
        };
        let plan = plan_at(&view, MAIN, "+14155550100", CARRIER, trusted).unwrap();
        assert_eq!(plan.call_in.expect("a call-in awaited").keyed, None);
        // With nobody to tell (no device, no webhook), called out.
        let untold = Policy {
            call_in_webhook: false,
            ..trusted
        };
        let plan = plan_at(&view, MAIN, "+14155550100", CARRIER, untold).unwrap();
        assert!(plan.call_in.is_none());
        assert_eq!(plan.targets.len(), 1);
    }

    #[test]
    fn anyone_else_must_prove_who_they_are() {
        let view = view(ExtensionSettings::default());
        let answer = plan_at(&view, "+442079460000", "mallory", "127.0.0.9:5060", PRICED)
            .expect_err("no call without credentials");
        assert_eq!(answer.status, 407);
    }

    #[test]
    fn a_destination_is_keyed_only_after_a_pin_unless_the_operator_waives_it() {
        // Nothing staged, nothing mapped, no PIN: refused before anything is answered.
        let refused = plan_at(
            &view(ExtensionSettings::default()),
            ACCESS,
            MOBILE,
            CARRIER,
            PRICED,
        )
        .unwrap_err();
        assert_eq!(refused.status, 403);
        let waived = Policy {
            keypad_without_pin: true,
            ..PRICED
        };
        let plan = plan_at(
            &view(ExtensionSettings::default()),
            ACCESS,
            MOBILE,
            CARRIER,
            waived,
        )
        .unwrap();
        assert!(matches!(
            plan.menu,
            Some(MenuPlan {
                pin: false,
                tones: Country::Uk
            })
        ));
        assert!(plan.targets.is_empty());
        assert_eq!(plan.to, ACCESS);
        // With a PIN: the menu asks for it first.
        let with_pin = ExtensionSettings {
            pin_hash: Some("hash".into()),
            ..Default::default()
        };
        let plan = plan_at(&view(with_pin), ACCESS, MOBILE, CARRIER, PRICED).unwrap();
        assert!(matches!(plan.menu, Some(MenuPlan { pin: true, .. })));
        assert_eq!(plan.path, Path::CallThrough);
    }

    #[test]
    fn spellings_of_one_number_share_one_call_through_allowance() {
        let spellings = [
            "+447700900123",
            "447700900123",
            "+44-7700-900123",
            "+44.7700.900.123",
            "%2B447700900123",
            "%2b44%2D7700%2D900123",
            "(+44)7700900123",
        ];
        for s in spellings {
            assert_eq!(attempt_key(s, "carrier"), "+447700900123", "{s}");
        }
        assert_eq!(
            attempt_key("anonymous", "carrier"),
            "not a number via carrier"
        );
        assert_eq!(attempt_key("%zz", "carrier"), "not a number via carrier");
        let attempts = Attempts::default();
        let now = std::time::Instant::now();
        let allowed = spellings
            .iter()
            .filter(|s| attempts.allow(&attempt_key(s, "carrier"), now))
            .count();
        assert_eq!(allowed, super::super::attempts::ATTEMPTS);
    }
}
