//! The verb registry: the built-in sip:refer plugin, then every `.wasm` in `--plugins DIR`,
//! each adding or overriding the verbs it declares (by `describe()`).

use std::collections::BTreeMap;
use std::path::Path;

use verbhost_runtime::{Allocator, Plugin, Runtime, RuntimeConfig};

use crate::bridge::SipCallHost;
use crate::error::ServerError;

/// A loaded plugin and where it came from.
struct Entry {
    plugin: Plugin<SipCallHost>,
    source: String,
}

/// Verb name to plugin.
pub(crate) struct Plugins {
    runtime: Runtime<SipCallHost>,
    by_verb: BTreeMap<String, Entry>,
}

impl Plugins {
    /// Loads the built-in plugin and, when given, every `*.wasm` in `dir` (in name order).
    /// A plugin that fails to load is an error naming the file and the cause: a platform
    /// would rather not start than run calls without a verb it was given.
    pub(crate) async fn load(dir: Option<&Path>) -> Result<Plugins, ServerError> {
        let runtime =
            Runtime::<SipCallHost>::new(RuntimeConfig::default()).map_err(ServerError::Runtime)?;
        let mut plugins = Plugins {
            runtime: runtime.clone(),
            by_verb: BTreeMap::new(),
        };
        let builtin = runtime
            .load(verbhost_guests::SIP_REFER_WASM)
            .await
            .map_err(ServerError::Builtin)?;
        plugins.add(builtin, "builtin:sip-refer".into());
        let Some(dir) = dir else {
            return Ok(plugins);
        };
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map_err(|source| ServerError::PluginDir {
                dir: dir.to_owned(),
                source,
            })?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "wasm"))
            .collect();
        files.sort();
        if files.is_empty() {
            tracing::warn!(dir = %dir.display(), "no .wasm plugins in the plugin directory");
        }
        for file in files {
            let plugin = runtime
                .load_file(&file)
                .await
                .map_err(|source| ServerError::Plugin {
                    path: file.clone(),
                    source,
                })?;
            plugins.add(plugin, file.display().to_string());
        }
        Ok(plugins)
    }

    fn add(&mut self, plugin: Plugin<SipCallHost>, source: String) {
        let info = plugin.info().clone();
        for verb in &info.verbs {
            if let Some(old) = self.by_verb.get(verb) {
                tracing::info!(verb, from = %old.source, to = %source, "verb overridden");
            }
            tracing::info!(verb, plugin = %info.name, version = %info.version, source = %source, "verb loaded");
            self.by_verb.insert(
                verb.clone(),
                Entry {
                    plugin: plugin.clone(),
                    source: source.clone(),
                },
            );
        }
    }

    /// The plugin for `verb`.
    pub(crate) fn get(&self, verb: &str) -> Option<&Plugin<SipCallHost>> {
        self.by_verb.get(verb).map(|e| &e.plugin)
    }

    /// How the runtime allocates plugin instances (on-demand allocation, when the pool could
    /// not be reserved, changes every performance figure).
    pub(crate) fn allocator(&self) -> &Allocator {
        self.runtime.allocator()
    }

    /// The verbs that have a plugin.
    pub(crate) fn verbs(&self) -> Vec<String> {
        self.by_verb.keys().cloned().collect()
    }
}
