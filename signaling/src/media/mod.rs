//! The RTP relay: per call, one pair of ports (RTP, RTCP) facing the caller and one facing
//! the callee, from `media.ports`; the session descriptions are rewritten to point at them
//! (`sdp.rs`), and each packet that arrives on one side leaves from the other (`relay.rs`).

pub mod dtmf;
pub mod g711;
pub mod keypad;
pub mod prompts;
pub mod relay;
pub mod rtp;
pub mod sdp;
pub mod tones;

use std::net::IpAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Relay settings (config `media.*`).
#[derive(Debug, Clone)]
pub struct MediaSettings {
    /// The address put in rewritten session descriptions and bound for media.
    pub address: IpAddr,
    /// The inclusive port range (RTP on even ports, RTCP on the odd one above).
    pub ports: (u16, u16),
    /// A call whose media stops for this long is ended (`media_timeout`).
    pub timeout: Duration,
    /// The operator's voice prompts for the keypad menu (none: tones alone).
    pub prompts: std::sync::Arc<prompts::Prompts>,
}

/// Even ports not in use, handed out at random (an outsider cannot guess the next call's
/// ports, and a late packet for an ended call rarely reaches the next one).
pub struct Media {
    pub settings: MediaSettings,
    free: Mutex<Vec<u16>>,
    /// Packets relayed since start (metrics).
    pub packets_relayed: AtomicU64,
    /// Packets dropped for coming from an address the call's side may not send from.
    pub packets_stray: AtomicU64,
}

impl Media {
    pub fn new(settings: MediaSettings) -> Arc<Self> {
        let (lo, hi) = settings.ports;
        let free = (lo..hi).step_by(2).collect();
        Arc::new(Self {
            settings,
            free: Mutex::new(free),
            packets_relayed: AtomicU64::new(0),
            packets_stray: AtomicU64::new(0),
        })
    }

    fn take(&self) -> Option<u16> {
        let mut free = self.free.lock().expect("media ports");
        if free.is_empty() {
            return None;
        }
        let random = u64::from_le_bytes(uuid::Uuid::new_v4().as_bytes()[..8].try_into().ok()?);
        let i = (random % free.len() as u64) as usize;
        Some(free.swap_remove(i))
    }

    fn give_back(&self, port: u16) {
        self.free.lock().expect("media ports").push(port);
    }

    /// Ports free for new relays (two per call).
    pub fn free_ports(&self) -> usize {
        self.free.lock().expect("media ports").len()
    }
}
