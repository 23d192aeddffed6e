//! The HTTP API's two functions: `authorizer` answering API Gateway's authorizer requests, and
//! `api` answering the requests it let through.

use crate::harness::{aws_sample, Deployment, Lambda};
use serde_json::{json, Value};

/// An HTTP API (payload 2.0) request to the `api` function, from AWS's sample: `method` on
/// `path` (with its query), a JSON `body`, and the context a Lambda authorizer answered
/// (`None`: a request no authorizer saw).
pub fn http_event(
    method: &str,
    path: &str,
    body: Option<&Value>,
    context: Option<&Value>,
) -> Value {
    let mut event = aws_sample(match context {
        Some(_) => "example-apigw-v2-request-lambda-authorizer.json",
        None => "example-apigw-v2-request-no-authorizer.json",
    });
    let (raw_path, query) = path.split_once('?').unwrap_or((path, ""));
    event["rawPath"] = json!(raw_path);
    event["rawQueryString"] = json!(query);
    let params: serde_json::Map<String, Value> = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    event["queryStringParameters"] = Value::Object(params);
    if let Some(object) = event.as_object_mut() {
        object.remove("pathParameters");
        object.remove("cookies");
    }
    event["headers"] = json!({
        "content-type": "application/json",
        "host": "api-id.execute-api.us-east-1.amazonaws.com",
        "user-agent": "curl/8.5.0",
    });
    let http = &mut event["requestContext"]["http"];
    http["method"] = json!(method);
    http["path"] = json!(raw_path);
    http["sourceIp"] = json!("203.0.113.7");
    if let Some(context) = context {
        event["requestContext"]["authorizer"] = json!({ "lambda": context });
    }
    match body {
        Some(body) => event["body"] = json!(body.to_string()),
        None => {
            if let Some(object) = event.as_object_mut() {
                object.remove("body");
            }
        }
    }
    event["isBase64Encoded"] = json!(false);
    event
}

/// The context our authorizer answers for a caller of `tenant` with `roles`.
pub fn caller(tenant: &str, roles: &str) -> Value {
    json!({ "tenant": tenant, "subject": format!("key:{tenant}-test"), "roles": roles })
}

/// Submit `body` through the api function as a submitter of `tenant`: the new job's id, after
/// checking it was accepted.
pub async fn submit(lambda: &mut Lambda, tenant: &str, body: &Value) -> shared::domain::JobId {
    let (status, job) = call(
        lambda,
        "POST",
        "/v1/jobs",
        Some(body),
        Some(&caller(tenant, "submitter")),
    )
    .await;
    assert_eq!(status, 202, "{job}");
    shared::domain::JobId::parse(job["id"].as_str().unwrap()).unwrap()
}

/// An API key of `tenant` with `roles`, made through the api function by an admin of the
/// tenant: its secret, shown once.
pub async fn make_key(lambda: &mut Lambda, tenant: &str, roles: &[&str]) -> String {
    let (status, key) = call(
        lambda,
        "POST",
        "/v1/api-keys",
        Some(&json!({ "name": "test", "roles": roles })),
        Some(&caller(tenant, "admin")),
    )
    .await;
    assert_eq!(status, 201, "{key}");
    key["key"]
        .as_str()
        .expect("the key's secret, once")
        .to_string()
}

/// `method` `path` (with its query) through the api function, with a JSON `body`, as a caller
/// whose context an authorizer answered (`None`: a request no authorizer saw): the status and
/// JSON body of its answer.
pub async fn call(
    lambda: &mut Lambda,
    method: &str,
    path: &str,
    body: Option<&Value>,
    context: Option<&Value>,
) -> (u64, Value) {
    answer_of(
        &lambda
            .invoke("api", &http_event(method, path, body, context))
            .await,
    )
}

/// The status and JSON body of the `api` function's answer (an HTTP API payload 2.0 response).
pub fn answer_of(response: &Value) -> (u64, Value) {
    let status = response["statusCode"].as_u64().expect("a status code");
    let body = response["body"].as_str().unwrap_or_default();
    let body = if response["isBase64Encoded"] == true {
        String::from_utf8(aws_smithy_types::base64::decode(body).expect("base64")).unwrap()
    } else {
        body.to_string()
    };
    (
        status,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

#[tokio::test]
async fn the_api_function_answers_http_api_requests_as_its_authorizer_let_them_through() {
    // GIVEN the api function running as Lambda runs it, on a deployment of its own
    let deployment = Deployment::new(&[]).await;
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);

    // WHEN a submit comes through with the authorizer's context for tenant acme, a submitter
    let submit = json!({ "type": "noop", "payload": { "n": 1 } });
    let response = lambda
        .invoke(
            "api",
            &http_event(
                "POST",
                "/v1/jobs",
                Some(&submit),
                Some(&caller("acme", "submitter reader")),
            ),
        )
        .await;
    // THEN it is accepted for acme, and the job is in the table, queued
    let (status, job) = answer_of(&response);
    assert_eq!(status, 202, "{response}");
    assert_eq!(
        (job["tenant"].as_str(), job["status"].as_str()),
        (Some("acme"), Some("queued")),
        "{job}"
    );
    let id = shared::domain::JobId::parse(job["id"].as_str().unwrap()).unwrap();
    let ports = deployment.ports().await;
    let stored = ports
        .store
        .get(id)
        .await
        .unwrap()
        .expect("the job is stored");
    assert_eq!(
        (stored.tenant.as_str(), stored.status.as_str()),
        ("acme", "queued")
    );
    assert_eq!(stored.payload, json!({ "n": 1 }));

    // AND acme reads it back, with a query string
    let (status, read) = call(
        &mut lambda,
        "GET",
        "/v1/jobs?status=queued&limit=5",
        None,
        Some(&caller("acme", "reader")),
    )
    .await;
    assert_eq!(status, 200, "{read}");
    assert_eq!(read["jobs"][0]["id"], job["id"], "{read}");
    // AND another tenant does not see it
    let (status, theirs) = call(
        &mut lambda,
        "GET",
        &format!("/v1/jobs/{}", job["id"].as_str().unwrap()),
        None,
        Some(&caller("other", "reader")),
    )
    .await;
    assert_eq!(status, 404, "{theirs}");

    // WHEN a request reaches it that no authorizer saw
    let (status, refused) = call(&mut lambda, "POST", "/v1/jobs", Some(&submit), None).await;
    // THEN it is refused with the API's JSON error, and nothing more is stored
    assert_eq!(status, 401, "{refused}");
    assert!(refused["error"]["message"].is_string(), "{refused}");
    let listed = deployment.jobs_of("acme").await;
    assert_eq!(listed.len(), 1, "{listed:?}");

    // AND the API's description is served without a credential
    let (status, description) = call(&mut lambda, "GET", "/v1/openapi.json", None, None).await;
    assert_eq!(status, 200, "{description}");
    assert!(
        description["paths"]["/v1/jobs"].is_object(),
        "{description}"
    );

    // WHEN acme submits two jobs in one request, as no batch of its own
    let (status, created) = call(
        &mut lambda,
        "POST",
        "/v1/jobs/batch",
        Some(&json!({ "jobs": [{ "type": "noop" }, { "type": "noop" }] })),
        Some(&caller("acme", "submitter")),
    )
    .await;
    // THEN both are created, and stored
    assert_eq!((status, &created["created"]), (200, &json!(2)), "{created}");
    let listed = deployment.jobs_of("acme").await;
    assert_eq!(listed.len(), 3, "{listed:?}");
}

/// A JWT for `subject` of tenant globex with `role`, signed with `secret`, valid five minutes.
fn jwt_of(secret: &str, subject: &str, role: shared::domain::Role) -> String {
    shared::auth::issue_token(
        secret,
        &shared::domain::Tenant::parse("globex").unwrap(),
        subject,
        &[role],
        std::time::Duration::from_secs(300),
        None,
        None,
        chrono::Utc::now(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_authorizer_names_the_caller_of_a_key_and_denies_what_it_cannot_verify() {
    // GIVEN the authorizer and the api function, and a key an admin of acme made through the
    // api function
    let deployment = Deployment::new(&[]).await;
    let (secret_id, secret) = deployment.jwt_secret().await;
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);
    lambda.run(
        "authorizer",
        &deployment,
        &[("CONVEYOR_JWT_SECRET_ID", secret_id.as_str())],
    );
    let token = make_key(&mut lambda, "acme", &["submitter"]).await;

    // WHEN API Gateway asks the authorizer about a request bearing it
    let mut request = aws_sample("example-apigw-v2-custom-authorizer-v2-request.json");
    request["headers"] = json!({ "authorization": format!("Bearer {token}") });
    request["identitySource"] = json!([format!("Bearer {token}")]);
    request["rawPath"] = json!("/v1/jobs");
    let answer = lambda.invoke("authorizer", &request).await;
    // THEN it is authorized, with acme and the key's roles in the context
    assert_eq!(answer["isAuthorized"], true, "{answer}");
    assert_eq!(answer["context"]["tenant"], "acme", "{answer}");
    assert_eq!(answer["context"]["roles"], "submitter", "{answer}");

    // AND that context, handed to the api function, submits as acme
    let (status, job) = call(
        &mut lambda,
        "POST",
        "/v1/jobs",
        Some(&json!({ "type": "noop" })),
        Some(&answer["context"]),
    )
    .await;
    assert_eq!(
        (status, job["tenant"].as_str()),
        (202, Some("acme")),
        "{job}"
    );

    // WHEN it is asked about a JWT signed with the deployment's secret
    let jwt = jwt_of(&secret, "alice", shared::domain::Role::Reader);
    let mut request = aws_sample("example-apigw-v2-custom-authorizer-v2-request.json");
    request["headers"] = json!({ "authorization": format!("Bearer {jwt}") });
    let answer = lambda.invoke("authorizer", &request).await;
    // THEN its tenant and subject are the context
    assert_eq!(answer["isAuthorized"], true, "{answer}");
    assert_eq!(
        (
            answer["context"]["tenant"].as_str(),
            answer["context"]["subject"].as_str()
        ),
        (Some("globex"), Some("jwt:alice")),
        "{answer}"
    );

    // WHEN it is asked about a bearer value that is no key, a JWT signed with another secret,
    // and a request with no credential
    let forged = jwt_of(
        "another-secret-of-thirty-two-bytes-or-more",
        "mallory",
        shared::domain::Role::Admin,
    );
    for header in [
        json!({ "authorization": "Bearer not-a-key" }),
        json!({ "authorization": format!("Bearer {forged}") }),
        json!({}),
    ] {
        let mut request = aws_sample("example-apigw-v2-custom-authorizer-v2-request.json");
        request["headers"] = header.clone();
        let answer = lambda.invoke("authorizer", &request).await;
        // THEN it denies: API Gateway answers the caller itself, and the api function is never
        // invoked for it
        assert_eq!(answer["isAuthorized"], false, "{header}: {answer}");
    }
}

/// The events of a server-sent-events body: each one's id and JSON data.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    let mut events = vec![];
    for block in body.split("\n\n") {
        let id = block.lines().find_map(|l| l.strip_prefix("id: "));
        let data = block.lines().find_map(|l| l.strip_prefix("data: "));
        if let (Some(id), Some(data)) = (id, data) {
            events.push((id.to_string(), serde_json::from_str(data).unwrap()));
        }
    }
    events
}

#[tokio::test]
async fn a_catch_up_of_server_sent_events_sends_a_change_written_after_a_later_stamped_one() {
    // GIVEN the api function, and two jobs of acme
    let deployment = Deployment::new(&[]).await;
    let mut lambda = Lambda::start().await;
    lambda.run("api", &deployment, &[]);
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let mut ids = vec![];
    for _ in 0..2 {
        ids.push(submit(&mut lambda, "acme", &json!({ "type": "noop" })).await);
    }
    let ports = deployment.ports().await;
    let read = |last: String| {
        http_event(
            "GET",
            &format!("/v1/events?all=true&last_event_id={last}"),
            None,
            Some(&caller("acme", "reader")),
        )
    };
    // AND the second started, and a reader caught up to that change
    let now = chrono::Utc::now();
    let started = ports.store.start(ids[1], now, now).await.unwrap();
    assert!(
        matches!(started, shared::ports::Started::Running(_)),
        "{started:?}"
    );
    let response = lambda
        .invoke("api", &read(format!("t{}", before.timestamp_micros())))
        .await;
    let (status, body) = answer_of(&response);
    assert_eq!(status, 200, "{response}");
    let events = sse_events(body.as_str().unwrap_or_default());
    let last = events.last().expect("events").clone();
    assert_eq!(last.1["job"]["id"], ids[1].to_string(), "{events:?}");
    assert_eq!(last.1["job"]["status"], "running", "{events:?}");

    // WHEN the first starts in a function whose clock is two seconds behind: its change is
    // written after the one the reader saw, stamped before it
    let behind = now - chrono::Duration::seconds(2);
    let started = ports
        .store
        .start(
            ids[0],
            behind,
            chrono::Utc::now() + chrono::Duration::seconds(1),
        )
        .await
        .unwrap();
    assert!(
        matches!(started, shared::ports::Started::Running(_)),
        "{started:?}"
    );
    // THEN the reader, resuming after its last event, receives it
    let (_, body) = answer_of(&lambda.invoke("api", &read(last.0)).await);
    let events = sse_events(body.as_str().unwrap_or_default());
    assert!(
        events
            .iter()
            .any(|(_, e)| e["job"]["id"] == ids[0].to_string() && e["job"]["status"] == "running"),
        "{events:?}"
    );
}
