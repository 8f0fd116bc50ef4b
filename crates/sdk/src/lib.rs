//! Write verbhost verb plugins in Rust.
//!
//! A plugin is a `cdylib` crate built for `wasm32-wasip2` that implements [`Plugin`] and
//! names its type in [`export_plugin!`]:
//!
//! ```ignore
//! use verbhost_sdk::{export_plugin, CallInfo, Completion, Plugin, PluginInfo, VerbError};
//!
//! struct Hello;
//!
//! impl Plugin for Hello {
//!     fn describe() -> PluginInfo {
//!         PluginInfo { name: "hello".into(), version: "0.1.0".into(), verbs: vec!["hello".into()] }
//!     }
//!     fn run(verb: &str, call: &CallInfo) -> Result<Completion, VerbError> {
//!         let verb = verbhost_sdk::verb::Verb::parse(verb)?;
//!         let mut props = verb.props();
//!         let action_hook = props.hook("actionHook")?;
//!         let _warnings = props.finish()?;
//!         verbhost_sdk::host::info(&format!("hello, {}", call.remote_party.uri));
//!         Ok(Completion { event: "HELLO_DONE".into(), payload: "{}".into(), action_hook, call_left: false })
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
//! - [`common`]: the sipfrag, Subscription-State, header and JSON helpers the host uses too.
//!
//! The bindings come from the `wit/` directory of the verbhost repository, the single source
//! of the contract (`verbhost:plugin@0.1.0`).

extern crate self as verbhost_sdk;

/// serde_json, the version the SDK's own API takes ([`host::emit_event`]'s payload), so a
/// plugin builds its payloads with `verbhost_sdk::serde_json::json!` and needs no dependency
/// of its own.
pub use serde_json;
pub use verbhost_common as common;

pub mod host;
pub mod refer;
pub mod sip;
pub mod verb;

/// The generated bindings of the `verb-plugin` world. Prefer the re-exports at the crate root.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "verb-plugin",
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
pub trait Plugin {
    /// Who the plugin is and which verbs it implements. The host calls this once at load.
    fn describe() -> PluginInfo;

    /// Runs one verb on a call and returns how it completed. `verb` is the verb's JSON in
    /// either jambonz form (`{"verb":"sip:refer",...}` or `{"sip:refer":{...}}`).
    fn run(verb: &str, call: &CallInfo) -> Result<Completion, VerbError>;
}

/// Exports a [`Plugin`] implementation as the component's `verb` interface.
///
/// The exports exist only when building for wasm32: a native build of a plugin crate (for
/// `cargo build --workspace` or native unit tests) checks the implementation but exports
/// nothing, since wasm export names are not valid native symbols.
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
                <$plugin as $crate::Plugin>::run(&verb, &call)
            }
        }

        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_world!(__VerbhostExport);
    };
}
