//! The opening handshake (RFC 6455 §4.2): checks the client's upgrade
//! request and writes the `101 Switching Protocols` that accepts it.

use axum::http::{HeaderMap, HeaderValue, Method, Response, StatusCode, header};
use axum::response::IntoResponse;
use base64::Engine;
use sha1::{Digest, Sha1};

/// What every server appends to the client's key before hashing it.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Why an upgrade request was not accepted (the client sees it as text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejected {
    NotGet,
    NotAnUpgrade,
    Version,
    NoKey,
}

impl IntoResponse for Rejected {
    fn into_response(self) -> axum::response::Response {
        let (status, why) = match self {
            Rejected::NotGet => (StatusCode::METHOD_NOT_ALLOWED, "a WebSocket opens with GET"),
            Rejected::NotAnUpgrade => (
                StatusCode::BAD_REQUEST,
                "this endpoint speaks WebSocket: send `Connection: upgrade` and `Upgrade: websocket`",
            ),
            Rejected::Version => (StatusCode::BAD_REQUEST, "Sec-WebSocket-Version must be 13"),
            Rejected::NoKey => (StatusCode::BAD_REQUEST, "Sec-WebSocket-Key is missing"),
        };
        let mut answer = (status, why).into_response();
        if self == Rejected::NotAnUpgrade || self == Rejected::Version {
            answer.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        answer
    }
}

/// The `101` accepting a valid upgrade request, speaking `subprotocol`
/// when the client offered it.
pub(crate) fn accept(
    method: &Method,
    headers: &HeaderMap,
    subprotocol: &'static str,
) -> Result<Response<axum::body::Body>, Rejected> {
    if method != Method::GET {
        return Err(Rejected::NotGet);
    }
    if !has_token(headers, header::CONNECTION, "upgrade")
        || !has_token(headers, header::UPGRADE, "websocket")
    {
        return Err(Rejected::NotAnUpgrade);
    }
    if !has_token(headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(Rejected::Version);
    }
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| k.as_bytes().trim_ascii())
        .filter(|k| !k.is_empty())
        .ok_or(Rejected::NoKey)?;
    let accept = accept_key(key);
    let mut answer = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, subprotocol) {
        answer = answer.header(header::SEC_WEBSOCKET_PROTOCOL, subprotocol);
    }
    answer
        .body(axum::body::Body::empty())
        .map_err(|_| Rejected::NoKey)
}

/// `Sec-WebSocket-Accept` for a client's key.
fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// Whether a comma-separated header (in any of its lines) holds `token`,
/// compared without case.
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    const VALID: [(&str, &str); 5] = [
        ("connection", "keep-alive, Upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        // the RFC's own example
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
        ("sec-websocket-protocol", "chat, herald.v1"),
    ];

    #[test]
    fn the_rfc_example_is_accepted_with_its_key_and_our_subprotocol() {
        let answer = accept(&Method::GET, &request(&VALID), "herald.v1").expect("accepted");
        assert_eq!(answer.status(), StatusCode::SWITCHING_PROTOCOLS);
        let h = answer.headers();
        assert_eq!(h["sec-websocket-accept"], "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(h["sec-websocket-protocol"], "herald.v1");
        assert_eq!(h["upgrade"], "websocket");

        let without = request(&VALID[..4]);
        let answer = accept(&Method::GET, &without, "herald.v1").expect("accepted");
        assert!(!answer.headers().contains_key("sec-websocket-protocol"));
    }

    #[test]
    fn a_request_that_is_not_a_websocket_upgrade_is_told_why() {
        let headers = request(&VALID);
        assert_eq!(
            accept(&Method::POST, &headers, "p").err(),
            Some(Rejected::NotGet)
        );
        let no_upgrade = request(&[VALID[2], VALID[3]]);
        assert_eq!(
            accept(&Method::GET, &no_upgrade, "p").err(),
            Some(Rejected::NotAnUpgrade)
        );
        let old = request(&[VALID[0], VALID[1], ("sec-websocket-version", "8"), VALID[3]]);
        assert_eq!(
            accept(&Method::GET, &old, "p").err(),
            Some(Rejected::Version)
        );
        let keyless = request(&VALID[..3]);
        assert_eq!(
            accept(&Method::GET, &keyless, "p").err(),
            Some(Rejected::NoKey)
        );
        assert_eq!(
            Rejected::NotAnUpgrade.into_response().status(),
            StatusCode::BAD_REQUEST,
            "the documented answer (docs/openapi.json)"
        );
    }
}
