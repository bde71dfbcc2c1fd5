//! What a request handler answers: a status, an optional reason phrase and extra headers. The
//! edge turns it into a response through the request's server transaction.

pub struct Answer {
    pub status: u16,
    pub reason: Option<String>,
    pub headers: Vec<rsip::Header>,
}

impl Answer {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            reason: None,
            headers: vec![],
        }
    }

    pub fn with_reason(status: u16, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: Some(reason.into()),
            headers: vec![],
        }
    }

    pub fn header(mut self, header: rsip::Header) -> Self {
        self.headers.push(header);
        self
    }
}
