//! Presence across a cluster: three edges, two presence replicas and
//! routing on NATS, queried by Python `grpcio` stubs generated from
//! `proto/`. Edges beat every second, so "dead" means silent for 3 s.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use herald_client::{Client, ClientError, Event};
use herald_protocol::{ErrorCode, Push};
use serde_json::{Value, json};

use herald_testkit::*;

fn query(replica: &Herald, users: &[&str]) -> Value {
    let target = replica.grpc.expect("gRPC address").to_string();
    let mut args = vec![target.as_str(), API_KEY, "chat:room"];
    args.extend_from_slice(users);
    let out = run_python("presence_query.py", &args);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// Waits until every replica answers `expected` (and so they agree).
fn all_answer(replicas: &[&Herald], users: &[&str], expected: &Value) {
    eventually_blocking(
        WAIT,
        &format!("the replicas to agree on {expected}"),
        || {
            let answers: Vec<Value> = replicas.iter().map(|r| query(r, users)).collect();
            if answers.iter().all(|a| {
                a["is_online"] == expected["is_online"]
                    && a["get_online"] == expected["get_online"]
                    && a["channel"] == expected["channel"]
            }) {
                Ok(())
            } else {
                Err(format!("{answers:?}"))
            }
        },
    )
}

fn token(env: &Env, user: &str) -> String {
    mint_token(env, user, "chat:*", "chat:*")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_is_right_across_edges_replicas_and_failures() {
    let mut env = Cluster::new().with("HERALD_PRESENCE_HEARTBEAT_SECS", "1");
    let presence_a = Herald::presence("presence-a", &env);
    let mut presence_b = Herald::presence("presence-b", &env);
    env.set("HERALD_PRESENCE_URL", presence_a.grpc_url());
    let routing = Herald::routing("routing", &env);
    let edge1 = Herald::edge("e1", &env);
    let mut edge2 = Herald::edge("e2", &env);
    let edge3 = Herald::edge("e3", &env);

    // alice on edges 1 and 3 (two devices), bob on 2, carol on 3
    let (alice1, _) = Client::connect(&edge1.ws(), &token(&env, "alice"))
        .await
        .unwrap();
    let (alice3, _) = Client::connect(&edge3.ws(), &token(&env, "alice"))
        .await
        .unwrap();
    let (bob, _) = Client::connect(&edge2.ws(), &token(&env, "bob"))
        .await
        .unwrap();
    let (mut carol, _) = Client::connect(&edge3.ws(), &token(&env, "carol"))
        .await
        .unwrap();
    for client in [&alice1, &bob, &carol] {
        client.subscribe("chat:room").await.unwrap();
    }
    let users = ["alice", "bob", "carol", "nobody"];
    let all_there = json!({
        "is_online": {
            "alice": [true, 2, ["ws"]], "bob": [true, 1, ["ws"]],
            "carol": [true, 1, ["ws"]], "nobody": [false, 0, []]
        },
        "get_online": ["alice", "bob", "carol"],
        "channel": [["alice", 1], ["bob", 1], ["carol", 1]],
    });
    all_answer(&[&presence_a, &presence_b], &users, &all_there);

    // A user with two devices stays online until the last goes.
    alice3.close().await;
    let (_alice3_again, _) = Client::connect(&edge3.ws(), &token(&env, "alice"))
        .await
        .unwrap();
    all_answer(&[&presence_a, &presence_b], &users, &all_there);

    // SIGKILL edge 2: once its beats stop, bob is offline on both replicas.
    edge2.kill();
    let bob_gone = json!({
        "is_online": {
            "alice": [true, 2, ["ws"]], "bob": [false, 0, []],
            "carol": [true, 1, ["ws"]], "nobody": [false, 0, []]
        },
        "get_online": ["alice", "carol"],
        "channel": [["alice", 1], ["carol", 1]],
    });
    all_answer(&[&presence_a, &presence_b], &users, &bob_gone);
    drop(bob);

    // A restarted replica rebuilds the whole view from the edges.
    presence_b.kill();
    let presence_b = Herald::presence("presence-b2", &env);
    all_answer(&[&presence_b], &users, &bob_gone);

    // Watch: dave comes online and leaves; the stream says so.
    let mut watch = Command::new(python())
        .arg(repo_root().join("tests/python/presence_watch.py"))
        .args([&presence_a.grpc.unwrap().to_string(), API_KEY, "dave"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "watching");
    let (dave, _) = Client::connect(&edge1.ws(), &token(&env, "dave"))
        .await
        .unwrap();
    dave.close().await;
    let rest: Vec<String> = lines.map_while(Result::ok).collect();
    assert!(watch.wait().unwrap().success(), "{rest:?}");
    assert_eq!(rest.first().map(String::as_str), Some("KIND_ONLINE dave "));
    assert_eq!(
        rest.last().map(String::as_str),
        Some("ok: online then offline")
    );

    // SendToUser: online → live, no push; offline → one push job.
    let api = routing.api();
    let send = |user: &str| {
        api.post(
            "/api/send",
            json!({"user": user, "data": {"hi": user}, "notification": {"title": "Hi", "body": "there"}}),
        )
    };
    let answer = send("alice").await.body;
    assert_eq!(answer["result"], "online", "{answer}");
    let answer = send("bob").await.body;
    assert_eq!(answer["result"], "pushed", "{answer}");
    let nats = async_nats::connect(nats_url()).await.unwrap();
    let jobs = take_push_jobs(&nats, &env.prefix().stream("NOTIFY")).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].user, "bob");

    // Typing reaches the other subscribers, is never stored, and a flood
    // is limited.
    alice1
        .call::<Value>("typing", json!({"channel": "chat:room"}))
        .await
        .unwrap();
    let typing = within(WAIT, "a typing event", async {
        loop {
            if let Event::Push(Push::Typing(t)) = carol.next_event_within(WAIT).await.unwrap() {
                break t;
            }
        }
    })
    .await;
    assert_eq!(
        (typing.user.as_str(), typing.channel.as_str()),
        ("alice", "chat:room")
    );
    let mut limited = 0;
    for _ in 0..10 {
        match alice1
            .call::<Value>("typing", json!({"channel": "chat:room"}))
            .await
        {
            Ok(_) => {}
            Err(ClientError::Server(e)) if e.code == ErrorCode::TooManyRequests => limited += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(limited >= 7, "only {limited} of 10 limited");
    let history = api.history("chat:room").await;
    assert_eq!(history["publications"], json!([]), "typing is never stored");
}

/// The next join or leave `observer` sees on `chat:lobby`, as
/// `("join"|"leave", user)`.
async fn next_membership(observer: &mut Client) -> (&'static str, String) {
    loop {
        let event = observer
            .next_event_within(WAIT)
            .await
            .expect("a join or leave in time");
        match event {
            Event::Push(Push::Join(m)) if m.channel.as_str() == "chat:lobby" => {
                return ("join", m.user.into());
            }
            Event::Push(Push::Leave(m)) if m.channel.as_str() == "chat:lobby" => {
                return ("leave", m.user.into());
            }
            _ => {}
        }
    }
}

/// A member joins with their first connection anywhere and leaves with
/// their last — one user on two edges is one join and one leave, announced
/// by one presence replica, and by the other when that one dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_are_for_the_whole_cluster_and_survive_a_replica() {
    let mut env = Cluster::new().with("HERALD_PRESENCE_HEARTBEAT_SECS", "1");
    let mut replicas = [
        Herald::presence("presence-a", &env),
        Herald::presence("presence-b", &env),
    ];
    env.set("HERALD_PRESENCE_URL", replicas[0].grpc_url());
    let _routing = Herald::routing("routing", &env);
    let (e1, e2) = (Herald::edge("j1", &env), Herald::edge("j2", &env));
    let connect = |edge: &Herald, user: &str| {
        let (url, token) = (edge.ws(), token(&env, user));
        async move {
            let (client, _) = Client::connect(&url, &token).await.unwrap();
            client.subscribe("chat:lobby").await.unwrap();
            client
        }
    };
    // one replica takes the lease
    eventually(WAIT, "a replica announcing join/leave", || async {
        replicas
            .iter()
            .any(|r| r.logs().contains("announcing join/leave"))
    })
    .await;

    let mut bob = connect(&e1, "bob").await;
    assert_eq!(next_membership(&mut bob).await, ("join", "bob".into()));
    // alice on both edges: one join
    let alice_phone = connect(&e1, "alice").await;
    assert_eq!(next_membership(&mut bob).await, ("join", "alice".into()));
    let alice_laptop = connect(&e2, "alice").await;
    // carol after her on e2: had alice's second connection been a join, it
    // would have come first
    let carol = connect(&e2, "carol").await;
    assert_eq!(next_membership(&mut bob).await, ("join", "carol".into()));
    // alice puts the phone away: still there on the laptop, no leave
    alice_phone.close().await;
    let dave = connect(&e1, "dave").await;
    assert_eq!(next_membership(&mut bob).await, ("join", "dave".into()));
    // and the laptop: now she left
    alice_laptop.close().await;
    assert_eq!(next_membership(&mut bob).await, ("leave", "alice".into()));

    // the announcing replica dies; the other takes over
    let leader = replicas
        .iter()
        .position(|r| r.logs().contains("announcing join/leave"))
        .unwrap();
    replicas[leader].kill();
    let standby = &replicas[1 - leader];
    eventually(WAIT, "the standby to take over", || async {
        standby.logs().contains("announcing join/leave")
    })
    .await;
    let _erin = connect(&e2, "erin").await;
    assert_eq!(next_membership(&mut bob).await, ("join", "erin".into()));

    // NATS loses the lease's stream (it lives in memory: any NATS restart
    // does this); the replica makes it again and goes on announcing
    let js = async_nats::jetstream::new(async_nats::connect(nats_url()).await.expect("NATS"));
    let lease = herald_core::subjects::Subjects::new(env.prefix()).stream_name("PRESENCE_LEASE");
    js.delete_stream(&lease)
        .await
        .expect("delete the lease stream");
    eventually(
        WAIT,
        "join/leave announced again after the lost lease stream",
        || async { standby.logs().matches("announcing join/leave").count() >= 2 },
    )
    .await;
    let _frank = connect(&e1, "frank").await;
    assert_eq!(next_membership(&mut bob).await, ("join", "frank".into()));
    drop((carol, dave));
}
