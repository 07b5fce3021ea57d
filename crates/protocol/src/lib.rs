//! Herald's protocol: everything that crosses a process boundary as data —
//! channel names and user ids, the frames of client protocol v1, stream
//! positions, and what edges, routing and presence say to each other over
//! the bus. No I/O, no runtime: the client, the fuzzers and every service
//! share these definitions.

#![forbid(unsafe_code)]

pub mod channel;
mod frames;
pub mod position;
pub mod presence;
pub mod route;
pub mod user;

pub use channel::Channel;
pub use frames::*;
pub use position::{Epoch, Offset, StreamPosition};
pub use user::UserId;
