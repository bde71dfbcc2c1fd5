//! TCP: one task per connection reads messages framed by their Content-Length and writes the
//! responses queued for it. A blank-line keep-alive (RFC 5626 §4.4.1 "double CRLF") is
//! answered with a single CRLF. A connection whose framing breaks is closed: the stream can
//! no longer be trusted to be in step.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use crate::edge::{Edge, PeerPath};
use crate::message::MAX_MESSAGE;
use crate::message::normalize::{declared_length, header_end};

pub async fn serve(edge: Arc<Edge>, listener: TcpListener, mut stopped: watch::Receiver<bool>) {
    loop {
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(error = %e, "TCP accept failed");
                    continue;
                }
            },
            _ = stopped.wait_for(|s| *s) => return,
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(edge.clone(), stream, peer, stopped.clone()));
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

/// Frames the next message off a stream buffer.
pub fn frame(buf: &[u8]) -> Frame {
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
    let Some(end) = header_end(buf) else {
        return if buf.len() > MAX_MESSAGE {
            Frame::Broken("headers longer than the message limit".into())
        } else {
            Frame::Partial
        };
    };
    // A stream message must carry Content-Length; without one it is taken to have no body.
    let body = match declared_length(&buf[..end]) {
        Ok(n) => n.unwrap_or(0),
        Err(e) => return Frame::Broken(e.to_string()),
    };
    if end + body > MAX_MESSAGE {
        return Frame::Broken("message larger than the limit".into());
    }
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
    'read: loop {
        let n = tokio::select! {
            r = reader.read(&mut chunk) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = stopped.wait_for(|s| *s) => break,
        };
        buf.extend_from_slice(&chunk[..n]);
        loop {
            match frame(&buf) {
                Frame::Partial => break,
                Frame::KeepAlive { len, ping } => {
                    buf.drain(..len);
                    if ping {
                        let _ = tx.send(b"\r\n".to_vec()).await;
                    }
                }
                Frame::Message(len) => {
                    let message: Vec<u8> = buf.drain(..len).collect();
                    let edge = edge.clone();
                    let reply = PeerPath::Stream(tx.clone());
                    tokio::spawn(async move { edge.receive(&message, peer, reply).await });
                }
                Frame::Broken(reason) => {
                    tracing::debug!(%peer, %reason, "closing a TCP connection whose framing broke");
                    edge.stats
                        .dropped
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    break 'read;
                }
            }
        }
    }
    edge.connection_closed(peer, &tx);
    drop(tx);
    let _ = write_task.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_by_content_length_including_compact_l() {
        let one = b"OPTIONS sip:x SIP/2.0\r\nl: 5\r\n\r\nhello";
        let mut two = one.to_vec();
        two.extend_from_slice(b"OPTIONS sip:y SIP/2.0\r\n");
        assert_eq!(frame(&two), Frame::Message(one.len()));
        assert_eq!(frame(&one[..one.len() - 1]), Frame::Partial);
        assert_eq!(frame(b"OPTIONS sip:y SIP/2.0\r\n"), Frame::Partial);
    }

    #[test]
    fn keepalives_and_broken_framing_are_recognised() {
        assert_eq!(
            frame(b"\r\n\r\nOPTIONS"),
            Frame::KeepAlive { len: 4, ping: true }
        );
        assert_eq!(
            frame(b"\r\n"),
            Frame::KeepAlive {
                len: 2,
                ping: false
            }
        );
        assert!(matches!(
            frame(b"OPTIONS sip:x SIP/2.0\r\nContent-Length: x\r\n\r\n"),
            Frame::Broken(_)
        ));
        assert!(matches!(
            frame(&vec![b'A'; MAX_MESSAGE + 2]),
            Frame::Broken(_)
        ));
    }
}
