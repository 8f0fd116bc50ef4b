//! Pieces of verbhost that the host, the mock host and plugins all need, kept free of I/O and
//! heavy dependencies so they build for `wasm32-wasip2` as well as for the host:
//!
//! - [`sipfrag`]: the lenient `message/sipfrag` status-line parser (RFC 3420);
//! - [`subscription`]: the `Subscription-State` header (RFC 6665);
//! - [`headers`]: header names (compact forms, headers the SIP stack owns) and value checks;
//! - [`json`]: the verb JSON reader that accepts phone numbers written without quotes;
//! - [`status`]: reason phrases of SIP status codes;
//! - [`verb`]: the two jambonz verb forms and the hook forms.
//!
//! There is exactly one implementation of each: the SIP stack, the mock host and the guest
//! SDK call these, so a sipfrag body means the same thing everywhere.

pub mod headers;
pub mod json;
pub mod sipfrag;
pub mod status;
pub mod subscription;
pub mod verb;
