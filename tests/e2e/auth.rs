//! Who may do what, against the real runtime: every route but `/healthz` wants a credential;
//! bad tokens (expired, not yet valid, forged, `none`, HS/RS confusion) are 401s; roles give
//! 403s; API keys are created, used and revoked (refused at once); the tenant comes only from
//! the credential, and another tenant's jobs and cursors are invisible; the audit trail names
//! the actor of a submit, a cancel, a key creation and a 401; dev mode stays on loopback.

use crate::helpers::{assert_error, spawn_app, spawn_app_with, token, TestApp, JWT_SECRET};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/jwks");

/// Every route but `/healthz`, as (method, path) with a job id that parses.
fn routes() -> Vec<(&'static str, String)> {
    let id = "01JF0000000000000000000000";
    vec![
        ("POST", "/v1/jobs".into()),
        ("GET", "/v1/jobs".into()),
        ("GET", format!("/v1/jobs/{id}")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
        ("POST", format!("/v1/jobs/{id}/retry")),
        ("GET", format!("/v1/jobs/{id}/logs")),
        ("GET", format!("/v1/jobs/{id}/result")),
        ("GET", "/v1/stats".into()),
        ("GET", "/v1/types".into()),
        ("POST", "/v1/api-keys".into()),
        ("GET", "/v1/api-keys".into()),
        ("DELETE", "/v1/api-keys/some-key".into()),
        ("GET", "/v1/audit".into()),
    ]
}

async fn call(
    app: &TestApp,
    credential: Option<&str>,
    method: &str,
    path: &str,
) -> (StatusCode, Value) {
    let client = crate::helpers::client_for(credential);
    let url = app.url(path);
    let request = match method {
        "POST" => client.post(url).json(&json!({ "type": "noop" })),
        "DELETE" => client.delete(url),
        _ => client.get(url),
    };
    app.send(request).await
}

fn claims(tenant: &str, roles: &[&str], offset_secs: (i64, i64)) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({
        "sub": "someone",
        "tenant": tenant,
        "roles": roles,
        "nbf": now + offset_secs.0,
        "exp": now + offset_secs.1,
        "iss": ISSUER,
        "aud": AUDIENCE,
    })
}

/// The issuer and audience the runtimes that take a JWKS are given (both required with one).
const ISSUER: &str = "https://id.example";
const AUDIENCE: &str = "conveyor";

fn hs256(secret: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn signed_with_fixture(alg: Algorithm, kid: &str, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.into());
    let key = match alg {
        Algorithm::RS256 => EncodingKey::from_rsa_der(
            &std::fs::read(format!("{FIXTURES}/rsa-private.der")).unwrap(),
        ),
        _ => {
            EncodingKey::from_ec_der(&std::fs::read(format!("{FIXTURES}/ec-private.der")).unwrap())
        }
    };
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

fn base64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, b| acc << 8 | *b as u32) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn no_credential_is_a_401_on_every_route_and_healthz_stays_open() {
    // GIVEN a runtime with a JWT secret
    let app = spawn_app(&[]).await;
    // WHEN every route is called without a credential, and with a malformed header
    for (method, path) in routes() {
        let answer = call(&app, None, method, &path).await;
        // THEN each is a JSON 401
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized", None);
        let garbage = call(&app, Some("not-a-token"), method, &path).await;
        assert_error(&garbage, StatusCode::UNAUTHORIZED, "unauthorized", None);
    }
    let (status, _) = call(&app, None, "GET", "/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn bad_tokens_are_refused_and_good_ones_from_a_jwks_are_taken() {
    // GIVEN a runtime with an HS256 secret and a JWKS holding an RSA and an EC key
    let jwks = format!("{FIXTURES}/jwks.json");
    let app = spawn_app(&[
        ("CONVEYOR_JWKS", jwks.as_str()),
        ("CONVEYOR_JWT_ISSUER", ISSUER),
        ("CONVEYOR_JWT_AUDIENCE", AUDIENCE),
    ])
    .await;
    let good = claims("acme", &["reader"], (-10, 3600));
    let rsa_public = std::fs::read(format!("{FIXTURES}/jwks.json")).unwrap();
    let none = format!(
        "{}.{}.",
        base64url(br#"{"alg":"none","typ":"JWT"}"#),
        base64url(good.to_string().as_bytes())
    );
    let bad = [
        (
            "expired",
            hs256(JWT_SECRET, &claims("acme", &["reader"], (-7200, -3600))),
        ),
        (
            "not yet valid",
            hs256(JWT_SECRET, &claims("acme", &["reader"], (3600, 7200))),
        ),
        (
            "forged",
            hs256("another-secret-of-thirty-two-bytes-or-more", &good),
        ),
        ("alg none", none),
        // The JWKS (public) bytes used as an HMAC secret: an HS/RS confusion attempt.
        ("HS256 over the public key", {
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some("test-rsa".into());
            jsonwebtoken::encode(&header, &good, &EncodingKey::from_secret(&rsa_public)).unwrap()
        }),
        // An RS256 header on a token signed with the EC key.
        ("RS256 with the EC key's kid", {
            let mut header = Header::new(Algorithm::ES256);
            header.kid = Some("test-ec".into());
            let signed = jsonwebtoken::encode(
                &header,
                &good,
                &EncodingKey::from_ec_der(
                    &std::fs::read(format!("{FIXTURES}/ec-private.der")).unwrap(),
                ),
            )
            .unwrap();
            let (_, rest) = signed.split_once('.').unwrap();
            format!(
                "{}.{rest}",
                base64url(br#"{"alg":"RS256","kid":"test-ec","typ":"JWT"}"#)
            )
        }),
        (
            "no tenant claim",
            hs256(
                JWT_SECRET,
                &json!({ "sub": "x", "roles": ["reader"], "exp": chrono::Utc::now().timestamp() + 60 }),
            ),
        ),
        (
            "unknown role",
            hs256(JWT_SECRET, &claims("acme", &["root"], (-10, 3600))),
        ),
    ];
    // WHEN each is used
    for (what, token) in &bad {
        let answer = call(&app, Some(token), "GET", "/v1/jobs").await;
        // THEN it is a 401
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{what}: {}", answer.1);
        assert_eq!(answer.1["error"]["code"], "unauthorized", "{what}");
    }
    // AND tokens signed by the JWKS's RSA and EC keys, and with the secret, are taken
    for (what, token) in [
        (
            "RS256",
            signed_with_fixture(Algorithm::RS256, "test-rsa", &good),
        ),
        (
            "ES256",
            signed_with_fixture(Algorithm::ES256, "test-ec", &good),
        ),
        ("HS256", hs256(JWT_SECRET, &good)),
    ] {
        let (status, body) = call(&app, Some(&token), "GET", "/v1/jobs").await;
        assert_eq!(status, StatusCode::OK, "{what}: {body}");
    }
}

#[tokio::test]
async fn a_reader_reads_but_cannot_submit_cancel_or_retry() {
    // GIVEN a job of tenant acme and a reader of acme
    let app = spawn_app(&[]).await;
    let submitter = token("acme", &["submitter"]);
    let (status, job) = app
        .as_caller(Some(&submitter))
        .post_json(
            "/v1/jobs",
            &json!({ "type": "sleep", "payload": { "ms": 10 }, "delay_seconds": 600 }),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap();
    let reader = app.as_caller(Some(&token("acme", &["reader"])));
    // WHEN the reader submits, cancels and retries
    let submit = reader
        .post_json("/v1/jobs", &json!({ "type": "noop" }))
        .await;
    let cancel = reader.post(&format!("/v1/jobs/{id}/cancel")).await;
    let retry = reader.post(&format!("/v1/jobs/{id}/retry")).await;
    let keys = reader.get("/v1/api-keys").await;
    // THEN each is a 403 naming the role needed, and reading works
    for answer in [&submit, &cancel, &retry, &keys] {
        assert_error(answer, StatusCode::FORBIDDEN, "forbidden", None);
    }
    assert!(submit.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("submitter"));
    let (status, read) = reader.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (status, read["status"].as_str()),
        (StatusCode::OK, Some("queued"))
    );
}

#[tokio::test]
async fn another_tenants_jobs_are_invisible_on_every_route() {
    // GIVEN three jobs of tenant acme (one page of two, then a cursor)
    let app = spawn_app(&[]).await;
    let acme = app.as_caller(Some(&token("acme", &["submitter"])));
    let mut ids = vec![];
    for _ in 0..3 {
        let (status, job) = acme
            .post_json(
                "/v1/jobs",
                &json!({ "type": "sleep", "payload": { "ms": 1 }, "delay_seconds": 600 }),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        ids.push(job["id"].as_str().unwrap().to_string());
    }
    let (_, page) = acme.get("/v1/jobs?limit=2").await;
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a second page")
        .to_string();
    let (status, _) = acme.get(&format!("/v1/jobs?limit=2&cursor={cursor}")).await;
    assert_eq!(status, StatusCode::OK);

    // WHEN tenant globex (a submitter) calls every job route with acme's job id and cursor
    let globex = app.as_caller(Some(&token("globex", &["submitter"])));
    let id = &ids[0];
    // THEN each job route is a 404, the same as for an id that never existed
    for (method, path) in [
        ("GET", format!("/v1/jobs/{id}")),
        ("GET", format!("/v1/jobs/{id}/result")),
        ("GET", format!("/v1/jobs/{id}/logs")),
        ("POST", format!("/v1/jobs/{id}/cancel")),
        ("POST", format!("/v1/jobs/{id}/retry")),
    ] {
        let answer = match method {
            "GET" => globex.get(&path).await,
            _ => globex.post(&path).await,
        };
        assert_error(&answer, StatusCode::NOT_FOUND, "job_not_found", Some("id"));
        let missing = path.replace(id.as_str(), "01JF0000000000000000000000");
        let never = match method {
            "GET" => globex.get(&missing).await,
            _ => globex.post(&missing).await,
        };
        assert_eq!(answer.1["error"]["code"], never.1["error"]["code"]);
    }
    // AND the list and the stats show nothing of acme's, and acme's cursor is refused
    let (_, listed) = globex.get("/v1/jobs").await;
    assert_eq!(listed["jobs"], json!([]), "{listed}");
    let (_, stats) = globex.get("/v1/stats").await;
    assert_eq!(stats["total"], 0, "{stats}");
    let with_cursor = globex.get(&format!("/v1/jobs?cursor={cursor}")).await;
    assert_error(
        &with_cursor,
        StatusCode::BAD_REQUEST,
        "invalid_field",
        Some("cursor"),
    );
    // AND naming acme as the tenant is refused to anyone but an operator, allowed to one
    let named = globex.get(&format!("/v1/jobs/{id}?tenant=acme")).await;
    assert_error(&named, StatusCode::FORBIDDEN, "forbidden", Some("tenant"));
    let admin = app.as_caller(Some(&token("ops", &["operator"])));
    let (status, job) = admin.get(&format!("/v1/jobs/{id}?tenant=acme")).await;
    assert_eq!(
        (status, job["tenant"].as_str()),
        (StatusCode::OK, Some("acme")),
        "{job}"
    );
    // AND acme's job is untouched
    let (_, job) = acme.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "queued");
}

#[tokio::test]
async fn an_api_key_works_until_revoked_and_the_audit_trail_names_each_actor() {
    // GIVEN an operator (its own tenant ops), on a deployment that audits every accepted
    // submit
    let app = spawn_app(&[("CONVEYOR_AUDIT_SUBMITS", "true")]).await;
    let admin = app.as_caller(Some(&token("ops", &["operator"])));
    // WHEN it creates a submitter key for tenant acme
    let (status, created) = admin
        .post_json(
            "/v1/api-keys",
            &json!({ "name": "billing", "tenant": "acme", "roles": ["submitter"] }),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let key = created["key"]
        .as_str()
        .expect("the key, shown once")
        .to_string();
    let key_id = created["id"].as_str().unwrap().to_string();
    assert!(key.starts_with("cvk_"), "{key}");
    // THEN the key submits and cancels acme's jobs
    let service = app.as_caller(Some(&key));
    let (status, job) = service
        .post_json(
            "/v1/jobs",
            &json!({ "type": "sleep", "payload": { "ms": 1 }, "delay_seconds": 600 }),
        )
        .await;
    assert_eq!(
        (status, job["tenant"].as_str()),
        (StatusCode::ACCEPTED, Some("acme")),
        "{job}"
    );
    let job_id = job["id"].as_str().unwrap().to_string();
    let (status, _) = service.post(&format!("/v1/jobs/{job_id}/cancel")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    // AND the list shows the key without its secret
    let (_, listed) = admin.get("/v1/api-keys?tenant=acme").await;
    let shown = listed["keys"].as_array().unwrap();
    assert_eq!(shown.len(), 1, "{listed}");
    assert_eq!(shown[0]["id"], key_id.as_str());
    assert!(
        !listed.to_string().contains(&key[key.len() - 64..]),
        "no secret in {listed}"
    );

    // WHEN the key is revoked
    let (status, revoked) = admin.delete(&format!("/v1/api-keys/{key_id}")).await;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    // THEN the very next call with it is a 401
    let refused = service.get("/v1/jobs").await;
    assert_error(&refused, StatusCode::UNAUTHORIZED, "unauthorized", None);
    assert!(refused.1["error"]["message"]
        .as_str()
        .unwrap()
        .contains("revoked"));
    // AND a call with no credential at all is a 401 too
    let (status, _) = app.as_caller(None).get("/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // THEN the audit trail has the submit, the cancel and the refusal under acme's key, the
    // key's creation under the admin, and the anonymous 401
    let (status, trail) = admin.get("/v1/audit?tenant=acme").await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let entries = trail["entries"].as_array().unwrap();
    let find = |action: &str| {
        entries
            .iter()
            .find(|e| e["action"].as_str().is_some_and(|a| a.starts_with(action)))
            .unwrap_or_else(|| panic!("no {action} entry in {trail:#}"))
            .clone()
    };
    let actor = format!("key:{key_id}");
    let submit = find("job.submit");
    assert_eq!(
        (
            submit["actor"].as_str(),
            submit["job_id"].as_str(),
            submit["outcome"].as_str()
        ),
        (Some(actor.as_str()), Some(job_id.as_str()), Some("ok"))
    );
    assert!(
        submit["source_ip"]
            .as_str()
            .is_some_and(|ip| ip == "127.0.0.1"),
        "{submit}"
    );
    let cancel = find("job.cancel");
    assert_eq!(
        (cancel["actor"].as_str(), cancel["job_id"].as_str()),
        (Some(actor.as_str()), Some(job_id.as_str()))
    );
    let created = find("key.create");
    assert_eq!(created["actor"], "jwt:e2e");
    let (_, anonymous) = admin.get("/v1/audit?anonymous=true").await;
    let refusals: Vec<&Value> = anonymous["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "auth")
        .collect();
    assert!(
        refusals
            .iter()
            .any(|e| e["actor"] == actor.as_str() && e["outcome"] == "unauthorized"),
        "{anonymous:#}"
    );
    assert!(
        refusals.iter().any(|e| e["actor"] == "anonymous"),
        "{anonymous:#}"
    );
    // AND only an admin may read the trail
    let denied = service.get("/v1/audit").await;
    assert_eq!(
        denied.0,
        StatusCode::UNAUTHORIZED,
        "the revoked key is refused first"
    );
    let reader = app.as_caller(Some(&token("acme", &["reader"])));
    assert_error(
        &reader.get("/v1/audit").await,
        StatusCode::FORBIDDEN,
        "forbidden",
        None,
    );
}

/// Run the binary's `token`/`keys` commands with the app's settings.
async fn cli(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CONVEYOR_") {
            cmd.env_remove(name);
        }
    }
    let out = cmd
        .args(args)
        .env("CONVEYOR_DATA_DIR", app.data_path(""))
        .envs(env.iter().copied())
        .output()
        .await
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_command_line_prints_tokens() {
    // GIVEN a runtime with a JWT secret
    let app = spawn_app(&[]).await;
    // WHEN `conveyor token` prints a submitter token for acme
    let (ok, printed, err) = cli(
        &app,
        &[
            "token",
            "--tenant",
            "acme",
            "--role",
            "submitter",
            "--ttl",
            "10m",
        ],
        &[("CONVEYOR_JWT_SECRET", JWT_SECRET)],
    )
    .await;
    assert!(ok, "{err}");
    // THEN the runtime takes it as acme's
    let (status, job) = app
        .as_caller(Some(&printed))
        .post_json("/v1/jobs", &json!({ "type": "noop" }))
        .await;
    assert_eq!(
        (status, job["tenant"].as_str()),
        (StatusCode::ACCEPTED, Some("acme")),
        "{job}"
    );
    // AND without a secret the command says what is missing
    let (ok, _, err) = cli(
        &app,
        &["token", "--tenant", "acme", "--role", "reader"],
        &[],
    )
    .await;
    assert!(!ok && err.contains("CONVEYOR_JWT_SECRET"), "{err}");
}

/// (The embedded store's data directory: the suite's AWS pass leaves this out by name.)
#[tokio::test]
async fn the_command_line_manages_keys_in_the_data_directory() {
    // GIVEN a runtime on the embedded store, with one job of acme's
    let mut app = spawn_app_with(&[]).await;
    let acme = token("acme", &["submitter"]);
    let (status, _) = app
        .as_caller(Some(&acme))
        .post_json("/v1/jobs", &json!({ "type": "noop" }))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);

    // WHEN the runtime is stopped and `conveyor keys create` writes a key into its store
    app.kill9().await;
    let (ok, key, err) = cli(
        &app,
        &[
            "keys", "create", "--tenant", "acme", "--role", "reader", "--name", "cli",
        ],
        &[],
    )
    .await;
    assert!(ok && key.starts_with("cvk_"), "{err}");
    let (ok, listed, err) = cli(&app, &["keys", "list"], &[]).await;
    assert!(ok && listed.contains("\"name\":\"cli\""), "{listed} {err}");
    app.restart().await;
    // THEN the key reads acme's jobs
    let (status, page) = app.as_caller(Some(&key)).get("/v1/jobs").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(page["jobs"].as_array().map(Vec::len), Some(1), "{page}");
    // AND `conveyor keys revoke` stops it
    let id = &key[4..30];
    app.kill9().await;
    let (ok, _, err) = cli(&app, &["keys", "revoke", id], &[]).await;
    assert!(ok, "{err}");
    app.restart().await;
    let (status, _) = app.as_caller(Some(&key)).get("/v1/jobs").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn without_credentials_configured_the_runtime_is_open_only_on_loopback() {
    // GIVEN no JWT secret, no JWKS and no key
    let open = [("CONVEYOR_JWT_SECRET", "")];
    // WHEN the runtime serves 127.0.0.1
    let app = spawn_app(&open).await;
    // THEN it asks for no credential (dev mode): the caller is an admin of the default tenant
    let anonymous = app.as_caller(None);
    let (status, job) = anonymous
        .post_json("/v1/jobs", &json!({ "type": "noop" }))
        .await;
    assert_eq!(
        (status, job["tenant"].as_str()),
        (StatusCode::ACCEPTED, Some("default")),
        "{job}"
    );
    let (status, _) = anonymous.get("/v1/api-keys").await;
    assert_eq!(status, StatusCode::OK);

    // WHEN it is asked to serve every address
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_conveyor-under-test"));
    for (name, _) in std::env::vars() {
        if name.starts_with("CONVEYOR_") {
            cmd.env_remove(name);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(30),
        cmd.env("CONVEYOR_ADDR", "0.0.0.0:0")
            .env("CONVEYOR_DATA_DIR", dir.path())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the runtime refuses at once")
    .unwrap();
    // THEN it refuses to start, saying why
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
}

#[tokio::test]
async fn a_jwks_from_a_url_and_the_configured_issuer_and_audience_are_required() {
    // GIVEN an identity provider serving its JWKS over HTTP, and a runtime that requires its
    // issuer and audience
    let jwks = std::fs::read_to_string(format!("{FIXTURES}/jwks.json")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let provider = axum::Router::new().route(
        "/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = jwks.clone();
            async move { ([("content-type", "application/json")], jwks) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, provider).await });
    let app = spawn_app(&[
        ("CONVEYOR_JWKS", url.as_str()),
        ("CONVEYOR_JWT_ISSUER", "https://id.example"),
        ("CONVEYOR_JWT_AUDIENCE", "conveyor"),
    ])
    .await;
    let with = |iss: Option<&str>, aud: Option<&str>| {
        let mut c = claims("acme", &["reader"], (-10, 3600));
        let c_ = c.as_object_mut().unwrap();
        match iss {
            Some(iss) => c_.insert("iss".into(), json!(iss)),
            None => c_.remove("iss"),
        };
        match aud {
            Some(aud) => c_.insert("aud".into(), json!(aud)),
            None => c_.remove("aud"),
        };
        signed_with_fixture(Algorithm::RS256, "test-rsa", &c)
    };
    // WHEN tokens signed by the provider's key come with the right and wrong claims
    let right = call(
        &app,
        Some(&with(Some("https://id.example"), Some("conveyor"))),
        "GET",
        "/v1/jobs",
    )
    .await;
    let wrong_iss = call(
        &app,
        Some(&with(Some("https://evil.example"), Some("conveyor"))),
        "GET",
        "/v1/jobs",
    )
    .await;
    let no_aud = call(
        &app,
        Some(&with(Some("https://id.example"), None)),
        "GET",
        "/v1/jobs",
    )
    .await;
    let wrong_aud = call(
        &app,
        Some(&with(Some("https://id.example"), Some("other"))),
        "GET",
        "/v1/jobs",
    )
    .await;
    // THEN only the right one is taken
    assert_eq!(right.0, StatusCode::OK, "{}", right.1);
    for (what, answer) in [
        ("issuer", &wrong_iss),
        ("no audience", &no_aud),
        ("audience", &wrong_aud),
    ] {
        assert_eq!(answer.0, StatusCode::UNAUTHORIZED, "{what}: {}", answer.1);
    }
    assert!(
        wrong_iss.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("iss"),
        "{}",
        wrong_iss.1
    );
}

#[tokio::test]
async fn by_default_an_accepted_submit_writes_no_audit_entry_and_a_refused_one_does() {
    // GIVEN a deployment with its default settings (submits not audited one by one)
    let app = spawn_app(&[]).await;
    let admin = app.as_caller(Some(&token("ops", &["operator"])));
    // WHEN a job is accepted, and a submit is refused
    let id = app.submit_new(&json!({ "type": "noop" })).await;
    let (status, _) = app.submit(&json!({ "type": "no.such.type" })).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    // THEN the tenant's audit trail has the refusal, and nothing for the accepted job
    let (status, trail) = admin.get("/v1/audit?tenant=default").await;
    assert_eq!(status, StatusCode::OK, "{trail}");
    let submits: Vec<&serde_json::Value> = trail["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "job.submit")
        .collect();
    assert_eq!(submits.len(), 1, "{trail:#}");
    assert_ne!(submits[0]["outcome"], "ok", "{trail:#}");
    assert!(!trail.to_string().contains(&id), "{trail:#}");
}

#[tokio::test]
async fn a_token_from_the_identity_provider_is_no_operator_unless_the_deployment_allows_it() {
    let jwks = format!("{FIXTURES}/jwks.json");
    let settings = |allow: &'static str| {
        vec![
            ("CONVEYOR_JWKS", jwks.clone()),
            ("CONVEYOR_JWT_ISSUER", ISSUER.to_string()),
            ("CONVEYOR_JWT_AUDIENCE", AUDIENCE.to_string()),
            ("CONVEYOR_JWKS_OPERATOR", allow.to_string()),
        ]
    };
    let operator = signed_with_fixture(
        Algorithm::RS256,
        "test-rsa",
        &claims("acme", &["operator"], (-10, 3600)),
    );
    let admin = signed_with_fixture(
        Algorithm::RS256,
        "test-rsa",
        &claims("acme", &["admin"], (-10, 3600)),
    );
    // GIVEN a deployment that takes the identity provider's tokens, by default
    let env = settings("false");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(&env).await;
    // WHEN a token of it claims the operator role, and one claims admin
    let (claimed, answer) = call(&app, Some(&operator), "GET", "/v1/jobs?tenant=globex").await;
    let (own, _) = call(&app, Some(&admin), "GET", "/v1/jobs").await;
    // THEN the operator's is refused, the admin's taken for its own tenant
    assert_eq!(claimed, StatusCode::UNAUTHORIZED, "{answer}");
    assert!(
        answer.to_string().contains("CONVEYOR_JWKS_OPERATOR"),
        "{answer}"
    );
    assert_eq!(own, StatusCode::OK);
    // WHEN the deployment allows it
    let env = settings("true");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let app = spawn_app(&env).await;
    // THEN the operator's token acts on another tenant
    let (status, answer) = call(&app, Some(&operator), "GET", "/v1/jobs?tenant=globex").await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}
