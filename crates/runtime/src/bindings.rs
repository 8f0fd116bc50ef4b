//! Host bindings of `wit/plugin.wit`, generated once. Everything public is re-exported from
//! the crate root; the generated names stay here.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "verb-plugin",
    imports: {
        "verbhost:plugin/sip.send-refer": async | trappable,
        "verbhost:plugin/sip.on-notify": async | trappable,
        default: trappable,
    },
    exports: { default: async },
    additional_derives: [PartialEq],
});
