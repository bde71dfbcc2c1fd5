//! Call-progress tones the edge plays itself on a leg it answers (the keypad menu): dial tone,
//! confirmation and reorder, to each country's plan, as G.711 frames of 20 ms (160 samples)
//! for RTP paced at 20 ms. Sans-IO: the caller sends each frame when its time comes. The phase
//! runs on across frames, so the audio has no clicks at frame edges.
//!
//! Plans (frequencies, on/off cadence; every component at −13 dBm0):
//! - UK: dial 350+450 Hz continuous; reorder 400 Hz 400 on, 350 off, 225 on, 525 off.
//! - US: dial 350+440 Hz continuous; reorder 480+620 Hz 250 on, 250 off.
//! - Confirmation (both): the country's dial-tone pair three times 100 ms on, 100 ms off, then
//!   silence (played once, after a PIN or a number is accepted).

use super::g711;

const RATE: f32 = 8000.0;
/// Samples per frame (20 ms).
pub const FRAME: usize = 160;
/// The peak of one component at −13 dBm0 (10^(−13/20) of the 0 dBm0 peak).
const PEAK: f32 = g711::DBM0_PEAK * 0.223_872_1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Country {
    Uk,
    Us,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Dial,
    Confirm,
    Reorder,
}

/// The RTP payload the tones are encoded in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// One tone being played on one leg.
pub struct TonePlayer {
    plan: Plan,
    codec: Codec,
    /// Samples played so far.
    played: u64,
}

impl TonePlayer {
    pub fn new(country: Country, tone: Tone, codec: Codec) -> Self {
        Self {
            plan: plan(country, tone),
            codec,
            played: 0,
        }
    }

    /// Whether sample `n` of the tone sounds (its cadence step is on).
    fn sounds(&self, n: u64) -> bool {
        if self.plan.cadence.is_empty() {
            return true;
        }
        let ms = |v: u32| u64::from(v) * 8;
        let period: u64 = self
            .plan
            .cadence
            .iter()
            .map(|(on, off)| ms(*on + *off))
            .sum();
        if !self.plan.repeats && n >= period {
            return false;
        }
        let mut at = n % period;
        for (on, off) in self.plan.cadence {
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

    /// The next 20 ms of the tone, encoded.
    pub fn next_frame(&mut self) -> [u8; FRAME] {
        let mut frame = [0u8; FRAME];
        for code in frame.iter_mut() {
            let n = self.played;
            self.played += 1;
            let sample = if self.sounds(n) {
                // Every frequency is a whole number of hertz: the waveform repeats each second,
                // so the phase stays exact however long the tone plays.
                let t = (n % RATE as u64) as f32 / RATE;
                self.plan
                    .frequencies
                    .iter()
                    .map(|f| PEAK * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum::<f32>()
            } else {
                0.0
            };
            let sample = sample as i16;
            *code = match self.codec {
                Codec::Pcmu => g711::linear_to_ulaw(sample),
                Codec::Pcma => g711::linear_to_alaw(sample),
            };
        }
        frame
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::dtmf::inband::{InbandDetector, coefficient, tone_power};

    fn linear(player: &mut TonePlayer, ms: usize) -> Vec<i16> {
        let decode = match player.codec {
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
                let audio = linear(&mut TonePlayer::new(country, Tone::Dial, codec), 1000);
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
            1000,
        ));
        assert_eq!(us, [(true, 250), (false, 250), (true, 250), (false, 250)]);
        let uk = cadence(&linear(
            &mut TonePlayer::new(Country::Uk, Tone::Reorder, Codec::Pcma),
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
        let audio = linear(&mut player, 2000);
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
                let audio = linear(&mut TonePlayer::new(country, tone, Codec::Pcmu), 3000);
                let mut keys = Vec::new();
                InbandDetector::default().push(&audio, &mut keys);
                assert!(keys.is_empty(), "{country:?} {tone:?} heard as {keys:?}");
            }
        }
    }
}
