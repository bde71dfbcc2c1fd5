//! Keypad call-through end to end (docs/OPERATIONS.md, "Keypad call-through"): an extension
//! calls an access number over its own carrier with nothing staged; the edge answers it
//! itself and the caller keys its PIN and the destination. pjsua2 (PyPI `pjsua2-python`) and
//! baresip (Debian `baresip`) are the mobile behind the carrier, sending real keys as RFC 4733
//! telephone-events (and pjsua2 as SIP INFO); SIPp's uas (Debian `sip-tester`) answers the leg the edge places through the trunk.
//! In-band keys are G.711 audio with the tones in it, generated here and sent as RTP.

use std::time::Duration;

use domain::call::{CallEvent, EndCause, LegTarget, MenuExit, Path as CallPath, Side};
use domain::extension::{ExtensionCommand, ExtensionEvent};
use domain::ids::ExtensionId;
use ringledger_tests::carrier::{
    audio_of, carrier_invite_from, edge_with_carrier_network, edge_with_trunk_and_media, ended,
};
use ringledger_tests::harness::Backend;
use ringledger_tests::sip_edge::{SipEdge, header, relay_settings, respond_to, status};
use ringledger_tests::sipp::{CARRIER_IP, carrier, sipp_uas, succeeded};
use signaling::media::MediaSettings;
use signaling::media::dtmf::tones_of;
use signaling::media::g711;
use signaling::media::prompts::{Prompt, Prompts};
use std::sync::Arc;

const EXTENSION: &str = "+447700900123";
const ACCESS: &str = "+442071838799";
const PIN: &str = "2468";
const DESTINATION: &str = "+442079460000";
/// Where baresip calls from (its carrier's network, in its test).
const BARESIP_IP: &str = "127.0.0.1";

/// The mobile (pjsua2) calling the access number as the extension and playing `steps` once
/// answered; whether it saw the call answered and ended, and its output.
async fn mobile(edge: &SipEdge, steps: &[&str]) -> (bool, String) {
    let uri = format!("sip:{ACCESS}@{}", edge.udp);
    let steps = steps.iter().map(|s| s.to_string()).collect();
    ringledger_tests::pjsua2::mobile(EXTENSION.into(), uri, steps).await
}

/// An edge whose carrier is 127.0.0.2 (calls out to `uas`), alice's extension with its PIN,
/// an access number with no destination mapped, and prices.
async fn menu_edge(uas: Option<std::net::SocketAddr>) -> (SipEdge, ExtensionId) {
    let edge = edge_with_carrier_network(uas).await;
    let extension_id = with_menu(&edge).await;
    (edge, extension_id)
}

/// alice's extension with its PIN, an access number with no destination mapped, and prices.
async fn with_menu(edge: &SipEdge) -> ExtensionId {
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.set_pin(extension_id, PIN).await;
    edge.add_access_number(ACCESS, None).await;
    edge.price_calls(&[], None).await;
    extension_id
}

fn collected(events: &[CallEvent]) -> Option<String> {
    events.iter().find_map(|e| match e {
        CallEvent::DestinationCollected { destination, .. } => Some(destination.to_string()),
        _ => None,
    })
}

/// The PIN was accepted and the destination keyed.
fn assert_pin_then_destination(events: &[CallEvent]) {
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::MenuPinAccepted { .. })),
        "{events:?}"
    );
    assert_eq!(
        collected(events).as_deref(),
        Some(DESTINATION),
        "{events:?}"
    );
}

fn menu_exit(events: &[CallEvent]) -> Option<MenuExit> {
    events.iter().find_map(|e| match e {
        CallEvent::MenuAbandoned { reason, .. } => Some(*reason),
        _ => None,
    })
}

/// The PIN by RFC 4733, a false start cleared with `*` and the number by SIP INFO, `#`: the
/// edge places the one leg to the number through the trunk with the main number as caller
/// ID, the call is billed to the main account through the extension on path
/// `call_through`, and the PIN is nowhere in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mobile_keys_its_pin_and_a_number_and_is_put_through_billed_to_the_main_account() {
    let (uas, trunk) = sipp_uas(CARRIER_IP, 1).await;
    let (edge, extension_id) = menu_edge(Some(trunk)).await;

    let pin = format!("rfc4733:{PIN}#");
    let number = "info:0207*02079460000#";
    let (ok, text) = mobile(&edge, &[&pin, number, "wait:2", "hangup"]).await;
    assert!(ok, "the mobile's call did not go through:\n{text}");
    // The dial tone the edge played after the PIN reached the phone.
    let rx: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("rx call: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(rx >= 10, "no tone heard:\n{text}");
    succeeded(uas, "SIPp's uas answering the destination").await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert!(
        matches!(&events[..2], [CallEvent::Started { to, path: CallPath::CallThrough, .. }, CallEvent::MenuEntered { .. }] if to == ACCESS),
        "{events:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| matches!(e, CallEvent::MenuPinAccepted { .. }))
    );
    assert_eq!(collected(events).as_deref(), Some(DESTINATION));
    let legs: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::LegStarted {
                target: LegTarget::Pstn { number },
                path,
                ..
            } => Some((number.to_string(), *path)),
            CallEvent::LegStarted { .. } => Some(("not the destination".into(), CallPath::Data)),
            _ => None,
        })
        .collect();
    assert_eq!(legs, vec![(DESTINATION.to_string(), CallPath::CallThrough)]);
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );

    let rated: Vec<_> = edge
        .rated_legs()
        .await
        .iter()
        .map(|r| r.summary())
        .collect::<Vec<_>>()
        .into_iter()
        .map(|(path, to, ext, charge)| (path.to_string(), to.to_string(), ext, charge))
        .collect();
    assert_eq!(
        rated,
        vec![(
            "call_through".to_string(),
            DESTINATION.to_string(),
            Some(extension_id.to_string()),
            Some(31)
        )]
    );
    let extension = edge.extension_events(extension_id).await;
    assert!(extension.contains(&ExtensionEvent::KeypadPinAccepted {}));
    // No event holds the PIN as a value (a quoted "2468" in any payload).
    let calls = edge.calls().await;
    let payloads = calls
        .iter()
        .flatten()
        .map(|e| serde_json::to_string(e).unwrap())
        .chain(extension.iter().map(|e| serde_json::to_string(e).unwrap()));
    for json in payloads {
        assert!(
            !json.contains(&format!("\"{PIN}\"")),
            "the PIN reached the log: {json}"
        );
    }
    edge.shutdown().await;
}

/// SIPp as the carrier keys the PIN and the number by SIP INFO (tests/sipp/carrier_keypad.xml,
/// as in the README walk-through): each INFO is answered 200, and the call reaches SIPp's uas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sipp_keys_the_number_by_info_and_is_put_through() {
    let (uas, trunk) = sipp_uas(CARRIER_IP, 1).await;
    let (edge, extension_id) = menu_edge(Some(trunk)).await;
    let dir = tempfile::tempdir().unwrap();
    let through = carrier(
        edge.udp,
        dir.path(),
        "carrier_keypad.xml",
        EXTENSION,
        ACCESS,
        &["-m", "1", "-d", "2000"],
    );
    succeeded(through, "the keypad call").await;
    succeeded(uas, "SIPp's uas answering the destination").await;
    let calls = edge.ended_calls(1).await;
    assert_eq!(
        collected(&calls[0]).as_deref(),
        Some(DESTINATION),
        "{calls:?}"
    );
    assert_eq!(
        ended(&calls[0]),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    let rated: Vec<_> = edge
        .rated_legs()
        .await
        .iter()
        .map(|r| {
            (
                r.path.clone(),
                r.destination.clone(),
                r.extension_id.clone(),
            )
        })
        .collect();
    assert_eq!(
        rated,
        vec![(
            "call_through".to_string(),
            DESTINATION.to_string(),
            Some(extension_id.to_string())
        )]
    );
    edge.shutdown().await;
}

/// baresip (Debian `baresip`) as the mobile behind the carrier: it calls the access number
/// from the carrier's network as the extension (no registration: the carrier vouches for it),
/// and keys the PIN and the number as RFC 4733 telephone-events, one key at a time through
/// its `ctrl_tcp` module's `sndcode` command as a person would press them; the call reaches
/// SIPp's uas and is billed as a call-through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baresip_keys_its_pin_and_a_number_by_rfc4733_and_is_put_through() {
    let (uas, trunk) = sipp_uas(CARRIER_IP, 1).await;
    // baresip sends its RTP from the address the kernel picks (127.0.0.1 toward the edge),
    // whatever it announces: here its carrier is 127.0.0.1, so both agree, as the relay's
    // strict latching wants.
    let carrier = signaling::trunk::Trunk {
        name: "carrier".into(),
        address: trunk,
        networks: vec![format!("{BARESIP_IP}/32").parse().unwrap()],
        numbers: vec!["+".into()],
    };
    let media = Some(relay_settings(Duration::from_secs(60)));
    let edge = SipEdge::spawn_secured(
        Backend::sqlite().await,
        vec![carrier],
        media,
        Default::default(),
    )
    .await;
    let extension_id = with_menu(&edge).await;
    let dir = tempfile::tempdir().unwrap();
    let control = {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        free.local_addr().unwrap()
    };
    // Its address in its SDP too (else it offers its first interface's); ausine drives the audio clock (telephone-events go out with the audio): 48 kHz stereo,
    // resampled to G.711.
    std::fs::write(
        dir.path().join("config"),
        format!(
            "poll_method epoll\n\
             sip_listen {BARESIP_IP}:0\n\
             net_interface {BARESIP_IP}\n\
             sip_transports udp\n\
             audio_player aufile,/dev/null\n\
             audio_source ausine,440\n\
             ausrc_srate 48000\n\
             ausrc_channels 2\n\
             audio_alert aufile,/dev/null\n\
             module_path /usr/lib/baresip/modules\n\
             module g711.so\n\
             module ausine.so\n\
             module aufile.so\n\
             module menu.so\n\
             module account.so\n\
             module ctrl_tcp.so\n\
             ctrl_tcp_listen {control}\n"
        ),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("accounts"),
        format!(
            "<sip:{EXTENSION}@{CARRIER_IP}>;regint=0;outbound=\"sip:{}\"\n",
            edge.udp
        ),
    )
    .unwrap();
    let mut baresip = tokio::process::Command::new("baresip")
        .args(["-f", dir.path().to_str().unwrap(), "-t", "40"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("baresip must be installed (Debian package baresip; scripts/test installs it)");
    let mut ctrl = baresip_control(control).await;
    send_command(&mut ctrl, "dial", &format!("sip:{ACCESS}@{}", edge.udp)).await;
    wait_for_event(&mut ctrl, "CALL_ESTABLISHED").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (n, key) in format!("{PIN}#")
        .chars()
        .chain("0207946*02079460000#".chars())
        .enumerate()
    {
        send_command(&mut ctrl, "sndcode", &key.to_string()).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if n == PIN.len() {
            // The PIN is checked on the extension's stream before dial tone asks for more.
            tokio::time::sleep(Duration::from_millis(1000)).await;
        }
    }
    // The destination answers (SIPp's uas); then the mobile hangs up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    send_command(&mut ctrl, "hangup", "").await;
    succeeded(uas, "SIPp's uas answering the destination").await;
    let _ = baresip.kill().await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert_pin_then_destination(events);
    assert_eq!(
        ended(events),
        Some((EndCause::NormalClearing, Side::Caller))
    );
    let rated: Vec<_> = edge
        .rated_legs()
        .await
        .iter()
        .map(|r| (r.path.clone(), r.extension_id.clone(), r.charge_minor))
        .collect();
    assert_eq!(
        rated,
        vec![(
            "call_through".to_string(),
            Some(extension_id.to_string()),
            Some(31)
        )]
    );
    edge.shutdown().await;
}

/// A connection to baresip's `ctrl_tcp` module (netstrings of JSON), once it listens.
async fn baresip_control(at: std::net::SocketAddr) -> tokio::net::TcpStream {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match tokio::net::TcpStream::connect(at).await {
            Ok(stream) => return stream,
            Err(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("baresip's ctrl_tcp never listened on {at}: {e}"),
        }
    }
}

async fn send_command(ctrl: &mut tokio::net::TcpStream, command: &str, params: &str) {
    use tokio::io::AsyncWriteExt;
    let json = serde_json::json!({ "command": command, "params": params }).to_string();
    let netstring = format!("{}:{json},", json.len());
    ctrl.write_all(netstring.as_bytes()).await.unwrap();
}

/// Reads baresip's events until one of type `kind` (up to 15 s).
async fn wait_for_event(ctrl: &mut tokio::net::TcpStream, kind: &str) {
    use tokio::io::AsyncReadExt;
    let mut seen = String::new();
    let wanted = format!("\"type\":\"{kind}\"");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 4096];
    while !seen.contains(&wanted) {
        let n = tokio::time::timeout_at(deadline, ctrl.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("baresip never reported {kind}: {seen}"))
            .unwrap();
        assert!(n > 0, "baresip closed its control connection: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Three wrong PINs in a row: each refused (recorded, the count on the extension), the third
/// locks keypad access and the edge hangs up; the next call is hung up even with the right
/// PIN, and no leg is ever placed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_pins_lock_keypad_access() {
    let (edge, extension_id) = menu_edge(None).await;

    let steps = ["rfc4733:1111#", "rfc4733:2222#", "rfc4733:3333#", "wait:5"];
    let (ok, text) = mobile(&edge, &steps).await;
    assert!(ok, "{text}");
    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    let refused: Vec<bool> = events
        .iter()
        .filter_map(|e| match e {
            CallEvent::MenuPinRefused { locked, .. } => Some(*locked),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![false, false, true], "{events:?}\n{text}");
    assert_eq!(menu_exit(events), Some(MenuExit::PinLocked));
    assert_eq!(ended(events), Some((EndCause::Rejected, Side::System)));
    assert!(
        text.contains("disconnected: 200"),
        "the edge hangs up (BYE):\n{text}"
    );

    let (ok, text) = mobile(&edge, &[&format!("rfc4733:{PIN}#"), "wait:5"]).await;
    assert!(ok, "{text}");
    let calls = edge.ended_calls(2).await;
    let second = calls
        .iter()
        .find(|c| {
            !c.iter()
                .any(|e| matches!(e, CallEvent::MenuPinRefused { .. }))
        })
        .unwrap();
    assert_eq!(menu_exit(second), Some(MenuExit::PinLocked), "{second:?}");
    assert!(
        !second
            .iter()
            .any(|e| matches!(e, CallEvent::MenuPinAccepted { .. }))
    );
    assert!(
        calls
            .iter()
            .flatten()
            .all(|e| !matches!(e, CallEvent::LegStarted { .. }))
    );
    let extension = edge.extension_events(extension_id).await;
    assert!(
        extension.contains(&ExtensionEvent::KeypadPinRefused {
            failures: 3,
            locked: true
        }),
        "{extension:?}"
    );
    edge.shutdown().await;
}

/// 20 ms frames of G.711 µ-law: each of `keys` as its two tones at −7 dBm0 for `on_ms`,
/// then `off_ms` of silence.
fn inband(keys: &str, on_ms: usize, off_ms: usize) -> Vec<Vec<u8>> {
    let peak = g711::DBM0_PEAK * 0.447;
    let mut samples = Vec::new();
    for key in keys.chars() {
        let (low, high) = tones_of(key).unwrap();
        for n in 0..on_ms * 8 {
            let t = n as f32 / 8000.0;
            let x = peak
                * ((2.0 * std::f32::consts::PI * low * t).sin()
                    + (2.0 * std::f32::consts::PI * high * t).sin());
            samples.push(g711::linear_to_ulaw(x as i16));
        }
        samples.extend(std::iter::repeat_n(g711::linear_to_ulaw(0), off_ms * 8));
    }
    samples.chunks(160).map(<[u8]>::to_vec).collect()
}

/// A carrier that leaves keys in the audio (no telephone-event offered): the PIN and the
/// digits are found in the G.711 stream by the edge's detector, a 20 ms blip is not taken for
/// a key, and a pause of 5 s ends the number as `#` would. The destination refuses (486): the
/// edge hangs up the caller it had answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_left_in_the_audio_are_heard_and_a_pause_ends_the_number() {
    let (edge, trunk) = edge_with_trunk_and_media(
        Backend::sqlite().await,
        Some(relay_settings(Duration::from_secs(60))),
    )
    .await;
    let extension_id = edge.add_extension(EXTENSION).await;
    edge.set_pin(extension_id, PIN).await;
    edge.add_access_number(ACCESS, None).await;
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rtp.local_addr().unwrap().port();
    let invite = carrier_invite_from(&trunk, EXTENSION, ACCESS, "inband")
        .replace("m=audio 40000 ", &format!("m=audio {port} "));
    trunk.send(&invite).await;
    let ok = trunk.expect_status(200).await;
    let (_, edge_port) = audio_of(&ok);
    assert!(!ok.contains("telephone-event"), "none was offered: {ok}");
    let ack = ringledger_tests::carrier::in_dialog(&trunk, &invite, &ok, "ACK", 1);
    trunk.send(&ack).await;

    // The digits, with a 20 ms blip of '9' between two of them (too short to be a key).
    let mut frames = inband(&format!("{PIN}#"), 60, 60);
    frames.extend(inband("0207", 60, 60));
    frames.extend(inband("9", 20, 60));
    frames.extend(inband("9460000", 60, 60));
    for (sequence, frame) in (1u16..).zip(&frames) {
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42];
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
        packet.extend_from_slice(frame);
        rtp.send_to(&packet, ("127.0.0.1", edge_port))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // No '#': five seconds after the last key the number is complete.
    let out = trunk
        .expect_request_within("INVITE", Duration::from_secs(10))
        .await;
    assert!(
        out.starts_with(&format!("INVITE sip:{DESTINATION}@")),
        "{out}"
    );
    trunk.send(&respond_to(&out, 486, "far", None, "")).await;
    let bye = trunk.expect_request("BYE").await;
    assert_eq!(header(&bye, "Call-ID"), "inband@carrier");
    trunk.send(&respond_to(&bye, 200, "", None, "")).await;

    let calls = edge.ended_calls(1).await;
    let events = &calls[0];
    assert_pin_then_destination(events);
    assert_eq!(status(&ok), 200);
    edge.shutdown().await;
}

/// A mono 8 kHz µ-law WAV file of `codes`.
fn ulaw_wav(codes: &[u8]) -> Vec<u8> {
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + codes.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    for (value, bytes) in [(7u32, 2), (1, 2), (8000, 4), (8000, 4), (1, 2), (8, 2)] {
        wav.extend_from_slice(&value.to_le_bytes()[..bytes]);
    }
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(codes.len() as u32).to_le_bytes());
    wav.extend_from_slice(codes);
    wav
}

/// The payloads of the RTP packets that reach `rtp` until none comes for `quiet`.
async fn heard(rtp: &tokio::net::UdpSocket, quiet: Duration) -> Vec<Vec<u8>> {
    let mut payloads = vec![];
    let mut buf = [0u8; 2048];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, rtp.recv(&mut buf)).await {
        payloads.push(buf[12..n].to_vec());
        assert!(payloads.len() < 10_000, "a stream that never stops");
    }
    payloads
}

/// With the operator's prompts set (`media.prompt_pin`, `media.prompt_number`), the menu says
/// them: the PIN prompt once answered, then silence; after the PIN, the confirmation tone, the
/// number prompt, then dial tone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_prompts_are_said_before_the_tones() {
    let dir = tempfile::tempdir().unwrap();
    let (pin_code, number_code) = (g711::linear_to_ulaw(8000), g711::linear_to_ulaw(-8000));
    let (pin_wav, number_wav) = (dir.path().join("pin.wav"), dir.path().join("number.wav"));
    std::fs::write(&pin_wav, ulaw_wav(&[pin_code; 1600])).unwrap();
    std::fs::write(&number_wav, ulaw_wav(&[number_code; 800])).unwrap();
    let prompts = Prompts::load(&[
        (Prompt::Pin, "media.prompt_pin", pin_wav.to_str().unwrap()),
        (
            Prompt::Number,
            "media.prompt_number",
            number_wav.to_str().unwrap(),
        ),
    ])
    .unwrap();
    let media = MediaSettings {
        prompts: Arc::new(prompts),
        ..relay_settings(Duration::from_secs(60))
    };
    let (edge, trunk) = edge_with_trunk_and_media(Backend::sqlite().await, Some(media)).await;
    with_menu(&edge).await;
    let rtp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rtp.local_addr().unwrap().port();
    let invite = carrier_invite_from(&trunk, EXTENSION, ACCESS, "prompts")
        .replace("m=audio 40000 ", &format!("m=audio {port} "));
    trunk.send(&invite).await;
    let ok = trunk.expect_status(200).await;
    let (_, edge_port) = audio_of(&ok);
    trunk
        .send(&ringledger_tests::carrier::in_dialog(
            &trunk, &invite, &ok, "ACK", 1,
        ))
        .await;
    // The PIN prompt: 200 ms (10 frames) of it, then silence (nothing sent).
    let said = heard(&rtp, Duration::from_millis(400)).await;
    assert_eq!(said.len(), 10, "{} frames", said.len());
    assert!(
        said.iter()
            .all(|p| p.len() == 160 && p.iter().all(|c| *c == pin_code))
    );

    // The PIN, in the audio: the confirmation (600 ms), the number prompt (100 ms), dial tone.
    for (sequence, frame) in (1u16..).zip(&inband(&format!("{PIN}#"), 60, 60)) {
        let mut packet = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 42];
        packet[2..4].copy_from_slice(&sequence.to_be_bytes());
        packet[4..8].copy_from_slice(&(u32::from(sequence) * 160).to_be_bytes());
        packet.extend_from_slice(frame);
        rtp.send_to(&packet, ("127.0.0.1", edge_port))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut after = vec![];
    let mut buf = [0u8; 2048];
    while after.len() < 60 {
        let n = tokio::time::timeout(Duration::from_secs(5), rtp.recv(&mut buf))
            .await
            .expect("the menu goes on after the PIN")
            .unwrap();
        after.push(buf[12..n].to_vec());
    }
    let number_at = after
        .iter()
        .position(|p| p.iter().all(|c| *c == number_code))
        .expect("the number prompt");
    assert!(
        (25..=35).contains(&number_at),
        "the confirmation first (30 frames), the prompt at {number_at}"
    );
    assert!(
        after[number_at..number_at + 5]
            .iter()
            .all(|p| p.iter().all(|c| *c == number_code))
    );
    let dial = &after[number_at + 5..];
    assert!(
        dial.iter()
            .all(|p| p.iter().any(|c| *c != number_code && *c != 0xFF)),
        "dial tone after the prompt"
    );
    edge.shutdown().await;
}

/// Six wrong PINs checked at once (six calls racing, as a fraudster would try): the count on
/// the extension's stream is exact, exactly one check locks, the rest find it locked, and
/// then the right PIN is refused too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pins_raced_from_concurrent_calls_lock_after_exactly_three() {
    let (edge, extension_id) = menu_edge(None).await;
    let account = infra::command::load::<domain::account::Account>(
        edge.store.as_ref(),
        &edge.account_id.stream_id(),
    )
    .await
    .unwrap()
    .state;
    let check = |pin: &str| {
        let command = ExtensionCommand::CheckPin {
            pin: pin.into(),
            account: account.clone(),
        };
        let store = edge.store.clone();
        tokio::spawn(async move {
            let origin = infra::command::Origin {
                actor: "edge",
                correlation_id: None,
                observe_append: None,
            };
            infra::command::execute::<domain::extension::Extension>(
                store.as_ref(),
                &origin,
                &extension_id.stream_id(),
                &command,
                None,
                None,
            )
            .await
            .map(|(_, events)| events)
        })
    };
    let raced: Vec<_> = (0..6).map(|n| check(&format!("000{n}"))).collect();
    let mut locked_now = 0;
    let mut found_locked = 0;
    for result in futures::future::join_all(raced).await {
        match result.unwrap() {
            Ok(events) => {
                if events.contains(&ExtensionEvent::KeypadPinRefused {
                    failures: 3,
                    locked: true,
                }) {
                    locked_now += 1;
                }
            }
            Err(infra::command::CommandError::Domain(domain::error::DomainError::KeypadLocked)) => {
                found_locked += 1
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((locked_now, found_locked), (1, 3));
    let refused: Vec<_> = edge
        .extension_events(extension_id)
        .await
        .into_iter()
        .filter_map(|e| match e {
            ExtensionEvent::KeypadPinRefused { failures, .. } => Some(failures),
            _ => None,
        })
        .collect();
    assert_eq!(refused, vec![1, 2, 3]);
    let right = check(PIN).await.unwrap();
    assert!(matches!(
        right,
        Err(infra::command::CommandError::Domain(
            domain::error::DomainError::KeypadLocked
        ))
    ));
    edge.shutdown().await;
}
