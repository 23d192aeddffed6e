//! Configuration that would panic or turn a safety off is refused at start: the real binary,
//! started with one bad `CONVEYOR_*` value at a time, exits with code 2 and names the variable,
//! and never panics. The table also has to match the README's configuration table.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// Every variable the runtime reads, with values it must refuse.
const BAD: &[(&str, &[&str])] = &[
    (
        "CONVEYOR_ADDR",
        &["nonsense", "127.0.0.1:99999", "localhost"],
    ),
    ("CONVEYOR_BACKEND", &["cloud", "EMBEDDED"]),
    ("CONVEYOR_JWKS_OPERATOR", &["maybe", "2"]),
    ("CONVEYOR_LIVE_MAX_CONNECTIONS", &["0", "lots", "1000001"]),
    ("CONVEYOR_LIVE_MAX_PER_TENANT", &["0", "-1"]),
    ("CONVEYOR_TENANT_MAX_SCHEDULES", &["0", "many"]),
    // (keys over plain http from another machine; a JWKS with no issuer and audience)
    (
        "CONVEYOR_JWKS",
        &["http://id.example/jwks.json", "/etc/conveyor/jwks.json"],
    ),
    ("CONVEYOR_DURABILITY", &["always"]),
    (
        "CONVEYOR_WAL_LIMIT_BYTES",
        &["0", "-1", "lots", "99999999999999999999999"],
    ),
    ("CONVEYOR_WRITE_QUEUE", &["0", "many", "2000000"]),
    ("CONVEYOR_WS_OUTBOX", &["0", "some", "2000000"]),
    ("CONVEYOR_DEFAULT_TENANT", &["bad tenant!", "ünïcode"]),
    ("CONVEYOR_MAX_PAYLOAD_BYTES", &["0", "1.5", "358401"]),
    ("CONVEYOR_QUEUE_PREFIX", &["bad/prefix", "spaces in it"]),
    ("CONVEYOR_TABLE", &["ab", "no spaces"]),
    ("CONVEYOR_EVENT_BUS", &["x", "bad/bus"]),
    ("CONVEYOR_MAX_RECEIVE_COUNT", &["0", "1001", "-3"]),
    ("CONVEYOR_SHARDS", &["0", "257", "many"]),
    ("CONVEYOR_EVENTS", &["noop,,sleep", "bad type!"]),
    ("CONVEYOR_AUDIT_SUBMITS", &["yes please", "2"]),
    ("CONVEYOR_HEARTBEAT_INTERVAL", &["0", "-1s", "soon", "2m"]),
    (
        "CONVEYOR_STALL_AFTER",
        &["0", "99999999999999999999s", "1e400", "2d"],
    ),
    ("CONVEYOR_ORPHAN_AFTER", &["0", "99999999999999999999h"]),
    ("CONVEYOR_PAUSE_RECHECK", &["0", "1h", "soon"]),
    ("CONVEYOR_PAUSE_CACHE", &["1h", "soon"]),
    ("CONVEYOR_MAINTENANCE_INTERVAL", &["0", "5ms", "2h"]),
    ("CONVEYOR_SCHEDULER_INTERVAL", &["0", "10ms", "2m", "soon"]),
    (
        "CONVEYOR_SHUTDOWN_GRACE",
        &["forever", "2h", "18446744073709551616"],
    ),
    ("CONVEYOR_HTTP_TIMEOUT", &["0", "1e30"]),
    ("CONVEYOR_HTTP_MAX_IN_FLIGHT", &["0", "1000001"]),
    ("CONVEYOR_FETCH_MAX_BYTES", &["0", "x"]),
    (
        "CONVEYOR_OUTBOUND_ALLOW",
        &["10.0.0.0/33", "localhost", "127.0.0.1/8,nonsense"],
    ),
    (
        "CONVEYOR_JWT_SECRET",
        &["short", "thirty-one-bytes-is-too-short!!"],
    ),
    (
        "CONVEYOR_AUDIT_RETENTION",
        &["0", "30m", "forever", "3651d"],
    ),
    ("CONVEYOR_TENANT_MAX_ACTIVE", &["0", "-1", "lots"]),
    ("CONVEYOR_WEBHOOK_SECRET", &["short", "test-secret"]),
    (
        "CONVEYOR_TENANT_SUBMITS_PER_SECOND",
        &["0", "1.5", "10000001"],
    ),
    ("CONVEYOR_TENANT_MAX_RUNNING", &["0", "-1", "1000001"]),
    (
        "CONVEYOR_TYPE_LIMITS",
        &[
            "noop",
            "noop:rate=0/1s",
            "noop:speed=1",
            "noop:max_running_per_key=x",
        ],
    ),
];

/// Variables that take any value (a path, a secret): documented, nothing to refuse.
const FREE: &[&str] = &[
    "CONVEYOR_DATA_DIR",
    "CONVEYOR_WEBHOOK_SECRET_ID",
    "CONVEYOR_JWT_SECRET_ID",
    "CONVEYOR_JWKS",
    "CONVEYOR_JWT_ISSUER",
    "CONVEYOR_WS_ENDPOINT",
    "CONVEYOR_WS_URL",
    "CONVEYOR_PUBLIC_URL",
    "CONVEYOR_LAMBDA_HANDLERS",
    "CONVEYOR_SCHEDULE_GROUP",
    "CONVEYOR_SCHEDULER_TARGET_ARN",
    "CONVEYOR_SCHEDULER_ROLE_ARN",
    "CONVEYOR_TICK_FAILURES_QUEUE",
    "CONVEYOR_JWT_AUDIENCE",
];

struct Refusal {
    code: Option<i32>,
    stderr: String,
}

/// Start the binary with `name=value` and wait for it to exit (it must not start listening).
async fn start_with(name: &str, value: &str) -> Refusal {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    for (var, _) in std::env::vars() {
        if var.starts_with("CONVEYOR_") {
            cmd.env_remove(var);
        }
    }
    cmd.env("CONVEYOR_ADDR", "127.0.0.1:0")
        .env("CONVEYOR_DATA_DIR", dir.path())
        .env("RUST_LOG", "warn")
        .env(name, value)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = cmd.spawn().expect("the runtime binary starts");
    let output = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{name}={value:?} was accepted: the runtime kept running"))
        .expect("waiting for the runtime");
    Refusal {
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test]
async fn every_bad_setting_is_refused_by_name_with_exit_code_2_and_no_panic() {
    // GIVEN every setting the runtime reads, each with values that would panic or disable a
    // safety
    let cases: Vec<(&str, &str)> = BAD
        .iter()
        .flat_map(|(name, values)| values.iter().map(move |v| (*name, *v)))
        .collect();

    // WHEN the runtime is started with each, one bad value at a time (a few at once)
    let mut failures = vec![];
    for chunk in cases.chunks(6) {
        let runs = chunk
            .iter()
            .map(|(name, value)| async move { (name, value, start_with(name, value).await) });
        for (name, value, refusal) in futures::future::join_all(runs).await {
            // THEN it exits with code 2, naming the variable, without a panic
            let named = refusal.stderr.contains(name);
            let panicked = refusal.stderr.contains("panicked");
            if refusal.code != Some(2) || !named || panicked {
                failures.push(format!(
                    "{name}={value:?}: exit {:?}, named: {named}, panicked: {panicked}; stderr: {}",
                    refusal.code,
                    refusal.stderr.trim()
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_table_covers_every_documented_setting() {
    // GIVEN the README's configuration table
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let documented: BTreeSet<&str> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|rest| rest.split('`').next())
        .filter(|name| name.starts_with("CONVEYOR_"))
        .collect();
    // THEN every documented variable is either checked for bad values or takes any value, and
    // the other way round
    let tested: BTreeSet<&str> = BAD
        .iter()
        .map(|(n, _)| *n)
        .chain(FREE.iter().copied())
        .collect();
    assert_eq!(documented, tested);
}
