//! Shared harness for ringledger's end-to-end tests: fresh stores on every backend, and the
//! event-store contract suite that each backend must pass.

pub mod api_app;
pub mod billing_reference;
pub mod carrier;
pub mod contract;
pub mod harness;
pub mod http_sink;
pub mod pjsua2;
pub mod sip_edge;
pub mod sipp;

/// Declares, for each named `async fn(Backend)` of the calling test file, a module with a
/// SQLite and a PostgreSQL test running it.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(Backend::sqlite().await).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(Backend::postgres().await).await
            }
        }
    )*};
}
