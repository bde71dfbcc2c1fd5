//! One call's relay: two sides (caller, callee), each an RTP and an RTCP socket. A packet
//! arriving on one side is sent from the other side's socket of the same kind to where that
//! side's peer is: the address its own packets come from once it has sent any (symmetric
//! latching, which gets through NAT), else the address its session description named.
//!
//! Latching is strict (rtpengine's strict-source behaviour): a side latches only to a packet
//! from an address it may send from — the IP its session description announced, or the IP
//! its signaling came from (a phone behind NAT announces a private address) — and once
//! latched, packets from anywhere else are dropped and counted. An outsider spraying the port
//! range neither hears a call nor speaks into it. Ports are drawn at random from the range.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Media;

/// How many taken ports are tried before giving up (others may hold some of the range).
const BIND_ATTEMPTS: usize = 16;
const MAX_PACKET: usize = 2048;
/// RTP packets a tapped side may have waiting for the endpoint before more are dropped.
const TAP_QUEUE: usize = 32;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Caller = 0,
    Callee = 1,
}

/// An RTP/RTCP socket pair on two consecutive ports; the port goes back to the pool on drop.
struct Pair {
    sockets: [Arc<UdpSocket>; 2],
    port: u16,
    media: Arc<Media>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        self.media.give_back(self.port);
    }
}

fn bind_pair(media: &Arc<Media>) -> std::io::Result<Pair> {
    for _ in 0..BIND_ATTEMPTS {
        let Some(port) = media.take() else {
            return Err(std::io::Error::other("no media ports left"));
        };
        let bind = |p: u16| -> std::io::Result<UdpSocket> {
            let socket = std::net::UdpSocket::bind(SocketAddr::new(media.settings.address, p))?;
            socket.set_nonblocking(true)?;
            UdpSocket::from_std(socket)
        };
        match (bind(port), bind(port + 1)) {
            (Ok(rtp), Ok(rtcp)) => {
                return Ok(Pair {
                    sockets: [Arc::new(rtp), Arc::new(rtcp)],
                    port,
                    media: media.clone(),
                });
            }
            // Held by someone else: back to the pool (at its end) and try the next.
            _ => media.give_back(port),
        }
    }
    Err(std::io::Error::other("no media port pair could be bound"))
}

struct Shared {
    /// Where each side's RTP and RTCP go: [side][0 = RTP, 1 = RTCP].
    peers: Mutex<[[Option<SocketAddr>; 2]; 2]>,
    /// Bumped on every change of `peers`, so the forwarding tasks keep their own copy of
    /// where to send and take the lock only when it changed.
    peers_version: AtomicU64,
    /// Whether a side's addresses were learnt from its packets (then its SDP no longer counts,
    /// until a new session description names another address).
    latched: Mutex<[bool; 2]>,
    /// Where each side's session description last said it receives RTP.
    announced: Mutex<[Option<SocketAddr>; 2]>,
    /// Bumped when a side is to be latched anew (its session moved): each forwarding task
    /// forgets the source it latched to.
    epoch: [AtomicU64; 2],
    /// The IPs each side may send from (announced in its session description, or its
    /// signaling's source).
    allowed: Mutex<[Vec<IpAddr>; 2]>,
    /// Whether media may be sent to each side (closed while its session says it receives
    /// nothing, or the other side sends nothing: a call on hold).
    open: [AtomicBool; 2],
    /// A side's RTP taken by an endpoint of the edge's own (the keypad menu) instead of going
    /// to the other side, and a version bumped on each change (as `peers_version`).
    taps: Mutex<[Option<mpsc::Sender<Vec<u8>>>; 2]>,
    taps_version: AtomicU64,
    started: Instant,
    /// Milliseconds after `started` of the last packet relayed (or taken by a tap).
    last_packet_ms: AtomicU64,
    media: Arc<Media>,
}

pub struct Relay {
    pairs: [Pair; 2],
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Relay {
    /// Binds both sides' ports and starts relaying.
    pub fn start(media: &Arc<Media>) -> std::io::Result<Self> {
        let pairs = [bind_pair(media)?, bind_pair(media)?];
        let shared = Arc::new(Shared {
            peers: Mutex::new([[None; 2]; 2]),
            peers_version: AtomicU64::new(0),
            latched: Mutex::new([false; 2]),
            announced: Mutex::new([None; 2]),
            epoch: [AtomicU64::new(0), AtomicU64::new(0)],
            allowed: Mutex::new([Vec::new(), Vec::new()]),
            open: [AtomicBool::new(true), AtomicBool::new(true)],
            taps: Mutex::new([None, None]),
            taps_version: AtomicU64::new(0),
            started: Instant::now(),
            last_packet_ms: AtomicU64::new(0),
            media: media.clone(),
        });
        let mut tasks = Vec::with_capacity(4);
        for from in [Side::Caller, Side::Callee] {
            let to = match from {
                Side::Caller => Side::Callee,
                Side::Callee => Side::Caller,
            };
            for kind in 0..2 {
                tasks.push(tokio::spawn(forward(
                    pairs[from as usize].sockets[kind].clone(),
                    pairs[to as usize].sockets[kind].clone(),
                    from,
                    to,
                    kind,
                    shared.clone(),
                )));
            }
        }
        Ok(Self {
            pairs,
            shared,
            tasks,
        })
    }

    /// The RTP port facing `side` (RTCP is the next one up).
    pub fn port(&self, side: Side) -> u16 {
        self.pairs[side as usize].port
    }

    /// Where `side` said (in its session description) it receives RTP, and the IP that
    /// session description came from over SIP: the side's media is taken from those two IPs
    /// only. The destination is ignored once the side has sent packets of its own — unless a
    /// new session description names another address (the side moved: a re-INVITE): then
    /// the side is latched anew, from the new address's IPs only.
    pub fn peer_from_sdp(&self, side: Side, rtp: SocketAddr, signalled_from: IpAddr) {
        let s = side as usize;
        let moved = {
            let mut announced = self.shared.announced.lock().expect("announced");
            let moved = announced[s].is_some_and(|before| before != rtp);
            announced[s] = Some(rtp);
            moved
        };
        {
            let mut allowed = self.shared.allowed.lock().expect("allowed");
            if moved {
                allowed[s].clear();
            }
            for ip in [rtp.ip(), signalled_from] {
                if !allowed[s].contains(&ip) {
                    allowed[s].push(ip);
                }
            }
        }
        {
            let mut latched = self.shared.latched.lock().expect("latched");
            if moved {
                latched[s] = false;
                self.shared.epoch[s].fetch_add(1, Ordering::Release);
            } else if latched[s] {
                return;
            }
        }
        let rtcp = SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1));
        self.shared.peers.lock().expect("peers")[side as usize] = [Some(rtp), Some(rtcp)];
        self.shared.peers_version.fetch_add(1, Ordering::Release);
    }

    /// Lets media go to `side` (or stops it there), as the call's session descriptions say.
    pub fn set_open(&self, side: Side, open: bool) {
        self.shared.open[side as usize].store(open, Ordering::Relaxed);
    }

    /// Takes `side`'s RTP for an endpoint of the edge's own: its packets (from its latched
    /// source, as ever) come on the returned channel instead of going to the other side, and
    /// the endpoint sends to the side through the returned [`SideOut`].
    pub fn tap(&self, side: Side) -> (SideOut, mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = mpsc::channel(TAP_QUEUE);
        self.shared.taps.lock().expect("taps")[side as usize] = Some(tx);
        self.shared.taps_version.fetch_add(1, Ordering::Release);
        let out = SideOut {
            socket: self.pairs[side as usize].sockets[0].clone(),
            shared: self.shared.clone(),
            side,
            version_seen: u64::MAX,
            peer: None,
        };
        (out, rx)
    }

    /// Gives `side`'s RTP back to the relay: it goes to the other side again.
    pub fn untap(&self, side: Side) {
        self.shared.taps.lock().expect("taps")[side as usize] = None;
        self.shared.taps_version.fetch_add(1, Ordering::Release);
    }

    /// How long since the last packet relayed (or since the relay started).
    pub fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.shared.last_packet_ms.load(Ordering::Relaxed));
        self.shared.started.elapsed().saturating_sub(last)
    }
}

/// An endpoint's way to send RTP to one side of the relay: from that side's RTP socket, to
/// where the relay sends that side's media (its latched source, else its session's address).
pub struct SideOut {
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    side: Side,
    version_seen: u64,
    peer: Option<SocketAddr>,
}

impl SideOut {
    /// Sends `packet` to the side, if the relay knows where it is and media may go to it.
    pub async fn send(&mut self, packet: &[u8]) {
        let version = self.shared.peers_version.load(Ordering::Acquire);
        if version != self.version_seen {
            self.version_seen = version;
            self.peer = self.shared.peers.lock().expect("peers")[self.side as usize][0];
        }
        let Some(peer) = self.peer else {
            return;
        };
        if !self.shared.open[self.side as usize].load(Ordering::Relaxed) {
            return;
        }
        let _ = self.socket.send_to(packet, peer).await;
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn forward(
    inbound: Arc<UdpSocket>,
    outbound: Arc<UdpSocket>,
    from: Side,
    to: Side,
    kind: usize,
    shared: Arc<Shared>,
) {
    let mut buf = vec![0u8; MAX_PACKET];
    // This task's copies: the address its side's packets were latched to, and where they go.
    let mut latched_to: Option<SocketAddr> = None;
    let mut destination: Option<SocketAddr> = None;
    let mut version_seen = u64::MAX;
    let mut epoch_seen = 0;
    // Where this side's RTP goes instead, while an endpoint of the edge's own takes it.
    let mut tap: Option<mpsc::Sender<Vec<u8>>> = None;
    let mut taps_seen = u64::MAX;
    loop {
        let Ok((len, source)) = inbound.recv_from(&mut buf).await else {
            continue;
        };
        let epoch = shared.epoch[from as usize].load(Ordering::Acquire);
        if epoch != epoch_seen {
            // The side moved: latch anew.
            epoch_seen = epoch;
            latched_to = None;
        }
        if latched_to != Some(source) {
            let may_latch = latched_to.is_none()
                && shared.allowed.lock().expect("allowed")[from as usize].contains(&source.ip());
            if !may_latch {
                // A stray: not from this side's peer (a port scan, or a hijack attempt).
                shared.media.packets_stray.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            latched_to = Some(source);
            let mut peers = shared.peers.lock().expect("peers");
            if peers[from as usize][kind] != Some(source) {
                peers[from as usize][kind] = Some(source);
                shared.peers_version.fetch_add(1, Ordering::Release);
            }
            shared.latched.lock().expect("latched")[from as usize] = true;
        }
        if kind == 0 {
            let taps = shared.taps_version.load(Ordering::Acquire);
            if taps != taps_seen {
                taps_seen = taps;
                tap = shared.taps.lock().expect("taps")[from as usize].clone();
            }
            if let Some(tap) = &tap {
                // A full queue drops the packet, as a congested network would.
                let _ = tap.try_send(buf[..len].to_vec());
                let ms = shared.started.elapsed().as_millis() as u64;
                shared.last_packet_ms.store(ms, Ordering::Relaxed);
                continue;
            }
        }
        let version = shared.peers_version.load(Ordering::Acquire);
        if version != version_seen {
            version_seen = version;
            destination = shared.peers.lock().expect("peers")[to as usize][kind];
        }
        let Some(destination) = destination else {
            continue;
        };
        if !shared.open[to as usize].load(Ordering::Relaxed) {
            // On hold that way: the side is not to hear it.
            continue;
        }
        if outbound.send_to(&buf[..len], destination).await.is_ok() {
            shared.media.packets_relayed.fetch_add(1, Ordering::Relaxed);
            let ms = shared.started.elapsed().as_millis() as u64;
            shared.last_packet_ms.store(ms, Ordering::Relaxed);
        }
    }
}
