//! Git remotes, spoken to directly over git's smart HTTP protocol.
//!
//! Creating or deleting a branch needs no clone: the remote already has the commit, so only a ref
//! update travels. [`Remote::advertised_refs`] reads the refs (and the default branch) from the
//! upload-pack advertisement; [`Remote::update_refs`] sends receive-pack commands, each a
//! compare-and-swap on the ref's old value, with an empty pack when a ref is set. That is ~20 ms
//! whatever the size of the repository, where a shallow clone and push take half a second.
//!
//! Credentials: a token sent as HTTP basic auth (user `x-access-token` by default, as GitHub
//! expects). URLs with credentials inside are refused; URLs are redacted in every message.

mod pktline;
mod smart_http;

pub use smart_http::{Advertisement, Credentials, RefUpdate, RefUpdateResult, Remote, ZERO_ID};
