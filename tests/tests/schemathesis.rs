//! schemathesis (PyPI; `scripts/test` installs it) against a live API on SQLite, generated from
//! the served OpenAPI document: each role's key on its own operations, no key on the
//! operational ones. It fails on any 5xx, any status or content type the document does not
//! name, and any body that does not match its schema. Bounded: `SECONDS` per role, a fixed
//! seed (`RINGLEDGER_SCHEMATHESIS_SEED` picks another).

use ringledger_tests::api_app::{TestApp, account, extension};
use ringledger_tests::harness::Backend;

const SECONDS: &str = "40";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_requests_get_only_documented_answers() {
    let app = TestApp::spawn(Backend::sqlite().await).await;
    // Something to find, so reads do more than 404.
    let owner = account(&app, "+441632960001").await;
    let (status, body) = extension(&app, &owner, "+447700900001").await;
    assert_eq!(status, 201, "{body}");
    let seed = std::env::var("RINGLEDGER_SCHEMATHESIS_SEED").unwrap_or_else(|_| "1".into());
    let schema = format!("{}/openapi.json", app.base);
    for (tag, key) in [
        ("admin", Some(&app.admin)),
        ("billing", Some(&app.billing)),
        ("audit", Some(&app.auditor)),
        ("operations", None),
    ] {
        // As a module, so no shim or PATH entry for its `st` script is needed.
        let mut st = tokio::process::Command::new("python3");
        st.args([
            "-m",
            "schemathesis.cli",
            "run",
            &schema,
            "--include-tag",
            tag,
            // An SSE tail never ends: its behaviour has tests of its own.
            "--exclude-path",
            "/v1/audit/events/live",
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,\
             response_schema_conformance",
            "--max-time",
            SECONDS,
            "--workers",
            "2",
            "--request-timeout",
            "10",
            "--seed",
            &seed,
            "--no-color",
        ]);
        if let Some(key) = key {
            st.args(["--header", &format!("Authorization: Bearer {key}")]);
        }
        let out = st
            .output()
            .await
            .expect("schemathesis: `python3 -m pip install schemathesis` (scripts/test does)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis found problems in the {tag} operations:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(text.contains(" passed"), "{text}");
    }
    app.shutdown().await;
}
