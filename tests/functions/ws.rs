//! The WebSocket API's functions: `authorizer` on `$connect`, `ws` for the connection's
//! routes, and `notify` pushing the table's changes to the subscribed connections.

use crate::harness::{aws_sample, Deployment, Lambda};
use crate::http::{make_key, submit};
use crate::jobs::stream_batch;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

type Posted = Arc<Mutex<Vec<(String, String)>>>;

/// API Gateway's management endpoint (`POST /@connections/{id}`) as a recorder: what notify
/// posted, to which connection. A connection whose id starts with `gone-` is one whose client
/// went away: API Gateway answers 410 Gone for it.
async fn management_endpoint() -> (String, Posted) {
    use axum::extract::{Path, State};
    let posted: Posted = Arc::default();
    let app = axum::Router::new()
        .route(
            "/@connections/{id}",
            axum::routing::post(
                |State(posted): State<Posted>, Path(id): Path<String>, body: String| async move {
                    let gone = id.starts_with("gone-");
                    posted.lock().unwrap().push((id, body));
                    if gone {
                        axum::http::StatusCode::GONE
                    } else {
                        axum::http::StatusCode::OK
                    }
                },
            ),
        )
        .with_state(posted.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), posted)
}

/// A WebSocket API event for `route` on connection `id`, from AWS's sample, with the
/// REQUEST authorizer's context `authorizer` (on `$connect`) and a frame `body`.
fn ws_event(route: &str, id: &str, authorizer: Option<&Value>, body: Option<&Value>) -> Value {
    let mut event = aws_sample(if route == "$disconnect" {
        "example-apigw-websocket-request-disconnect-route.json"
    } else {
        "example-apigw-websocket-request.json"
    });
    let ctx = &mut event["requestContext"];
    ctx["routeKey"] = json!(route);
    ctx["connectionId"] = json!(id);
    ctx["eventType"] = json!(match route {
        "$connect" => "CONNECT",
        "$disconnect" => "DISCONNECT",
        _ => "MESSAGE",
    });
    match authorizer {
        Some(context) => ctx["authorizer"] = context.clone(),
        None => {
            if let Some(c) = ctx.as_object_mut() {
                c.remove("authorizer");
            }
        }
    }
    match body {
        Some(body) => event["body"] = json!(body.to_string()),
        None => {
            if let Some(e) = event.as_object_mut() {
                e.remove("body");
            }
        }
    }
    event
}

#[tokio::test]
async fn a_websocket_is_authorized_connected_subscribed_pushed_to_and_disconnected() {
    // GIVEN the WebSocket API's functions and the api function, with API Gateway's management
    // endpoint recorded, and a reader's key of acme made through api
    let (endpoint, posted) = management_endpoint().await;
    let deployment = Deployment::new(&[("CONVEYOR_WS_ENDPOINT", endpoint.as_str())]).await;
    let (secret_id, _) = deployment.jwt_secret().await;
    let mut lambda = Lambda::start().await;
    for function in ["api", "ws", "notify"] {
        lambda.run(function, &deployment, &[]);
    }
    lambda.run(
        "authorizer",
        &deployment,
        &[("CONVEYOR_JWT_SECRET_ID", secret_id.as_str())],
    );
    let token = make_key(&mut lambda, "acme", &["reader"]).await;

    // WHEN the WebSocket API's REQUEST authorizer is asked about `$connect?token=<key>`, and
    // about a token that is no key
    let connect = |token: &str| {
        let mut request = aws_sample("example-apigw-v2-custom-authorizer-websocket-request.json");
        request["queryStringParameters"] = json!({ "token": token });
        request["multiValueQueryStringParameters"] = json!({ "token": [token] });
        request
    };
    let allowed = lambda.invoke("authorizer", &connect(&token)).await;
    let denied = lambda.invoke("authorizer", &connect("not-a-key")).await;
    // THEN the key is allowed with acme in the context, and the other denied
    let effect = |answer: &Value| answer["policyDocument"]["Statement"][0]["Effect"].clone();
    assert_eq!(effect(&allowed), "Allow", "{allowed}");
    assert_eq!(allowed["context"]["tenant"], "acme", "{allowed}");
    assert_eq!(effect(&denied), "Deny", "{denied}");

    // WHEN the connection comes to ws with that context (API Gateway adds the principal)
    let mut context = allowed["context"].clone();
    context["principalId"] = allowed["principalId"].clone();
    let answer = lambda
        .invoke("ws", &ws_event("$connect", "conn-1", Some(&context), None))
        .await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    // AND one with no authorizer context is refused
    let answer = lambda
        .invoke("ws", &ws_event("$connect", "conn-2", None, None))
        .await;
    assert_eq!(answer["statusCode"], 403, "{answer}");

    // WHEN acme submits a job and the connection subscribes to it
    let id = submit(&mut lambda, "acme", &json!({ "type": "noop" }))
        .await
        .to_string();
    let id = id.as_str();
    let answer = lambda
        .invoke(
            "ws",
            &ws_event(
                "subscribe",
                "conn-1",
                None,
                Some(&json!({ "action": "subscribe", "job_id": id })),
            ),
        )
        .await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let reply: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
    assert_eq!(reply["type"], "subscribed", "{reply}");
    assert_eq!(reply["job"]["id"], id, "{reply}");

    // AND a second connection subscribes to all of acme's jobs, then its client goes away
    // without a word (API Gateway answers 410 Gone for it from now on)
    for (route, body) in [
        ("$connect", None),
        (
            "subscribe",
            Some(json!({ "action": "subscribe", "all": true })),
        ),
    ] {
        let context = (route == "$connect").then_some(&context);
        let answer = lambda
            .invoke("ws", &ws_event(route, "gone-1", context, body.as_ref()))
            .await;
        assert_eq!(answer["statusCode"], 200, "{route}: {answer}");
    }

    // AND notify gets the table's stream so far
    let batch = stream_batch(&deployment).await;
    let answer = lambda.invoke("notify", &batch).await;
    assert_eq!(answer, json!({ "batchItemFailures": [] }), "{answer}");
    // THEN the job's change was pushed to the subscribed connection, and tried on the gone
    // one, which is forgotten
    let pushed = posted.lock().unwrap().clone();
    assert!(!pushed.is_empty(), "nothing pushed");
    assert!(
        pushed.iter().all(|(c, _)| c == "conn-1" || c == "gone-1"),
        "{pushed:?}"
    );
    use shared::ports::ConnectionStore;
    let connections = deployment.backend().await.connections();
    assert!(connections.connection("gone-1").await.unwrap().is_none());
    assert!(connections.connection("conn-1").await.unwrap().is_some());
    assert!(
        pushed.iter().any(|(_, body)| body.contains(id)),
        "{pushed:?}"
    );

    // WHEN the connection leaves the job's subscription, then closes, and the same changes
    // come again
    let answer = lambda
        .invoke(
            "ws",
            &ws_event(
                "unsubscribe",
                "conn-1",
                None,
                Some(&json!({ "action": "unsubscribe", "job_id": id })),
            ),
        )
        .await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let answer = lambda
        .invoke("ws", &ws_event("$disconnect", "conn-1", None, None))
        .await;
    assert_eq!(answer["statusCode"], 200, "{answer}");
    posted.lock().unwrap().clear();
    lambda.invoke("notify", &batch).await;
    // THEN nothing is pushed to it
    assert_eq!(
        posted.lock().unwrap().len(),
        0,
        "{:?}",
        posted.lock().unwrap()
    );
}
