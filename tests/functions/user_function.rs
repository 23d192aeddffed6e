//! A team's own Lambda function, as an external type's handler: the Python example
//! (`examples/python-worker/lambda_function.py`) run as Lambda runs a Python function, under a
//! cargo-lambda emulator of its own (which knows a function by the cargo project naming it),
//! through `python_runtime.py`, the Runtime API loop of Lambda's Python runtime.
//!
//! The worker function reaches it as it reaches Lambda (`AWS_ENDPOINT_URL_LAMBDA`), through a
//! relay making two changes to the emulator's invoke API, where it differs from Lambda's: the
//! function is named by its ARN (the emulator takes names only), and a function that raised is
//! answered 200 with `X-Amz-Function-Error: Unhandled` (the emulator answers 500).

use crate::harness::{emulator, free_port, listening};
use axum::extract::{Request, State};
use axum::response::IntoResponse;
use std::path::PathBuf;
use std::process::Stdio;
use tokio::process::{Child, Command};

pub struct UserFunction {
    /// Where the Lambda API is, for `AWS_ENDPOINT_URL_LAMBDA`.
    pub endpoint: String,
    _emulator: Child,
    _runtime: Child,
    dir: tempfile::TempDir,
}

impl UserFunction {
    /// The Python example's `lambda_function.handler`, as the function `name`.
    pub async fn python_example(name: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // (a cargo project naming the function: what the emulator knows functions by)
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(
            dir.path().join("Cargo.toml"),
            format!("[package]\nname = \"{name}\"\nversion = \"0.0.0\"\nedition = \"2021\"\n\n[workspace]\n"),
        )
        .unwrap();
        std::fs::write(dir.path().join("src/main.rs"), "fn main() {}\n").unwrap();
        let port = free_port();
        let emulator = emulator(dir.path(), port, &dir.path().join("emulator.log"));
        let log = |dir: &std::path::Path, name: &str| {
            std::fs::read_to_string(dir.join(name)).unwrap_or_default()
        };
        listening(port, || log(dir.path(), "emulator.log")).await;
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let example = here.join("../examples/python-worker");
        let out = std::fs::File::create(dir.path().join("function.log")).unwrap();
        let runtime = Command::new("python3")
            .arg(here.join("functions/python_runtime.py"))
            .arg("lambda_function.handler")
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt/{name}"),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("LAMBDA_TASK_ROOT", &example)
            .current_dir(&example)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs the runtime loop");
        let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let endpoint = format!("http://{}", relay.local_addr().unwrap());
        let app = axum::Router::new().fallback(invoke).with_state(port);
        tokio::spawn(async move { axum::serve(relay, app).await });
        Self {
            endpoint,
            _emulator: emulator,
            _runtime: runtime,
            dir,
        }
    }

    /// The function's and its emulator's output so far.
    pub fn log(&self) -> String {
        ["emulator.log", "function.log"]
            .map(|f| std::fs::read_to_string(self.dir.path().join(f)).unwrap_or_default())
            .join("\n")
    }
}

/// `POST /2015-03-31/functions/<name or ARN>/invocations`, handed to the emulator on `port`
/// with the function's name, its answer as Lambda gives it.
async fn invoke(State(port): State<u16>, request: Request) -> axum::response::Response {
    let path = percent_decoded(request.uri().path());
    let named = path
        .strip_prefix("/2015-03-31/functions/")
        .and_then(|rest| rest.strip_suffix("/invocations"))
        .unwrap_or_default();
    // (`arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]`, or the name)
    let name = named
        .split_once(":function:")
        .map_or(named, |(_, n)| n.split(':').next().unwrap_or_default())
        .to_string();
    let body = axum::body::to_bytes(request.into_body(), usize::MAX)
        .await
        .unwrap_or_default();
    let answer = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/{name}/invocations"
        ))
        .body(body)
        .send()
        .await;
    let answer = match answer {
        Ok(answer) => answer,
        Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = answer.status().as_u16();
    let bytes = answer.bytes().await.unwrap_or_default();
    let raised = status == 500
        && serde_json::from_slice::<serde_json::Value>(&bytes)
            .is_ok_and(|v| v.get("errorType").is_some());
    if raised {
        return ([("x-amz-function-error", "Unhandled")], bytes).into_response();
    }
    (
        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::BAD_GATEWAY),
        bytes,
    )
        .into_response()
}

fn percent_decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
