//! The workspace's guest plugins, built from source for `wasm32-wasip2` when this crate
//! builds. Each constant is the path of a component; [`SIP_REFER_WASM`] embeds the `sip:refer`
//! plugin itself, which the `verbhost` binary ships as its built-in.
//!
//! - [`SIP_REFER`]: `guest/sip-refer`, the `sip:refer` verb.
//! - [`MISBEHAVE`]: `guest/misbehave`, a plugin that breaks the rules on request (loops,
//!   allocates without end, panics, floods the host, returns garbage), for the runtime's tests.
//! - [`CLOCK_IMPORT`]: `guest/clock-import`, a plugin that imports `wasi:clocks`, which the
//!   sandbox does not grant: loading it must fail with the import named.
//! - [`FS_IMPORT`]: `guest/fs-import`, a plugin that reads a file (imports `wasi:filesystem`).
//! - [`SOCKET_IMPORT`]: `guest/socket-import`, a plugin that opens a TCP connection (imports
//!   `wasi:sockets`).
//! - [`FUTURE_CONTRACT`]: `guest/future-contract`, a plugin built for `verbhost:plugin@0.2.0`,
//!   a contract version this host does not support: loading it must fail with both versions named.
//! - [`NEWER_MINOR`]: `guest/newer-minor`, a plugin built for a made-up `verbhost:plugin@0.1.2`
//!   that imports a host function `0.1.1` does not have: loading it must say the host is older.
//! - [`CONTRACT_0_1_0`]: `guest/contract-0-1-0`, a plugin built against the frozen
//!   `verbhost:plugin@0.1.0`, before `verb-check` existed: it must keep loading and serving.

include!(concat!(env!("OUT_DIR"), "/guests.rs"));

/// The `sip:refer` plugin's component bytes.
pub static SIP_REFER_WASM: &[u8] = include_bytes!(concat!(
    env!("OUT_DIR"),
    "/guests-target/wasm32-wasip2/release/verbhost_guest_sip_refer.wasm"
));
