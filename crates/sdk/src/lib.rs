//! Write verbhost verb plugins in Rust.
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2` that implements [`Plugin`] and
//! names its type in [`export_plugin!`]. A plugin reads a verb in [`Plugin::parse`] and acts on
//! it in [`Plugin::run`]; the host calls `parse` alone to check every verb of an application
//! before any call (the contract's `verb-check` export), so a typo is refused at start instead
//! of failing the first caller:
//!
//! ```ignore
//! use verbhost_sdk::{export_plugin, CallInfo, Completion, Plugin, PluginInfo, VerbError, Webhook};
//!
//! struct Hello;
//!
//! /// The verb, read and checked.
//! struct HelloVerb { action_hook: Option<Webhook> }
//!
//! impl Plugin for Hello {
//!     type Verb = HelloVerb;
//!     fn describe() -> PluginInfo {
//!         PluginInfo { name: "hello".into(), version: "0.1.0".into(), verbs: vec!["hello".into()] }
//!     }
//!     fn parse(verb: &str) -> Result<HelloVerb, VerbError> {
//!         let verb = verbhost_sdk::verb::Verb::parse(verb)?;
//!         let mut props = verb.props_known(&["actionHook"])?;
//!         let action_hook = props.hook("actionHook")?;
//!         let _warnings = props.finish()?;
//!         Ok(HelloVerb { action_hook })
//!     }
//!     fn run(verb: HelloVerb, call: &CallInfo) -> Result<Completion, VerbError> {
//!         verbhost_sdk::host::info(&format!("hello, {}", call.remote_party.uri));
//!         Ok(Completion { event: "HELLO_DONE".into(), payload: "{}".into(), action_hook: verb.action_hook, call_left: false })
//!     }
//! }
//!
//! export_plugin!(Hello);
//! ```
//!
//! What the SDK gives a plugin:
//! - [`host`]: logging, posting to the eventHook, a monotonic clock;
//! - [`sip`]: `send-refer` and `on-notify`, and [`sip::HeaderList`] to read response headers;
//! - [`verb`]: reading verb JSON in both jambonz forms, with errors that name the property;
//! - [`refer`]: the `sip:refer` verb, Refer-To and Referred-By formatting;
//! - [`common`]: the sipfrag, Subscription-State, header and JSON helpers the host uses too;
//! - `native` (not on wasm32): run the same plugin compiled for the host, its host calls
//!   answered by a `native::NativeHost`, to measure what the sandbox costs or to test plugin
//!   logic in plain Rust.
//!
//! The bindings come from the `wit/` directory of the verbhost repository, the single source
//! of the contract (`verbhost:plugin@0.1.1`, world `checked-verb-plugin`: the `verb` export
//! every host requires, plus the optional `verb-check`).

extern crate self as verbhost_sdk;

/// serde_json, the version the SDK's own API takes ([`host::emit_event`]'s payload), so a
/// plugin builds its payloads with `verbhost_sdk::serde_json::json!` and needs no dependency
/// of its own.
pub use serde_json;
pub use verbhost_common as common;

pub mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod native;
pub mod refer;
pub mod sip;
pub mod verb;

/// The generated bindings of the `checked-verb-plugin` world. Prefer the re-exports at the
/// crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "checked-verb-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_world",
        default_bindings_module: "::verbhost_sdk::bindings",
        runtime_path: "::verbhost_sdk::__rt::wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub mod __rt {
    pub use wit_bindgen;
}

pub use bindings::exports::verbhost::plugin::verb::{Completion, PluginInfo, VerbError};
pub use bindings::verbhost::plugin::types::{
    CallInfo, Direction, Header, Identity, Level, Webhook,
};

/// A verb plugin. Implement it on a unit struct and name the struct in [`export_plugin!`].
///
/// Reading a verb and acting on it are two steps: [`Plugin::parse`] turns the verb's JSON into
/// [`Plugin::Verb`] or refuses it, and [`Plugin::run`] acts on the parsed verb. The exported
/// `run` calls both; the exported `check` (what the host calls for every verb of an
/// application before any call) calls `parse` alone. So every error `parse` can give is found
/// before a caller is answered, and `run` never sees a verb `parse` refused.
pub trait Plugin {
    /// The verb as the plugin reads it: what `parse` gives `run`.
    type Verb;

    /// Who the plugin is and which verbs it implements. The host calls this once at load.
    fn describe() -> PluginInfo;

    /// Reads and checks one verb without acting on any call. `verb` is the verb's JSON in
    /// either jambonz form (`{"verb":"sip:refer",...}` or `{"sip:refer":{...}}`). Refuse a bad
    /// verb with [`VerbError::InvalidVerb`], naming the property and the cause (the
    /// [`verb::Props`] readers do). It runs in a sandbox with no call: it must not call the
    /// host ([`host`] or [`sip`]), and a plugin that does traps.
    fn parse(verb: &str) -> Result<Self::Verb, VerbError>;

    /// Runs one parsed verb on a call and returns how it completed.
    fn run(verb: Self::Verb, call: &CallInfo) -> Result<Completion, VerbError>;
}

/// Exports a [`Plugin`] implementation as the component's `verb` interface (`describe`, and
/// `run` as [`Plugin::parse`] then [`Plugin::run`]) and its `verb-check` interface (`check` as
/// [`Plugin::parse`] alone).
///
/// The exports exist only when building for wasm32: a native build of a plugin crate (for
/// `cargo build --workspace` or native unit tests) checks the implementation but exports
/// nothing, since wasm export names are not valid native symbols. A native build runs the
/// plugin through `native::run` instead.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        #[cfg(not(target_arch = "wasm32"))]
        const _: () = {
            // Natively, only check that the plugin implements the trait.
            fn implements_plugin<P: $crate::Plugin>() {}
            let _ = implements_plugin::<$plugin>;
        };

        #[cfg(target_arch = "wasm32")]
        #[doc(hidden)]
        struct __VerbhostExport;

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::verbhost::plugin::verb::Guest for __VerbhostExport {
            fn describe() -> $crate::PluginInfo {
                <$plugin as $crate::Plugin>::describe()
            }
            fn run(
                verb: ::std::string::String,
                call: $crate::CallInfo,
            ) -> ::std::result::Result<$crate::Completion, $crate::VerbError> {
                let parsed = <$plugin as $crate::Plugin>::parse(&verb)?;
                <$plugin as $crate::Plugin>::run(parsed, &call)
            }
        }

        #[cfg(target_arch = "wasm32")]
        impl $crate::bindings::exports::verbhost::plugin::verb_check::Guest for __VerbhostExport {
            fn check(verb: ::std::string::String) -> ::std::result::Result<(), $crate::VerbError> {
                <$plugin as $crate::Plugin>::parse(&verb).map(|_| ())
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_world!(__VerbhostExport);
    };
}
