//! `ringledger bench keypad-menu`: how many access-number menu calls one core serves with its
//! sockets. The edge's side — for each call a media relay with its caller side taken by the
//! menu's endpoint (`media::keypad`: RTP received, decoded and searched for DTMF tones; dial
//! tone encoded and sent back every 20 ms) — runs on a single-threaded runtime of its own
//! thread, whose CPU time is measured. A generator thread plays every caller: each 20 ms it
//! sends each call one RTP frame of PCMU (every key in turn, 60 ms on, 60 ms off, over faint
//! noise) and counts the dial-tone packets that come back. The figure is the calls the edge's
//! thread would serve on a whole core: calls × wall time ÷ its CPU time, provided every call
//! heard its tone at 50 packets a second and had its keys found. Bounded by `seconds`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use signaling::media::keypad::{Keypad, Sound, Voice};
use signaling::media::relay::{Relay, Side};
use signaling::media::sdp::Agreed;
use signaling::media::tones::{Codec, Country, Tone};

const FRAME: usize = 160;
const FIRST_PORT: u16 = 20000;
/// Linux's clock ticks per second in /proc (USER_HZ).
const TICKS_PER_SECOND: f64 = 100.0;

/// This thread's CPU time so far (user + system), from /proc.
fn thread_cpu() -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("a stat line")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: f64 = fields[11].parse::<f64>()? + fields[12].parse::<f64>()?;
    Ok(Duration::from_secs_f64(ticks / TICKS_PER_SECOND))
}

pub fn keypad_menu(calls: usize, seconds: u64) -> anyhow::Result<()> {
    let media = crate::bench_rtp::loopback_media(FIRST_PORT, calls)?;
    // Each caller's socket, bound first so the relays know where their callers are.
    let callers: Vec<UdpSocket> = (0..calls)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .collect::<std::io::Result<_>>()?;
    let caller_addrs: Vec<SocketAddr> = callers
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<std::io::Result<_>>()?;
    let keys_found = Arc::new(AtomicU64::new(0));
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let found = keys_found.clone();
    let edge = std::thread::spawn(move || -> anyhow::Result<Duration> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let agreed = Agreed {
                codec: Codec::Pcmu,
                voice_payload_type: 0,
                event_payload_type: Some(101),
            };
            let mut menus = Vec::with_capacity(calls);
            for caller in &caller_addrs {
                let relay = Relay::start(&media)?;
                relay.peer_from_sdp(Side::Caller, *caller, caller.ip());
                let (out, packets) = relay.tap(Side::Caller);
                let found = found.clone();
                let keys = move |_, _| {
                    found.fetch_add(1, Ordering::Relaxed);
                };
                let voice = Voice {
                    country: Country::Uk,
                    prompts: Default::default(),
                };
                let dial = &[Sound::Tone(Tone::Dial)];
                let keypad = Keypad::start(out, packets, agreed, voice, dial, keys);
                menus.push((relay.port(Side::Caller), relay, keypad));
            }
            let ports: Vec<u16> = menus.iter().map(|(port, _, _)| *port).collect();
            let _ = ready_tx.send(ports);
            let before = thread_cpu()?;
            let _ = stop_rx.await;
            let used = thread_cpu()?.saturating_sub(before);
            drop(menus);
            Ok(used)
        })
    });
    let ports = ready_rx.recv().context("the menus did not start")?;
    let audio: Vec<Vec<u8>> = (0..calls)
        .map(|c| crate::bench_dtmf::caller_audio(c as u32 + 1))
        .collect();
    let frames_per_pass = audio[0].len() / FRAME;
    let mut packet = [0u8; 12 + FRAME];
    packet[0] = 0x80;
    let mut buf = [0u8; 2048];
    let mut heard = 0u64;
    let (mut sent, mut late) = (0u64, 0u64);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut tick = started;
    let mut frame = 0usize;
    while Instant::now() < deadline {
        let f = frame % frames_per_pass;
        let sequence = (frame as u16).to_be_bytes();
        let timestamp = ((frame * FRAME) as u32).to_be_bytes();
        packet[2..4].copy_from_slice(&sequence);
        packet[4..8].copy_from_slice(&timestamp);
        for (c, socket) in callers.iter().enumerate() {
            packet[12..].copy_from_slice(&audio[c][f * FRAME..(f + 1) * FRAME]);
            if socket.send_to(&packet, ("127.0.0.1", ports[c])).is_ok() {
                sent += 1;
            }
        }
        for socket in &callers {
            while socket.recv_from(&mut buf).is_ok() {
                heard += 1;
            }
        }
        frame += 1;
        tick += Duration::from_millis(20);
        match tick.checked_duration_since(Instant::now()) {
            Some(wait) => std::thread::sleep(wait),
            None => late += 1,
        }
    }
    let elapsed = started.elapsed();
    let _ = stop_tx.send(());
    let cpu = edge
        .join()
        .map_err(|_| anyhow::anyhow!("the edge's thread panicked"))??;
    let keys = keys_found.load(Ordering::Relaxed);
    // Every key is 3 frames of tone then 3 of silence; one heard for 3 frames is a key.
    let keys_sent = (frame / 6 + usize::from(frame % 6 >= 3)) as u64 * calls as u64;
    let share = cpu.as_secs_f64() / elapsed.as_secs_f64();
    let tone_rate = heard as f64 / calls as f64 / elapsed.as_secs_f64();
    println!(
        "{calls} menu calls for {:.1} s: edge thread CPU {:.2} s ({:.0} % of a core); dial tone heard at {tone_rate:.1} packets/s per call (50 expected); keys found {keys} of {keys_sent} sent; {sent} frames sent, generator late on {late} of {frame} ticks",
        elapsed.as_secs_f64(),
        cpu.as_secs_f64(),
        share * 100.0,
    );
    println!(
        "one core serves {:.0} menu calls (tones played, in-band detection on, sockets included)",
        calls as f64 / share
    );
    anyhow::ensure!(
        tone_rate >= 49.0,
        "the tones fell behind: {tone_rate:.1} packets/s per call"
    );
    anyhow::ensure!(
        keys + calls as u64 * 2 >= keys_sent,
        "keys were missed: {keys} found of {keys_sent}"
    );
    Ok(())
}
