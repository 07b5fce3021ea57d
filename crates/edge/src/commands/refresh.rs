//! `refresh`: replace the connection's token before it expires. The new
//! token must be for the same user.

use herald_core::protocol::{ConnectCommand, ErrorBody, ErrorCode, RefreshOk};

use crate::session::Session;

pub(crate) fn run(session: &mut Session, command: ConnectCommand) -> Result<RefreshOk, ErrorBody> {
    let current = session.claims()?;
    let claims = session
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
    let exp = claims.exp;
    session.claims = Some(claims);
    Ok(RefreshOk { exp })
}
