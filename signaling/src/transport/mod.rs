//! Sockets: UDP (one datagram, one message) and TCP (messages framed by Content-Length,
//! RFC 3261 §18.3). Each hands whole messages to the edge.

pub mod connections;
pub mod tcp;
pub mod udp;
