//! Any bytes as a SIP message from the network: the edge's parser (normalisation, Via
//! stamping, rsip), the response it would build, and TCP framing fed one chunk at a time.
//! None of them may panic, and what the edge answers must parse again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use signaling::message::{self, Message, ParseError};
use signaling::transport::tcp::{Frame, Seen, frame};

fuzz_target!(|data: &[u8]| {
    let source = "192.0.2.7:5060".parse().unwrap();
    match message::parse(data, source) {
        Ok(Message::Request(r)) => {
            let response = message::build_response(&r.raw, 400, None, Some("t"), vec![], vec![]);
            let bytes = message::encode(&response);
            assert!(
                matches!(message::parse(&bytes, source), Ok(Message::Response(_))),
                "a response the edge builds parses again: {}",
                String::from_utf8_lossy(&bytes)
            );
            let _ = message::response_target(&r.raw, source);
        }
        Err(ParseError::Refused {
            raw,
            status,
            reason,
        }) => {
            let response =
                message::build_response(&raw, status, Some(&reason), Some("t"), vec![], vec![]);
            let _ = message::encode(&response);
        }
        Ok(Message::Response(_)) | Err(ParseError::Dropped(_)) => {}
    }
    // The same bytes as a TCP stream arriving in pieces: framing must agree with itself.
    let mut seen = Seen::default();
    let step = data.first().map_or(1, |b| usize::from(*b % 16) + 1);
    let mut end = 0;
    while end < data.len() {
        end = (end + step).min(data.len());
        match frame(&data[..end], &mut seen) {
            Frame::Partial => {}
            Frame::Message(n) => {
                assert!(n <= end);
                break;
            }
            Frame::KeepAlive { len, .. } => {
                assert!(len <= end);
                break;
            }
            Frame::Broken(_) => break,
        }
    }
});
