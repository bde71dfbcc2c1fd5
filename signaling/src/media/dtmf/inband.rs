//! Keys sent as tones in the audio (carriers that pass DTMF in-band instead of as RFC 4733
//! events), found in 8 kHz linear samples (decoded G.711). Sans-IO: samples in, keys out.
//!
//! Goertzel filters measure the eight DTMF frequencies over blocks of 10 ms. A block holds a
//! key when its strongest row tone and strongest column tone are both loud enough (−30 dBm0
//! each), the twist between them is within ITU-T Q.24's limits (the row tone at most 8 dB
//! above the column tone, at most 4 dB below it), each stands out from the other three of its
//! group, and together they carry most of the block's energy (speech and noise do not).
//! Q.24's timing: a key is reported once three blocks of one run hold it at full level (a tone
//! of 40 ms always spans three whole blocks, one of 23 ms at most two), and it ends after two
//! blocks without it, so an interruption of up to 10 ms is bridged while Q.24's shortest pause
//! between keys (40 ms) is not.

use super::{COLUMNS, KEYS, ROWS};

const RATE: f32 = 8000.0;
/// Samples per block (10 ms).
const BLOCK: usize = 80;
/// The mean square of a −30 dBm0 tone on the ±32,124 scale of decoded G.711.
const MIN_TONE_POWER: f32 = 2.5e5;
/// Row tone over column tone at most 8 dB ("normal" twist).
const NORMAL_TWIST: f32 = 6.31;
/// Column tone over row tone at most 4 dB ("reverse" twist).
const REVERSE_TWIST: f32 = 2.51;
/// A tone must be this much stronger than every other tone of its group (4.8 dB).
const GROUP_MARGIN: f32 = 3.0;
/// The two tones' share of the block's energy.
const TONE_SHARE: f32 = 0.7;
/// A block counts at full level when it has at least this share of the run's strongest.
const FULL_LEVEL: f32 = 0.5;
const BLOCKS_TO_REPORT: usize = 3;
const BLOCKS_TO_END: usize = 2;
/// Block levels kept for a run not yet reported.
const LEVELS_KEPT: usize = 16;

/// One leg's in-band key detector.
pub struct InbandDetector {
    /// `2 cos(2π f / rate)` for the four rows, then the four columns.
    coefficients: [f32; 8],
    block: [f32; BLOCK],
    filled: usize,
    run: Option<Run>,
}

/// Consecutive blocks holding one key.
struct Run {
    key: char,
    /// Each block's tone level, until the key is reported.
    levels: Vec<f32>,
    reported: bool,
    /// Blocks since the last one holding the key.
    misses: usize,
}

/// Goertzel's coefficient for `frequency` at 8 kHz.
pub fn coefficient(frequency: f32) -> f32 {
    2.0 * (2.0 * std::f32::consts::PI * frequency / RATE).cos()
}

/// The mean square of the sine whose Goertzel coefficient is `c` in `samples` (|X(f)|²
/// scaled so a sine of that frequency alone gives its own mean square).
pub fn tone_power(samples: &[f32], c: f32) -> f32 {
    let (mut s1, mut s2) = (0.0f32, 0.0f32);
    for x in samples {
        let s = x + c * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let n = samples.len() as f32;
    (s1 * s1 + s2 * s2 - c * s1 * s2) * 2.0 / (n * n)
}

impl Default for InbandDetector {
    fn default() -> Self {
        let mut coefficients = [0.0; 8];
        for (i, f) in ROWS.iter().chain(COLUMNS.iter()).enumerate() {
            coefficients[i] = coefficient(*f);
        }
        Self {
            coefficients,
            block: [0.0; BLOCK],
            filled: 0,
            run: None,
        }
    }
}

impl InbandDetector {
    /// Takes the next samples of the leg's audio; each key that begins in them is pushed to
    /// `keys`, once however long it is held.
    pub fn push(&mut self, samples: &[i16], keys: &mut Vec<char>) {
        for s in samples {
            self.block[self.filled] = f32::from(*s);
            self.filled += 1;
            if self.filled == BLOCK {
                self.filled = 0;
                let found = self.key_in_block();
                self.advance(found, keys);
            }
        }
    }

    /// The key the current block holds, with its tones' level.
    fn key_in_block(&self) -> Option<(char, f32)> {
        let mut power = [0.0f32; 8];
        for (p, c) in power.iter_mut().zip(self.coefficients) {
            *p = tone_power(&self.block, c);
        }
        let strongest = |group: &[f32]| {
            let (i, p) = group.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1))?;
            let stands_out = group
                .iter()
                .enumerate()
                .all(|(j, q)| j == i || q * GROUP_MARGIN <= *p);
            (*p >= MIN_TONE_POWER && stands_out).then_some((i, *p))
        };
        let (row, row_power) = strongest(&power[..4])?;
        let (column, column_power) = strongest(&power[4..])?;
        if row_power > column_power * NORMAL_TWIST || column_power > row_power * REVERSE_TWIST {
            return None;
        }
        let block_power = self.block.iter().map(|x| x * x).sum::<f32>() / BLOCK as f32;
        let tones = row_power + column_power;
        (tones >= TONE_SHARE * block_power).then_some((KEYS[row][column], tones))
    }

    fn advance(&mut self, found: Option<(char, f32)>, keys: &mut Vec<char>) {
        match (found, self.run.as_mut()) {
            (Some((key, level)), Some(run)) if run.key == key => {
                run.misses = 0;
                if !run.reported {
                    if run.levels.len() == LEVELS_KEPT {
                        run.levels.remove(0);
                    }
                    run.levels.push(level);
                    run.report_if_held(keys);
                }
            }
            (Some((key, level)), _) => {
                let mut run = Run {
                    key,
                    levels: vec![level],
                    reported: false,
                    misses: 0,
                };
                run.report_if_held(keys);
                self.run = Some(run);
            }
            (None, Some(run)) => {
                run.misses += 1;
                if run.misses >= BLOCKS_TO_END {
                    self.run = None;
                }
            }
            (None, None) => {}
        }
    }
}

impl Run {
    fn report_if_held(&mut self, keys: &mut Vec<char>) {
        let strongest = self.levels.iter().copied().fold(0.0, f32::max);
        let full = self
            .levels
            .iter()
            .filter(|l| **l >= FULL_LEVEL * strongest)
            .count();
        if full >= BLOCKS_TO_REPORT {
            self.reported = true;
            self.levels.clear();
            keys.push(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tones_of;
    use super::*;
    use crate::media::g711;

    fn amplitude(dbm0: f32) -> f32 {
        g711::DBM0_PEAK * 10f32.powf(dbm0 / 20.0)
    }

    /// `key` for `ms`, its row tone at `row_dbm0` and its column tone at `column_dbm0`.
    fn key_tone(key: char, ms: usize, row_dbm0: f32, column_dbm0: f32) -> Vec<f32> {
        let (row, column) = tones_of(key).unwrap();
        let (a, b) = (amplitude(row_dbm0), amplitude(column_dbm0));
        (0..ms * 8)
            .map(|n| {
                let t = n as f32 / RATE;
                let tau = 2.0 * std::f32::consts::PI;
                a * (tau * row * t).sin() + b * (tau * column * t).sin()
            })
            .collect()
    }

    fn silence(ms: usize) -> Vec<f32> {
        vec![0.0; ms * 8]
    }

    /// Uniform white noise at `dbm0` (deterministic).
    fn noise(ms: usize, dbm0: f32, seed: u64) -> Vec<f32> {
        // A uniform variable on [-w, w] has mean square w²/3; a sine of peak P has P²/2.
        let width = amplitude(dbm0) * (3.0f32 / 2.0).sqrt();
        let mut state = seed.max(1);
        (0..ms * 8)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ((state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0) * width
            })
            .collect()
    }

    fn mix(a: &[f32], b: &[f32]) -> Vec<f32> {
        a.iter().zip(b).map(|(x, y)| x + y).collect()
    }

    fn pcm(signal: &[f32]) -> Vec<i16> {
        signal
            .iter()
            .map(|x| x.round().clamp(-32_768.0, 32_767.0) as i16)
            .collect()
    }

    fn detect(samples: &[i16]) -> String {
        let mut detector = InbandDetector::default();
        let mut keys = Vec::new();
        detector.push(samples, &mut keys);
        keys.into_iter().collect()
    }

    fn keyed(keys: &str, tone_ms: usize, pause_ms: usize) -> Vec<f32> {
        let mut signal = silence(pause_ms);
        for key in keys.chars() {
            signal.extend(key_tone(key, tone_ms, -10.0, -10.0));
            signal.extend(silence(pause_ms));
        }
        signal
    }

    #[test]
    fn every_key_is_found_in_linear_mu_law_and_a_law_audio() {
        let keys = "123A456B789C*0#D";
        let samples = pcm(&keyed(keys, 50, 50));
        assert_eq!(detect(&samples), keys);
        let ulaw: Vec<i16> = samples
            .iter()
            .map(|s| g711::ulaw_to_linear(g711::linear_to_ulaw(*s)))
            .collect();
        assert_eq!(detect(&ulaw), keys, "µ-law");
        let alaw: Vec<i16> = samples
            .iter()
            .map(|s| g711::alaw_to_linear(g711::linear_to_alaw(*s)))
            .collect();
        assert_eq!(detect(&alaw), keys, "A-law");
    }

    #[test]
    fn a_key_of_40_ms_is_found_and_one_of_23_ms_is_not_wherever_it_starts() {
        for offset in (0..BLOCK).step_by(5) {
            let mut long = vec![0.0; offset];
            long.extend(key_tone('5', 40, -10.0, -10.0));
            long.extend(silence(50));
            assert_eq!(detect(&pcm(&long)), "5", "40 ms at offset {offset}");
            let mut short = vec![0.0; offset];
            short.extend(key_tone('5', 23, -10.0, -10.0));
            short.extend(silence(50));
            assert_eq!(detect(&pcm(&short)), "", "23 ms at offset {offset}");
        }
    }

    #[test]
    fn twist_within_q24_limits_only() {
        let found = |row_db: f32, column_db: f32| {
            let mut s = key_tone('8', 60, row_db, column_db);
            s.extend(silence(50));
            detect(&pcm(&s))
        };
        assert_eq!(found(-6.0, -13.0), "8", "normal twist 7 dB");
        assert_eq!(found(-6.0, -15.0), "", "normal twist 9 dB");
        assert_eq!(found(-13.0, -10.0), "8", "reverse twist 3 dB");
        assert_eq!(found(-15.0, -10.0), "", "reverse twist 5 dB");
    }

    #[test]
    fn a_pause_of_40_ms_parts_two_presses_and_a_10_ms_break_does_not() {
        assert_eq!(detect(&pcm(&keyed("55", 50, 40))), "55");
        let mut broken = key_tone('9', 60, -10.0, -10.0);
        broken.extend(silence(10));
        broken.extend(key_tone('9', 60, -10.0, -10.0));
        broken.extend(silence(50));
        assert_eq!(detect(&pcm(&broken)), "9");
    }

    #[test]
    fn noise_a_lone_tone_and_a_faint_key_are_not_keys() {
        assert_eq!(detect(&pcm(&noise(2000, -10.0, 7))), "", "noise");
        let mut lone = key_tone('1', 100, -10.0, -80.0);
        lone.extend(silence(50));
        assert_eq!(detect(&pcm(&lone)), "", "row tone alone");
        let mut faint = key_tone('1', 100, -40.0, -40.0);
        faint.extend(silence(50));
        assert_eq!(detect(&pcm(&faint)), "", "below -30 dBm0");
        // A key drowned in noise as loud as both tones together is not a key either.
        let drowned = mix(&keyed("4", 100, 50), &noise(200, -7.0, 11));
        assert_eq!(detect(&pcm(&drowned)), "", "0 dB signal to noise");
        // Under noise 20 dB below the tones it is.
        let clear = mix(&keyed("4", 100, 50), &noise(200, -30.0, 13));
        assert_eq!(detect(&pcm(&clear)), "4", "20 dB signal to noise");
    }

    #[test]
    fn packets_of_any_size_give_the_same_keys() {
        let samples = pcm(&keyed("0#*7", 45, 45));
        for size in [1, 7, 80, 160, 333] {
            let mut detector = InbandDetector::default();
            let mut keys = Vec::new();
            for chunk in samples.chunks(size) {
                detector.push(chunk, &mut keys);
            }
            assert_eq!(
                keys.into_iter().collect::<String>(),
                "0#*7",
                "packets of {size}"
            );
        }
    }
}
