//! `herald.presence.v1.Presence` over gRPC.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use herald_core::api_key::ApiKeys;
use herald_proto::presence::v1 as pb;
use herald_proto::presence::v1::presence_server::{Presence, PresenceServer};
use herald_proto::server::RequireApiKey;
use herald_protocol::channel::Channel;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};

use crate::state::{EventKind, PresenceState};

/// Users one `GetOnline` may ask about.
const MAX_BATCH: usize = 10_000;

pub struct PresenceApi {
    state: Arc<PresenceState>,
}

/// The service with API-key authentication in front.
pub fn grpc_service(
    state: Arc<PresenceState>,
    keys: ApiKeys,
) -> InterceptedService<PresenceServer<PresenceApi>, RequireApiKey> {
    InterceptedService::new(
        PresenceServer::new(PresenceApi { state }),
        herald_proto::server::require_api_key(keys),
    )
}

fn channel(name: &str) -> Result<Channel, Status> {
    Channel::new(name).map_err(|e| Status::invalid_argument(format!("invalid channel: {e}")))
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::PresenceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl Presence for PresenceApi {
    async fn is_online(
        &self,
        request: Request<pb::IsOnlineRequest>,
    ) -> Result<Response<pb::IsOnlineResponse>, Status> {
        let p = self.state.user(&request.into_inner().user);
        Ok(Response::new(pb::IsOnlineResponse {
            online: p.online,
            connections: p.connections,
            transports: p.transports.iter().map(|t| t.to_string()).collect(),
        }))
    }

    async fn get_online(
        &self,
        request: Request<pb::GetOnlineRequest>,
    ) -> Result<Response<pb::GetOnlineResponse>, Status> {
        let users = request.into_inner().users;
        if users.len() > MAX_BATCH {
            return Err(Status::resource_exhausted(format!(
                "at most {MAX_BATCH} users per call"
            )));
        }
        Ok(Response::new(pb::GetOnlineResponse {
            online: self.state.online(users.iter().map(String::as_str)),
        }))
    }

    async fn channel_presence(
        &self,
        request: Request<pb::ChannelPresenceRequest>,
    ) -> Result<Response<pb::ChannelPresenceResponse>, Status> {
        let channel = channel(&request.into_inner().channel)?;
        Ok(Response::new(pb::ChannelPresenceResponse {
            members: self
                .state
                .channel(&channel)
                .into_iter()
                .map(|(user, connections)| pb::ChannelMember { user, connections })
                .collect(),
        }))
    }

    async fn last_seen(
        &self,
        request: Request<pb::LastSeenRequest>,
    ) -> Result<Response<pb::LastSeenResponse>, Status> {
        let (online, last_seen_ms) = self.state.last_seen(&request.into_inner().user);
        Ok(Response::new(pb::LastSeenResponse {
            online,
            last_seen_ms,
        }))
    }

    async fn stats(
        &self,
        _request: Request<pb::StatsRequest>,
    ) -> Result<Response<pb::StatsResponse>, Status> {
        let s = self.state.stats();
        Ok(Response::new(pb::StatsResponse {
            users: s.users,
            connections: s.connections,
            channels: s.channels,
        }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        let request = request.into_inner();
        let channels = request
            .channels
            .iter()
            .map(|c| channel(c))
            .collect::<Result<Vec<_>, _>>()?;
        let users = request.users;
        let events = BroadcastStream::new(self.state.subscribe_events())
            .take_while(|e| {
                // A watcher that fell behind loses events: end its stream
                // so it knows to re-read the state.
                std::future::ready(!matches!(e, Err(BroadcastStreamRecvError::Lagged(_))))
            })
            .filter_map(move |event| {
                let event = event.ok().filter(|e| {
                    let by_user = users.iter().any(|u| **u == *e.user);
                    let by_channel = e.channel.as_ref().is_some_and(|c| channels.contains(c));
                    (users.is_empty() && channels.is_empty()) || by_user || by_channel
                });
                std::future::ready(event.map(|e| {
                    Ok(pb::PresenceEvent {
                        kind: match e.kind {
                            EventKind::Online => pb::presence_event::Kind::Online,
                            EventKind::Offline => pb::presence_event::Kind::Offline,
                            EventKind::Join => pb::presence_event::Kind::Join,
                            EventKind::Leave => pb::presence_event::Kind::Leave,
                        } as i32,
                        user: e.user.to_string(),
                        channel: e.channel.map(|c| c.to_string()).unwrap_or_default(),
                        ts_ms: e.ts_ms,
                    })
                }))
            });
        Ok(Response::new(Box::pin(events)))
    }
}
