//! What a request handler answers: a status, an optional reason phrase, extra headers and a
//! body. The edge turns it into a response through the request's server transaction.

use rsip::headers::UntypedHeader;

#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<rsip::Header>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            reason: None,
            headers: vec![],
            body: vec![],
        }
    }

    pub fn with_reason(status: u16, reason: impl Into<String>) -> Self {
        Self {
            reason: Some(reason.into()),
            ..Self::status(status)
        }
    }

    pub fn header(mut self, header: rsip::Header) -> Self {
        self.headers.push(header);
        self
    }

    /// A session description (or other body) of `content_type`.
    pub fn body(mut self, content_type: &str, body: Vec<u8>) -> Self {
        if !body.is_empty() {
            self.headers
                .push(rsip::Header::ContentType(rsip::headers::ContentType::new(
                    content_type,
                )));
            self.body = body;
        }
        self
    }
}
