//! Each push service, against its fake: a correctly signed, correctly
//! shaped request, and the right reading of every kind of answer.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use herald_core::config::{AppCredentials, Config, NotifyConfig};
use herald_fakes::{FakeApns, FakeFcm, FakeWebPush, Reply, TestCa, keys};
use herald_notify::device::{Device, Environment, Platform};
use herald_notify::providers::{Alert, Outcome, Providers};
use herald_testkit::{
    APNS_KEY_ID, APNS_TEAM, FCM_CLIENT_EMAIL, FCM_PROJECT, Fakes, WAIT, apns_credentials,
    app_credentials, eventually, fake_apns, temp_file,
};
use serde_json::{Value, json};

const APP: &str = "com.example.chat";

/// The fakes, and senders configured for them.
struct World {
    fakes: Fakes,
    providers: Providers,
}

impl std::ops::Deref for World {
    type Target = Fakes;

    fn deref(&self) -> &Fakes {
        &self.fakes
    }
}

async fn world() -> World {
    // push services are https only: the Web Push fake's certificate comes
    // from a CA of the test's, trusted through provider_ca_file
    let fakes = Fakes::start(&[APP]).await;
    World {
        providers: Providers::from_config(&fakes.config(APP)).unwrap(),
        fakes,
    }
}

fn device(platform: Platform, token: &str) -> Device {
    Device {
        id: format!("dev-{token:.8}"),
        user: "alice".into(),
        platform,
        token: token.into(),
        p256dh: None,
        auth: None,
        app: APP.into(),
        environment: Environment::Production,
        locale: None,
        created_ms: 1,
        updated_ms: 1,
        last_seen_ms: 1,
    }
}

fn alert() -> Alert {
    Alert {
        id: "n-1".into(),
        title: Some("New message".into()),
        body: Some("Bob: hi".into()),
        collapse_key: Some("chat:room:7".into()),
        data: json!({"room": 7, "text": "hi"}),
        channel: Some("chat:room:7".into()),
    }
}

fn apns_token(c: char) -> String {
    c.to_string().repeat(64)
}

#[tokio::test]
async fn apns_requests_are_signed_and_shaped_like_apple_wants() {
    let w = world().await;
    let phone = device(Platform::Apns, &apns_token('a'));
    assert_eq!(w.providers.send(&phone, &alert()).await, Outcome::Sent);
    assert_eq!(w.providers.send(&phone, &alert()).await, Outcome::Sent);
    let got = w.apns.delivered();
    assert_eq!(got.len(), 2);
    let first = &got[0];
    assert_eq!(first.topic, APP);
    assert_eq!(first.push_type, "alert");
    assert_eq!(first.priority.as_deref(), Some("10"));
    assert_eq!(first.collapse_id.as_deref(), Some("chat:room:7"));
    assert_eq!(first.payload["aps"]["alert"]["title"], "New message");
    assert_eq!(first.payload["herald"]["data"]["room"], 7);
    // the same notification to the same device: the same apns-id
    assert_eq!(first.apns_id, got[1].apns_id);
    assert!(first.apns_id.is_some());
}

#[tokio::test]
async fn apns_answers_are_read_right() {
    let w = world().await;
    let gone = device(Platform::Apns, &apns_token('b'));
    w.apns
        .script(&gone.token, vec![Reply::Unregistered { since_ms: 1234 }]);
    assert_eq!(
        w.providers.send(&gone, &alert()).await,
        Outcome::Gone {
            since_ms: Some(1234),
            reason: "APNs: Unregistered".into()
        }
    );
    let other_env = device(Platform::Apns, &apns_token('c'));
    w.apns.script(&other_env.token, vec![Reply::BadDeviceToken]);
    assert_eq!(
        w.providers.send(&other_env, &alert()).await,
        Outcome::BadToken
    );
    // the same token is fine in the sandbox
    assert_eq!(
        w.providers
            .send_in(&other_env, &alert(), Environment::Sandbox)
            .await,
        Outcome::Sent
    );
    assert_eq!(w.apns_sandbox.delivered().len(), 1);
    let busy = device(Platform::Apns, &apns_token('d'));
    w.apns.script(
        &busy.token,
        vec![Reply::TooManyRequests {
            retry_after_secs: 2,
        }],
    );
    match w.providers.send(&busy, &alert()).await {
        Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(2))),
        other => panic!("{other:?}"),
    }
    let broken = device(Platform::Apns, &apns_token('e'));
    w.apns.script(&broken.token, vec![Reply::ServerError]);
    assert!(matches!(
        w.providers.send(&broken, &alert()).await,
        Outcome::Retry { .. }
    ));
}

#[tokio::test]
async fn fcm_gets_one_access_token_and_well_formed_messages() {
    let w = world().await;
    let android = device(Platform::Fcm, "fcm-token-1");
    for _ in 0..3 {
        assert_eq!(w.providers.send(&android, &alert()).await, Outcome::Sent);
    }
    assert_eq!(w.fcm.grants(), 1, "the access token is cached");
    let got = w.fcm.delivered();
    assert_eq!(got.len(), 3);
    let m = &got[0].message;
    assert_eq!(m["token"], "fcm-token-1");
    assert_eq!(m["notification"]["title"], "New message");
    assert_eq!(m["android"]["collapse_key"], "chat:room:7");
    assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "chat:room:7");
    let data: Value = serde_json::from_str(m["data"]["herald_data"].as_str().unwrap()).unwrap();
    assert_eq!(data, json!({"room": 7, "text": "hi"}));

    // FCM gives no time: the worker judges re-registration by when the
    // send began, so the outcome must carry none (not one that compares
    // wrong)
    let gone = device(Platform::Fcm, "fcm-token-2");
    w.fcm
        .script(&gone.token, vec![Reply::Unregistered { since_ms: 0 }]);
    assert_eq!(
        w.providers.send(&gone, &alert()).await,
        Outcome::Gone {
            since_ms: None,
            reason: "FCM: UNREGISTERED".into()
        }
    );
    let unknown = device(Platform::Fcm, "fcm-token-4");
    w.fcm.script(&unknown.token, vec![Reply::NotFound]);
    assert_eq!(
        w.providers.send(&unknown, &alert()).await,
        Outcome::Gone {
            since_ms: None,
            reason: "FCM 404: NOT_FOUND".into()
        }
    );
    let busy = device(Platform::Fcm, "fcm-token-3");
    w.fcm.script(
        &busy.token,
        vec![Reply::TooManyRequests {
            retry_after_secs: 3,
        }],
    );
    match w.providers.send(&busy, &alert()).await {
        Outcome::Retry { after, .. } => assert_eq!(after, Some(Duration::from_secs(3))),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn web_push_payloads_decrypt_to_exactly_what_was_sent() {
    let w = world().await;
    let subscription = w.webpush.subscribe();
    let browser = browser(&subscription);
    assert!(browser.token.starts_with("https://127.0.0.1:"));
    assert_eq!(w.providers.send(&browser, &alert()).await, Outcome::Sent);
    let got = w.webpush.delivered();
    assert_eq!(got.len(), 1);
    let plain: Value = serde_json::from_str(&got[0].plaintext).unwrap();
    assert_eq!(
        plain,
        json!({"id": "n-1", "title": "New message", "body": "Bob: hi", "tag": "chat:room:7",
               "channel": "chat:room:7", "data": {"room": 7, "text": "hi"}})
    );
    assert_eq!(got[0].ttl, Some(86400));
    assert_eq!(got[0].urgency.as_deref(), Some("high"));
    assert_eq!(got[0].topic.as_deref(), Some("chatroom7"));

    for (reply, status) in [
        (Reply::Unregistered { since_ms: 0 }, 410),
        (Reply::NotFound, 404),
    ] {
        w.webpush.script(&browser.token, vec![reply]);
        assert_eq!(
            w.providers.send(&browser, &alert()).await,
            Outcome::Gone {
                since_ms: None,
                reason: format!("Web Push {status}: subscription expired")
            }
        );
    }
}

fn browser(subscription: &Value) -> Device {
    let mut d = device(
        Platform::Webpush,
        subscription["endpoint"].as_str().unwrap(),
    );
    d.p256dh = Some(subscription["keys"]["p256dh"].as_str().unwrap().into());
    d.auth = Some(subscription["keys"]["auth"].as_str().unwrap().into());
    d
}

/// A TCP listener that only counts connections: where a redirect points.
async fn counting_listener() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((_socket, _)) = listener.accept().await {
            seen.fetch_add(1, Ordering::SeqCst);
        }
    });
    (format!("http://{addr}/internal/admin"), count)
}

#[tokio::test]
async fn no_service_is_followed_through_a_redirect() {
    let w = world().await;
    let (target, hits) = counting_listener().await;
    let redirect = || vec![Reply::Redirect(target.clone())];
    let phone = device(Platform::Apns, &apns_token('7'));
    w.apns.script(&phone.token, redirect());
    let android = device(Platform::Fcm, "fcm-redirect");
    w.fcm.script(&android.token, redirect());
    let subscription = w.webpush.subscribe();
    let web = browser(&subscription);
    w.webpush.script(&web.token, redirect());
    for d in [&phone, &android, &web] {
        match w.providers.send(d, &alert()).await {
            Outcome::Failed { reason } => assert!(reason.contains("307"), "{reason}"),
            other => panic!("{:?}: {other:?}", d.platform),
        }
    }
    let web_reason = match w.providers.send(&web, &alert()).await {
        Outcome::Failed { reason } => reason,
        other => panic!("{other:?}"),
    };
    assert!(
        web_reason.contains("redirects are not followed"),
        "{web_reason}"
    );
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "nothing went where the redirects pointed"
    );
}

#[tokio::test]
async fn web_push_endpoints_that_point_inward_are_refused_at_send_time() {
    let w = world().await;
    let subscription = w.webpush.subscribe();
    let allowed = browser(&subscription);
    assert_eq!(w.providers.send(&allowed, &alert()).await, Outcome::Sent);
    // the same push service, on a port or address the list does not name,
    // or over plain http: refused before anything is sent (devices stored
    // before the rule existed, say)
    let port = w.webpush.addr.port();
    let path = allowed.token.split_once("/push/").unwrap().1;
    for endpoint in [
        format!("https://127.0.0.2:{port}/push/{path}"),
        format!("https://[::ffff:127.0.0.1]:{port}/push/{path}"),
        format!("http://127.0.0.1:{port}/push/{path}"),
    ] {
        let mut d = allowed.clone();
        d.token = endpoint.clone();
        match w.providers.send(&d, &alert()).await {
            Outcome::Gone {
                since_ms: None,
                reason,
            } => {
                assert!(
                    reason.starts_with("Web Push endpoint refused"),
                    "{endpoint}: {reason}"
                )
            }
            other => panic!("{endpoint}: {other:?}"),
        }
    }
    assert_eq!(
        w.webpush.received().len(),
        1,
        "only the allowed one arrived"
    );
    assert_eq!(
        w.webpush.handshake_failures(),
        0,
        "nor was anything else tried"
    );
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_through_provider_ca_file() {
    // every service behind TLS with a certificate from the test's own CA
    let ca = TestCa::new("herald private CA");
    let identity = ca.issue(&["127.0.0.1"]);
    let apns =
        FakeApns::start_tls(APNS_TEAM, APNS_KEY_ID, keys::APNS_PUBLIC, &[APP], &identity).await;
    let fcm = FakeFcm::start_tls(FCM_PROJECT, FCM_CLIENT_EMAIL, keys::FCM_PUBLIC, &identity).await;
    let webpush = FakeWebPush::start(&identity).await;
    assert!(apns.url().starts_with("https://") && fcm.url().starts_with("https://"));
    let config = |ca_file: Option<PathBuf>| {
        let mut config = Config {
            notify: NotifyConfig {
                apns_url: apns.url(),
                apns_sandbox_url: apns.url(),
                fcm_url: fcm.url(),
                provider_ca_file: ca_file,
                webpush_allowed_hosts: vec![webpush.authority()],
                ..NotifyConfig::default()
            },
            ..Config::default()
        };
        config.apps.insert(APP.into(), app_credentials(&fcm));
        config
    };
    let phone = device(Platform::Apns, &apns_token('8'));
    let android = device(Platform::Fcm, "fcm-tls");
    let web = browser(&webpush.subscribe());

    // without the setting: refused, and the status says what to do
    let untrusting = Providers::from_config(&config(None)).unwrap();
    for d in [&phone, &android, &web] {
        match untrusting.send(d, &alert()).await {
            Outcome::Failed { reason } => {
                assert!(
                    reason.starts_with("TLS: invalid peer certificate"),
                    "{reason}"
                );
                assert!(reason.contains("provider_ca_file"), "{reason}");
            }
            other => panic!("{:?}: {other:?}", d.platform),
        }
    }
    // (the fakes count a refused handshake once the client has hung up)
    eventually(WAIT, "each fake saw its handshake refused", || async {
        apns.handshake_failures() >= 1
            && fcm.handshake_failures() >= 1
            && webpush.handshake_failures() >= 1
    })
    .await;
    assert!(apns.received().is_empty() && fcm.received().is_empty());
    assert!(webpush.received().is_empty());

    // with it: all three deliver (APNs over HTTP/2 by ALPN)
    let trusting =
        Providers::from_config(&config(Some(temp_file("ca.pem", ca.cert_pem())))).unwrap();
    for d in [&phone, &android, &web] {
        assert_eq!(
            trusting.send(d, &alert()).await,
            Outcome::Sent,
            "{:?}",
            d.platform
        );
    }
    assert_eq!(apns.delivered().len(), 1);
    assert_eq!(fcm.delivered().len(), 1);
    assert_eq!(webpush.delivered().len(), 1);
}

#[test]
fn an_unusable_provider_ca_file_fails_start_up() {
    for (contents, why) in [
        (None, "no such file"),
        (Some("not a certificate"), "holds no PEM certificate"),
    ] {
        let path = match contents {
            Some(c) => temp_file("ca.pem", c),
            None => PathBuf::from("/nonexistent/ca.pem"),
        };
        let config = Config {
            notify: NotifyConfig {
                provider_ca_file: Some(path),
                ..NotifyConfig::default()
            },
            ..Config::default()
        };
        let e = Providers::from_config(&config).err().unwrap();
        assert_eq!(e.key, "notify.provider_ca_file", "{why}");
        assert!(
            e.to_string().to_lowercase().contains(&why.to_lowercase()),
            "{e}"
        );
    }
}

#[test]
fn bad_credentials_fail_start_up_naming_the_setting() {
    let mut config = Config::default();
    config.apps.insert(
        "x".into(),
        AppCredentials {
            apns_team_id: Some("T".into()),
            ..AppCredentials::default()
        },
    );
    let e = Providers::from_config(&config).err().unwrap();
    assert_eq!(e.key, "apps.x.apns_team_id");
    config.apps.insert(
        "x".into(),
        AppCredentials {
            vapid_private_key: Some("short".into()),
            vapid_subject: Some("mailto:a@b".into()),
            ..AppCredentials::default()
        },
    );
    assert_eq!(
        Providers::from_config(&config).err().unwrap().key,
        "apps.x.vapid_private_key"
    );
}

#[tokio::test]
async fn each_app_pushes_with_its_own_credentials() {
    // two apps, two APNs topics, one fake that knows both
    let apns = fake_apns(&["com.a.chat", "com.b.news"]).await;
    let mut config = Config {
        notify: NotifyConfig {
            apns_url: apns.url(),
            ..NotifyConfig::default()
        },
        ..Config::default()
    };
    for (app, topic) in [("chat", "com.a.chat"), ("news", "com.b.news")] {
        config.apps.insert(
            app.into(),
            AppCredentials {
                apns_topic: Some(topic.into()),
                ..apns_credentials()
            },
        );
    }
    let providers = Providers::from_config(&config).unwrap();
    let mut chat = device(Platform::Apns, &apns_token('1'));
    chat.app = "chat".into();
    let mut news = device(Platform::Apns, &apns_token('2'));
    news.app = "news".into();
    let mut stranger = device(Platform::Apns, &apns_token('3'));
    stranger.app = "unknown".into();
    assert_eq!(providers.send(&chat, &alert()).await, Outcome::Sent);
    assert_eq!(providers.send(&news, &alert()).await, Outcome::Sent);
    assert!(matches!(
        providers.send(&stranger, &alert()).await,
        Outcome::Failed { .. }
    ));
    let topics: Vec<String> = apns.delivered().into_iter().map(|r| r.topic).collect();
    assert_eq!(topics, ["com.a.chat", "com.b.news"]);
}
