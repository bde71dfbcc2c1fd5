//! Webhook receivers for tests: a real HTTP server on a real socket, so what the service
//! POSTs is read as a gateway would read it.

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A one-request HTTP server on 127.0.0.1 (an SMS gateway, a push gateway): its URL with
/// `path`, and the body of the request it gets, answered 200.
pub async fn one_post(path: &str) -> (String, tokio::task::JoinHandle<String>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = socket.read(&mut buf).await.unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if body.len() >= length {
                    socket
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .await
                        .unwrap();
                    return body.to_string();
                }
            }
            assert!(n > 0, "the client closed early");
        }
    });
    (url, task)
}
