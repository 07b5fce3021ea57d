//! One file per client command.

pub(crate) mod connect;
pub(crate) mod presence;
pub(crate) mod publish;
pub(crate) mod refresh;
pub(crate) mod subscribe;
pub(crate) mod typing;
pub(crate) mod unsubscribe;
