//! A moto server for tests (the AWS services, emulated): started once per test binary on a
//! free loopback port, stopped by a watchdog when the test process is gone. Shared by the
//! contract suite and the end-to-end suite.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

static ENDPOINT: OnceLock<String> = OnceLock::new();

/// The command that starts the server (given `-H <host> -p <port>`): `infra/moto/serve.py` with
/// the Python of the pinned venv that `infra/moto/venv.sh` installs (`make test` runs it first).
/// moto serves there deciding DynamoDB requests one at a time, as DynamoDB applies conditional
/// writes. A `moto_server` on the PATH is never used: its version and its races are not ours.
fn server_command() -> Vec<String> {
    let cache = std::env::var("CONVEYOR_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache", std::env::var("HOME").unwrap_or_default()));
    let python = format!("{cache}/conveyor-venv/bin/python3");
    // (The workspace's `infra/`, found from whichever of its crates this file is built into.)
    let serve = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|dir| dir.join("infra/moto/serve.py"))
        .find(|serve| serve.exists())
        .expect("infra/moto/serve.py in the workspace")
        .to_string_lossy()
        .into_owned();
    assert!(
        std::path::Path::new(&python).exists(),
        "the test suite's AWS emulator is not installed at {python}: run `make test`, or \
         `infra/moto/venv.sh` once, to install the pinned moto"
    );
    vec![python, serve]
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
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start infra/moto/serve.py");
            let started = Instant::now();
            while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "infra/moto/serve.py did not start on port {port} (reinstall the venv: \
                     rm -rf ~/.cache/conveyor-venv && infra/moto/venv.sh)"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
            format!("http://127.0.0.1:{port}")
        })
        .clone()
}
