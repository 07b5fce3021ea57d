//! The gRPC server API, `herald.routing.v1.Routing`, authenticated with the
//! same API keys as HTTP (metadata `authorization: Bearer <key>`).

use std::sync::Arc;

use herald_core::history::Recovery;
use herald_core::work_queue::Notification;
use herald_proto::Refusal;
use herald_proto::routing::v1 as pb;
use herald_proto::routing::v1::routing_server::{Routing as RoutingApi, RoutingServer};
use herald_protocol::channel::Channel;
use serde_json::value::RawValue;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::api::{DEFAULT_HISTORY_LIMIT, not_readable, since_position};
use crate::routing::{
    BroadcastRequest, NotifyOutcome, PublishRequest, Routing, SendRequest, SendResult,
};
use herald_core::api_key::ApiKeys;

/// Maps a Herald error to the gRPC status a client expects, and counts it.
pub fn status_of(e: Refusal) -> Status {
    crate::stats::error("grpc", crate::stats::side_of(e.code()));
    Status::from(e)
}

fn invalid(message: impl Into<String>) -> Status {
    Status::invalid_argument(message)
}

fn channel(name: &str) -> Result<Channel, Status> {
    Channel::new(name).map_err(|e| invalid(format!("invalid channel: {e}")))
}

/// gRPC carries `data` as bytes; it must be one JSON document.
fn json_data(bytes: Vec<u8>) -> Result<Box<RawValue>, Status> {
    if bytes.is_empty() {
        return Err(invalid("data is required (a JSON document)"));
    }
    let text = String::from_utf8(bytes).map_err(|_| invalid("data must be UTF-8 JSON"))?;
    serde_json::from_str(&text).map_err(|e| invalid(format!("data is not JSON: {e}")))
}

fn key(k: String) -> Option<String> {
    (!k.is_empty()).then_some(k)
}

fn notification(n: Option<pb::Notification>) -> Option<Notification> {
    n.map(|n| Notification {
        title: n.title,
        body: n.body,
        collapse_key: key(n.collapse_key),
    })
}

fn outcome(o: NotifyOutcome) -> pb::NotifyOutcome {
    pb::NotifyOutcome {
        online: o.online,
        pushed: o.pushed,
        unknown: o.unknown,
        no_devices: o.no_devices,
    }
}

pub struct GrpcApi {
    routing: Arc<Routing>,
}

/// The tonic service with API-key authentication in front.
pub fn grpc_service(
    routing: Arc<Routing>,
    keys: ApiKeys,
) -> InterceptedService<RoutingServer<GrpcApi>, herald_proto::server::RequireApiKey> {
    let max = routing.config.max_message_bytes + 64 * 1024;
    let server = RoutingServer::new(GrpcApi { routing }).max_decoding_message_size(max);
    InterceptedService::new(server, herald_proto::server::require_api_key(keys))
}

#[tonic::async_trait]
impl RoutingApi for GrpcApi {
    async fn publish(
        &self,
        request: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let r = request.into_inner();
        let request = PublishRequest {
            channel: channel(&r.channel)?,
            data: json_data(r.data)?,
            idempotency_key: key(r.idempotency_key),
            notify_offline: r.notify_offline,
            notification: notification(r.notification),
        };
        let answer = self.routing.publish(request).await.map_err(status_of)?;
        Ok(Response::new(pb::PublishResponse {
            offset: answer.offset,
            epoch: answer.epoch.to_string(),
            notify: answer.notify.map(outcome),
        }))
    }

    async fn broadcast(
        &self,
        request: Request<pb::BroadcastRequest>,
    ) -> Result<Response<pb::BroadcastResponse>, Status> {
        let r = request.into_inner();
        let request = BroadcastRequest {
            channels: r
                .channels
                .iter()
                .map(|c| channel(c))
                .collect::<Result<_, _>>()?,
            data: json_data(r.data)?,
            idempotency_key: key(r.idempotency_key),
        };
        let answer = self.routing.broadcast(request).await.map_err(status_of)?;
        Ok(Response::new(pb::BroadcastResponse {
            results: answer
                .results
                .into_iter()
                .map(|r| pb::BroadcastResult {
                    channel: r.channel.to_string(),
                    offset: r.offset,
                    epoch: r.epoch.to_string(),
                })
                .collect(),
        }))
    }

    async fn send_to_user(
        &self,
        request: Request<pb::SendToUserRequest>,
    ) -> Result<Response<pb::SendToUserResponse>, Status> {
        let r = request.into_inner();
        let request = SendRequest {
            user: r.user,
            data: json_data(r.data)?,
            notification: notification(r.notification),
            idempotency_key: key(r.idempotency_key),
        };
        let answer = self
            .routing
            .send_to_user(request)
            .await
            .map_err(status_of)?;
        let result = match answer.result {
            SendResult::Online => pb::SendResult::Online,
            SendResult::Pushed => pb::SendResult::Pushed,
            SendResult::NoDevices => pb::SendResult::NoDevices,
            SendResult::Unknown => pb::SendResult::Unknown,
        };
        Ok(Response::new(pb::SendToUserResponse {
            result: result as i32,
        }))
    }

    async fn history(
        &self,
        request: Request<pb::HistoryRequest>,
    ) -> Result<Response<pb::HistoryResponse>, Status> {
        let r = request.into_inner();
        let channel = channel(&r.channel)?;
        let since = (r.since > 0 || !r.epoch.is_empty()).then_some(r.since);
        let epoch = key(r.epoch);
        let since = since_position(&self.routing, &channel, since, epoch)
            .await
            .map_err(status_of)?;
        let limit = match r.limit {
            0 => DEFAULT_HISTORY_LIMIT,
            n => n as usize,
        };
        match self
            .routing
            .history(&channel, since.as_ref(), limit)
            .await
            .map_err(status_of)?
        {
            Recovery::Recovered {
                publications,
                latest,
            } => Ok(Response::new(pb::HistoryResponse {
                publications: publications
                    .into_iter()
                    .map(|p| pb::HistoryPublication {
                        offset: p.offset,
                        data: p.data.get().as_bytes().to_vec(),
                        from: p.from.unwrap_or_default(),
                        ts: p.ts,
                    })
                    .collect(),
                offset: latest.offset,
                epoch: latest.epoch.to_string(),
            })),
            Recovery::Unrecoverable { latest } => {
                Err(status_of(not_readable(since.as_ref(), &latest)))
            }
        }
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        self.routing
            .disconnect(&request.into_inner().user)
            .await
            .map_err(status_of)?;
        Ok(Response::new(pb::DisconnectResponse {}))
    }
}
