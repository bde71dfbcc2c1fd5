//! Shared harness for ringledger's end-to-end tests: fresh stores on every backend, and the
//! event-store contract suite that each backend must pass.

pub mod api_app;
pub mod carrier;
pub mod contract;
pub mod harness;
pub mod http_sink;
pub mod sip_edge;
pub mod sipp;
