//! UDP: a receive loop per core on one socket; each request is handled on its own task so a
//! REGISTER waiting for its event to be durable never holds up the socket.

use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::edge::Edge;
use crate::message::MAX_MESSAGE;
use crate::peer_path::PeerPath;

/// A message's weight against the edge's in-flight budget: its size in kilobytes, rounded up
/// (at least one).
pub(crate) fn kilobytes(len: usize) -> u32 {
    (len / 1024 + 1) as u32
}

pub async fn serve(edge: Arc<Edge>, socket: Arc<UdpSocket>, mut stopped: watch::Receiver<bool>) {
    let mut buf = vec![0u8; MAX_MESSAGE + 1];
    loop {
        let (len, source) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP port unreachable and the like surface here on Linux; keep serving.
                    tracing::debug!(error = %e, "UDP receive error");
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => return,
        };
        // Waits while the edge already handles its budget of received bytes.
        let Ok(permit) = edge
            .in_flight
            .clone()
            .acquire_many_owned(kilobytes(len))
            .await
        else {
            return;
        };
        let bytes = buf[..len].to_vec();
        let edge = edge.clone();
        let reply = PeerPath::Udp(socket.clone(), source);
        tokio::spawn(async move {
            edge.receive(&bytes, source, reply).await;
            drop(permit);
        });
    }
}
