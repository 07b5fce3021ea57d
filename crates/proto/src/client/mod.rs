//! What every internal gRPC client shares (routing → presence, routing →
//! notify, edge → presence): a lazily connected channel, the API key sent
//! as `authorization` metadata, and one short deadline for every call.

use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// One internal gRPC service as its callers reach it: the channel, the
/// API key and the deadline.
#[derive(Clone)]
pub struct Upstream {
    /// The connection, for a generated client stub.
    pub channel: Channel,
    key: Option<MetadataValue<Ascii>>,
    deadline: Duration,
}

impl Upstream {
    /// Connects lazily to `url` (`http://presence:50052`); each call gives
    /// up after `deadline`.
    pub fn new(url: &str, api_key: Option<&str>, deadline: Duration) -> Result<Self, String> {
        let endpoint = Endpoint::from_shared(url.to_owned())
            .map_err(|e| format!("bad URL {url}: {e}"))?
            .connect_timeout(deadline)
            .timeout(deadline)
            .tcp_nodelay(true);
        let key = api_key
            .map(|k| format!("Bearer {k}").parse())
            .transpose()
            .map_err(|_| "API key is not valid metadata".to_owned())?;
        Ok(Upstream {
            channel: endpoint.connect_lazy(),
            key,
            deadline,
        })
    }

    /// A request with the deadline and the key.
    pub fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.deadline);
        if let Some(key) = &self.key {
            request.metadata_mut().insert("authorization", key.clone());
        }
        request
    }
}

/// A failed call as one line: `Unavailable: connection refused`.
pub fn describe(status: &tonic::Status) -> String {
    format!("{}: {}", status.code(), status.message())
}

mod notify;
mod presence;

pub use notify::NotifyClient;
pub use presence::PresenceClient;
