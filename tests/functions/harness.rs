//! Running the shipped function binaries as Lambda runs them: cargo-lambda's Runtime API
//! emulator, one process per function polling it, and invocations posted to it.

use serde_json::Value;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// How long an invocation may take before the test gives up on it.
const INVOKE_TIMEOUT: Duration = Duration::from_secs(60);

/// The workspace's root (this crate is `tests/` in it).
fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate sits in the workspace")
        .to_path_buf()
}

/// One of AWS's documented event samples: the `aws_lambda_events` crate's fixture `name`, from
/// that crate's sources where cargo keeps them (the version Cargo.lock names), as JSON to set
/// this test's values in.
pub fn aws_sample(name: &str) -> Value {
    let lock = std::fs::read_to_string(workspace().join("Cargo.lock")).expect("Cargo.lock");
    let version = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"aws_lambda_events\""))
        .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
        .map(|v| v.trim_matches('"').to_string())
        .expect("aws_lambda_events in Cargo.lock");
    let home = std::env::var("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cargo")
        });
    let crate_dir = std::fs::read_dir(home.join("registry/src"))
        .expect("cargo's registry sources")
        .filter_map(Result::ok)
        .map(|index| index.path().join(format!("aws_lambda_events-{version}")))
        .find(|dir| dir.exists())
        .unwrap_or_else(|| {
            panic!(
                "aws_lambda_events {version}'s sources under {}",
                home.display()
            )
        });
    let path = crate_dir.join("src/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("AWS's sample {}: {e}", path.display()));
    serde_json::from_str(&text).expect("the sample is JSON")
}

/// The settings every function gets (as the template's `Globals` give them), on a table, bus
/// and queues of this test's own on the suite's AWS emulator.
pub struct Deployment {
    pub env: Vec<(String, String)>,
    _data_dir: tempfile::TempDir,
}

impl Deployment {
    /// A fresh deployment: its resources made by `conveyor bootstrap`, as the template makes
    /// them, and `extra` settings for every function.
    pub async fn new(extra: &[(&str, &str)]) -> Self {
        let mut env = crate::aws::aws_env("f", 4);
        env.extend(
            [
                (
                    "CONVEYOR_WEBHOOK_SECRET",
                    "functions-test-master-key-of-32-bytes",
                ),
                ("RUST_LOG", "info"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        for (k, v) in extra {
            env.retain(|(name, _)| name != k);
            env.push((k.to_string(), v.to_string()));
        }
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"))
            .arg("bootstrap")
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CONVEYOR_DATA_DIR", dir.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .await
            .expect("conveyor bootstrap runs");
        assert!(
            out.status.success(),
            "bootstrap: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self {
            env,
            _data_dir: dir,
        }
    }

    pub fn get(&self, name: &str) -> &str {
        self.env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or_default()
    }

    /// The AWS SDK's settings for the deployment's emulator.
    pub async fn sdk(&self) -> aws_config::SdkConfig {
        // (the SDK reads its endpoint and credentials from the process environment)
        for (k, v) in &self.env {
            if k.starts_with("AWS_") {
                std::env::set_var(k, v);
            }
        }
        shared::adapters::aws::sdk_config_from_env().await
    }

    /// The secret users' JWTs are signed with, kept in Secrets Manager as the template keeps it:
    /// the secret's id (the authorizer's `CONVEYOR_JWT_SECRET_ID`) and its value.
    pub async fn jwt_secret(&self) -> (String, String) {
        let value = format!("jwt-{}-{}", ulid::Ulid::new(), ulid::Ulid::new());
        let made = aws_sdk_secretsmanager::Client::new(&self.sdk().await)
            .create_secret()
            .name(format!("{}-jwt", self.get("CONVEYOR_TABLE")))
            .secret_string(&value)
            .send()
            .await
            .expect("the JWT secret is stored");
        (made.arn().expect("the secret's ARN").to_string(), value)
    }

    /// The deployment's AWS adapters, opened in this process (its queues to receive from).
    pub async fn backend(&self) -> shared::adapters::aws::AwsBackend {
        let sdk = self.sdk().await;
        shared::adapters::aws::AwsBackend::new(
            &sdk,
            shared::adapters::aws::AwsSettings::of(&self.config()),
        )
    }

    fn config(&self) -> shared::Config {
        shared::Config::from_lookup(&|name| {
            self.env
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        })
        .expect("the deployment's settings")
    }

    /// Up to ten of `tenant`'s jobs, newest first, read from the deployment's table.
    pub async fn jobs_of(&self, tenant: &str) -> Vec<shared::domain::JobSummary> {
        self.ports()
            .await
            .store
            .list(&shared::ports::ListQuery {
                tenant: shared::domain::Tenant::parse(tenant).unwrap(),
                status: None,
                job_type: None,
                before: None,
                limit: 10,
            })
            .await
            .unwrap()
    }

    /// The store and queues as the functions see them, opened in this process.
    pub async fn ports(&self) -> shared::ports::Ports {
        let config = self.config();
        self.sdk().await;
        shared::adapters::open_ports(&config)
            .await
            .expect("the deployment's store and queues")
            .0
    }
}

/// The access key function `name` signs its requests with: the emulator grants it the table
/// actions the template grants the function, refuses any other, and notes each it asks for.
pub fn access_key(name: &str) -> String {
    format!("fn-{name}")
}

/// The binaries the template's functions run.
pub fn function_binaries() -> std::collections::BTreeSet<String> {
    let t = crate::template::template();
    t["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .filter_map(|r| r["Metadata"]["BuildProperties"]["Binary"].as_str())
        .map(str::to_string)
        .collect()
}

/// Tell the suite's AWS emulator (`infra/moto/serve.py`, standing in for IAM) which table
/// actions each function's access key may take: those the template grants it.
async fn grant_each_function_its_table_actions() {
    let t = crate::template::template();
    let client = reqwest::Client::new();
    for binary in function_binaries() {
        let actions = crate::template::function_table_actions(&t, &binary);
        let answer = client
            .post(format!("{}/_conveyor/grants", crate::moto::endpoint()))
            .json(&serde_json::json!({ "access_key": access_key(&binary), "dynamodb": actions }))
            .send()
            .await
            .expect("the emulator answers");
        assert!(
            answer.status().is_success(),
            "the AWS emulator takes no grants ({}): the functions run on infra/moto/serve.py",
            answer.status()
        );
    }
}

/// The table actions each function's access key asked for on the suite's AWS emulator, over
/// every test run on it so far (refused ones too).
pub async fn table_actions_used() -> std::collections::BTreeMap<String, Vec<String>> {
    reqwest::get(format!("{}/_conveyor/used", crate::moto::endpoint()))
        .await
        .expect("the emulator answers")
        .json()
        .await
        .expect("the used actions, by access key")
}

/// The Runtime API as the functions reach it: cargo-lambda's emulator, relayed with one
/// change. The emulator gives every invocation the deadline 600000 (ten minutes after the
/// epoch: long past), where Lambda gives the moment the function's timeout ends; the relay
/// gives that, each function's timeout as the template sets it.
async fn relay_runtime_api(emulator: u16) -> u16 {
    use axum::extract::{Request, State};
    use axum::response::IntoResponse;
    async fn relay(State(emulator): State<u16>, request: Request) -> axum::response::Response {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX)
            .await
            .unwrap_or_default();
        let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
        let mut sent = reqwest::Client::new()
            .request(
                parts.method.clone(),
                format!("http://127.0.0.1:{emulator}{path}"),
            )
            .body(body);
        for (name, value) in &parts.headers {
            if name != axum::http::header::HOST {
                sent = sent.header(name, value);
            }
        }
        let answer = match sent.send().await {
            Ok(answer) => answer,
            Err(e) => return (axum::http::StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        };
        let status = answer.status();
        let mut headers = answer.headers().clone();
        headers.remove(axum::http::header::CONTENT_LENGTH);
        headers.remove(axum::http::header::TRANSFER_ENCODING);
        if headers.contains_key("lambda-runtime-deadline-ms") {
            // (`/.rt/<function>/2018-06-01/runtime/invocation/next`)
            let function = parts.uri.path().split('/').nth(2).unwrap_or_default();
            let timeout = crate::template::function_timeout(&crate::template::template(), function);
            let deadline = chrono::Utc::now() + timeout;
            headers.insert(
                "lambda-runtime-deadline-ms",
                deadline.timestamp_millis().to_string().parse().unwrap(),
            );
        }
        let bytes = answer.bytes().await.unwrap_or_default();
        (status, headers, bytes).into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let app = axum::Router::new().fallback(relay).with_state(emulator);
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

/// cargo-lambda's Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`) for the
/// functions `project` (a cargo project's directory) builds, its invoke API on `port`.
pub fn emulator(project: &std::path::Path, port: u16, log: &std::path::Path) -> Child {
    let log = std::fs::File::create(log).unwrap();
    let cargo_lambda =
        std::env::var("CONVEYOR_TEST_CARGO_LAMBDA").unwrap_or_else(|_| "cargo-lambda".into());
    Command::new(&cargo_lambda)
        .args(["lambda", "watch", "--only-lambda-apis", "--invoke-address"])
        .arg("127.0.0.1")
        .arg("--invoke-port")
        .arg(port.to_string())
        .current_dir(project)
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{cargo_lambda} (cargo-lambda: `make test-functions` installs it): {e}")
        })
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Wait until something listens on `port` (30 s at most), else fail with `log`'s text.
pub async fn listening(port: u16, log: impl Fn() -> String) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listened on {port} within 30 s: {}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// cargo-lambda's Lambda Runtime API emulator (`cargo lambda watch --only-lambda-apis`), with
/// the functions started against it (through `relay_runtime_api`).
pub struct Lambda {
    port: u16,
    runtime_api: u16,
    emulator: Child,
    functions: Vec<(String, Child, PathBuf)>,
    client: reqwest::Client,
    logs: tempfile::TempDir,
}

impl Lambda {
    pub async fn start() -> Self {
        grant_each_function_its_table_actions().await;
        let port = free_port();
        let logs = tempfile::tempdir().unwrap();
        let emulator = emulator(&workspace(), port, &logs.path().join("emulator.log"));
        let lambda = Self {
            port,
            runtime_api: relay_runtime_api(port).await,
            emulator,
            functions: vec![],
            client: reqwest::Client::new(),
            logs,
        };
        listening(port, || lambda.log("emulator")).await;
        lambda
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.logs.path().join(format!("{name}.log"))).unwrap_or_default()
    }

    /// Start function `name`'s shipped binary (`$CONVEYOR_TEST_FUNCTIONS/<name>/bootstrap`) as
    /// Lambda does: with the deployment's settings, Lambda's own variables, and the Runtime API
    /// to poll for its events.
    pub fn run(&mut self, name: &str, deployment: &Deployment, extra: &[(&str, &str)]) {
        let dir = std::env::var("CONVEYOR_TEST_FUNCTIONS").expect(
            "CONVEYOR_TEST_FUNCTIONS names the directory of the functions' release builds \
             (`make test-functions` builds them and sets it)",
        );
        let binary = PathBuf::from(dir).join(name).join("bootstrap");
        assert!(binary.exists(), "{} is not built", binary.display());
        let log = self.logs.path().join(format!("{name}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(&binary)
            .env_clear()
            .envs(deployment.env.iter().map(|(k, v)| (k, v)))
            .envs(extra.iter().copied())
            .env("AWS_ACCESS_KEY_ID", access_key(name))
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{}/.rt/{name}", self.runtime_api),
            )
            .env("AWS_LAMBDA_FUNCTION_NAME", name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
            .env("AWS_EXECUTION_ENV", "AWS_Lambda_provided.al2023")
            .env("LAMBDA_TASK_ROOT", binary.parent().unwrap())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display()));
        self.functions.push((name.to_string(), child, log));
    }

    /// Invoke `name` with `event` (a synchronous invocation, as API Gateway, an event-source
    /// mapping or Scheduler's asynchronous invoke hand it over): the function's answer. A
    /// function that exited (a panic at init), or failed the invocation, fails the test with
    /// its log.
    pub async fn invoke(&mut self, name: &str, event: &Value) -> Value {
        let url = format!(
            "http://127.0.0.1:{}/2015-03-31/functions/{name}/invocations",
            self.port
        );
        let request = self.client.post(&url).json(event).send();
        tokio::pin!(request);
        let deadline = tokio::time::sleep(INVOKE_TIMEOUT);
        tokio::pin!(deadline);
        let response = loop {
            tokio::select! {
                r = &mut request => break r.expect("the emulator answers"),
                _ = &mut deadline => panic!("{name} did not answer within {INVOKE_TIMEOUT:?}: {}", self.function_log(name)),
                _ = tokio::time::sleep(Duration::from_millis(200)) => {
                    if let Some(status) = self.exited(name) {
                        panic!("{name} exited ({status}) instead of answering: {}", self.function_log(name));
                    }
                }
            }
        };
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        let answer: Value = serde_json::from_str(&text).unwrap_or(Value::String(text.clone()));
        assert!(
            status.is_success() && answer.get("errorType").is_none(),
            "{name} failed the invocation ({status}): {text}\n{}",
            self.function_log(name)
        );
        answer
    }

    fn exited(&mut self, name: &str) -> Option<std::process::ExitStatus> {
        self.functions
            .iter_mut()
            .find(|(n, _, _)| n == name)
            .and_then(|(_, child, _)| child.try_wait().ok().flatten())
    }

    pub fn function_log(&self, name: &str) -> String {
        let log = self
            .functions
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|(_, _, log)| std::fs::read_to_string(log).unwrap_or_default())
            .unwrap_or_default();
        format!("--- {name}'s log ---\n{log}\n--- end of {name}'s log ---")
    }
}

impl Drop for Lambda {
    fn drop(&mut self) {
        let _ = self.emulator.start_kill();
        if std::thread::panicking() {
            eprintln!("--- emulator's log ---\n{}", self.log("emulator"));
            for (name, _, _) in &self.functions {
                eprintln!("{}", self.function_log(name));
            }
        }
    }
}
