//! The shipped types' HTTP client never goes through a proxy named in the environment: the
//! guard judges the addresses the client connects to, and through a proxy it would see only the
//! proxy's. (A test binary of its own: the proxy variables are the whole process's.)

use shared::jobs::{refusal, Outbound, OutboundPolicy};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn the_shipped_types_never_go_through_a_proxy_the_environment_names() {
    // GIVEN a proxy on this machine that counts what reaches it and answers everything 200,
    // named in every proxy variable
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy = format!("http://{}", listener.local_addr().unwrap());
    let reached = Arc::new(AtomicUsize::new(0));
    let counted = reached.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nproxied")
                .await;
        }
    });
    for name in [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ] {
        std::env::set_var(name, &proxy);
    }
    std::env::remove_var("NO_PROXY");
    std::env::remove_var("no_proxy");

    // WHEN a shipped type's client asks for a name that resolves to an inner address
    let outbound = Outbound::new(OutboundPolicy::default());
    let answer = outbound.client().get("http://localhost:9/").send().await;
    // THEN the guard refuses it, and nothing reached the proxy
    let error = answer.expect_err("refused");
    assert!(refusal(&error).is_some(), "{error:?}");
    assert_eq!(reached.load(Ordering::SeqCst), 0);
}
