//! How the edge reaches a peer: the UDP socket and the peer's address, or the TCP connection
//! the peer's request came on.

use std::net::SocketAddr;
use std::sync::Arc;

use domain::device::Transport;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

/// How the edge reaches a peer: a UDP address, or the TCP connection the peer's request came
/// on (responses, and requests inside a dialog the peer opened over it).
#[derive(Clone)]
pub enum PeerPath {
    Udp(Arc<UdpSocket>, SocketAddr),
    /// A connection, and the peer's address at the other end.
    Stream(mpsc::Sender<Vec<u8>>, SocketAddr),
}

impl PeerPath {
    pub(crate) fn transport(&self) -> Transport {
        match self {
            PeerPath::Udp(..) => Transport::Udp,
            PeerPath::Stream(..) => Transport::Tcp,
        }
    }

    /// Whether the transport delivers reliably (no retransmissions needed).
    pub fn is_reliable(&self) -> bool {
        matches!(self, PeerPath::Stream(..))
    }

    /// The peer's address (for UDP, where replies go; its IP is always the source's).
    pub fn peer(&self) -> SocketAddr {
        match self {
            PeerPath::Udp(_, to) | PeerPath::Stream(_, to) => *to,
        }
    }

    /// The transport as a Via names it.
    pub fn transport_name(&self) -> &'static str {
        if self.is_reliable() { "TCP" } else { "UDP" }
    }

    pub(crate) async fn send(&self, bytes: Vec<u8>) {
        match self {
            PeerPath::Udp(socket, to) => {
                if let Err(e) = socket.send_to(&bytes, to).await {
                    tracing::debug!(error = %e, %to, "UDP send failed");
                }
            }
            PeerPath::Stream(tx, _) => {
                // A closed connection: the peer is gone and will retry on a new one.
                let _ = tx.send(bytes).await;
            }
        }
    }
}

impl std::fmt::Debug for PeerPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerPath::Udp(_, to) => write!(f, "UDP {to}"),
            PeerPath::Stream(_, peer) => write!(f, "TCP {peer}"),
        }
    }
}
