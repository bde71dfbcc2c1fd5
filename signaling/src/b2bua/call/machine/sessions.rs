//! What an answered call keeps of its sessions: each side's session description (heard and
//! given) and the session timers the sides asked for.

use std::time::{Duration, Instant};

use crate::b2bua::call::interface::Peer;

/// The session descriptions of an answered call: by side, the last one heard from it and the
/// one the edge gave it.
#[derive(Debug, Default)]
pub struct Sessions {
    caller: (Vec<u8>, Vec<u8>),
    callee: (Vec<u8>, Vec<u8>),
}

impl Sessions {
    pub fn set(&mut self, side: Peer, heard: &[u8], sent: &[u8]) {
        *self.side(side) = (heard.to_vec(), sent.to_vec());
    }

    fn side(&mut self, side: Peer) -> &mut (Vec<u8>, Vec<u8>) {
        match side {
            Peer::Caller => &mut self.caller,
            Peer::Leg(_) => &mut self.callee,
        }
    }

    /// The last session description heard from `side`, and the one the edge gave it.
    pub fn of(&self, side: Peer) -> &(Vec<u8>, Vec<u8>) {
        match side {
            Peer::Caller => &self.caller,
            Peer::Leg(_) => &self.callee,
        }
    }
}

/// A callee's session the edge refreshes (its 2xx made the edge, its UAC, the refresher): a
/// re-INVITE with the session unchanged every half interval; unless one succeeds by
/// `expires`, the call ends.
#[derive(Debug, Clone)]
pub struct EdgeRefresh {
    pub leg: usize,
    pub interval: Duration,
    /// When the next re-INVITE leaves (None while one is pending).
    pub next: Option<Instant>,
    pub expires: Instant,
    /// The branch of the re-INVITE pending.
    pub pending: Option<String>,
}

/// A side's session timer: it refreshes every `interval`; by `expires` the call ends unless
/// it did.
#[derive(Debug, Clone, Copy)]
pub struct SessionTimer {
    pub side: Peer,
    pub interval: Duration,
    pub expires: Instant,
}
