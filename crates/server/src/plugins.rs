//! The plugins a server runs, and how a new version replaces the one in service.
//!
//! Versions come from three places: the built-in `sip:refer` plugin, every `*.wasm` of
//! `plugins.dir` (watched while the server runs) and uploads through the admin API. Each new
//! version goes through the same checks before it serves a call:
//!
//! 1. the size bound, then compilation off the async workers (or the compiled cache);
//! 2. the contract version and the import allowlist, then instantiation and `describe()`;
//! 3. the limits that apply to its verbs (`[limits]` and `[limits.verbs."NAME"]`);
//! 4. its own mock-host scenarios, `NAME.scenarios/*.json` beside `NAME.wasm`: one failure
//!    rejects it.
//!
//! Only then is it swapped in, atomically, in the [`Registry`]. A rejected version never
//! serves a call; the version before it keeps serving; the log line and the admin answer
//! name the file and the cause. A run takes its version once, at the start of its verb, so
//! a swap never touches a running verb.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use verbhost_mock::MockHost;
use verbhost_runtime::{
    Compiled, LoadError, Origin, Plugin, PluginInfo, Registry, RollbackError, Runtime, Swap,
    Version, VersionInfo, sha256_hex,
};

use crate::bridge::SipCallHost;
use crate::config::{LimitsConfig, PluginsConfig};
use crate::error::ServerError;
use crate::metrics::Metrics;
use crate::watch::{self, Change, DirWatch};

/// Verbs one plugin may declare: each becomes a metric label and a registry entry.
const MAX_VERBS_PER_PLUGIN: usize = 64;
/// Longest verb name, in bytes.
const MAX_VERB_NAME_BYTES: usize = 128;
/// Scenario files one plugin version may bring.
const MAX_SCENARIOS: usize = 256;

/// The built-in plugin's origin.
fn builtin() -> Origin {
    Origin::Builtin("sip-refer".into())
}

/// The plugins in service, the pipeline that checks new versions, and the watcher.
pub(crate) struct Plugins {
    runtime: Runtime<SipCallHost>,
    /// Runs each new version's own scenarios, on the same compiled code and the same pool.
    mock: MockHost,
    registry: Registry<SipCallHost>,
    config: PluginsConfig,
    limits: LimitsConfig,
    metrics: Arc<Metrics>,
    /// The sha256 last seen at each plugin file (served or rejected): an event for a file
    /// whose bytes did not change does nothing.
    seen: Mutex<HashMap<PathBuf, String>>,
    /// One deployment at a time, so two writes of the same file cannot race.
    deploying: tokio::sync::Mutex<()>,
    watch: Mutex<Option<DirWatch>>,
}

/// A new version's fate, as the admin API answers it and the log reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "result", rename_all = "lowercase")]
pub(crate) enum Verdict {
    /// Checked and in service.
    Ok(Deployed),
    /// Refused; the version before it keeps serving.
    Rejected(Rejected),
    /// The same bytes are already what this file serves (or was refused as).
    Unchanged { sha256: String },
}

impl Verdict {
    pub(crate) fn is_ok(&self) -> bool {
        !matches!(self, Verdict::Rejected(_))
    }
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Deployed {
    pub(crate) plugin: String,
    pub(crate) version: String,
    pub(crate) sha256: String,
    pub(crate) verbs: Vec<String>,
    pub(crate) source: String,
    /// `cache` or `compiled`.
    pub(crate) compiled: &'static str,
    /// From the bytes in hand to the new version in service, scenarios included.
    pub(crate) load_ms: f64,
    pub(crate) scenarios: usize,
    /// Where an upload was saved in the plugin directory, so a restart keeps it.
    pub(crate) saved: Option<String>,
    pub(crate) swaps: Vec<Swap>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Rejected {
    pub(crate) source: String,
    pub(crate) sha256: String,
    /// Which check refused it: `read`, `compile`, `load`, `describe`, `limits`,
    /// `scenarios` or `name`.
    pub(crate) stage: &'static str,
    pub(crate) cause: String,
}

/// A rollback done.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RolledBack {
    pub(crate) result: &'static str,
    pub(crate) verb: String,
    pub(crate) active: Option<verbhost_runtime::VersionRef>,
    pub(crate) previous: Option<verbhost_runtime::VersionRef>,
}

impl Plugins {
    /// Builds the runtime, loads the built-in plugin and every file of the plugin
    /// directory. A file that fails its checks is logged and left out (as it would be if it
    /// arrived later); only the built-in plugin failing stops the server.
    pub(crate) async fn start(
        config: PluginsConfig,
        limits: LimitsConfig,
        runtime: Runtime<SipCallHost>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Plugins>, ServerError> {
        let mut config = config;
        // One spelling of every path: the watcher reports absolute ones, and a file's path is
        // its origin in the registry (a relative `--plugins` would make one file two origins).
        if let Some(dir) = &config.dir {
            config.dir =
                Some(
                    std::fs::canonicalize(dir).map_err(|source| ServerError::PluginDir {
                        dir: dir.clone(),
                        source,
                    })?,
                );
        }
        let mock = MockHost::from_runtime(runtime.sibling().map_err(ServerError::Runtime)?);
        let plugins = Arc::new(Plugins {
            runtime,
            mock,
            registry: Registry::new(),
            config,
            limits,
            metrics,
            seen: Mutex::default(),
            deploying: tokio::sync::Mutex::new(()),
            watch: Mutex::new(None),
        });
        let verdict = {
            let _one_at_a_time = plugins.deploying.lock().await;
            plugins
                .deploy(verbhost_guests::SIP_REFER_WASM, builtin(), |_| {
                    Ok((builtin(), None))
                })
                .await
        };
        match verdict {
            Verdict::Rejected(rejected) => {
                return Err(ServerError::Builtin(LoadError::Describe(rejected.cause)));
            }
            Verdict::Ok(_) | Verdict::Unchanged { .. } => {}
        }
        let Some(dir) = plugins.config.dir.clone() else {
            return Ok(plugins);
        };
        let files = plugin_files(&dir).map_err(|source| ServerError::PluginDir {
            dir: dir.clone(),
            source,
        })?;
        if files.is_empty() {
            tracing::warn!(dir = %dir.display(), "no .wasm plugins in the plugin directory");
        }
        // Watch first, then load: a file written meanwhile is not missed (one seen twice is
        // loaded once, by its sha256).
        if plugins.config.watch {
            plugins
                .watch_dir(&dir)
                .map_err(|source| ServerError::PluginDir {
                    dir: dir.clone(),
                    source: std::io::Error::other(source),
                })?;
        }
        for file in files {
            plugins.deploy_file(&file).await;
        }
        Ok(plugins)
    }

    /// The version serving `verb` now. A run keeps what this returns to its end.
    pub(crate) fn get(&self, verb: &str) -> Option<Arc<Version<SipCallHost>>> {
        self.registry.get(verb)
    }

    /// The verbs that have a plugin, in name order.
    pub(crate) fn verbs(&self) -> Vec<String> {
        self.registry.list().into_iter().map(|v| v.verb).collect()
    }

    /// Every verb with its active version, for `GET /plugins` and the metrics.
    pub(crate) fn list(&self) -> Vec<VersionInfo> {
        self.registry.list()
    }

    /// The largest plugin file accepted.
    pub(crate) fn max_plugin_bytes(&self) -> usize {
        self.runtime.config().max_plugin_bytes
    }

    /// Starts watching `dir`; changes are deployed in order, one at a time.
    fn watch_dir(self: &Arc<Self>, dir: &Path) -> Result<(), notify::Error> {
        let (handle, mut changes) = watch::watch(dir, Duration::from_millis(self.config.quiet_ms))?;
        if let Ok(mut slot) = self.watch.lock() {
            *slot = Some(handle);
        }
        let plugins = Arc::downgrade(self);
        let dir = dir.to_owned();
        tracing::info!(dir = %dir.display(), "watching the plugin directory");
        tokio::spawn(async move {
            while let Some(change) = changes.recv().await {
                let Some(plugins) = plugins.upgrade() else {
                    return;
                };
                match change {
                    Change::Ready(path) => {
                        plugins.deploy_file(&path).await;
                    }
                    Change::Removed(path) => plugins.retire_file(&path).await,
                    Change::Rescan => plugins.rescan(&dir).await,
                }
            }
        });
        Ok(())
    }

    /// Compares the directory with what is loaded: deploys new and changed files, retires
    /// the verbs of files that are gone.
    async fn rescan(&self, dir: &Path) {
        tracing::info!(dir = %dir.display(), "rescanning the plugin directory");
        let files = match plugin_files(dir) {
            Ok(files) => files,
            Err(err) => {
                tracing::error!(dir = %dir.display(), error = %err, "cannot list the plugin directory");
                return;
            }
        };
        let known: Vec<PathBuf> = self
            .seen
            .lock()
            .map(|seen| seen.keys().cloned().collect())
            .unwrap_or_default();
        for gone in known.iter().filter(|path| !files.contains(path)) {
            self.retire_file(gone).await;
        }
        for file in files {
            self.deploy_file(&file).await;
        }
    }

    /// Reads `path` (at most `pool.max_plugin_bytes`) and deploys it, unless its bytes are
    /// what the file already serves.
    pub(crate) async fn deploy_file(&self, path: &Path) -> Verdict {
        let bytes = match self.runtime.read_file(path).await {
            Ok(bytes) => bytes,
            // Renamed away or deleted between the event and the read: its removal follows.
            Err(LoadError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                return Verdict::Unchanged {
                    sha256: String::new(),
                };
            }
            Err(err) => {
                let rejected = Rejected {
                    source: format!("file:{}", path.display()),
                    sha256: String::new(),
                    stage: "read",
                    cause: err.to_string(),
                };
                self.rejected(&rejected, &[]);
                return Verdict::Rejected(rejected);
            }
        };
        let sha256 = sha256_hex(&bytes);
        // Checked under the lock: two events for one write must not install it twice.
        let _one_at_a_time = self.deploying.lock().await;
        if self.seen_sha(path).as_deref() == Some(sha256.as_str()) {
            return Verdict::Unchanged { sha256 };
        }
        let origin = Origin::File(path.to_owned());
        let verdict = self
            .deploy(&bytes, origin.clone(), |_| Ok((origin, scenario_dir(path))))
            .await;
        // Only a version in service is remembered: a rejected file is checked again when it
        // is written again (its scenarios may have been fixed meanwhile).
        if matches!(verdict, Verdict::Ok(_))
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.insert(path.to_owned(), sha256);
        }
        verdict
    }

    /// A plugin file is gone: for new calls its verbs go back to what they overrode (the
    /// built-in `sip:refer`, say) or disappear; runs in progress finish on it.
    async fn retire_file(&self, path: &Path) {
        let _one_at_a_time = self.deploying.lock().await;
        if let Ok(mut seen) = self.seen.lock() {
            seen.remove(path);
        }
        let swaps = self.registry.retire(&Origin::File(path.to_owned()));
        for swap in &swaps {
            tracing::info!(file = %path.display(), verb = %swap.verb, now = ?swap.to.as_ref().map(|v| format!("{} {}", v.plugin, v.version)), "plugin file removed: verb retired");
            self.metrics.plugin_swap(&swap.verb, "retired");
        }
    }

    /// An upload through the admin API for `name` (a verb it implements, or its plugin
    /// name). Saved into the plugin directory (write, then rename) once it has passed, so a
    /// restart serves it too; without a plugin directory it lives until the restart.
    pub(crate) async fn upload(&self, name: &str, bytes: Vec<u8>) -> Verdict {
        let sha256 = sha256_hex(&bytes);
        // It replaces the file that serves `name` now, or becomes `<plugin name>.wasm`.
        let current_file = self.registry.get(name).and_then(|v| match v.origin() {
            Origin::File(path) => Some(path.clone()),
            Origin::Builtin(_) | Origin::Upload => None,
        });
        let mut saved_as = None;
        let _one_at_a_time = self.deploying.lock().await;
        let verdict = self
            .deploy(&bytes, Origin::Upload, |info| {
                if info.name != name && !info.verbs.iter().any(|v| v == name) {
                    return Err((
                        "name",
                        format!(
                            "the upload is plugin {:?} implementing {}; it does not implement {name:?}",
                            info.name,
                            info.verbs.join(", ")
                        ),
                    ));
                }
                let Some(dir) = &self.config.dir else {
                    return Ok((Origin::Upload, None));
                };
                let path = current_file
                    .clone()
                    .unwrap_or_else(|| dir.join(format!("{}.wasm", file_safe(&info.name))));
                saved_as = Some(path.clone());
                let scenarios = scenario_dir(&path);
                Ok((Origin::File(path), scenarios))
            })
            .await;
        let (Verdict::Ok(mut deployed), Some(path)) = (verdict.clone(), saved_as) else {
            return verdict;
        };
        // Recorded first, so the watcher's event for the rename finds it unchanged.
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(path.clone(), sha256);
        }
        match save(&path, &bytes).await {
            Ok(()) => deployed.saved = Some(path.display().to_string()),
            Err(err) => {
                tracing::error!(file = %path.display(), error = %err, "the upload serves, but it could not be saved: a restart will not have it");
            }
        }
        Verdict::Ok(deployed)
    }

    /// Swaps `verb` back to the version before the last swap.
    pub(crate) fn rollback(&self, verb: &str) -> Result<RolledBack, RollbackError> {
        let swap = self.registry.rollback(verb)?;
        tracing::warn!(verb, from = ?swap.from, to = ?swap.to, "plugin rolled back");
        self.metrics.plugin_rollback(verb);
        Ok(RolledBack {
            result: "ok",
            verb: swap.verb,
            active: swap.to,
            previous: swap.from,
        })
    }

    /// The whole pipeline for one version (the caller holds `deploying`): the checks, then `place` (given what the
    /// plugin says it is) picks the origin it replaces and its scenario directory, then the
    /// scenarios, then the swap. `origin` names the source in a rejection that comes first.
    async fn deploy(
        &self,
        bytes: &[u8],
        origin: Origin,
        place: impl FnOnce(&PluginInfo) -> Result<(Origin, Option<PathBuf>), (&'static str, String)>,
    ) -> Verdict {
        let started = Instant::now();
        let checked = match self.check(bytes).await {
            Ok((plugin, compiled)) => match place(plugin.info()) {
                Ok((origin, scenarios)) => Ok((plugin, compiled, origin, scenarios)),
                Err((stage, cause)) => Err(Rejected {
                    source: origin.to_string(),
                    sha256: compiled.sha256().to_owned(),
                    stage,
                    cause,
                }),
            },
            Err(rejected) => Err(Rejected {
                source: origin.to_string(),
                ..rejected
            }),
        };
        let (plugin, compiled, origin, scenarios) = match checked {
            Ok(checked) => checked,
            Err(rejected) => {
                self.rejected(&rejected, &self.verbs_of(&origin));
                return Verdict::Rejected(rejected);
            }
        };
        let source = origin.to_string();
        let mut scenario_count = 0;
        if let Some(dir) = scenarios.filter(|_| self.config.scenarios) {
            match self.run_scenarios(&compiled, &dir).await {
                Ok(count) => scenario_count = count,
                Err(cause) => {
                    let rejected = Rejected {
                        source,
                        sha256: compiled.sha256().to_owned(),
                        stage: "scenarios",
                        cause,
                    };
                    self.rejected(&rejected, &self.verbs_of(&origin));
                    return Verdict::Rejected(rejected);
                }
            }
        }
        let info = plugin.info().clone();
        let from_cache = compiled.from_cache();
        let swaps = self.registry.install(plugin, origin);
        let load_ms = started.elapsed().as_secs_f64() * 1000.0;
        self.metrics.add_verbs(&info.verbs);
        for swap in &swaps {
            self.metrics.plugin_swap(&swap.verb, "ok");
        }
        tracing::info!(source = %source, plugin = %info.name, version = %info.version, sha256 = %compiled.sha256(), verbs = %info.verbs.join(","), from_cache, load_ms = format!("{load_ms:.1}"), scenarios = scenario_count, "plugin version in service");
        Verdict::Ok(Deployed {
            plugin: info.name,
            version: info.version,
            sha256: compiled.sha256().to_owned(),
            verbs: info.verbs,
            source,
            compiled: if from_cache { "cache" } else { "compiled" },
            load_ms: (load_ms * 10.0).round() / 10.0,
            scenarios: scenario_count,
            saved: None,
            swaps,
        })
    }

    /// Every check a version passes before it may serve, in order; the plugin with its
    /// limits applied.
    async fn check(&self, bytes: &[u8]) -> Result<(Plugin<SipCallHost>, Compiled), Rejected> {
        let refuse = |stage, sha256: &str, cause: String| Rejected {
            source: String::new(),
            sha256: sha256.to_owned(),
            stage,
            cause,
        };
        let compiled = self
            .runtime
            .compile(bytes)
            .await
            .map_err(|err| refuse("compile", &sha256_hex(bytes), err.to_string()))?;
        let sha = compiled.sha256().to_owned();
        let plugin = self
            .runtime
            .instantiate(&compiled)
            .await
            .map_err(|err| refuse("load", &sha, err.to_string()))?;
        let info = plugin.info();
        if info.verbs.len() > MAX_VERBS_PER_PLUGIN {
            return Err(refuse(
                "describe",
                &sha,
                format!(
                    "describe() lists {} verbs; at most {MAX_VERBS_PER_PLUGIN} are accepted",
                    info.verbs.len()
                ),
            ));
        }
        if let Some(verb) = info.verbs.iter().find(|v| !verb_name_ok(v)) {
            return Err(refuse(
                "describe",
                &sha,
                format!(
                    "describe() lists the verb {verb:?}: a verb name is 1-{MAX_VERB_NAME_BYTES} bytes of A-Z a-z 0-9 : _ - ."
                ),
            ));
        }
        let limits = self
            .limits
            .for_verbs(&info.verbs)
            .map_err(|err| refuse("limits", &sha, err.to_string()))?;
        let plugin = plugin
            .with_limits(limits)
            .map_err(|err| refuse("limits", &sha, err.to_string()))?;
        Ok((plugin, compiled))
    }

    /// Runs the version's own scenarios in the mock host; the first failure is the cause.
    async fn run_scenarios(&self, compiled: &Compiled, dir: &Path) -> Result<usize, String> {
        let files = scenario_files(dir).map_err(|err| {
            format!(
                "cannot read the scenario directory {}: {err}",
                dir.display()
            )
        })?;
        if files.len() > MAX_SCENARIOS {
            return Err(format!(
                "{} has {} scenario files; at most {MAX_SCENARIOS} are run",
                dir.display(),
                files.len()
            ));
        }
        if files.is_empty() {
            return Ok(0);
        }
        let plugin = self
            .mock
            .runtime()
            .instantiate(compiled)
            .await
            .map_err(|err| err.to_string())?;
        let reports = self.mock.run_files(&plugin, &files).await;
        let failed: Vec<String> = reports
            .iter()
            .filter(|r| !r.passed())
            .map(|r| r.to_string())
            .collect();
        if failed.is_empty() {
            Ok(reports.len())
        } else {
            Err(format!(
                "{} of {} scenarios in {} failed:\n{}",
                failed.len(),
                reports.len(),
                dir.display(),
                failed.join("\n")
            ))
        }
    }

    fn rejected(&self, rejected: &Rejected, verbs: &[String]) {
        tracing::error!(source = %rejected.source, stage = rejected.stage, sha256 = %rejected.sha256, "plugin version rejected; the version before it keeps serving: {}", rejected.cause);
        if verbs.is_empty() {
            self.metrics.plugin_swap("", "rejected");
        }
        for verb in verbs {
            self.metrics.plugin_swap(verb, "rejected");
        }
    }

    /// The verbs an origin serves now (to label a rejection of its next version).
    fn verbs_of(&self, origin: &Origin) -> Vec<String> {
        self.registry
            .list()
            .into_iter()
            .filter(|v| v.origin == origin.to_string())
            .map(|v| v.verb)
            .collect()
    }

    fn seen_sha(&self, path: &Path) -> Option<String> {
        self.seen.lock().ok()?.get(path).cloned()
    }

    /// The pool and cache figures, for `/health` and the metrics.
    pub(crate) fn runtime(&self) -> &Runtime<SipCallHost> {
        &self.runtime
    }
}

/// `*.wasm` files directly in `dir`, in name order.
fn plugin_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| watch::is_plugin_file(path) && path.is_file())
        .collect();
    files.sort();
    Ok(files)
}

/// `NAME.scenarios` beside `NAME.wasm`, when it exists.
fn scenario_dir(wasm: &Path) -> Option<PathBuf> {
    let dir = wasm.with_extension("scenarios");
    dir.is_dir().then_some(dir)
}

fn scenario_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    Ok(files)
}

/// Writes `bytes` to `path` through a hidden temporary file in the same directory and a
/// rename, so the watcher (and anyone else) never sees it half-written.
async fn save(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("plugin.wasm");
    let temp = dir.join(format!(".{name}.upload-{}", uuid::Uuid::new_v4()));
    tokio::fs::write(&temp, bytes).await?;
    match tokio::fs::rename(&temp, path).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(err)
        }
    }
}

fn verb_name_ok(verb: &str) -> bool {
    !verb.is_empty()
        && verb.len() <= MAX_VERB_NAME_BYTES
        && verb
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b":_-.".contains(&b))
}

/// A plugin name as a file name: anything but `A-Z a-z 0-9 - _ .` becomes `_`.
fn file_safe(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match safe.trim_start_matches('.') {
        "" => "plugin".into(),
        rest => rest.to_owned(),
    }
}
