//! A deterministic, realistic mix of the service's events, produced through the domain's own
//! `decide` (so every event is one the rules allow): accounts opening, devices registering and
//! refreshing, extensions being verified and changed, calls with one to three legs, tariff
//! versions. Used by projection tests and the rebuild benchmarks.

use domain::account::{Account, AccountCommand};
use domain::call::{
    Call, CallCommand, Direction, EndCause, LegFailure, LegRole, LegTarget, Origin, Path, Side,
};
use domain::device::{Device, DeviceCommand, Transport};
use domain::extension::{
    ChallengeMethod, Extension, ExtensionCommand, ExtensionKind, PinChange, SettingsChange,
};
use domain::ids::{AccountId, CallId, DeviceId, ExtensionId, LegId, TariffId};
use domain::number::{NumberClaim, NumberCommand, NumberRole};
use domain::tariff::{Rate, Tariff, TariffCommand, TariffVersion};
use domain::{Aggregate, Currency, DomainEvent, E164, EncodedEvent, Instant};
use infra::{NewEvent, RecordedEvent};
use uuid::Uuid;

/// One append the workload wants made.
#[derive(Debug, Clone)]
pub struct WorkloadAppend {
    pub stream_id: String,
    pub events: Vec<EncodedEvent>,
    pub occurred_at: Instant,
}

impl WorkloadAppend {
    pub fn new_events(&self, actor: &str) -> Vec<NewEvent> {
        self.events
            .iter()
            .map(|e| {
                let event_id = Uuid::now_v7();
                NewEvent {
                    event_id,
                    event_type: e.event_type.to_owned(),
                    schema_version: e.schema_version,
                    payload: e.payload.clone(),
                    occurred_at: self.occurred_at,
                    correlation_id: event_id,
                    causation_id: None,
                    actor: actor.to_owned(),
                }
            })
            .collect()
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*: deterministic and dependency-free.
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

pub struct Workload {
    /// Two digits of the seed in every number, so two workloads never claim the same one.
    number_space: u64,
    rng: Rng,
    now: Instant,
    ids: u128,
    tariff: (TariffId, Tariff),
    accounts: Vec<(AccountId, Account)>,
    devices: Vec<(DeviceId, Device)>,
    extensions: Vec<(ExtensionId, Extension)>,
}

/// Decides `command` against `state` at `now`, applies the events, and wraps them.
fn append<A: Aggregate>(
    now: Instant,
    stream_id: String,
    state: &mut A,
    command: A::Command,
) -> Option<WorkloadAppend> {
    let events = state.decide(&command, now).ok()?;
    if events.is_empty() {
        return None;
    }
    for e in &events {
        state.apply(e);
    }
    Some(WorkloadAppend {
        stream_id,
        events: encode(&events),
        occurred_at: now,
    })
}

fn encode<E: DomainEvent>(events: &[E]) -> Vec<EncodedEvent> {
    events.iter().map(DomainEvent::encode).collect()
}

impl Workload {
    pub fn new(seed: u64, start: Instant) -> Self {
        Self {
            number_space: seed % 100,
            rng: Rng(seed | 1),
            now: start,
            ids: u128::from(seed) << 64,
            tariff: (
                TariffId(Uuid::from_u128(u128::from(seed) << 64 | 0xffff)),
                Tariff::default(),
            ),
            accounts: Vec::new(),
            devices: Vec::new(),
            extensions: Vec::new(),
        }
    }

    fn id(&mut self) -> Uuid {
        self.ids += 1;
        Uuid::from_u128(self.ids)
    }

    fn append<A: Aggregate>(
        &self,
        stream_id: String,
        state: &mut A,
        command: A::Command,
    ) -> Option<WorkloadAppend> {
        append(self.now, stream_id, state, command)
    }

    /// The next few appends of the mix, in the order they must be made.
    pub fn step(&mut self) -> Vec<WorkloadAppend> {
        self.now += chrono::Duration::milliseconds(200 + self.rng.below(3000) as i64);
        if self.tariff.1.versions.is_empty() || self.rng.below(2000) == 0 {
            return self.publish_tariff().into_iter().collect();
        }
        if self.accounts.len() < 3 || self.rng.below(20) == 0 {
            return self.open_account();
        }
        match self.rng.below(100) {
            0..=39 => self.register().into_iter().collect(),
            40..=49 => self.extension_change(),
            _ => self.call(),
        }
    }

    fn publish_tariff(&mut self) -> Option<WorkloadAppend> {
        let (id, mut tariff) = (self.tariff.0, std::mem::take(&mut self.tariff.1));
        let version = tariff.versions.len() as u32 + 1;
        let bump = i64::from(version) * 10;
        let rate = |prefix: &str, millis: i64, connect: i64, first: u32, next: u32| Rate {
            prefix: prefix.into(),
            description: format!("+{prefix}"),
            per_minute_millis: millis + bump,
            connect_fee_minor: connect,
            first_increment_secs: first,
            next_increment_secs: next,
        };
        let command = TariffCommand::Publish {
            tariff_id: id,
            name: "Standard".into(),
            version: TariffVersion {
                version,
                currency: Currency::parse("GBP").ok()?,
                effective_from: chrono::SubsecRound::trunc_subsecs(self.now, 6),
                rates: vec![
                    rate("44", 1_000, 0, 60, 60),
                    rate("447", 8_400, 0, 30, 6),
                    rate("1", 1_500, 5, 1, 1),
                ],
                blocked_prefixes: vec!["4490".into()],
                on_net: None,
            },
        };
        let out = self.append(format!("tariff-{}", id.0), &mut tariff, command);
        self.tariff.1 = tariff;
        out
    }

    fn open_account(&mut self) -> Vec<WorkloadAppend> {
        let account_id = AccountId(self.id());
        let main = E164::parse(&format!(
            "+4420{:02}{:06}",
            self.number_space,
            self.accounts.len()
        ))
        .ok();
        let Some(main) = main else { return vec![] };
        let mut account = Account::default();
        let mut out = Vec::new();
        out.extend(self.append(
            domain::number::stream_id(&main),
            &mut NumberClaim::default(),
            NumberCommand::Claim {
                number: main.clone(),
                account_id,
                role: NumberRole::Main,
            },
        ));
        out.extend(self.append(
            account_id.stream_id(),
            &mut account,
            AccountCommand::Open {
                account_id,
                name: format!("Customer {}", self.accounts.len()),
                main_number: main.clone(),
                tariff_id: self.tariff.0,
                currency: Currency::parse("GBP").expect("GBP"),
                max_extensions: None,
            },
        ));
        let device_id = DeviceId(self.id());
        let mut device = Device::default();
        out.extend(self.append(
            device_id.stream_id(),
            &mut device,
            DeviceCommand::Provision {
                device_id,
                account: account.clone(),
                sip_username: format!("user{}", self.accounts.len()),
                realm: "ringledger".into(),
                password: "a long enough password".into(),
            },
        ));
        self.accounts.push((account_id, account));
        self.devices.push((device_id, device));
        out
    }

    fn register(&mut self) -> Option<WorkloadAppend> {
        let i = self.rng.below(self.devices.len());
        let contact = format!(
            "sip:dev{i}@10.0.{}.{}:5060",
            self.rng.below(4),
            self.rng.below(250)
        );
        let command = DeviceCommand::BindContact {
            contact_uri: contact,
            source: "192.0.2.7:5060".into(),
            transport: Transport::Udp,
            user_agent: Some("baresip".into()),
            expires_secs: 3600,
            limit: domain::device::ContactLimit::default(),
        };
        let now = self.now;
        let (id, device) = &mut self.devices[i];
        append(now, id.stream_id(), device, command)
    }

    fn extension_change(&mut self) -> Vec<WorkloadAppend> {
        let mut out = Vec::new();
        let a = self.rng.below(self.accounts.len());
        let (account_id, mut account) = self.accounts[a].clone();
        let extension_id = ExtensionId(self.id());
        let number = E164::parse(&format!(
            "+4477{:02}{:06}",
            self.number_space,
            self.extensions.len()
        ));
        // The API's order: the number is claimed first, then the account attaches it.
        if let Ok(number) = number
            && account.ensure_active().is_ok()
            && account.extensions.len() < usize::from(account.max_extensions)
        {
            let mut claim = NumberClaim::default();
            out.extend(self.append(
                domain::number::stream_id(&number),
                &mut claim,
                NumberCommand::Claim {
                    number: number.clone(),
                    account_id,
                    role: NumberRole::Extension { extension_id },
                },
            ));
            let Some(attached) = self.append(
                account_id.stream_id(),
                &mut account,
                AccountCommand::AttachExtension {
                    extension_id,
                    number: number.clone(),
                },
            ) else {
                return out;
            };
            out.push(attached);
            let mut ext = Extension::default();
            let stream = extension_id.stream_id();
            let commands = [
                ExtensionCommand::Request {
                    extension_id,
                    account: account.clone(),
                    number,
                    native_provider: "Vodafone UK".into(),
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
                ExtensionCommand::ChangeSettings(SettingsChange {
                    ring_on_inbound: true,
                    ring_delay_secs: 5,
                    may_call_out: true,
                    international_allowed: self.rng.below(2) == 0,
                    pin: PinChange::Keep,
                    caller_id: domain::extension::CallerIdShown::Main,
                    daily_limit_minor: Some(2_000),
                    prefers_alternate_path: false,
                    alternate_path: domain::extension::AlternateMode::CallOut,
                }),
            ];
            for c in commands {
                out.extend(self.append(stream.clone(), &mut ext, c));
            }
            self.extensions.push((extension_id, ext));
        }
        self.accounts[a] = (account_id, account);
        out
    }

    fn call(&mut self) -> Vec<WorkloadAppend> {
        let a = self.rng.below(self.accounts.len());
        let account = self.accounts[a].1.clone();
        let call_id = CallId(self.id());
        let inbound = self.rng.below(2) == 0;
        let main = account.main_number.clone();
        let Some(main) = main else { return vec![] };
        let destination = if self.rng.below(3) == 0 {
            "+14155550100"
        } else {
            "+442079460000"
        };
        let mut call = Call::default();
        let mut events = Vec::new();
        let mut run = |call: &mut Call, command: CallCommand, now: Instant| {
            if let Ok(new) = call.decide(&command, now) {
                for e in &new {
                    call.apply(e);
                }
                events.extend(new);
            }
        };
        let start = self.now;
        run(
            &mut call,
            CallCommand::Start {
                edge_id: None,
                keypad: false,
                call_id,
                direction: if inbound {
                    Direction::Inbound
                } else {
                    Direction::Outbound
                },
                from: if inbound {
                    "+33142685300".into()
                } else {
                    main.to_string()
                },
                to: if inbound {
                    main.to_string()
                } else {
                    destination.into()
                },
                origin: Origin::Pstn {
                    trunk: "carrier".into(),
                },
                path: if inbound { Path::Data } else { Path::Pstn },
                account: account.clone(),
                extension: None,
                pin: None,
                dial_intent: None,
            },
            start,
        );
        let legs = 1 + self.rng.below(3);
        let mut leg_ids = Vec::new();
        for l in 0..legs {
            let leg_id = LegId(self.id());
            leg_ids.push(leg_id);
            let target = match (inbound, l) {
                (false, _) => LegTarget::Pstn {
                    number: E164::parse(destination).expect("valid"),
                },
                (true, 0) => LegTarget::Contact {
                    device_id: self.devices[a.min(self.devices.len() - 1)].0,
                    contact_uri: "sip:dev@10.0.0.1:5060".into(),
                },
                (true, _) => LegTarget::Pstn {
                    number: E164::parse(&format!("+4477009{:05}", l)).expect("valid"),
                },
            };
            let path = if matches!(target, LegTarget::Contact { .. }) {
                Path::Data
            } else {
                Path::Pstn
            };
            run(
                &mut call,
                CallCommand::StartLeg {
                    leg_id,
                    target,
                    path,
                    role: LegRole::Callee,
                    account: account.clone(),
                    extension: None,
                },
                start,
            );
            run(
                &mut call,
                CallCommand::LegRinging { leg_id },
                start + chrono::Duration::seconds(1),
            );
        }
        let answered = self.rng.below(4) != 0;
        let answer_at = start + chrono::Duration::seconds(3 + self.rng.below(10) as i64);
        let end_at = answer_at + chrono::Duration::milliseconds(self.rng.below(600_000) as i64);
        if answered {
            let winner = leg_ids[self.rng.below(leg_ids.len())];
            run(
                &mut call,
                CallCommand::LegAnswered { leg_id: winner },
                answer_at,
            );
            for l in leg_ids.iter().filter(|l| **l != winner) {
                run(
                    &mut call,
                    CallCommand::LegFailed {
                        leg_id: *l,
                        sip_status: 487,
                        failure: LegFailure::AnsweredElsewhere,
                    },
                    answer_at,
                );
            }
            run(
                &mut call,
                CallCommand::End {
                    cause: EndCause::NormalClearing,
                    side: Side::Caller,
                },
                end_at,
            );
        } else {
            run(
                &mut call,
                CallCommand::End {
                    cause: EndCause::NoAnswer,
                    side: Side::System,
                },
                answer_at,
            );
        }
        vec![WorkloadAppend {
            stream_id: call_id.stream_id(),
            events: encode(&events),
            occurred_at: start,
        }]
    }
}

/// The workload's first `appends` appends as recorded events with positions 1, 2, 3...
/// (no hashes): input for in-memory read models and their benchmarks.
pub fn recorded(seed: u64, start: Instant, min_events: usize) -> Vec<RecordedEvent> {
    let mut w = Workload::new(seed, start);
    let mut out: Vec<RecordedEvent> = Vec::with_capacity(min_events + 16);
    let mut versions: std::collections::HashMap<String, u64> = Default::default();
    while out.len() < min_events {
        for append in w.step() {
            for e in append.new_events("workload") {
                let v = versions.entry(append.stream_id.clone()).or_default();
                *v += 1;
                out.push(RecordedEvent {
                    event_id: e.event_id,
                    stream_id: append.stream_id.clone(),
                    stream_version: *v,
                    global_position: out.len() as u64 + 1,
                    event_type: e.event_type,
                    schema_version: e.schema_version,
                    occurred_at: e.occurred_at,
                    recorded_at: e.occurred_at,
                    correlation_id: e.correlation_id,
                    causation_id: None,
                    actor: e.actor,
                    payload: e.payload,
                    prev_hash: String::new(),
                    hash: String::new(),
                });
            }
        }
    }
    out
}
