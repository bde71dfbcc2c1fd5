//! The edge's own end of a leg it answers itself (the access-number menu, a call-in keying its
//! token): it takes the leg's RTP from the relay, finds the keys in it — RFC 4733
//! telephone-events by their payload type, and DTMF tones in the G.711 audio — and plays the
//! menu's sounds to the leg, one 20 ms frame at a time: tones, and the operator's prompts
//! where set. Keys go to whoever started it (the call's task) with the way they came; what
//! plays is theirs to say.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use super::dtmf::inband::InbandDetector;
use super::dtmf::keys::Way;
use super::dtmf::rfc4733::EventReceiver;
use super::g711;
use super::prompts::{ClipPlayer, Prompt, Prompts};
use super::relay::SideOut;
use super::rtp::{self, Packet};
use super::sdp::Agreed;
use super::tones::{Codec, Country, FRAME, Tone, TonePlayer};

/// How often a frame is sent.
const FRAME_PERIOD: Duration = Duration::from_millis(20);

/// One thing the endpoint plays: a tone, or an operator's prompt (passed over when none is
/// set). In a list, each plays in turn; a repeating tone last plays until told otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sound {
    Tone(Tone),
    Say(Prompt),
}

/// A running endpoint; it stops when dropped.
pub struct Keypad {
    sounds: watch::Sender<&'static [Sound]>,
    task: JoinHandle<()>,
}

/// What plays at the endpoint's start and on each change.
pub struct Voice {
    pub country: Country,
    pub prompts: Arc<Prompts>,
}

impl Keypad {
    /// Starts the endpoint on a tapped side of the relay (`out`, `packets`), with the codec
    /// and payload types agreed with the leg, playing `sounds` at once in `voice`'s tones and
    /// prompts. Each key found goes to `keys`.
    pub fn start(
        out: SideOut,
        packets: mpsc::Receiver<Vec<u8>>,
        agreed: Agreed,
        voice: Voice,
        sounds: &'static [Sound],
        keys: impl Fn(Way, char) + Send + 'static,
    ) -> Self {
        let (tx, rx) = watch::channel(sounds);
        let task = tokio::spawn(run(out, packets, agreed, voice, rx, keys));
        Self { sounds: tx, task }
    }

    /// Plays `sounds` from the start of the first (none: silence).
    pub fn play(&self, sounds: &'static [Sound]) {
        self.sounds.send_replace(sounds);
    }
}

impl Drop for Keypad {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The sound being played.
enum Playing {
    Tone(TonePlayer),
    Clip(ClipPlayer),
}

impl Playing {
    fn next_frame(&mut self) -> [u8; FRAME] {
        match self {
            Playing::Tone(t) => t.next_frame(),
            Playing::Clip(c) => c.next_frame(),
        }
    }

    fn finished(&self) -> bool {
        match self {
            Playing::Tone(t) => t.finished(),
            Playing::Clip(c) => c.finished(),
        }
    }
}

/// A list of sounds being played in turn.
struct Playlist {
    voice: Voice,
    codec: Codec,
    sounds: &'static [Sound],
    at: usize,
    playing: Option<Playing>,
}

impl Playlist {
    /// Plays `sounds` from the first that can be played.
    fn start(&mut self, sounds: &'static [Sound]) {
        self.sounds = sounds;
        self.at = 0;
        self.seek();
    }

    /// The sound at `at`, or the next one that can be played (none: silence).
    fn seek(&mut self) {
        self.playing = None;
        while let Some(sound) = self.sounds.get(self.at) {
            self.playing = match sound {
                Sound::Tone(t) => Some(Playing::Tone(TonePlayer::new(
                    self.voice.country,
                    *t,
                    self.codec,
                ))),
                Sound::Say(p) => self
                    .voice
                    .prompts
                    .clip(*p)
                    .map(|clip| Playing::Clip(ClipPlayer::new(clip, self.codec))),
            };
            if self.playing.is_some() {
                return;
            }
            self.at += 1;
        }
    }

    /// The next frame to send, if anything plays.
    fn next_frame(&mut self) -> Option<[u8; FRAME]> {
        let playing = self.playing.as_mut()?;
        let frame = playing.next_frame();
        if playing.finished() {
            self.at += 1;
            self.seek();
        }
        Some(frame)
    }
}

/// What is read from the leg: its keys, whichever way they come in the media.
struct Listener {
    agreed: Agreed,
    events: EventReceiver,
    detector: InbandDetector,
    samples: Vec<i16>,
    found: Vec<char>,
}

impl Listener {
    fn new(agreed: Agreed) -> Self {
        Self {
            agreed,
            events: EventReceiver::default(),
            detector: InbandDetector::default(),
            samples: Vec::with_capacity(FRAME),
            found: Vec::new(),
        }
    }

    /// The keys one RTP packet brings.
    fn packet(&mut self, bytes: &[u8], keys: &impl Fn(Way, char)) {
        let Some(p) = Packet::parse(bytes) else {
            return;
        };
        if Some(p.payload_type) == self.agreed.event_payload_type {
            if let Some(key) = self.events.receive(p.marker, p.timestamp, p.payload) {
                keys(Way::Rfc4733, key);
            }
        } else if p.payload_type == self.agreed.voice_payload_type {
            self.samples.clear();
            let decode = match self.agreed.codec {
                Codec::Pcmu => g711::ulaw_to_linear,
                Codec::Pcma => g711::alaw_to_linear,
            };
            self.samples.extend(p.payload.iter().map(|c| decode(*c)));
            self.detector.push(&self.samples, &mut self.found);
            for key in self.found.drain(..) {
                keys(Way::InBand, key);
            }
        }
    }
}

/// The frames sent to the leg: one RTP stream of the agreed voice codec.
struct Speaker {
    payload_type: u8,
    ssrc: u32,
    sequence: u16,
    first_timestamp: u32,
    since: Instant,
    /// The next frame starts a talkspurt (RFC 3551 §4.1: the marker bit).
    marker: bool,
    packet: [u8; rtp::HEADER + FRAME],
}

impl Speaker {
    fn new(payload_type: u8) -> Self {
        let random = uuid::Uuid::new_v4().as_u128();
        Self {
            payload_type,
            ssrc: random as u32,
            sequence: (random >> 32) as u16,
            first_timestamp: (random >> 48) as u32,
            since: Instant::now(),
            marker: true,
            packet: [0; rtp::HEADER + FRAME],
        }
    }

    /// The packet carrying `frame`: its timestamp follows the clock (8 kHz, whole frames), so
    /// a pause in the tones keeps the stream's timing.
    fn packet(&mut self, frame: &[u8; FRAME]) -> &[u8] {
        let frames = self.since.elapsed().as_millis() / FRAME_PERIOD.as_millis();
        let timestamp = self
            .first_timestamp
            .wrapping_add((frames as u32).wrapping_mul(FRAME as u32));
        rtp::write_header(
            &mut self.packet,
            self.marker,
            self.payload_type,
            self.sequence,
            timestamp,
            self.ssrc,
        );
        self.marker = false;
        self.sequence = self.sequence.wrapping_add(1);
        self.packet[rtp::HEADER..].copy_from_slice(frame);
        &self.packet
    }
}

async fn run(
    mut out: SideOut,
    mut packets: mpsc::Receiver<Vec<u8>>,
    agreed: Agreed,
    voice: Voice,
    mut sounds: watch::Receiver<&'static [Sound]>,
    keys: impl Fn(Way, char),
) {
    let mut playlist = Playlist {
        voice,
        codec: agreed.codec,
        sounds: &[],
        at: 0,
        playing: None,
    };
    playlist.start(*sounds.borrow_and_update());
    let mut listener = Listener::new(agreed);
    let mut speaker = Speaker::new(agreed.voice_payload_type);
    let mut tick = tokio::time::interval(FRAME_PERIOD);
    tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick(), if playlist.playing.is_some() => {
                if let Some(frame) = playlist.next_frame() {
                    out.send(speaker.packet(&frame)).await;
                }
            }
            changed = sounds.changed() => {
                if changed.is_err() {
                    break;
                }
                playlist.start(*sounds.borrow_and_update());
                speaker.marker = true;
                tick.reset_immediately();
            }
            packet = packets.recv() => match packet {
                Some(bytes) => listener.packet(&bytes, &keys),
                None => break,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::media::dtmf::tones_of;

    fn agreed(codec: Codec) -> Agreed {
        Agreed {
            codec,
            voice_payload_type: if codec == Codec::Pcmu { 0 } else { 8 },
            event_payload_type: Some(101),
        }
    }

    fn rtp_packet(payload_type: u8, marker: bool, timestamp: u32, payload: &[u8]) -> Vec<u8> {
        let mut bytes = vec![0u8; rtp::HEADER];
        rtp::write_header(&mut bytes, marker, payload_type, 1, timestamp, 7);
        bytes.extend_from_slice(payload);
        bytes
    }

    /// 20 ms frames of `key`'s tones (−10 dBm0 each) for `ms`, then as much silence.
    fn tone_frames(key: char, ms: usize, codec: Codec) -> Vec<Vec<u8>> {
        let (low, high) = tones_of(key).unwrap();
        let peak = g711::DBM0_PEAK * 0.316;
        let encode = match codec {
            Codec::Pcmu => g711::linear_to_ulaw,
            Codec::Pcma => g711::linear_to_alaw,
        };
        let samples: Vec<u8> = (0..ms * 8 * 2)
            .map(|n| {
                let t = n as f32 / 8000.0;
                let on = n < ms * 8;
                let x = if on {
                    peak * ((2.0 * std::f32::consts::PI * low * t).sin()
                        + (2.0 * std::f32::consts::PI * high * t).sin())
                } else {
                    0.0
                };
                encode(x as i16)
            })
            .collect();
        samples.chunks(FRAME).map(<[u8]>::to_vec).collect()
    }

    #[test]
    fn keys_come_by_telephone_event_and_in_the_audio_and_other_payloads_are_ignored() {
        for codec in [Codec::Pcmu, Codec::Pcma] {
            let found = Arc::new(Mutex::new(Vec::new()));
            let sink = found.clone();
            let keys = move |way: Way, key: char| sink.lock().unwrap().push((way, key));
            let mut listener = Listener::new(agreed(codec));
            // '7' by RFC 4733: three packets of one event, the last one its end.
            for (marker, end) in [(true, false), (false, false), (false, true)] {
                let flags = if end { 0x80 | 10 } else { 10 };
                listener.packet(&rtp_packet(101, marker, 800, &[7, flags, 0, 160]), &keys);
            }
            // '#' in the audio, 60 ms, in the agreed codec.
            for frame in tone_frames('#', 60, codec) {
                let pt = agreed(codec).voice_payload_type;
                listener.packet(&rtp_packet(pt, false, 0, &frame), &keys);
            }
            // The same tones under a payload type not agreed (comfort noise, 13): not audio.
            for frame in tone_frames('1', 60, codec) {
                listener.packet(&rtp_packet(13, false, 0, &frame), &keys);
            }
            listener.packet(b"not rtp", &keys);
            assert_eq!(
                *found.lock().unwrap(),
                vec![(Way::Rfc4733, '7'), (Way::InBand, '#')],
                "{codec:?}"
            );
        }
    }

    fn playlist(prompts: Prompts) -> Playlist {
        Playlist {
            voice: Voice {
                country: Country::Uk,
                prompts: Arc::new(prompts),
            },
            codec: Codec::Pcmu,
            sounds: &[],
            at: 0,
            playing: None,
        }
    }

    #[test]
    fn sounds_play_in_turn_prompts_only_where_set_and_a_repeating_tone_last_plays_on() {
        const PIN_ACCEPTED: &[Sound] = &[
            Sound::Tone(Tone::Confirm),
            Sound::Say(Prompt::Number),
            Sound::Tone(Tone::Dial),
        ];
        let dir = tempfile::tempdir().unwrap();
        let clip = dir.path().join("number.wav");
        // Two frames of a loud constant: easy to tell from the tones.
        let data = vec![g711::linear_to_ulaw(12000); 2 * FRAME];
        std::fs::write(&clip, crate::media::prompts::tests_wav(7, &data)).unwrap();
        let prompts = Prompts::load(&[(Prompt::Number, "n", clip.to_str().unwrap())]).unwrap();
        let mut with_prompt = playlist(prompts);
        with_prompt.start(PIN_ACCEPTED);
        let frames: Vec<[u8; FRAME]> = (0..40).map(|_| with_prompt.next_frame().unwrap()).collect();
        let loud = |f: &[u8; FRAME]| f.iter().all(|c| *c == g711::linear_to_ulaw(12000));
        // Confirmation: 600 ms (30 frames), then the prompt (2), then dial tone on.
        assert!(frames[..30].iter().all(|f| !loud(f)));
        assert!(frames[30..32].iter().all(loud));
        assert!(
            frames[32..]
                .iter()
                .all(|f| !loud(f) && f.iter().any(|c| *c != 0xFF))
        );
        assert!(with_prompt.next_frame().is_some(), "dial tone plays on");

        // Without prompts: straight from the confirmation to dial tone.
        let mut tones_only = playlist(Prompts::default());
        tones_only.start(PIN_ACCEPTED);
        let frames: Vec<[u8; FRAME]> = (0..32).map(|_| tones_only.next_frame().unwrap()).collect();
        let dial = TonePlayer::new(Country::Uk, Tone::Dial, Codec::Pcmu).next_frame();
        assert_eq!(frames[30], dial);
        // A prompt alone, not set: silence (nothing sent).
        tones_only.start(&[Sound::Say(Prompt::Pin)]);
        assert!(tones_only.next_frame().is_none());
    }

    #[test]
    fn the_stream_sent_keeps_sequence_and_clock_and_marks_each_talkspurt() {
        let mut speaker = Speaker::new(8);
        let frame = [0xD5u8; FRAME];
        let first = Packet::parse(speaker.packet(&frame)).map(|p| (p.marker, p.sequence));
        let second = speaker.packet(&frame).to_vec();
        let second = Packet::parse(&second).unwrap();
        assert_eq!(first, Some((true, second.sequence.wrapping_sub(1))));
        assert!(!second.marker);
        assert_eq!((second.payload_type, second.payload.len()), (8, FRAME));
    }
}
