//! `ringledger bench dtmf-inband`: what the keypad menu's audio work costs per call. One thread
//! runs `calls` menu calls; for each, every 20 ms, it decodes the caller's PCMU frame (keys of
//! 60 ms with 60 ms pauses under faint noise) into that call's in-band detector and encodes the
//! next frame of dial tone the edge plays back. The figure is how many call-frames one core
//! handles a second, so how many menu calls it keeps up with in real time (the sockets are not
//! in it: `bench rtp-relay` measures those). Every call's keys are checked, so a faster
//! detector that misses keys does not count. Bounded by `seconds`.

use std::time::{Duration, Instant};

use signaling::media::dtmf::inband::InbandDetector;
use signaling::media::dtmf::tones_of;
use signaling::media::g711;
use signaling::media::tones::{Codec, Country, Tone, TonePlayer};

/// 20 ms at 8 kHz.
const FRAME: usize = 160;
const KEYS: &str = "0123456789*#";

/// One caller's audio: every key once (60 ms each, 60 ms apart) at −10 dBm0 per tone, over
/// noise 30 dB down, as PCMU.
pub(crate) fn caller_audio(seed: u32) -> Vec<u8> {
    let peak = g711::DBM0_PEAK * 10f32.powf(-10.0 / 20.0);
    let mut noise = seed.max(1);
    let mut samples = Vec::new();
    for key in KEYS.chars() {
        let (row, column) = tones_of(key).expect("a key");
        for n in 0..960 {
            let t = n as f32 / 8000.0;
            let on = n < 480;
            let tau = 2.0 * std::f32::consts::PI;
            let tone = if on {
                peak * ((tau * row * t).sin() + (tau * column * t).sin())
            } else {
                0.0
            };
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let hiss = (noise as f32 / u32::MAX as f32 - 0.5) * peak / 16.0;
            samples.push(g711::linear_to_ulaw((tone + hiss) as i16));
        }
    }
    samples
}

pub fn dtmf_inband(calls: usize, seconds: u64) -> anyhow::Result<()> {
    let audio: Vec<Vec<u8>> = (0..calls).map(|c| caller_audio(c as u32 + 1)).collect();
    let mut detectors: Vec<InbandDetector> =
        (0..calls).map(|_| InbandDetector::default()).collect();
    let mut players: Vec<TonePlayer> = (0..calls)
        .map(|_| TonePlayer::new(Country::Uk, Tone::Dial, Codec::Pcmu))
        .collect();
    let mut played = 0u64;
    let mut found: Vec<String> = vec![String::new(); calls];
    let frames_per_pass = audio[0].len() / FRAME;
    let mut linear = [0i16; FRAME];
    let mut keys = Vec::new();
    let began = Instant::now();
    let (mut frames, mut passes) = (0u64, 0u64);
    while began.elapsed() < Duration::from_secs(seconds) {
        for f in 0..frames_per_pass {
            for (c, detector) in detectors.iter_mut().enumerate() {
                let frame = &audio[c][f * FRAME..(f + 1) * FRAME];
                for (l, code) in linear.iter_mut().zip(frame) {
                    *l = g711::ulaw_to_linear(*code);
                }
                detector.push(&linear, &mut keys);
                found[c].extend(keys.drain(..));
                played += u64::from(std::hint::black_box(players[c].next_frame())[0]);
            }
            frames += calls as u64;
        }
        passes += 1;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let expected = KEYS.repeat(passes as usize);
    let wrong = found.iter().filter(|k| **k != expected).count();
    let per_second = frames as f64 / elapsed;
    println!(
        "{calls} menu calls, {passes} passes of {} keys each, {frames} frames of 20 ms decoded and detected, as many of dial tone played, in {elapsed:.1} s on one thread",
        KEYS.len()
    );
    println!(
        "{per_second:.0} frames/s ({:.2} µs per frame): one core keeps up with {:.0} calls in real time",
        1e6 / per_second,
        per_second / 50.0
    );
    println!("calls whose keys were not all found exactly: {wrong} (tone checksum {played})");
    anyhow::ensure!(wrong == 0, "{wrong} calls detected other keys than sent");
    Ok(())
}
