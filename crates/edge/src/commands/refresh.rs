//! `refresh`: replace the connection's token before it expires. The new
//! token must be for the same user; channels it no longer allows are left
//! (an `unsubscribe` push with code 103 says so).

use herald_protocol::{ConnectCommand, ErrorBody, ErrorCode};

use crate::connection::{Connection, Done};

pub(crate) fn start(conn: &mut Connection, id: u64, command: ConnectCommand) {
    let verified = conn.claims().cloned().and_then(|current| {
        let claims = conn
            .edge
            .verifier
            .verify(&command.token)
            .map_err(|e| ErrorBody::new(e.code(), e.to_string()))?;
        if claims.sub != current.sub {
            return Err(ErrorBody::new(
                ErrorCode::Unauthorized,
                "the new token is for another user",
            ));
        }
        Ok(claims)
    });
    match verified {
        Ok(claims) => conn.start(Box::pin(std::future::ready(Done::Refreshed {
            id: Some(id),
            claims,
        }))),
        Err(e) => conn.answer::<()>(Some(id), Err(e)),
    }
}
