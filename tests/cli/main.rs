//! The `ringledger` binary as an operator runs it: a real process, real files, real signals.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod calls;
mod crash;

fn ringledger(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringledger"));
    c.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("RINGLEDGER_") {
            c.env_remove(k);
        }
    }
    c
}

/// Starts `serve` (stderr piped), waits up to 30 s for its ready line and returns the process
/// and that line; the rest of its log is read and dropped in the background, so the server
/// never blocks on a full pipe.
fn serve_until_ready(mut serve: Command) -> (std::process::Child, String) {
    let mut child = serve.stderr(Stdio::piped()).spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut log = Vec::new();
    let ready = loop {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) if line.contains("ringledger ready") => break line,
            Ok(line) => log.push(line),
            Err(e) => panic!("no ready line ({e}) in {log:#?}"),
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, ready)
}

/// The value of `key=` in the ready line (`api`, `sip`).
fn ready_field(ready: &str, key: &str) -> String {
    ready
        .split(&format!("{key}="))
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .trim_matches('"')
        .to_owned()
}

/// A one-shot HTTP/1.1 request (`Connection: close`); returns the status and the body.
fn http(addr: &str, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, String) {
    try_http(addr, method, path, key, &[], body).unwrap()
}

/// As `http`, with extra headers, and an error when the server cannot be reached or hangs up.
fn try_http(
    addr: &str,
    method: &str,
    path: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
    body: &str,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{extra}Content-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {response:?}")))?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

#[test]
fn serve_starts_with_no_config_serves_the_api_and_sip_and_exits_cleanly_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = ringledger(dir.path())
        .arg("serve")
        .env("RINGLEDGER_API__LISTEN", "127.0.0.1:0")
        .env("RINGLEDGER_SIP__LISTEN", "127.0.0.1:0")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Keep draining stderr so the server never writes into a closed pipe.
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let mut log = Vec::new();
    while !log.iter().any(|l: &String| l.contains("ringledger ready")) {
        match lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => log.push(line),
            Err(e) => panic!("no ready line ({e}) in {log:#?}"),
        }
    }
    assert!(
        dir.path().join("data/ringledger.db").exists(),
        "the default SQLite file is created under ./data"
    );
    let ready = log.iter().find(|l| l.contains("ringledger ready")).unwrap();
    let addr = ready
        .split("api=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no api address in {ready}"))
        .trim_matches('"')
        .to_owned();
    assert_eq!(http(&addr, "GET", "/healthz", None, ""), (200, "ok".into()));
    // A key made by another process while the server runs works at once.
    let created = ringledger(dir.path())
        .args(["keys", "create", "--role", "admin", "--name", "cli test"])
        .output()
        .unwrap();
    assert!(created.status.success(), "{created:?}");
    let key = String::from_utf8(created.stdout).unwrap().trim().to_owned();
    assert!(key.starts_with("rlk_"));
    assert_eq!(http(&addr, "GET", "/v1/accounts", None, "").0, 401);
    let (status, body) = http(&addr, "GET", "/v1/accounts", Some(&key), "");
    assert_eq!((status, body.as_str()), (200, "{\"items\":[]}"));

    // The SIP edge answers an OPTIONS probe over UDP on the address it reported.
    let sip = ready
        .split("sip=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no sip address in {ready}"))
        .to_owned();
    let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let me = probe.local_addr().unwrap();
    let options = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bKcli1\r\n\
         From: <sip:probe@{me}>;tag=1\r\nTo: <sip:{sip}>\r\nCall-ID: cli-probe\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    probe.send_to(options.as_bytes(), &sip).unwrap();
    let mut buf = [0u8; 4096];
    let n = probe.recv(&mut buf).unwrap();
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(reply.starts_with("SIP/2.0 200 OK\r\n"), "{reply}");
    assert!(reply.contains("Call-ID: cli-probe\r\n"), "{reply}");
    // The edge reports in the API's /metrics.
    let (status, metrics) = http(&addr, "GET", "/metrics", None, "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\nringledger_sip_messages_received_total 1\n"),
        "{metrics}"
    );

    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "serve did not exit after SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    reader.join().unwrap();
    log.extend(lines.try_iter());
    assert!(exit.success(), "{exit:?}: {log:#?}");
    assert!(log.iter().any(|l| l.contains("shutting down")), "{log:#?}");
}

#[test]
fn bad_config_gets_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let out = ringledger(dir.path())
        .arg("migrate")
        .env("RINGLEDGER_STORE__URL", "mysql://127.0.0.1/x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("config: store.url: "), "{stderr}");

    std::fs::write(dir.path().join("bad.toml"), "[api]\nlisten = \"nowhere\"\n").unwrap();
    let out = ringledger(dir.path())
        .args(["--config", "bad.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.starts_with("config: api.listen: "), "{stderr}");
}

#[test]
fn a_prompt_that_cannot_be_played_stops_serve_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("pin.wav"), "not audio").unwrap();
    let out = ringledger(dir.path())
        .arg("serve")
        .env("RINGLEDGER_API__LISTEN", "127.0.0.1:0")
        .env("RINGLEDGER_SIP__LISTEN", "127.0.0.1:0")
        .env("RINGLEDGER_MEDIA__PROMPT_PIN", "pin.wav")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("media.prompt_pin (pin.wav): not a WAV file"),
        "{stderr}"
    );
}

#[test]
fn migrate_then_tail_the_log_as_ndjson() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let out = ringledger(dir.path())
        .arg("migrate")
        .env("RINGLEDGER_STORE__URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("migrated (head position 0)")
    );

    // Write 25 events through the store, as the server would.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = infra::open_store(&url).await.unwrap();
        for n in 0..25 {
            let e = infra::NewEvent {
                event_id: uuid::Uuid::now_v7(),
                event_type: "test.happened".into(),
                schema_version: 1,
                payload: serde_json::json!({ "n": n }),
                occurred_at: chrono::Utc::now(),
                correlation_id: uuid::Uuid::now_v7(),
                causation_id: None,
                actor: "cli-test".into(),
            };
            store
                .append("test-1", infra::ExpectedVersion::Any, vec![e])
                .await
                .unwrap();
        }
    });

    let tail = |args: &[&str]| {
        let out = ringledger(dir.path())
            .args(args)
            .env("RINGLEDGER_STORE__URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .collect::<Vec<_>>()
    };
    let last = tail(&["events", "tail", "-n", "5"]);
    assert_eq!(
        last.iter()
            .map(|e| e["payload"]["n"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        vec![20, 21, 22, 23, 24]
    );
    assert_eq!(last[4]["global_position"], 25);
    assert_eq!(last[4]["prev_hash"], last[3]["hash"]);
    let all = tail(&["events", "tail", "--after", "0"]);
    assert_eq!(all.len(), 25);

    // Export, then import into a second, empty store.
    let export = ringledger(dir.path())
        .args(["events", "export"])
        .env("RINGLEDGER_STORE__URL", &url)
        .output()
        .unwrap();
    assert!(export.status.success());
    std::fs::write(dir.path().join("log.ndjson"), &export.stdout).unwrap();
    let copy = format!("sqlite://{}", dir.path().join("copy.db").display());
    let import = ringledger(dir.path())
        .args(["events", "import", "log.ndjson"])
        .env("RINGLEDGER_STORE__URL", &copy)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    assert!(
        String::from_utf8(import.stdout)
            .unwrap()
            .starts_with("imported 25 events")
    );
    let verify_copy = || {
        let out = ringledger(dir.path())
            .args(["audit", "verify"])
            .env("RINGLEDGER_STORE__URL", &copy)
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8(out.stdout).unwrap())
    };
    // 25 events between import.started and import.completed.
    let (code, out) = verify_copy();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("ok: 27 events verified"), "{out}");
    // A copy cut short (what a kill after the 11th copied event leaves) is not taken for a
    // whole log, and importing again finishes it.
    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&copy).await.unwrap();
        sqlx::query("DELETE FROM events WHERE global_position > 12")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let (code, out) = verify_copy();
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("INCOMPLETE: this log is a copy that stopped after 11 of the export's 25"),
        "{out}"
    );
    let again = ringledger(dir.path())
        .args(["events", "import", "log.ndjson"])
        .env("RINGLEDGER_STORE__URL", &copy)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&again.stderr);
    assert!(again.status.success(), "{err}");
    assert!(err.contains("after its first 11 events"), "{err}");
    assert!(
        String::from_utf8(again.stdout)
            .unwrap()
            .starts_with("imported 14 events")
    );
    let (code, out) = verify_copy();
    assert_eq!(code, Some(0), "{out}");

    let verify = || {
        ringledger(dir.path())
            .args(["audit", "verify"])
            .env("RINGLEDGER_STORE__URL", &url)
            .output()
            .unwrap()
    };
    let ok = verify();
    assert!(ok.status.success());
    assert!(
        String::from_utf8(ok.stdout)
            .unwrap()
            .starts_with("ok: 25 events verified")
    );

    rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query("UPDATE events SET actor = 'mallory' WHERE global_position = 12")
            .execute(&mut c)
            .await
            .unwrap();
    });
    let broken = verify();
    assert_eq!(broken.status.code(), Some(1));
    assert!(
        String::from_utf8(broken.stdout)
            .unwrap()
            .starts_with("BROKEN at position 12:")
    );
    // `serve` refuses the tampered log, naming the position; with verify_on_start = warn it
    // says so and serves.
    let serve = |mode: Option<&str>| {
        let mut c = ringledger(dir.path());
        c.arg("serve")
            .env("RINGLEDGER_STORE__URL", &url)
            .env("RINGLEDGER_API__LISTEN", "127.0.0.1:0")
            .env("RINGLEDGER_SIP__LISTEN", "127.0.0.1:0");
        if let Some(mode) = mode {
            c.env("RINGLEDGER_STORE__VERIFY_ON_START", mode);
        }
        c
    };
    let refused = serve(None).output().unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8(refused.stderr).unwrap();
    assert!(
        err.contains("hash chain is broken at position 12") && err.contains("Not starting"),
        "{err}"
    );
    let mut warned = serve(Some("warn")).stderr(Stdio::piped()).spawn().unwrap();
    let lines: Vec<String> = BufReader::new(warned.stderr.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .take_while(|l| !l.contains("ringledger ready"))
        .collect();
    let _ = warned.kill();
    let _ = warned.wait();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("broken at position 12") && l.contains("serving anyway")),
        "{lines:#?}"
    );
}

#[test]
fn projections_rebuild_and_verify_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("log.db").display());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let store = infra::open_store(&url).await.unwrap();
        let mut w = projections::workload::Workload::new(21, chrono::Utc::now());
        for _ in 0..300 {
            for a in w.step() {
                store
                    .append(
                        &a.stream_id,
                        infra::ExpectedVersion::Any,
                        a.new_events("cli-test"),
                    )
                    .await
                    .unwrap();
            }
        }
    });
    let run = |args: &[&str]| {
        let out = ringledger(dir.path())
            .args(args)
            .env("RINGLEDGER_STORE__URL", &url)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    };
    let (code, out, err) = run(&["projections", "rebuild", "--verify"]);
    assert_eq!(code, Some(0), "{out}{err}");
    for table in [
        "routing_accounts",
        "rated_legs",
        "call_timeline",
        "workflow_steps",
    ] {
        assert!(
            out.lines()
                .any(|l| l.contains(table) && l.contains("identical")),
            "{out}"
        );
    }
    assert!(!out.contains("DIFFERS"), "{out}");
    let (code, out, _) = run(&["projections", "status"]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out.lines().filter(|l| l.contains("running")).count(),
        3,
        "{out}"
    );
    // The projections live in a file of their own beside the log's.
    let projections = infra::config::projections_next_to(&url).unwrap();
    assert!(dir.path().join("log-projections.db").exists());
    let account: String = rt.block_on(async {
        use sqlx::Connection;
        let mut c = sqlx::SqliteConnection::connect(&projections).await.unwrap();
        sqlx::query_scalar(
            "SELECT account_id FROM rated_legs GROUP BY account_id ORDER BY COUNT(*) DESC LIMIT 1",
        )
        .fetch_one(&mut c)
        .await
        .unwrap()
    });
    let month = chrono::Utc::now().format("%Y-%m").to_string();
    let (code, out, err) = run(&[
        "billing",
        "invoice",
        "--account",
        &account,
        "--month",
        &month,
        "--csv",
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.starts_with("extension_id,path,legs,billable_secs,charge_minor,currency"),
        "{out}"
    );
    let total = out.lines().last().unwrap();
    assert!(
        total.starts_with("total,,,,") && !total.starts_with("total,,,,0,"),
        "{out}"
    );

    let (code, _, err) = run(&["projections", "rebuild", "nonsense"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no projection named \"nonsense\""), "{err}");
}

#[test]
fn keys_create_works_in_a_fresh_folder() {
    let dir = tempfile::tempdir().unwrap();
    let created = ringledger(dir.path())
        .args(["keys", "create", "--role", "admin", "--name", "first"])
        .output()
        .unwrap();
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    assert!(
        String::from_utf8(created.stdout)
            .unwrap()
            .starts_with("rlk_")
    );
    assert!(dir.path().join("data/ringledger-projections.db").exists());
}
