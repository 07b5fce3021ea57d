//! One file per client command.

pub(crate) mod connect;
pub(crate) mod presence;
pub(crate) mod publish;
pub(crate) mod refresh;
pub(crate) mod subscribe;
pub(crate) mod typing;
pub(crate) mod unsubscribe;

use herald_core::auth::Claims;
use herald_core::config::NamespaceConfig;
use herald_protocol::channel::Channel;
use herald_protocol::{ErrorBody, ErrorCode};

/// What `typing` and `presence` ask first: the user may be in `channel`,
/// and its namespace has `feature` on.
pub(crate) fn in_channel_with(
    edge: &crate::Edge,
    claims: &Claims,
    channel: &Channel,
    feature: &str,
    on: impl Fn(&NamespaceConfig) -> bool,
) -> Result<(), ErrorBody> {
    if !claims.may_subscribe(channel) {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("not allowed in `{channel}`"),
        ));
    }
    if !on(edge.config.namespace(channel)?) {
        return Err(ErrorBody::new(
            ErrorCode::PermissionDenied,
            format!("{feature} is off for `{channel}`"),
        ));
    }
    Ok(())
}
