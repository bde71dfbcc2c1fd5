//! Call-progress tones the edge plays itself on a leg it answers (the keypad menu): dial tone,
//! confirmation and reorder, to each country's plan, as G.711 frames of 20 ms (160 samples)
//! for RTP paced at 20 ms. Sans-IO: the caller sends each frame when its time comes. The phase
//! runs on across frames, so the audio has no clicks at frame edges. Each tone is encoded once
//! per process, one whole period of it (every frequency is a whole number of hertz, so the
//! waveform repeats each second; with the cadence, at the least common multiple), and played
//! from that table: a menu call costs a copy per frame, not a sine per sample.
//!
//! Plans (frequencies, on/off cadence; every component at −13 dBm0):
//! - UK: dial 350+450 Hz continuous; reorder 400 Hz 400 on, 350 off, 225 on, 525 off.
//! - US: dial 350+440 Hz continuous; reorder 480+620 Hz 250 on, 250 off.
//! - Confirmation (both): the country's dial-tone pair three times 100 ms on, 100 ms off, then
//!   silence (played once, after a PIN or a number is accepted).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use super::g711;

const RATE: f32 = 8000.0;
/// Samples per frame (20 ms).
pub const FRAME: usize = 160;
/// The peak of one component at −13 dBm0 (10^(−13/20) of the 0 dBm0 peak).
const PEAK: f32 = g711::DBM0_PEAK * 0.223_872_1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Country {
    Uk,
    Us,
}

impl Country {
    /// Whose tones an account hears: US for a North American main number, else UK.
    pub fn of(main_number: Option<&domain::E164>) -> Self {
        match main_number.map(domain::E164::country_code) {
            Some("1") => Country::Us,
            _ => Country::Uk,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Tone {
    Dial,
    Confirm,
    Reorder,
}

/// The RTP payload the tones are encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Codec {
    /// µ-law, payload type 0.
    Pcmu,
    /// A-law, payload type 8.
    Pcma,
}

struct Plan {
    frequencies: &'static [f32],
    /// (on ms, off ms) steps; empty: continuous.
    cadence: &'static [(u32, u32)],
    repeats: bool,
}

fn plan(country: Country, tone: Tone) -> Plan {
    let dial: &'static [f32] = match country {
        Country::Uk => &[350.0, 450.0],
        Country::Us => &[350.0, 440.0],
    };
    match (tone, country) {
        (Tone::Dial, _) => Plan {
            frequencies: dial,
            cadence: &[],
            repeats: true,
        },
        (Tone::Confirm, _) => Plan {
            frequencies: dial,
            cadence: &[(100, 100), (100, 100), (100, 100)],
            repeats: false,
        },
        (Tone::Reorder, Country::Uk) => Plan {
            frequencies: &[400.0],
            cadence: &[(400, 350), (225, 525)],
            repeats: true,
        },
        (Tone::Reorder, Country::Us) => Plan {
            frequencies: &[480.0, 620.0],
            cadence: &[(250, 250)],
            repeats: true,
        },
    }
}

/// One tone encoded: one period of it when it repeats, else all of it (silence follows).
struct Encoded {
    codes: Arc<[u8]>,
    repeats: bool,
    silence: u8,
}

/// One tone being played on one leg.
pub struct TonePlayer {
    encoded: Encoded,
    /// Samples played so far.
    played: usize,
}

/// Every tone encoded so far in this process, by what it is.
type Tables = Mutex<HashMap<(Country, Tone, Codec), Arc<[u8]>>>;

fn encoded(country: Country, tone: Tone, codec: Codec) -> Encoded {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    let plan = plan(country, tone);
    let codes = TABLES
        .get_or_init(Mutex::default)
        .lock()
        .expect("tone tables")
        .entry((country, tone, codec))
        .or_insert_with(|| encode(&plan, codec))
        .clone();
    Encoded {
        codes,
        repeats: plan.repeats,
        silence: encode_sample(0, codec),
    }
}

fn encode_sample(sample: i16, codec: Codec) -> u8 {
    match codec {
        Codec::Pcmu => g711::linear_to_ulaw(sample),
        Codec::Pcma => g711::linear_to_alaw(sample),
    }
}

/// The samples of `plan` from its start until it repeats exactly (or ends).
fn encode(plan: &Plan, codec: Codec) -> Arc<[u8]> {
    let second = RATE as usize;
    let cadence: usize = plan
        .cadence
        .iter()
        .map(|(on, off)| (*on + *off) as usize * 8)
        .sum();
    let len = match (cadence, plan.repeats) {
        (0, _) => second,
        (c, true) => c / gcd(c, second) * second,
        (c, false) => c,
    };
    (0..len)
        .map(|n| {
            let sample = if sounds(plan, n) {
                let t = (n % second) as f32 / RATE;
                plan.frequencies
                    .iter()
                    .map(|f| PEAK * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum::<f32>()
            } else {
                0.0
            };
            encode_sample(sample as i16, codec)
        })
        .collect()
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Whether sample `n` of the tone sounds (its cadence step is on).
fn sounds(plan: &Plan, n: usize) -> bool {
    if plan.cadence.is_empty() {
        return true;
    }
    let ms = |v: u32| v as usize * 8;
    let period: usize = plan.cadence.iter().map(|(on, off)| ms(*on + *off)).sum();
    if !plan.repeats && n >= period {
        return false;
    }
    let mut at = n % period;
    for (on, off) in plan.cadence {
        if at < ms(*on) {
            return true;
        }
        if at < ms(*on + *off) {
            return false;
        }
        at -= ms(*on + *off);
    }
    false
}

impl TonePlayer {
    pub fn new(country: Country, tone: Tone, codec: Codec) -> Self {
        Self {
            encoded: encoded(country, tone, codec),
            played: 0,
        }
    }

    /// Whether a tone that plays once (confirmation) has all been played.
    pub fn finished(&self) -> bool {
        !self.encoded.repeats && self.played >= self.encoded.codes.len()
    }

    /// The next 20 ms of the tone, encoded.
    pub fn next_frame(&mut self) -> [u8; FRAME] {
        let Encoded {
            codes,
            repeats,
            silence,
        } = &self.encoded;
        let mut frame = [*silence; FRAME];
        let len = codes.len();
        for (i, code) in frame.iter_mut().enumerate() {
            let n = self.played + i;
            if *repeats {
                *code = codes[n % len];
            } else if n < len {
                *code = codes[n];
            }
        }
        self.played = if *repeats {
            (self.played + FRAME) % len
        } else {
            (self.played + FRAME).min(len)
        };
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::inband::{InbandDetector, coefficient, tone_power};

    fn linear(player: &mut TonePlayer, codec: Codec, ms: usize) -> Vec<i16> {
        let decode = match codec {
            Codec::Pcmu => g711::ulaw_to_linear,
            Codec::Pcma => g711::alaw_to_linear,
        };
        (0..ms / 20)
            .flat_map(|_| player.next_frame())
            .map(decode)
            .collect()
    }

    /// The mean square of the component at `f` over the whole of `samples` (1 Hz resolution
    /// for a second of audio).
    fn power_at(samples: &[i16], f: f32) -> f32 {
        let samples: Vec<f32> = samples.iter().map(|x| f32::from(*x)).collect();
        tone_power(&samples, coefficient(f))
    }

    fn db(ratio: f32) -> f32 {
        10.0 * ratio.log10()
    }

    #[test]
    fn dial_tones_are_each_countrys_pair_at_minus_13_dbm0() {
        let zero_dbm0 = g711::DBM0_PEAK * g711::DBM0_PEAK / 2.0;
        for (country, ours, theirs) in [(Country::Uk, 450.0, 440.0), (Country::Us, 440.0, 450.0)] {
            for codec in [Codec::Pcmu, Codec::Pcma] {
                let audio = linear(
                    &mut TonePlayer::new(country, Tone::Dial, codec),
                    codec,
                    1000,
                );
                let level = db(power_at(&audio, 350.0) / zero_dbm0);
                assert!(
                    (level + 13.0).abs() < 0.5,
                    "{country:?} {codec:?} 350 Hz at {level} dBm0"
                );
                let level = db(power_at(&audio, ours) / zero_dbm0);
                assert!(
                    (level + 13.0).abs() < 0.5,
                    "{country:?} {codec:?} {ours} Hz at {level} dBm0"
                );
                assert!(
                    power_at(&audio, theirs) < power_at(&audio, ours) / 100.0,
                    "{country:?} {codec:?}: {theirs} Hz is the other country's"
                );
            }
        }
    }

    /// Milliseconds of sound and of silence in turn, from 1 ms windows.
    fn cadence(samples: &[i16]) -> Vec<(bool, usize)> {
        let mut steps: Vec<(bool, usize)> = Vec::new();
        for window in samples.chunks(8) {
            let on = window.iter().any(|s| s.unsigned_abs() > 100);
            match steps.last_mut() {
                Some((was, ms)) if *was == on => *ms += 1,
                _ => steps.push((on, 1)),
            }
        }
        steps
    }

    #[test]
    fn cadences_follow_the_plan_and_confirmation_plays_once() {
        let us = cadence(&linear(
            &mut TonePlayer::new(Country::Us, Tone::Reorder, Codec::Pcmu),
            Codec::Pcmu,
            1000,
        ));
        assert_eq!(us, [(true, 250), (false, 250), (true, 250), (false, 250)]);
        let uk = cadence(&linear(
            &mut TonePlayer::new(Country::Uk, Tone::Reorder, Codec::Pcma),
            Codec::Pcma,
            1600,
        ));
        assert_eq!(
            uk,
            [
                (true, 400),
                (false, 350),
                (true, 225),
                (false, 525),
                (true, 100)
            ]
        );
        let confirm = cadence(&linear(
            &mut TonePlayer::new(Country::Uk, Tone::Confirm, Codec::Pcmu),
            Codec::Pcmu,
            2000,
        ));
        assert_eq!(
            confirm,
            [
                (true, 100),
                (false, 100),
                (true, 100),
                (false, 100),
                (true, 100),
                (false, 1500)
            ]
        );
    }

    #[test]
    fn no_click_at_frame_edges_and_no_tone_is_taken_for_a_key() {
        let mut player = TonePlayer::new(Country::Us, Tone::Dial, Codec::Pcmu);
        let audio = linear(&mut player, Codec::Pcmu, 2000);
        let steps: Vec<i32> = audio
            .windows(2)
            .map(|w| (i32::from(w[1]) - i32::from(w[0])).abs())
            .collect();
        let inside = steps
            .iter()
            .enumerate()
            .filter(|(i, _)| (i + 1) % FRAME != 0)
            .map(|(_, s)| *s)
            .max();
        let edges = steps.iter().skip(FRAME - 1).step_by(FRAME).max().copied();
        assert!(edges <= inside, "edges {edges:?} inside {inside:?}");
        for country in [Country::Uk, Country::Us] {
            for tone in [Tone::Dial, Tone::Confirm, Tone::Reorder] {
                let audio = linear(
                    &mut TonePlayer::new(country, tone, Codec::Pcmu),
                    Codec::Pcmu,
                    3000,
                );
                let mut keys = Vec::new();
                InbandDetector::default().push(&audio, &mut keys);
                assert!(keys.is_empty(), "{country:?} {tone:?} heard as {keys:?}");
            }
        }
    }
}
