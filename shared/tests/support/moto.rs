//! A moto server for tests (the AWS services, emulated): started once per test binary on a
//! free loopback port, stopped by a watchdog when the test process is gone. Shared by the
//! contract suite and the end-to-end suite.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ENDPOINT: OnceLock<String> = OnceLock::new();

/// The command that starts the server (given `-H <host> -p <port>`): `MOTO_SERVER`, else
/// `infra/moto/serve.py` with the venv's Python (moto deciding DynamoDB requests one at a time,
/// as DynamoDB applies conditional writes), else `moto_server` on the PATH.
fn server_command() -> Vec<String> {
    if let Ok(p) = std::env::var("MOTO_SERVER") {
        return vec![p];
    }
    let python = format!(
        "{}/.cache/conveyor-venv/bin/python3",
        std::env::var("HOME").unwrap_or_default()
    );
    let serve = concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/moto/serve.py");
    if std::path::Path::new(&python).exists() {
        return vec![python, serve.into()];
    }
    vec!["moto_server".into()]
}

/// Whether the suite's own server decides concurrent conditional writes one after the other
/// (as DynamoDB does): `infra/moto/serve.py` does; an emulator given by
/// `CONVEYOR_TEST_AWS_ENDPOINT` does if `CONVEYOR_TEST_AWS_ATOMIC=1` says so.
pub fn atomic() -> bool {
    match std::env::var("CONVEYOR_TEST_AWS_ENDPOINT") {
        Ok(_) => std::env::var("CONVEYOR_TEST_AWS_ATOMIC").is_ok_and(|v| v == "1"),
        Err(_) => std::env::var("MOTO_SERVER").is_err() && server_command().len() == 2,
    }
}

/// Start moto once; a watchdog shell stops it when this test process is gone.
pub fn endpoint() -> String {
    ENDPOINT
        .get_or_init(|| {
            if let Ok(given) = std::env::var("CONVEYOR_TEST_AWS_ENDPOINT") {
                return given; // an emulator already running (e.g. LocalStack)
            }
            let port = TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let script = format!(
                "\"$@\" -H 127.0.0.1 -p {port} >/dev/null 2>&1 & m=$!; \
                 while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill $m",
                pid = std::process::id()
            );
            // Not waited for: the watchdog lives as long as this process, by design.
            #[allow(clippy::zombie_processes)]
            Command::new("sh")
                .args(["-c", &script, "moto"])
                .args(server_command())
                .stdin(Stdio::null())
                .spawn()
                .expect("start moto_server (pip install 'moto[server]', or set MOTO_SERVER)");
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "moto_server did not start on port {port}: is it installed? \
                     (pip install 'moto[server]' into ~/.cache/conveyor-venv, or set MOTO_SERVER)"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}
