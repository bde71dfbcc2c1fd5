//! Voice prompts an operator may record for the keypad menu ("enter your PIN", "enter the
//! number", "enter the code you were sent", "that was not right"): WAV files named in the
//! config (`prompts.*`), read once at start, 8 kHz mono, 16-bit linear PCM, µ-law or A-law,
//! 60 s at most each. Each is played before the menu's tone where one is set; without any the
//! menu speaks in tones alone. Sans-IO: the caller sends each frame when its time comes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::g711;
use super::tones::{Codec, FRAME};

/// The longest prompt, in seconds (a bound on what each one holds in memory).
pub const MAX_SECS: usize = 60;
const RATE: u32 = 8000;

/// What a prompt says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Prompt {
    /// Asks for the PIN.
    Pin,
    /// Asks for the number to call.
    Number,
    /// Asks a call-in for the code (token) its phone was sent.
    Token,
    /// Says the entry was refused (a wrong PIN or token, a number not allowed).
    Refused,
}

/// The operator's recordings, as 8 kHz linear samples.
#[derive(Debug, Default)]
pub struct Prompts {
    clips: HashMap<Prompt, Arc<[i16]>>,
}

#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{field} ({path}): {source}")]
    Read {
        field: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{field} ({path}): {why}")]
    Format {
        field: &'static str,
        path: PathBuf,
        why: &'static str,
    },
}

impl Prompts {
    /// Reads the file each config field names (`(prompt, field, path)`; an empty path sets
    /// none); the first that cannot be used is the error, naming its field, path and why.
    pub fn load(files: &[(Prompt, &'static str, &str)]) -> Result<Self, PromptError> {
        let mut clips = HashMap::new();
        for (prompt, field, path) in files.iter().filter(|(_, _, p)| !p.is_empty()) {
            let path = Path::new(path).to_path_buf();
            let bytes = std::fs::read(&path).map_err(|source| PromptError::Read {
                field,
                path: path.clone(),
                source,
            })?;
            let samples = samples_of_wav(&bytes).map_err(|why| PromptError::Format {
                field,
                path: path.clone(),
                why,
            })?;
            clips.insert(*prompt, samples.into());
        }
        Ok(Self { clips })
    }

    /// The recording for `prompt`, if the operator set one.
    pub fn clip(&self, prompt: Prompt) -> Option<Arc<[i16]>> {
        self.clips.get(&prompt).cloned()
    }
}

/// The samples of a WAV file (RIFF, WAVE): 8 kHz mono in 16-bit linear PCM (format 1), A-law
/// (6) or µ-law (7), at most [`MAX_SECS`] long.
pub fn samples_of_wav(bytes: &[u8]) -> Result<Vec<i16>, &'static str> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a WAV file (no RIFF/WAVE header)");
    }
    let mut format = None;
    let mut rest = &bytes[12..];
    while rest.len() >= 8 {
        let id = &rest[..4];
        let size = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]) as usize;
        let body = rest
            .get(8..8 + size)
            .ok_or("a chunk runs past the end of the file")?;
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err("its fmt chunk is too short");
                }
                let tag = u16::from_le_bytes([body[0], body[1]]);
                let channels = u16::from_le_bytes([body[2], body[3]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = u16::from_le_bytes([body[14], body[15]]);
                if channels != 1 {
                    return Err("not mono");
                }
                if rate != RATE {
                    return Err("not sampled at 8000 Hz");
                }
                format = Some(match (tag, bits) {
                    (1, 16) => Encoding::Linear,
                    (6, 8) => Encoding::Alaw,
                    (7, 8) => Encoding::Ulaw,
                    _ => return Err("not 16-bit PCM, A-law or µ-law"),
                });
            }
            b"data" => {
                let format = format.ok_or("its data comes before its fmt chunk")?;
                let samples: Vec<i16> = match format {
                    Encoding::Linear => body
                        .chunks_exact(2)
                        .map(|s| i16::from_le_bytes([s[0], s[1]]))
                        .collect(),
                    Encoding::Alaw => body.iter().map(|c| g711::alaw_to_linear(*c)).collect(),
                    Encoding::Ulaw => body.iter().map(|c| g711::ulaw_to_linear(*c)).collect(),
                };
                if samples.is_empty() {
                    return Err("it holds no audio");
                }
                if samples.len() > MAX_SECS * RATE as usize {
                    return Err("longer than 60 s");
                }
                return Ok(samples);
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        rest = rest.get(8 + size + size % 2..).unwrap_or_default();
    }
    Err("no data chunk")
}

#[derive(Debug, Clone, Copy)]
enum Encoding {
    Linear,
    Alaw,
    Ulaw,
}

/// One prompt being played on one leg, 20 ms at a time.
pub struct ClipPlayer {
    samples: Arc<[i16]>,
    codec: Codec,
    played: usize,
}

impl ClipPlayer {
    pub fn new(samples: Arc<[i16]>, codec: Codec) -> Self {
        Self {
            samples,
            codec,
            played: 0,
        }
    }

    /// The next 20 ms, encoded (silence after the end).
    pub fn next_frame(&mut self) -> [u8; FRAME] {
        let encode = match self.codec {
            Codec::Pcmu => g711::linear_to_ulaw,
            Codec::Pcma => g711::linear_to_alaw,
        };
        let mut frame = [encode(0); FRAME];
        let left = self.samples.get(self.played..).unwrap_or_default();
        for (code, sample) in frame.iter_mut().zip(left) {
            *code = encode(*sample);
        }
        self.played = (self.played + FRAME).min(self.samples.len());
        frame
    }

    /// Whether it has all been played.
    pub fn finished(&self) -> bool {
        self.played >= self.samples.len()
    }
}

/// A mono 8 kHz WAV file of `data`, 8-bit G.711 (`tag` 6 A-law, 7 µ-law), for tests.
#[cfg(test)]
pub(crate) fn tests_wav(tag: u16, data: &[u8]) -> Vec<u8> {
    tests::wav(tag, 1, 8000, 8, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WAV file of `data` (already encoded) with format `tag`, `bits` per sample.
    pub(crate) fn wav(tag: u16, channels: u16, rate: u32, bits: u16, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(b"RIFF");
        out.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
        out.extend_from_slice(b"WAVE");
        // An odd-sized chunk before fmt, to be skipped with its padding.
        out.extend_from_slice(b"LIST");
        out.extend_from_slice(&3u32.to_le_bytes());
        out.extend_from_slice(b"abc\0");
        out.extend_from_slice(b"fmt ");
        out.extend_from_slice(&16u32.to_le_bytes());
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&channels.to_le_bytes());
        out.extend_from_slice(&rate.to_le_bytes());
        let block = channels * bits / 8;
        out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&bits.to_le_bytes());
        out.extend_from_slice(b"data");
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn linear_alaw_and_ulaw_wavs_are_read_as_samples() {
        let linear: Vec<u8> = [1000i16, -1000, 0]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(
            samples_of_wav(&wav(1, 1, 8000, 16, &linear)).unwrap(),
            vec![1000, -1000, 0]
        );
        let ulaw = [g711::linear_to_ulaw(1000)];
        let read = samples_of_wav(&wav(7, 1, 8000, 8, &ulaw)).unwrap();
        assert_eq!(read, vec![g711::ulaw_to_linear(ulaw[0])]);
        let alaw = [g711::linear_to_alaw(-1000)];
        let read = samples_of_wav(&wav(6, 1, 8000, 8, &alaw)).unwrap();
        assert_eq!(read, vec![g711::alaw_to_linear(alaw[0])]);
    }

    #[test]
    fn files_that_cannot_be_played_say_why() {
        let one = [0u8, 0];
        assert_eq!(
            samples_of_wav(b"ID3 an mp3"),
            Err("not a WAV file (no RIFF/WAVE header)")
        );
        assert_eq!(samples_of_wav(&wav(1, 2, 8000, 16, &one)), Err("not mono"));
        assert_eq!(
            samples_of_wav(&wav(1, 1, 44100, 16, &one)),
            Err("not sampled at 8000 Hz")
        );
        assert_eq!(
            samples_of_wav(&wav(3, 1, 8000, 32, &[0; 4])),
            Err("not 16-bit PCM, A-law or µ-law")
        );
        assert_eq!(
            samples_of_wav(&wav(7, 1, 8000, 8, &[])),
            Err("it holds no audio")
        );
        let long = vec![0xFFu8; MAX_SECS * 8000 + 1];
        assert_eq!(
            samples_of_wav(&wav(7, 1, 8000, 8, &long)),
            Err("longer than 60 s")
        );
        let mut cut = wav(7, 1, 8000, 8, &[0xFF; 100]);
        cut.truncate(cut.len() - 10);
        assert_eq!(
            samples_of_wav(&cut),
            Err("a chunk runs past the end of the file")
        );
    }

    #[test]
    fn loading_names_the_field_and_file_that_failed() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("pin.wav");
        std::fs::write(&good, wav(7, 1, 8000, 8, &[0xFF; 800])).unwrap();
        let good = good.to_str().unwrap();
        let missing = dir.path().join("number.wav");
        let missing = missing.to_str().unwrap();
        let prompts = Prompts::load(&[
            (Prompt::Pin, "media.prompt_pin", good),
            (Prompt::Number, "media.prompt_number", ""),
        ])
        .unwrap();
        assert_eq!(prompts.clip(Prompt::Pin).map(|c| c.len()), Some(800));
        assert!(prompts.clip(Prompt::Number).is_none(), "empty: none");
        let error = Prompts::load(&[
            (Prompt::Pin, "media.prompt_pin", good),
            (Prompt::Number, "media.prompt_number", missing),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            error.starts_with("media.prompt_number (") && error.contains("number.wav"),
            "{error}"
        );
        std::fs::write(dir.path().join("bad.wav"), b"not audio").unwrap();
        let bad = dir.path().join("bad.wav");
        let error = Prompts::load(&[(
            Prompt::Refused,
            "media.prompt_refused",
            bad.to_str().unwrap(),
        )])
        .unwrap_err()
        .to_string();
        assert!(
            error.ends_with("not a WAV file (no RIFF/WAVE header)"),
            "{error}"
        );
    }

    #[test]
    fn a_clip_plays_in_frames_then_is_finished() {
        let samples: Arc<[i16]> = vec![1000i16; FRAME + 10].into();
        let mut player = ClipPlayer::new(samples, Codec::Pcma);
        let first = player.next_frame();
        assert!(first.iter().all(|c| *c == g711::linear_to_alaw(1000)));
        assert!(!player.finished());
        let second = player.next_frame();
        assert!(
            second[..10]
                .iter()
                .all(|c| *c == g711::linear_to_alaw(1000))
        );
        assert!(second[10..].iter().all(|c| *c == g711::linear_to_alaw(0)));
        assert!(player.finished());
    }
}
