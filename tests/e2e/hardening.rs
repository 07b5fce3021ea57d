//! What an outside party can make a server hold before it has proven
//! anything: sockets that never speak or speak a byte a second, a flood of
//! them against a process with few descriptors, one address taking more
//! than its share.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use herald_testkit::*;

/// The test settings with `extra` on top.
fn env(extra: &[(&str, &str)]) -> Env {
    extra
        .iter()
        .fold(Env::new(), |env, (key, value)| env.with(key, *value))
}

/// Waits until the server closes `socket` (reads its end).
async fn closed_by_server(socket: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("the server closes the socket in time")
        {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_sockets_and_slow_headers_are_closed_within_the_header_timeout() {
    let herald = Herald::standalone(&env(&[("HERALD_HTTP_HEADER_TIMEOUT_SECS", "1")]));
    let mut silent = TcpStream::connect(herald.addr).await.unwrap();
    assert!(
        closed_by_server(&mut silent).await.is_empty(),
        "no answer, closed"
    );

    // a byte every 300 ms: the headers would take ~10 s
    let mut slow = TcpStream::connect(herald.addr).await.unwrap();
    let request = b"GET /healthz HTTP/1.1\r\nHost: herald\r\nUser-Agent: slowloris\r\n\r\n";
    let mut sent = 0;
    let closed = loop {
        if sent == request.len() {
            break false;
        }
        if slow.write_all(&request[sent..=sent]).await.is_err() {
            break true;
        }
        sent += 1;
        let mut byte = [0u8; 1];
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut byte)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(_)) => break true, // an error answer, then the close
            Err(_) => {}             // still open: next byte
        }
    };
    assert!(closed, "the whole request went through at a byte a second");
    assert!(sent < request.len() - 10, "closed only after {sent} bytes");
    // an honest client is served as ever
    let answer = http_client()
        .get(format!("{}/healthz", herald.http()))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
}

/// Connects a WebSocket client from `local` (a loopback address of its
/// own) and sends `connect`; answers the HTTP status when refused.
async fn ws_from(
    local: &str,
    server: SocketAddr,
    token: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, u16> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    let stream = socket.connect(server).await.unwrap();
    match raw_ws_over(stream, &format!("ws://{server}/ws"), token, &[]).await {
        Ok(ws) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_idle_sockets_leaves_health_checks_and_clients_working() {
    let env = env(&[
        // the flood would be closed after 10 s anyway; here it stays
        ("HERALD_HTTP_HEADER_TIMEOUT_SECS", "60"),
        ("HERALD_MAX_CONNECTIONS_PER_IP", "0"),
        ("HERALD_CONNECTION_RATE_PER_IP", "100000"),
    ]);
    let herald = Herald::standalone_limited(&env, 1024);
    let token = mint_token(&env, "alice", "chat:*", "");
    let mut flood = Vec::new();
    for _ in 0..1100 {
        match TcpStream::connect(herald.addr).await {
            Ok(socket) => flood.push(socket),
            Err(e) => panic!("the listener stopped accepting: {e}"),
        }
    }
    // health still answers: the oldest silent sockets made room
    let health = http_client()
        .get(format!("{}/healthz", herald.http()))
        .timeout(WAIT)
        .send()
        .await
        .expect("/healthz answers during the flood");
    assert_eq!(health.status(), 200);
    // and an authenticated client still connects
    ws_from("127.0.0.1", herald.addr, &token)
        .await
        .expect("a client connects during the flood");
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_more_than_its_share() {
    // sockets: at most 20 per address
    let env_sockets = env(&[
        ("HERALD_MAX_CONNECTIONS_PER_IP", "20"),
        ("HERALD_CONNECTION_RATE_PER_IP", "100000"),
    ]);
    let herald = Herald::standalone(&env_sockets);
    let token = mint_token(&env_sockets, "bob", "chat:*", "");
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            ws_from("127.0.0.1", herald.addr, &token)
                .await
                .expect("within its share"),
        );
    }
    assert!(
        matches!(ws_from("127.0.0.1", herald.addr, &token).await, Err(503)),
        "a 21st socket from the same address is refused"
    );
    ws_from("127.0.0.2", herald.addr, &token)
        .await
        .expect("another address still connects");
    drop(held);

    // new connections: at most 5 a second per address, each address its
    // own, also behind a trusted proxy that names them
    let env_rate = env(&[
        ("HERALD_CONNECTION_RATE_PER_IP", "5"),
        ("HERALD_TRUSTED_PROXIES", "127.0.0.3"),
    ]);
    let herald = Herald::standalone(&env_rate);
    let token = mint_token(&env_rate, "carol", "chat:*", "");
    // all at once, so the test's own speed does not refill the share
    let attempts =
        futures::future::join_all((0..15).map(|_| ws_from("127.0.0.1", herald.addr, &token))).await;
    let mut refused = 0;
    let mut open = Vec::new();
    for attempt in attempts {
        match attempt {
            Ok(ws) => open.push(ws),
            Err(status) => {
                assert_eq!(status, 503);
                refused += 1;
            }
        }
    }
    assert!(refused >= 5, "{refused} of 15 refused");
    ws_from("127.0.0.2", herald.addr, &token)
        .await
        .expect("another address has its own share");
    let _ = rustls::crypto::ring::default_provider().install_default();
    let via_proxy = |client: &'static str| {
        let url = format!("{}/poll?channels=chat:x&timeout=0", herald.http());
        let token = token.clone();
        async move {
            reqwest::Client::builder()
                .local_address("127.0.0.3".parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap()
                .get(url)
                .bearer_auth(token)
                .header("X-Forwarded-For", client)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let statuses = futures::future::join_all((0..15).map(|_| via_proxy("10.9.9.9"))).await;
    assert!(
        statuses.iter().filter(|s| **s == 503).count() >= 5,
        "the forwarded address has a share of its own: {statuses:?}"
    );
    assert_eq!(
        via_proxy("10.8.8.8").await,
        200,
        "another client behind the same proxy still connects"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_history_gives_its_memory_back() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(
        &config,
        // longer than a wave takes to write on a busy machine: each wave is
        // whole in memory before any of it expires (with 2 s, part of the
        // first expired while it was written, and it measured small)
        "[namespaces.wave]\nhistory_size = 10\nhistory_ttl_secs = 20\n",
    )
    .unwrap();
    let herald = Herald::standalone(&env(&[("HERALD_CONFIG", config.to_str().unwrap())]));
    let http = http_client();
    let data = json!({"pad": "x".repeat(1000)});
    let wave = |name: &'static str| {
        let (http, data, api) = (http.clone(), data.clone(), herald.http());
        async move {
            for batch in 0..100 {
                let channels: Vec<String> = (0..1000)
                    .map(|i| format!("wave:{name}-{batch}-{i}"))
                    .collect();
                let answer = http
                    .post(format!("{api}/api/broadcast"))
                    .bearer_auth(API_KEY)
                    .json(&json!({"channels": channels, "data": data}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
            }
        }
    };
    let before = rss(herald.pid());
    wave("one").await;
    let first = rss(herald.pid()).saturating_sub(before);
    // the first wave expires and is swept out
    eventually(WAIT, "the first wave swept out", || async {
        metrics(&herald.http()).await.get("herald_history_channels") == Some(&0.0)
    })
    .await;
    let between = rss(herald.pid());
    wave("two").await;
    let second = rss(herald.pid()).saturating_sub(between);
    eprintln!(
        "RSS growth: first wave {} MiB, second wave {} MiB",
        first >> 20,
        second >> 20
    );
    // ~100 MiB idle: only enough for the comparison to mean something is
    // asked
    assert!(
        first > 20 * 1024 * 1024,
        "the first wave took {} MiB",
        first >> 20
    );
    assert!(
        second < first / 2,
        "the second wave took {} MiB after the first's {} MiB were freed",
        second >> 20,
        first >> 20
    );
}

#[test]
fn deep_or_broken_data_oversized_grpc_fast_commands_and_a_polite_close_from_third_party_clients() {
    let env = env(&[("HERALD_COMMAND_RATE", "5"), ("HERALD_COMMAND_BURST", "5")]);
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "mallory", "chat:*", "chat:*");
    let grpc = herald.grpc.expect("gRPC").to_string();
    let out = run_python(
        "hardening.py",
        &[&herald.http(), &grpc, &herald.ws(), API_KEY, &token],
    );
    assert!(out.contains("ok: hardening"), "{out}");
}

#[tokio::test]
async fn a_trace_log_never_holds_a_token() {
    let env = env(&[("RUST_LOG", "trace")]);
    let herald = Herald::standalone(&env);
    let token = mint_token(&env, "alice", "chat:*", "");
    ws_from("127.0.0.1", herald.addr, &token)
        .await
        .expect("connected");
    let logs = herald.logs();
    assert!(
        logs.contains(r#""level":"DEBUG""#),
        "verbose logs were written"
    );
    let signature = token.rsplit('.').next().unwrap();
    assert!(!logs.contains(signature), "the token is in the logs");
}

/// Reads an answer's head (lower-cased) from `socket`.
async fn read_head(socket: &mut TcpStream) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, socket.read(&mut buf))
            .await
            .expect("an answer in time")
            .unwrap();
        assert!(
            n > 0,
            "closed without an answer: {:?}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).to_lowercase()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_before_the_body_is_read_tells_the_client_not_to_reuse_the_connection() {
    // A keep-alive client that sends its next request on a connection the
    // server is closing gets no answer at all (seen from httpx: "Server
    // disconnected without sending a response").
    let herald = Herald::standalone(&Env::new());
    let body = br#"{"channel":"news:refused","data":1}"#;
    let request = |key: &str| {
        format!(
            "POST /api/publish HTTP/1.1\r\nHost: herald\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
    };
    // the body is not sent yet when the key is refused
    let mut refused = TcpStream::connect(herald.addr).await.unwrap();
    refused
        .write_all(request("wrong-key-1").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut refused).await;
    assert!(head.starts_with("http/1.1 401"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    closed_by_server(&mut refused).await;

    // an answer after the whole body was read keeps the connection
    let mut kept = TcpStream::connect(herald.addr).await.unwrap();
    kept.write_all(request(API_KEY).as_bytes()).await.unwrap();
    kept.write_all(body).await.unwrap();
    let head = read_head(&mut kept).await;
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(!head.contains("connection: close"), "{head}");
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: herald\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut kept).await;
    assert!(
        head.starts_with("http/1.1 200"),
        "the kept connection answers again: {head}"
    );
}

/// The soft and hard open-files limits of process `pid`.
fn open_files_limits(pid: u32) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("Max open files");
    let numbers: Vec<u64> = line
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    (numbers[0], numbers[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_raises_its_soft_descriptor_limit_and_refuses_with_503_before_it_runs_out() {
    // this test's own clients need descriptors too
    herald_proto::service::descriptors::raise_limit();
    let env = env(&[
        ("HERALD_MAX_CONNECTIONS_PER_IP", "0"),
        ("HERALD_CONNECTION_RATE_PER_IP", "100000"),
        ("HERALD_CONNECTION_RATE", "100000"),
        ("HERALD_MAX_CONNECTIONS_PER_USER", "100000"),
    ]);

    // soft 1,024 under a higher hard limit (as container runtimes leave
    // it): raised to the hard one at start
    let soft = Herald::standalone_soft_limited(&env, 1024);
    let (current, maximum) = open_files_limits(soft.pid());
    assert!(
        maximum > 1024,
        "this machine's hard limit is {maximum}: nothing to raise"
    );
    assert_eq!(current, maximum, "the soft limit was raised");
    let budget = metrics(&soft.http()).await["herald_edge_connection_budget"];
    assert!(budget > 1024.0, "budget {budget} under a raised limit");
    drop(soft);

    // hard 1,024: the edge admits fewer clients than its descriptors hold,
    // and refuses the next with 503 while health checks still answer
    let herald = Herald::standalone_limited(&env, 1024);
    let budget = metrics(&herald.http()).await["herald_edge_connection_budget"] as usize;
    assert!((100..1024).contains(&budget), "budget {budget}");
    let token = mint_token(&env, "alice", "chat:*", "");
    let mut clients = Vec::new();
    let refused = loop {
        match ws_from("127.0.0.1", herald.addr, &token).await {
            Ok(ws) => clients.push(ws),
            Err(status) => break status,
        }
        assert!(clients.len() <= budget, "more clients than the budget");
    };
    assert_eq!(refused, 503);
    assert_eq!(
        clients.len(),
        budget,
        "refused before the budget was reached"
    );
    let health = http_client()
        .get(format!("{}/healthz", herald.http()))
        .send()
        .await
        .expect("/healthz answers at the limit");
    assert_eq!(health.status(), 200);
    // one client leaves: the next gets in
    clients.pop();
    eventually(WAIT, "a place freed", || async {
        ws_from("127.0.0.1", herald.addr, &token).await.is_ok()
    })
    .await;
}
