//! What Herald's tests share, so no test helper or wiring is written twice:
//!
//! - [`eventually`]: waiting for a condition with a generous deadline
//!   ([`WAIT`]) — never a guessed sleep, never a claim about how long
//!   something took;
//! - the test secret and API key ([`SECRET`], [`API_KEY`]) and [`token`];
//! - [`Server`]: an edge and routing in one process over the memory bus;
//! - [`Herald`], [`Env`], [`Cluster`]: real `herald` processes, standalone
//!   or each service on its own over NATS;
//! - [`Api`]: the server API with the test key; [`raw_ws`]: a WebSocket's
//!   frames;
//! - the fake push services and credentials they take ([`fake_apns`],
//!   [`app_credentials`]);
//! - cleanup: [`Prefix`] (NATS streams), [`Database`] (PostgreSQL).

mod api;
mod db;
mod local;
mod nats;
mod process;
mod push;
mod wait;
mod ws;

pub use api::{Answer, Api, http_client, metrics};
pub use db::{Database, database_url};
pub use local::{EdgeBus, Server};
pub use nats::{
    Prefix, PrivateNats, delete_streams, nats_bus, nats_bus_at, nats_url, take_push_jobs,
    unique_prefix,
};
pub use process::{
    Cluster, Env, Herald, exited, free_port, herald_bin, herald_output, mint_token, python,
    repo_root, rss, run_browser_script, run_python, run_until_said, terminate, terminate_group,
    tool, wait_for_port,
};
pub use push::{
    APNS_KEY_ID, APNS_TEAM, FCM_CLIENT_EMAIL, FCM_PROJECT, Fakes, apns_credentials,
    app_credentials, app_toml, fake_apns, fake_fcm,
};
pub use wait::{Check, WAIT, eventually, eventually_blocking, within};
pub use ws::{raw_ws, raw_ws_over};

use herald_core::auth::{JwtAlgorithm, TokenSigner, unix_now};
use serde_json::json;

/// The HS256 secret every test server and process is started with.
pub const SECRET: &str = "herald-test-secret-0123456789-abcdef";
/// The server API key every test server and process is started with.
pub const API_KEY: &str = "herald-test-key";

/// A client token for `user`, signed with [`SECRET`]: the `channels` it may
/// subscribe to, the ones it may `publish` to, valid `ttl_secs` from now
/// (negative: expired).
pub fn token(user: &str, channels: &[&str], publish: &[&str], ttl_secs: i64) -> String {
    TokenSigner::new(JwtAlgorithm::HS256, SECRET.as_bytes())
        .expect("signer")
        .sign(&json!({
            "sub": user,
            "exp": unix_now() + ttl_secs,
            "channels": channels,
            "publish": publish,
        }))
        .expect("token")
}

/// Runs `cleanup` to its end on a runtime of its own, on a thread of its
/// own: cleanup runs from `Drop`, inside a test's runtime or outside any.
fn block_on_own_thread(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        if let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            runtime.block_on(cleanup);
        }
    })
    .join();
}

/// One behavioural suite run against several adapters: for each
/// `module: subject`, a module with a `#[tokio::test]` per test function,
/// which is given `subject().await`.
///
/// ```ignore
/// herald_testkit::suite!(memory_bus: memory, nats_bus: nats; [exact_subjects, star_wildcard]);
/// ```
#[macro_export]
macro_rules! suite {
    ($($module:ident: $subject:ident),+ $(,)? ; $tests:tt) => {
        $( $crate::suite!(@module $module $subject $tests); )+
    };
    (@module $module:ident $subject:ident [$($test:ident),* $(,)?]) => {
        mod $module {
            $( #[tokio::test] async fn $test() { super::$test(super::$subject().await).await } )*
        }
    };
}

/// Writes `contents` to a file of its own in the temporary directory,
/// named after `name`, and answers its path.
pub fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("herald-test-{:016x}-{name}", rand::random::<u64>()));
    std::fs::write(&path, contents).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path
}
