//! What xsigate promises the outside in names and shapes: the error envelope, the headers and
//! the cookie it reads or writes (and how its fields go into Pingora's heads), and the request
//! classes its metrics are labelled with.
//!
//! Layer: the bottom of the crate beside [`crate::config`]. It uses nothing else in the crate,
//! so that every layer above can speak it.

pub mod error;
pub mod fields;
pub mod headers;
pub mod layout;
pub mod route;
