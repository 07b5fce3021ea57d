//! The fake push services (`herald-fakes`) as the notify tests start them,
//! and the app credentials they take.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use herald_core::config::{AppCredentials, Config, NotifyConfig};
use herald_fakes::{FakeApns, FakeFcm, FakeWebPush, TestCa, keys};

use crate::temp_file;

/// The Apple team the fake APNs takes tokens of.
pub const APNS_TEAM: &str = "TEAM123";
/// The id of the key the fake APNs takes tokens of.
pub const APNS_KEY_ID: &str = "KEY123";
/// The fake FCM's project.
pub const FCM_PROJECT: &str = "herald-test";
/// The fake FCM's service account.
pub const FCM_CLIENT_EMAIL: &str = "push@herald-test.iam.gserviceaccount.com";

/// A fake APNs (h2c) for `topics`, taking the test team's key.
pub async fn fake_apns(topics: &[&str]) -> FakeApns {
    FakeApns::start(APNS_TEAM, APNS_KEY_ID, keys::APNS_PUBLIC, topics).await
}

/// A fake FCM (h2c) of the test project.
pub async fn fake_fcm() -> FakeFcm {
    FakeFcm::start(FCM_PROJECT, FCM_CLIENT_EMAIL, keys::FCM_PUBLIC).await
}

/// APNs credentials the fake APNs takes: the test team, key id and key.
pub fn apns_credentials() -> AppCredentials {
    AppCredentials {
        apns_team_id: Some(APNS_TEAM.into()),
        apns_key_id: Some(APNS_KEY_ID.into()),
        apns_key_file: Some(temp_file("key.p8", keys::APNS_P8)),
        ..AppCredentials::default()
    }
}

/// Credentials every fake takes: APNs ([`apns_credentials`]), FCM by
/// `fcm`'s service account, Web Push with a VAPID key of its own.
pub fn app_credentials(fcm: &FakeFcm) -> AppCredentials {
    let vapid = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
    AppCredentials {
        fcm_service_account_file: Some(temp_file(
            "sa.json",
            &fcm.service_account_json(keys::FCM_PRIVATE),
        )),
        vapid_private_key: Some(URL_SAFE_NO_PAD.encode(vapid.to_bytes())),
        vapid_subject: Some("mailto:ops@example.com".into()),
        ..apns_credentials()
    }
}

/// Every push service faked, on 127.0.0.1: APNs and its sandbox, FCM, and
/// Web Push (https only, as push services are, with a certificate from
/// `ca`).
pub struct Fakes {
    /// APNs (production).
    pub apns: FakeApns,
    /// APNs's sandbox.
    pub apns_sandbox: FakeApns,
    /// FCM (and its OAuth).
    pub fcm: FakeFcm,
    /// A Web Push service.
    pub webpush: FakeWebPush,
    /// The CA that issued the Web Push fake's certificate.
    pub ca: TestCa,
}

impl Fakes {
    /// The fakes, the APNs ones for `topics`.
    pub async fn start(topics: &[&str]) -> Fakes {
        let ca = TestCa::new("herald test CA");
        Fakes {
            apns: fake_apns(topics).await,
            apns_sandbox: fake_apns(topics).await,
            fcm: fake_fcm().await,
            webpush: FakeWebPush::start(&ca.issue(&["127.0.0.1"])).await,
            ca,
        }
    }

    /// A config naming the fakes, trusting their CA, with `app`'s
    /// credentials ([`app_credentials`]).
    pub fn config(&self, app: &str) -> Config {
        let mut config = Config {
            notify: NotifyConfig {
                apns_url: self.apns.url(),
                apns_sandbox_url: self.apns_sandbox.url(),
                fcm_url: self.fcm.url(),
                provider_ca_file: Some(temp_file("ca.pem", self.ca.cert_pem())),
                webpush_allowed_hosts: vec![self.webpush.authority()],
                ..NotifyConfig::default()
            },
            ..Config::default()
        };
        config
            .apps
            .insert(app.to_owned(), app_credentials(&self.fcm));
        config
    }

    /// The same as a config file's TOML, `extra` settings of its `[notify]`
    /// table included.
    pub fn toml(&self, app: &str, extra: &str) -> String {
        let config = self.config(app);
        let ca = config
            .notify
            .provider_ca_file
            .as_ref()
            .expect("the CA file");
        format!(
            "[notify]\napns_url = \"{}\"\napns_sandbox_url = \"{}\"\nfcm_url = \"{}\"\n\
             provider_ca_file = \"{}\"\nwebpush_allowed_hosts = [\"{}\"]\n{extra}\n{}",
            config.notify.apns_url,
            config.notify.apns_sandbox_url,
            config.notify.fcm_url,
            ca.display(),
            self.webpush.authority(),
            app_toml(app, &config.apps[app]),
        )
    }
}

/// `credentials` as the `[apps."<app>"]` table of a config file.
pub fn app_toml(app: &str, credentials: &AppCredentials) -> String {
    let mut toml = format!("[apps.\"{app}\"]\n");
    let mut line = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            toml.push_str(&format!("{key} = \"{value}\"\n"));
        }
    };
    let path = |p: &Option<std::path::PathBuf>| p.as_ref().map(|p| p.display().to_string());
    line("apns_team_id", credentials.apns_team_id.clone());
    line("apns_key_id", credentials.apns_key_id.clone());
    line("apns_key_file", path(&credentials.apns_key_file));
    line("apns_topic", credentials.apns_topic.clone());
    line(
        "fcm_service_account_file",
        path(&credentials.fcm_service_account_file),
    );
    line("vapid_private_key", credentials.vapid_private_key.clone());
    line("vapid_subject", credentials.vapid_subject.clone());
    toml
}
