//! The event-store contract, run against every backend: SQLite and PostgreSQL always;
//! EventStoreDB when built with `--features eventstoredb` and `EVENTSTORE_URL` is set.

macro_rules! contract_suite {
    ($backend:ident, $make:expr, $rounds:expr) => {
        contract_suite!(@cases $backend, $make, $rounds, [
            append_then_read_back_the_envelope,
            expected_versions_are_enforced,
            two_writers_race_on_one_stream,
            idempotent_retry_after_a_lost_acknowledgement,
            a_failure_mid_append_leaves_none_of_it,
            subscriptions_catch_up_then_go_live,
            acknowledged_events_survive_a_reopen,
            bad_appends_are_refused,
        ]);
    };
    (@cases $backend:ident, $make:expr, $rounds:expr, [$($case:ident),* $(,)?]) => {
        mod $backend {
            #[allow(unused_imports)]
            use ringledger_tests::harness::Backend;
            use ringledger_tests::contract;

            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let Some(b): Option<Backend> = $make else {
                        eprintln!("skipped: backend not configured");
                        return;
                    };
                    contract::$case(&b).await;
                }
            )*

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn concurrent_writers_and_a_subscriber() {
                let Some(b): Option<Backend> = $make else {
                    eprintln!("skipped: backend not configured");
                    return;
                };
                contract::concurrent_writers_and_a_subscriber(&b, $rounds).await;
            }
        }
    };
}

contract_suite!(sqlite, Some(Backend::sqlite().await), 5);
contract_suite!(postgres, Some(Backend::postgres().await), 30);
#[cfg(feature = "eventstoredb")]
contract_suite!(eventstoredb, Backend::eventstoredb(), 5);
