//! TCP: one task per connection reads messages framed by their Content-Length and writes the
//! responses queued for it. A blank-line keep-alive (RFC 5626 §4.4.1 "double CRLF") is
//! answered with a single CRLF. A connection whose framing breaks is closed: the stream can
//! no longer be trusted to be in step.
//!
//! Connections are bounded: in total and per source address (past either cap a new
//! connection is closed at once); a message must arrive whole within `message_timeout` of its
//! first byte (and a new connection's first message within that of the accept), and a
//! connection quiet for `idle_timeout` is closed. When accepting fails (no file descriptors
//! left) the loop backs off instead of spinning, and says so once per interval.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::connections::Place;
pub use super::connections::{Connections, TcpLimits};
use crate::edge::Edge;
use crate::message::MAX_MESSAGE;
use crate::message::normalize::{declared_length, header_end};
use crate::peer_path::PeerPath;

/// How long the accept loop waits after a failed accept, at first and at most.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));
/// How long a closing connection's queued responses may take to go out.
const WRITE_DRAIN: Duration = Duration::from_secs(2);
/// At most one log line per this long about refused connections or failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Says something at most once per `LOG_EVERY`, with how many times it happened meanwhile.
struct Quiet {
    last: Option<Instant>,
    since: u64,
}

impl Quiet {
    fn tick(&mut self, now: Instant) -> Option<u64> {
        self.since += 1;
        if self.last.is_some_and(|l| now.duration_since(l) < LOG_EVERY) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.since))
    }
}

pub async fn serve(edge: Arc<Edge>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    let limits = edge.tcp_limits.clone();
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut failing = Quiet {
        last: None,
        since: 0,
    };
    let mut refusing = Quiet {
        last: None,
        since: 0,
    };
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(r) => r,
            Err(e) => {
                // Typically EMFILE/ENFILE: the connection stays queued in the kernel, so
                // retrying at once would spin. Wait, longer each time, and say so rarely.
                if let Some(n) = failing.tick(Instant::now()) {
                    tracing::warn!(error = %e, failures = n, "TCP accept failing; backing off");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.wait_for(|s| *s) => return,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
                continue;
            }
        };
        backoff = ACCEPT_BACKOFF.0;
        let Some(place) = edge.tcp_connections.admit(peer.ip(), &limits) else {
            if let Some(n) = refusing.tick(Instant::now()) {
                tracing::warn!(
                    target: "ringledger::security",
                    source = %peer.ip(), refused = n,
                    "TCP connection refused: connection limit reached"
                );
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            edge.clone(),
            stream,
            peer,
            stopped.clone(),
            place,
            limits.clone(),
        ));
    }
}

/// What the framing found at the front of the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    /// Need more bytes.
    Partial,
    /// Leading CRLFs: `n` bytes of keep-alive; `ping` when a double CRLF asks for a pong.
    KeepAlive { len: usize, ping: bool },
    /// A whole message of this many bytes.
    Message(usize),
    /// The stream is out of step.
    Broken(String),
}

/// What is known of the message at the front of a stream buffer from earlier looks, so bytes
/// arriving one at a time cost each look only the new bytes (not the whole buffer again).
/// Reset when the front of the buffer is taken.
#[derive(Debug, Default)]
pub struct Seen {
    /// Bytes known to hold no end of headers.
    searched: usize,
    /// The header section's length and the body's, once the end of headers was found.
    head: Option<(usize, usize)>,
}

/// Frames the next message off a stream buffer.
pub fn frame(buf: &[u8], seen: &mut Seen) -> Frame {
    let blank = buf
        .iter()
        .take_while(|b| **b == b'\r' || **b == b'\n')
        .count();
    if blank > 0 {
        return Frame::KeepAlive {
            len: blank,
            ping: buf[..blank].windows(4).any(|w| w == b"\r\n\r\n"),
        };
    }
    let (end, body) = match seen.head {
        Some(head) => head,
        None => {
            let from = seen.searched.saturating_sub(3);
            let Some(end) = header_end(&buf[from..]).map(|e| e + from) else {
                seen.searched = buf.len();
                return if buf.len() > MAX_MESSAGE {
                    Frame::Broken("headers longer than the message limit".into())
                } else {
                    Frame::Partial
                };
            };
            // A stream message must carry Content-Length; without one it is taken to have no
            // body.
            let body = match declared_length(&buf[..end]) {
                Ok(n) => n.unwrap_or(0),
                Err(e) => return Frame::Broken(e.to_string()),
            };
            if end + body > MAX_MESSAGE {
                return Frame::Broken("message larger than the limit".into());
            }
            seen.head = Some((end, body));
            (end, body)
        }
    };
    if buf.len() < end + body {
        Frame::Partial
    } else {
        Frame::Message(end + body)
    }
}

async fn connection(
    edge: Arc<Edge>,
    stream: TcpStream,
    peer: SocketAddr,
    mut stopped: watch::Receiver<bool>,
    place: Place,
    limits: TcpLimits,
) {
    let (mut reader, mut writer) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(64);
    edge.connection_opened(peer, tx.clone());
    let write_task = tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            if writer.write_all(&bytes).await.is_err() {
                return;
            }
        }
    });
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = vec![0u8; 16 * 1024];
    // When the message being read began (the accept, for a connection's first message), and
    // whether any message has arrived yet.
    let mut message_since = Some(Instant::now());
    let mut seen = Seen::default();
    'read: loop {
        let deadline = match message_since {
            Some(since) => since + limits.message_timeout,
            None => Instant::now() + limits.idle_timeout,
        };
        let n = tokio::select! {
            r = reader.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = tokio::time::sleep_until(deadline.into()) => {
                edge.tcp_connections.timed_out.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(%peer, partial = buf.len(), "closing a TCP connection: timed out");
                break;
            }
            _ = stopped.wait_for(|s| *s) => break,
        };
        if buf.is_empty() && message_since.is_none() {
            message_since = Some(Instant::now());
        }
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame(&buf, &mut seen) {
                Frame::Partial => break,
                Frame::KeepAlive { len, ping } => {
                    buf.drain(..len);
                    seen = Seen::default();
                    if buf.is_empty() {
                        message_since = None;
                    }
                    if ping {
                        let _ = tx.send(b"\r\n".to_vec()).await;
                    }
                }
                Frame::Message(len) => {
                    let message: Vec<u8> = buf.drain(..len).collect();
                    seen = Seen::default();
                    message_since = (!buf.is_empty()).then(Instant::now);
                    let weight = super::udp::kilobytes(message.len());
                    let Ok(permit) = edge.in_flight.clone().acquire_many_owned(weight).await else {
                        break 'read;
                    };
                    let edge = edge.clone();
                    let reply = PeerPath::Stream(tx.clone(), peer);
                    tokio::spawn(async move {
                        edge.receive(&message, peer, reply).await;
                        drop(permit);
                    });
                }
                Frame::Broken(reason) => {
                    tracing::debug!(%peer, %reason, "closing a TCP connection whose framing broke");
                    edge.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    break 'read;
                }
            }
        }
    }
    edge.connection_closed(peer, &tx);
    drop(tx);
    // Calls may still hold the connection's sender; what is queued gets a moment to go out,
    // then the connection is closed whoever holds it (a peer that does not read cannot keep it).
    let mut write_task = write_task;
    if tokio::time::timeout(WRITE_DRAIN, &mut write_task)
        .await
        .is_err()
    {
        write_task.abort();
    }
    drop(place);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_by_content_length_including_compact_l() {
        let one = b"OPTIONS sip:x SIP/2.0\r\nl: 5\r\n\r\nhello";
        let mut two = one.to_vec();
        two.extend_from_slice(b"OPTIONS sip:y SIP/2.0\r\n");
        assert_eq!(frame(&two, &mut Seen::default()), Frame::Message(one.len()));
        assert_eq!(
            frame(&one[..one.len() - 1], &mut Seen::default()),
            Frame::Partial
        );
        assert_eq!(
            frame(b"OPTIONS sip:y SIP/2.0\r\n", &mut Seen::default()),
            Frame::Partial
        );
    }

    #[test]
    fn keepalives_and_broken_framing_are_recognised() {
        assert_eq!(
            frame(b"\r\n\r\nOPTIONS", &mut Seen::default()),
            Frame::KeepAlive { len: 4, ping: true }
        );
        assert_eq!(
            frame(b"\r\n", &mut Seen::default()),
            Frame::KeepAlive {
                len: 2,
                ping: false
            }
        );
        assert!(matches!(
            frame(
                b"OPTIONS sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n",
                &mut Seen::default()
            ),
            Frame::Broken(_)
        ));
        assert!(matches!(
            frame(&vec![b'A'; MAX_MESSAGE + 2], &mut Seen::default()),
            Frame::Broken(_)
        ));
    }

    #[test]
    fn a_message_sent_byte_by_byte_is_looked_at_once_per_new_byte() {
        let message =
            b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nl: 3\r\n\r\nabc";
        let mut seen = Seen::default();
        let mut frames = Vec::new();
        for n in 1..=message.len() {
            frames.push(frame(&message[..n], &mut seen));
            if n < message.len() - 3 {
                assert!(seen.searched == n || seen.head.is_some(), "{n}: {seen:?}");
            }
        }
        assert_eq!(frames.last(), Some(&Frame::Message(message.len())));
        assert!(
            frames[..frames.len() - 1]
                .iter()
                .all(|f| *f == Frame::Partial)
        );
    }
}
