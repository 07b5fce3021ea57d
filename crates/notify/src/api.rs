//! Notify's API over HTTP (`/api/devices`, `/api/notify`) and gRPC
//! (`herald.notify.v1.Notify`), both authenticated with the API keys. Both
//! call the same operations.

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use herald_core::api_key::ApiKeys;
use herald_core::devices::{DeviceLookup, DeviceLookupError};
use herald_core::time::unix_millis;
use herald_core::work_queue::{Notification, PushJob, WorkQueue};
use herald_proto::Refusal;
use herald_proto::http::{ApiError, bad_request, json_body, require_api_key};
use herald_proto::notify::v1 as pb;
use herald_proto::notify::v1::notify_server::{Notify as NotifyApi, NotifyServer};
use herald_proto::server::RequireApiKey;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tonic::service::interceptor::InterceptedService;

use crate::device::{Device, Environment, NewDevice, Platform, Subscription, SubscriptionKeys};
use crate::endpoint::{EndpointPolicy, Refused};
use crate::store::{DeviceStatus, StoreError, TokenStore};

/// Users one `users_with_devices` call may ask about (routing asks about at
/// most `notify_offline`'s limit at once).
const MAX_USERS_PER_LOOKUP: usize = 10_000;

/// In standalone, routing asks the registry directly.
#[async_trait::async_trait]
impl DeviceLookup for Notify {
    async fn with_devices(&self, users: &[String]) -> Result<HashSet<String>, DeviceLookupError> {
        self.users_with_devices(users)
            .await
            .map_err(|e| DeviceLookupError(e.to_string()))
    }
}

/// The operations, whatever the transport.
pub struct Notify {
    store: Arc<dyn TokenStore>,
    queue: Arc<dyn WorkQueue>,
    max_devices_per_user: usize,
    endpoints: EndpointPolicy,
}

/// A store error as the API answers it. Which database errors are the
/// caller's fault is decided once, in the store (`store::sql::classify`):
/// `Unavailable` becomes code 500 — HTTP 503 with `Retry-After`, gRPC
/// `UNAVAILABLE` — and only `Invalid` is a 400.
fn store_error(e: StoreError) -> Refusal {
    match e {
        StoreError::Unavailable(why) => {
            tracing::warn!(error = %why, "device store unavailable");
            Refusal::unavailable("device store unavailable; try again")
        }
        StoreError::Invalid(why) => Refusal::invalid(why),
    }
}

/// `POST /api/notify`, `Send`: to a user's devices or one device.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// Send to every device of this user…
    #[serde(default)]
    pub user: Option<String>,
    /// …or to this device alone (exactly one of the two).
    #[serde(default)]
    pub device_id: Option<String>,
    /// What the devices show; `None` sends a silent push.
    pub notification: Option<Notification>,
    /// JSON for the app (at most 4 KiB); `{}` when not given.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

impl Notify {
    /// `endpoints`: the rule Web Push endpoints are registered under (the
    /// worker's, so what is registered can be sent to).
    pub fn new(
        store: Arc<dyn TokenStore>,
        queue: Arc<dyn WorkQueue>,
        max_devices_per_user: usize,
        endpoints: EndpointPolicy,
    ) -> Arc<Self> {
        Arc::new(Notify {
            store,
            queue,
            max_devices_per_user,
            endpoints,
        })
    }

    /// Checks a device (a Web Push endpoint against the endpoint rule too)
    /// and stores it.
    pub async fn register(&self, device: NewDevice) -> Result<Device, Refusal> {
        let checked = device.check().map_err(|e| Refusal::invalid(e.0))?;
        if checked.platform == Platform::Webpush {
            self.endpoints
                .check(&checked.token)
                .await
                .map_err(|refused| match refused {
                    // our resolver is slow, not the caller wrong
                    Refused::LookupTimedOut { .. } => {
                        Refusal::unavailable(format!("subscription.endpoint: {refused}; try again"))
                    }
                    _ => Refusal::invalid(format!("subscription.endpoint refused: {refused}")),
                })?;
        }
        self.store
            .register(checked, self.max_devices_per_user)
            .await
            .map_err(store_error)
    }

    /// Removes a device; false if there was none with `id`.
    pub async fn unregister(&self, id: &str) -> Result<bool, Refusal> {
        self.store.unregister(id).await.map_err(store_error)
    }

    /// A user's devices, most recently seen first.
    pub async fn list(&self, user: &str) -> Result<Vec<Device>, Refusal> {
        if user.is_empty() {
            return Err(Refusal::invalid("name a user: `?user=…`"));
        }
        let user = user_id(user)?;
        self.store.list(user.as_str()).await.map_err(store_error)
    }

    /// Which of `users` have at least one device (ids that are no user
    /// id have none).
    pub async fn users_with_devices(&self, users: &[String]) -> Result<HashSet<String>, Refusal> {
        if users.len() > MAX_USERS_PER_LOOKUP {
            return Err(Refusal::too_large(format!(
                "at most {MAX_USERS_PER_LOOKUP} users per lookup"
            )));
        }
        self.store
            .users_with_devices(users)
            .await
            .map_err(store_error)
    }

    /// Queues a push; answers its id (for `status`).
    pub async fn send(&self, request: SendRequest) -> Result<String, Refusal> {
        let user = match (&request.user, &request.device_id) {
            // the user ids routing and the edges take, and no other
            (Some(user), None) if !user.is_empty() => user_id(user)?.as_str().to_owned(),
            (None, Some(id)) => {
                self.store
                    .get(id)
                    .await
                    .map_err(store_error)?
                    .ok_or_else(|| Refusal::not_found(format!("no device {id}")))?
                    .user
            }
            _ => {
                return Err(Refusal::invalid("name either `user` or `device_id`"));
            }
        };
        if let Some(n) = &request.notification
            && (n.title.len() > 1024 || n.body.len() > 1024)
        {
            return Err(Refusal::too_large(
                "title and body: at most 1024 bytes each",
            ));
        }
        let data = match request.data {
            Some(d) => d,
            None => RawValue::from_string("{}".into())
                .map_err(|e| Refusal::unavailable(e.to_string()))?,
        };
        if data.get().len() > 4096 {
            return Err(Refusal::too_large("data: at most 4096 bytes"));
        }
        let job = PushJob {
            id: PushJob::new_id(),
            user,
            notification: request.notification,
            data,
            channel: None,
            created_ms: unix_millis(),
            device_id: request.device_id,
            summary: false,
            summarizes: Vec::new(),
        };
        self.queue.push(&job).await.map_err(|e| {
            tracing::warn!(error = %e, "push queue unavailable");
            Refusal::unavailable("push queue unavailable; try again")
        })?;
        Ok(job.id)
    }

    /// Where a queued push stands, per device.
    pub async fn status(&self, id: &str) -> Result<Vec<DeviceStatus>, Refusal> {
        self.store.status(id).await.map_err(store_error)
    }
}

// ------------------------------------------------------------------ HTTP

/// `/api/devices` and `/api/notify`.
pub fn http_router(notify: Arc<Notify>, keys: ApiKeys) -> Router {
    Router::new()
        .route("/api/devices", post(register).get(list))
        .route("/api/devices/{id}", delete(unregister))
        .route("/api/notify", post(send))
        .route("/api/notify/{id}", get(status))
        .layer(middleware::from_fn_with_state(keys, require_api_key))
        .layer(herald_proto::trace::http_layer())
        .with_state(notify)
}

#[derive(Serialize)]
struct Created {
    id: String,
}

async fn register(
    State(notify): State<Arc<Notify>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let device: NewDevice = json_body(body)?;
    let device = notify.register(device).await?;
    Ok((StatusCode::CREATED, Json(Created { id: device.id })).into_response())
}

#[derive(Deserialize)]
struct ListParams {
    user: String,
}

#[derive(Serialize)]
struct DeviceList {
    devices: Vec<Device>,
}

async fn list(
    State(notify): State<Arc<Notify>>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<DeviceList>, ApiError> {
    let Query(params) = params.map_err(|e| bad_request(e.body_text()))?;
    Ok(Json(DeviceList {
        devices: notify.list(&params.user).await?,
    }))
}

async fn unregister(
    State(notify): State<Arc<Notify>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    match notify.unregister(&id).await? {
        true => Ok(StatusCode::NO_CONTENT),
        false => Err(ApiError::from(Refusal::not_found(format!(
            "no device {id}"
        )))),
    }
}

async fn send(
    State(notify): State<Arc<Notify>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request: SendRequest = json_body(body)?;
    let id = notify.send(request).await?;
    Ok((StatusCode::ACCEPTED, Json(Created { id })).into_response())
}

#[derive(Serialize)]
struct StatusAnswer {
    devices: Vec<DeviceStatus>,
}

async fn status(
    State(notify): State<Arc<Notify>>,
    Path(id): Path<String>,
) -> Result<Json<StatusAnswer>, ApiError> {
    Ok(Json(StatusAnswer {
        devices: notify.status(&id).await?,
    }))
}

// ------------------------------------------------------------------ gRPC

/// `herald.notify.v1.Notify` over [`Notify`].
pub struct GrpcApi {
    notify: Arc<Notify>,
}

/// The gRPC service, behind the API keys.
pub fn grpc_service(
    notify: Arc<Notify>,
    keys: ApiKeys,
) -> InterceptedService<NotifyServer<GrpcApi>, RequireApiKey> {
    InterceptedService::new(
        NotifyServer::new(GrpcApi { notify }),
        herald_proto::server::require_api_key(keys),
    )
}

fn platform_of(p: i32) -> Result<Platform, tonic::Status> {
    match pb::Platform::try_from(p) {
        Ok(pb::Platform::Apns) => Ok(Platform::Apns),
        Ok(pb::Platform::Fcm) => Ok(Platform::Fcm),
        Ok(pb::Platform::Webpush) => Ok(Platform::Webpush),
        _ => Err(tonic::Status::invalid_argument(
            "platform must be APNS, FCM or WEBPUSH",
        )),
    }
}

fn to_pb(d: Device) -> pb::Device {
    pb::Device {
        id: d.id,
        user: d.user,
        platform: match d.platform {
            Platform::Apns => pb::Platform::Apns,
            Platform::Fcm => pb::Platform::Fcm,
            Platform::Webpush => pb::Platform::Webpush,
        } as i32,
        token: if d.platform == Platform::Webpush {
            String::new()
        } else {
            d.token.clone()
        },
        subscription: (d.platform == Platform::Webpush).then(|| pb::WebPushSubscription {
            endpoint: d.token.clone(),
            p256dh: d.p256dh.unwrap_or_default(),
            auth: d.auth.unwrap_or_default(),
        }),
        app: d.app,
        environment: d.environment.name().to_owned(),
        locale: d.locale.unwrap_or_default(),
        created_ms: d.created_ms,
        updated_ms: d.updated_ms,
        last_seen_ms: d.last_seen_ms,
    }
}

fn some(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

#[tonic::async_trait]
impl NotifyApi for GrpcApi {
    async fn register_device(
        &self,
        request: tonic::Request<pb::RegisterDeviceRequest>,
    ) -> Result<tonic::Response<pb::RegisterDeviceResponse>, tonic::Status> {
        let d = request
            .into_inner()
            .device
            .ok_or_else(|| tonic::Status::invalid_argument("device is required"))?;
        let environment = match d.environment.as_str() {
            "" => None,
            e => Some(Environment::parse(e).ok_or_else(|| {
                tonic::Status::invalid_argument("environment: sandbox or production")
            })?),
        };
        let device = NewDevice {
            user: d.user,
            platform: platform_of(d.platform)?,
            token: some(d.token),
            subscription: d.subscription.map(|s| Subscription {
                endpoint: s.endpoint,
                keys: SubscriptionKeys {
                    p256dh: s.p256dh,
                    auth: s.auth,
                },
                expiration_time: None,
            }),
            app: some(d.app),
            environment,
            locale: some(d.locale),
        };
        let device = self
            .notify
            .register(device)
            .await
            .map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::RegisterDeviceResponse {
            id: device.id,
        }))
    }

    async fn unregister_device(
        &self,
        request: tonic::Request<pb::UnregisterDeviceRequest>,
    ) -> Result<tonic::Response<pb::UnregisterDeviceResponse>, tonic::Status> {
        let id = request.into_inner().id;
        match self
            .notify
            .unregister(&id)
            .await
            .map_err(tonic::Status::from)?
        {
            true => Ok(tonic::Response::new(pb::UnregisterDeviceResponse {})),
            false => Err(tonic::Status::not_found(format!("no device {id}"))),
        }
    }

    async fn list_devices(
        &self,
        request: tonic::Request<pb::ListDevicesRequest>,
    ) -> Result<tonic::Response<pb::ListDevicesResponse>, tonic::Status> {
        let devices = self
            .notify
            .list(&request.into_inner().user)
            .await
            .map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::ListDevicesResponse {
            devices: devices.into_iter().map(to_pb).collect(),
        }))
    }

    async fn users_with_devices(
        &self,
        request: tonic::Request<pb::UsersWithDevicesRequest>,
    ) -> Result<tonic::Response<pb::UsersWithDevicesResponse>, tonic::Status> {
        let users = self
            .notify
            .users_with_devices(&request.into_inner().users)
            .await
            .map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::UsersWithDevicesResponse {
            users: users.into_iter().collect(),
        }))
    }

    async fn send(
        &self,
        request: tonic::Request<pb::SendRequest>,
    ) -> Result<tonic::Response<pb::SendResponse>, tonic::Status> {
        let r = request.into_inner();
        let (user, device_id) = match r.target {
            Some(pb::send_request::Target::User(u)) => (Some(u), None),
            Some(pb::send_request::Target::DeviceId(d)) => (None, Some(d)),
            None => {
                return Err(tonic::Status::invalid_argument(
                    "name a user or a device_id",
                ));
            }
        };
        let alert = r.alert.unwrap_or_default();
        let data = if alert.data.is_empty() {
            None
        } else {
            let text = String::from_utf8(alert.data)
                .map_err(|_| tonic::Status::invalid_argument("alert.data must be UTF-8 JSON"))?;
            Some(serde_json::from_str::<Box<RawValue>>(&text).map_err(|e| {
                tonic::Status::invalid_argument(format!("alert.data is not JSON: {e}"))
            })?)
        };
        let notification =
            (!alert.title.is_empty() || !alert.body.is_empty()).then(|| Notification {
                title: alert.title,
                body: alert.body,
                collapse_key: some(alert.collapse_key),
            });
        let id = self
            .notify
            .send(SendRequest {
                user,
                device_id,
                notification,
                data,
            })
            .await
            .map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::SendResponse {
            notification_id: id,
        }))
    }

    async fn status(
        &self,
        request: tonic::Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::StatusResponse>, tonic::Status> {
        let statuses = self
            .notify
            .status(&request.into_inner().notification_id)
            .await
            .map_err(tonic::Status::from)?;
        Ok(tonic::Response::new(pb::StatusResponse {
            devices: statuses
                .into_iter()
                .map(|s| pb::DeviceStatus {
                    device_id: s.device_id,
                    state: match s.state {
                        crate::store::DeliveryState::Pending => pb::device_status::State::Pending,
                        crate::store::DeliveryState::Sent => pb::device_status::State::Sent,
                        crate::store::DeliveryState::Retrying => pb::device_status::State::Retrying,
                        crate::store::DeliveryState::Failed => pb::device_status::State::Failed,
                    } as i32,
                    reason: s.reason,
                    attempts: s.attempts,
                })
                .collect(),
        }))
    }
}

/// `user` as a user id, or the 400 that says why it is none.
fn user_id(user: &str) -> Result<herald_protocol::UserId, Refusal> {
    herald_protocol::UserId::parse(user).map_err(|e| Refusal::invalid(format!("invalid user: {e}")))
}
