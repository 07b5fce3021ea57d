//! What the HTTP transports (SSE, long polling, `POST /publish`,
//! `POST /typing`) share: the bearer token, the channel list, and JSON
//! error answers.

use axum::http::{HeaderMap, header};
use herald_core::auth::Claims;
use herald_protocol::channel::Channel;
use herald_protocol::{ErrorBody, ErrorCode, Unsubscribed};

use crate::Edge;
use crate::commands::subscribe::MAX_SUBSCRIPTIONS;

/// An error answer: `{"error":{…}}` with its HTTP status — the same as
/// the server APIs'.
pub(crate) use herald_proto::http::ApiError as HttpError;

/// Why an HTTP transport's request opened nothing: admission said no, or
/// the request is wrong.
pub(crate) enum Denied {
    Refused(crate::Refusal),
    Http(HttpError),
}

impl From<crate::Refusal> for Denied {
    fn from(r: crate::Refusal) -> Self {
        Denied::Refused(r)
    }
}

impl From<HttpError> for Denied {
    fn from(e: HttpError) -> Self {
        Denied::Http(e)
    }
}

impl From<ErrorBody> for Denied {
    fn from(e: ErrorBody) -> Self {
        Denied::Http(HttpError(e))
    }
}

impl axum::response::IntoResponse for Denied {
    fn into_response(self) -> axum::response::Response {
        match self {
            Denied::Refused(r) => r.into_response(),
            Denied::Http(e) => e.into_response(),
        }
    }
}

/// The client's token: `Authorization: Bearer …`, else `token=` (the
/// streams: EventSource cannot send headers).
pub(crate) fn authenticate(
    edge: &Edge,
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Result<Claims, HttpError> {
    authenticate_from(edge, headers, query_token, true)
}

/// The client's token from `Authorization: Bearer …` only (the HTTP
/// commands: a token in a URL ends up in logs).
pub(crate) fn authenticate_header(edge: &Edge, headers: &HeaderMap) -> Result<Claims, HttpError> {
    authenticate_from(edge, headers, None, false)
}

fn authenticate_from(
    edge: &Edge,
    headers: &HeaderMap,
    query_token: Option<&str>,
    accepts_query: bool,
) -> Result<Claims, HttpError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .or(query_token)
        .ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Unauthorized,
                if accepts_query {
                    "missing token: send `Authorization: Bearer <JWT>` or `token=`"
                } else {
                    "missing token: send `Authorization: Bearer <JWT>`"
                },
            )
        })?;
    edge.verifier
        .verify(token.trim())
        .map_err(|e| HttpError(ErrorBody::new(e.code(), e.to_string())))
}

/// The channels of an HTTP transport's request (`channels=a,b`).
pub(crate) struct Requested {
    /// Valid, in a known namespace and allowed, in the order given, the
    /// user's personal channel last: the stream's channels.
    pub allowed: Vec<Channel>,
    /// Valid but not allowed by the token, with why.
    pub refused: Vec<(Channel, ErrorBody)>,
    /// Every channel of the request, refused ones too, in the order given
    /// and the personal channel last: the stream an SSE event id is of.
    pub all: Vec<Channel>,
}

impl Requested {
    /// Refused channels are an error — unless the client resumes a stream
    /// that had them (`cursor` has a position for each): then its token was
    /// narrowed (a refresh), and the channels are dropped, each with an
    /// `unsubscribe` push that says why.
    pub(crate) fn narrowed(
        &self,
        cursor: &crate::cursor::Cursor,
    ) -> Result<Vec<Unsubscribed>, HttpError> {
        let mut dropped = Vec::new();
        for (channel, error) in &self.refused {
            if cursor.get(channel).is_none() {
                return Err(HttpError(error.clone()));
            }
            dropped.push(Unsubscribed {
                channel: channel.clone(),
                code: error.code,
                reason: "the token does not allow this channel".into(),
            });
        }
        Ok(dropped)
    }
}

/// `channels=a,b`: each valid and in a known namespace; allowed for the
/// user or refused.
pub(crate) fn channels(edge: &Edge, claims: &Claims, list: &str) -> Result<Requested, HttpError> {
    let mut requested = Requested {
        allowed: Vec::new(),
        refused: Vec::new(),
        all: Vec::new(),
    };
    let mut seen = std::collections::HashSet::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let channel = Channel::new(name).map_err(|e| {
            ErrorBody::new(
                ErrorCode::BadRequest,
                format!("invalid channel `{name}`: {e}"),
            )
        })?;
        if !seen.insert(channel.clone()) || is_personal(&channel, &claims.sub) {
            continue;
        }
        if seen.len() > MAX_SUBSCRIPTIONS {
            return Err(HttpError(ErrorBody::new(
                ErrorCode::LimitExceeded,
                format!("at most {MAX_SUBSCRIPTIONS} channels"),
            )));
        }
        requested.all.push(channel.clone());
        if !claims.may_subscribe(&channel) {
            let why = ErrorBody::new(
                ErrorCode::PermissionDenied,
                format!("not allowed to subscribe to `{channel}`"),
            );
            requested.refused.push((channel, why));
            continue;
        }
        edge.config
            .namespace(&channel)
            .map_err(|e| HttpError(e.into()))?;
        requested.allowed.push(channel);
    }
    if requested.allowed.is_empty() && requested.refused.is_empty() {
        return Err(HttpError(ErrorBody::new(
            ErrorCode::BadRequest,
            "name at least one channel: `channels=a,b`",
        )));
    }
    // Like every WebSocket connection, the stream carries the user's
    // personal channel.
    if let Ok(personal) = Channel::personal(&claims.sub) {
        requested.allowed.push(personal.clone());
        requested.all.push(personal);
    }
    Ok(requested)
}

/// The user's own `#user` channel, which every connection carries.
pub(crate) fn is_personal(channel: &Channel, user: &str) -> bool {
    channel.as_str().strip_prefix('#') == Some(user)
}
