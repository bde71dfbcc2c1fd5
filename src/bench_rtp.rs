//! `ringledger bench rtp-relay`: how many packets one core relays. The relays run on a
//! single-threaded runtime of their own (one core); one generator thread on the other core
//! sends RTP-sized packets (172 bytes: a 12-byte header and 20 ms of G.711) from each call's
//! caller side as fast as it can. The callee sides do not read (a full receive buffer drops
//! the packet after the relay's send), so the generator spends one system call per packet
//! and the relay two. Bounded by `seconds`.

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use signaling::media::relay::{Relay, Side};
use signaling::media::{Media, MediaSettings};

const PACKET: usize = 172;
const FIRST_PORT: u16 = 40000;

/// Relay ports on loopback from `first_port`, enough for `calls` calls (two pairs each) and
/// a few held by others; media never times out.
pub(crate) fn loopback_media(first_port: u16, calls: usize) -> anyhow::Result<Arc<Media>> {
    let last_port = first_port as usize + 4 * calls + 64;
    anyhow::ensure!(
        last_port <= u16::MAX as usize,
        "too many calls for the port range"
    );
    Ok(Media::new(MediaSettings {
        address: "127.0.0.1".parse()?,
        ports: (first_port, last_port as u16),
        timeout: Duration::from_secs(3600),
        prompts: Default::default(),
    }))
}

pub fn rtp_relay(calls: usize, seconds: u64) -> anyhow::Result<()> {
    let media = loopback_media(FIRST_PORT, calls)?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let relay_media = media.clone();
    let relays = std::thread::spawn(move || -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let mut relays = Vec::with_capacity(calls);
            for _ in 0..calls {
                relays.push(Relay::start(&relay_media)?);
            }
            let ports: Vec<(u16, u16)> = relays
                .iter()
                .map(|r| (r.port(Side::Caller), r.port(Side::Callee)))
                .collect();
            let _ = ready_tx.send(ports);
            let _ = stop_rx.await;
            drop(relays);
            Ok(())
        })
    });
    let ports = ready_rx.recv().context("the relays did not start")?;
    // Each call's two ends. The callee speaks first so the relay latches onto it.
    let mut ends = Vec::with_capacity(calls);
    for (caller_port, callee_port) in &ports {
        let caller = UdpSocket::bind("127.0.0.1:0")?;
        let callee = UdpSocket::bind("127.0.0.1:0")?;
        callee.send_to(&[0u8; PACKET], ("127.0.0.1", *callee_port))?;
        ends.push((
            caller,
            callee,
            SocketAddr::from(([127, 0, 0, 1], *caller_port)),
        ));
    }
    std::thread::sleep(Duration::from_millis(200));
    let start_count = media.packets_relayed.load(Ordering::Relaxed);
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let mut sent: u64 = 0;
    let packet = [0x80u8; PACKET];
    while Instant::now() < deadline {
        for (caller, _callee, relay) in &ends {
            if caller.send_to(&packet, relay).is_ok() {
                sent += 1;
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let relayed = media.packets_relayed.load(Ordering::Relaxed) - start_count;
    let _ = stop_tx.send(());
    relays
        .join()
        .map_err(|_| anyhow::anyhow!("the relay thread panicked"))??;
    println!(
        "calls={calls} seconds={elapsed:.1} sent={sent} relayed={relayed} \
         sent/s={:.0} relayed/s (one core)={:.0}",
        sent as f64 / elapsed,
        relayed as f64 / elapsed
    );
    Ok(())
}
