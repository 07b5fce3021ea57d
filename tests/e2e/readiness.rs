//! Readiness that means something: every service's `/readyz` and gRPC
//! health follow what it depends on — NATS for all, PostgreSQL for notify,
//! the view for presence — and come back by themselves.

use herald_testkit::*;
use serde_json::Value;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// `/readyz`'s status and body.
async fn readyz(herald: &Herald) -> (u16, String) {
    let answer = http_client()
        .get(format!("{}/readyz", herald.http()))
        .send()
        .await
        .expect("/readyz answers");
    let status = answer.status().as_u16();
    (status, answer.text().await.unwrap_or_default())
}

/// The whole server's gRPC health.
async fn grpc_health(herald: &Herald) -> Option<ServingStatus> {
    let channel = tonic::transport::Endpoint::from_shared(herald.grpc_url())
        .ok()?
        .connect()
        .await
        .ok()?;
    let mut client = HealthClient::new(channel);
    let answer = client
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(answer.into_inner().status).ok()
}

/// Waits until every one of `services` is ready (`want`) or not.
async fn all_ready(services: &[&Herald], want: bool) {
    for herald in services {
        let status = if want { 200 } else { 503 };
        eventually(WAIT, &format!("/readyz {status}"), || async {
            let (got, body) = readyz(herald).await;
            if got == status {
                Ok(())
            } else {
                Err(format!("{got} {body}"))
            }
        })
        .await;
        if herald.grpc.is_some() {
            let serving = if want {
                ServingStatus::Serving
            } else {
                ServingStatus::NotServing
            };
            eventually(WAIT, &format!("gRPC health {serving:?}"), || async {
                let got = grpc_health(herald).await;
                if got == Some(serving) {
                    Ok(())
                } else {
                    Err(format!("{got:?}"))
                }
            })
            .await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_is_unready_while_nats_or_its_database_is_gone_and_ready_again_after() {
    let mut nats = PrivateNats::start().await;
    let db = Database::create().await;
    let cluster = Cluster::new()
        .with("HERALD_NATS_URL", nats.url())
        .with("HERALD_DATABASE_URL", db.url.as_str());
    let presence = Herald::presence("presence", &cluster);
    let notify = Herald::notify("notify", &cluster);
    let routing = Herald::routing("routing", &cluster);
    let edge = Herald::edge("edge", &cluster);
    let services = [&presence, &notify, &routing, &edge];
    all_ready(&services, true).await;
    let (_, body) = readyz(&presence).await;
    let body: Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(body["checks"]["view"], "ok", "{body}");

    // NATS goes away: nobody should be sent traffic
    nats.kill();
    all_ready(&services, false).await;
    let (_, body) = readyz(&notify).await;
    assert!(body.contains("nats"), "{body}");
    // and it comes back: so do they, without a restart
    nats.restart().await;
    all_ready(&services, true).await;

    // notify's database goes away, then comes back
    let admin = sqlx::PgPool::connect(&database_url())
        .await
        .expect("PostgreSQL");
    let sql = |q: String| sqlx::query(sqlx::AssertSqlSafe(q));
    sql(format!("DROP DATABASE {} WITH (FORCE)", db.name))
        .execute(&admin)
        .await
        .expect("drop");
    all_ready(&[&notify], false).await;
    let (_, body) = readyz(&notify).await;
    assert!(body.contains("database"), "{body}");
    all_ready(&[&presence, &routing, &edge], true).await;
    sql(format!("CREATE DATABASE {}", db.name))
        .execute(&admin)
        .await
        .expect("create");
    all_ready(&[&notify], true).await;
}
