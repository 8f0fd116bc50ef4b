//! Which plugin version serves each verb, swapped atomically while calls run.
//!
//! A [`Registry`] maps a verb name (`sip:refer`) to its active [`Version`]: a loaded
//! [`Plugin`] plus where it came from, its sha256, when it was loaded and what it has served.
//! It knows nothing of SIP; the server puts the built-in plugin, the plugin directory's
//! files and admin uploads in it.
//!
//! - **Hot path.** [`Registry::get`] is lock-free (one atomic load of the verb table) and
//!   hands out an `Arc<Version>`. A run takes it once, at the start of the verb, and keeps
//!   it to the end: a swap never touches a running verb, and an old version's code is freed
//!   when its last run ends and nothing else holds it.
//! - **Writers** ([`Registry::install`], [`Registry::retire`], [`Registry::rollback`])
//!   serialise on a mutex, build the new table and publish it in one store.
//! - **Origins.** Each verb has one provider per [`Origin`], stacked in the order they were
//!   installed; the top one serves. Installing a file that declares `sip:refer` puts it on
//!   top of the built-in (logged as an override); retiring the file brings the built-in
//!   back. Installing again from the same origin (a changed file, a second upload) replaces
//!   that origin's version and moves it to the top.
//! - **Rollback.** Each provider keeps exactly one previous version: the one that served
//!   the verb before it was installed (its own earlier version, or the provider it
//!   overrode). [`Registry::rollback`] swaps the two, so a second rollback undoes the first.
//!   Only one level is kept, so memory stays bounded: a version that falls out of the
//!   previous slot is freed once its last run ends.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::{CallHost, CallInfo, Plugin, Run, RunError};

/// Where a version came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Shipped inside the server (the name says which, e.g. `sip-refer`).
    Builtin(String),
    /// A file of the plugin directory.
    File(PathBuf),
    /// Uploaded through the admin API.
    Upload,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Builtin(name) => write!(f, "builtin:{name}"),
            Self::File(path) => write!(f, "file:{}", path.display()),
            Self::Upload => f.write_str("upload"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// One loaded version of a plugin, as the registry serves it. Shared (`Arc`) by every verb
/// its plugin declares and by every run that took it.
pub struct Version<H: CallHost> {
    plugin: Plugin<H>,
    origin: Origin,
    loaded_at: SystemTime,
    calls: AtomicU64,
    traps: AtomicU64,
}

impl<H: CallHost> Version<H> {
    /// The plugin, to run.
    pub fn plugin(&self) -> &Plugin<H> {
        &self.plugin
    }

    /// The plugin's name, from `describe()`.
    pub fn name(&self) -> &str {
        &self.plugin.info().name
    }

    /// The plugin's version, from `describe()`.
    pub fn version(&self) -> &str {
        &self.plugin.info().version
    }

    /// The sha256 of its wasm, in lower-case hex.
    pub fn sha256(&self) -> &str {
        self.plugin.compiled().sha256()
    }

    /// Where it came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// When it was installed.
    pub fn loaded_at(&self) -> SystemTime {
        self.loaded_at
    }

    /// Runs it has served (see [`Version::record_call`]).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs of it that trapped (see [`Version::record_trap`]).
    pub fn traps(&self) -> u64 {
        self.traps.load(Ordering::Relaxed)
    }

    /// Counts a run served. [`Version::run`] does it for you.
    pub fn record_call(&self) {
        self.calls.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a run that trapped. [`Version::run`] does it for you.
    pub fn record_trap(&self) {
        self.traps.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs the plugin and counts the run (and its trap, if it trapped).
    pub async fn run(&self, host: H, verb: &str, call: &CallInfo) -> Run<H> {
        let run = self.plugin.run(host, verb, call).await;
        self.record_call();
        if matches!(run.outcome, Err(RunError::Trap { .. })) {
            self.record_trap();
        }
        run
    }

    fn reference(&self) -> VersionRef {
        VersionRef {
            plugin: self.name().to_owned(),
            version: self.version().to_owned(),
            sha256: self.sha256().to_owned(),
            origin: self.origin.to_string(),
        }
    }
}

/// Which version, in a [`Swap`] or a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRef {
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The wasm's sha256.
    pub sha256: String,
    /// Where it came from ([`Origin`]'s text: `builtin:NAME`, `file:PATH`, `upload`).
    pub origin: String,
}

/// One verb's change of version. `from` is `None` for a new verb, `to` is `None` for a verb
/// that no longer exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Swap {
    /// The verb.
    pub verb: String,
    /// What served it before.
    pub from: Option<VersionRef>,
    /// What serves it now.
    pub to: Option<VersionRef>,
}

/// A verb as [`Registry::list`] shows it: serialisable as it is for an admin API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionInfo {
    /// The verb.
    pub verb: String,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin's version.
    pub version: String,
    /// The wasm's sha256.
    pub sha256: String,
    /// Where it came from.
    pub origin: String,
    /// When it was installed, in ms since the Unix epoch.
    pub loaded_at_unix_ms: u64,
    /// Runs it has served (all its verbs together).
    pub calls: u64,
    /// Runs of it that trapped (all its verbs together).
    pub traps: u64,
    /// The version a rollback would bring back.
    pub previous: Option<PreviousInfo>,
}

/// The previous version of a verb, in a [`VersionInfo`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PreviousInfo {
    /// The plugin's version.
    pub version: String,
    /// The wasm's sha256.
    pub sha256: String,
    /// Where it came from.
    pub origin: String,
}

/// Why a rollback did nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// No plugin serves the verb.
    #[error("no plugin serves the verb {0:?}")]
    UnknownVerb(String),
    /// The verb has only ever had one version.
    #[error("the verb {0:?} has no previous version to roll back to")]
    NoPrevious(String),
}

/// One origin's provider of a verb.
struct Slot<H: CallHost> {
    origin: Origin,
    current: Arc<Version<H>>,
    previous: Option<Arc<Version<H>>>,
}

/// The verb table that `get` reads.
type Active<H> = HashMap<String, Arc<Version<H>>>;

/// Verb name to its active [`Version`], swapped atomically. See the module docs.
pub struct Registry<H: CallHost> {
    active: ArcSwap<Active<H>>,
    /// Every verb's providers, bottom to top; the writers' state.
    slots: Mutex<BTreeMap<String, Vec<Slot<H>>>>,
}

impl<H: CallHost> Default for Registry<H> {
    fn default() -> Self {
        Self::new()
    }
}

impl<H: CallHost> Registry<H> {
    /// An empty registry.
    pub fn new() -> Self {
        Registry {
            active: ArcSwap::from_pointee(HashMap::new()),
            slots: Mutex::new(BTreeMap::new()),
        }
    }

    /// The version serving `verb` now. Lock-free; take it once per run and keep it.
    pub fn get(&self, verb: &str) -> Option<Arc<Version<H>>> {
        self.active.load().get(verb).cloned()
    }

    /// Makes `plugin` serve every verb its `describe()` lists, from `origin`, in one atomic
    /// swap. A verb another origin provides is overridden (logged); the origin's own earlier
    /// version becomes the previous one. Verbs the origin provided before and this version
    /// no longer lists are retired. Returns each verb whose version changed.
    pub fn install(&self, plugin: Plugin<H>, origin: Origin) -> Vec<Swap> {
        let version = Arc::new(Version {
            plugin,
            origin: origin.clone(),
            loaded_at: SystemTime::now(),
            calls: AtomicU64::new(0),
            traps: AtomicU64::new(0),
        });
        let mut verbs = version.plugin.info().verbs.clone();
        verbs.sort();
        verbs.dedup();
        let mut slots = self.lock();
        let mut swaps = Vec::new();
        for verb in &verbs {
            let providers = slots.entry(verb.clone()).or_default();
            let before = providers.last().map(|slot| slot.current.clone());
            let previous = match providers.iter().position(|slot| slot.origin == origin) {
                Some(index) => Some(providers.remove(index).current),
                None => {
                    if let Some(overridden) = &before {
                        tracing::info!(verb = %verb, overridden = %overridden.origin, by = %origin, "verb overridden");
                    }
                    before.clone()
                }
            };
            providers.push(Slot {
                origin: origin.clone(),
                current: version.clone(),
                previous,
            });
            swaps.push(swap(verb, before.as_deref(), Some(&version)));
        }
        let dropped: Vec<String> = slots
            .iter()
            .filter(|(verb, providers)| {
                !verbs.contains(verb) && providers.iter().any(|slot| slot.origin == origin)
            })
            .map(|(verb, _)| verb.clone())
            .collect();
        swaps.extend(remove_origin(&mut slots, &dropped, &origin));
        self.publish(&slots, &swaps);
        swaps
    }

    /// Removes every verb `origin` provides (a deleted file): each goes back to what it
    /// overrode (e.g. the built-in) or disappears. Runs in progress finish on the version
    /// they took. Returns each verb whose version changed.
    pub fn retire(&self, origin: &Origin) -> Vec<Swap> {
        let mut slots = self.lock();
        let verbs: Vec<String> = slots
            .iter()
            .filter(|(_, providers)| providers.iter().any(|slot| &slot.origin == origin))
            .map(|(verb, _)| verb.clone())
            .collect();
        let swaps = remove_origin(&mut slots, &verbs, origin);
        self.publish(&slots, &swaps);
        swaps
    }

    /// Swaps `verb` back to its previous version; the version it replaces becomes the
    /// previous one, so a second rollback undoes the first.
    pub fn rollback(&self, verb: &str) -> Result<Swap, RollbackError> {
        let mut slots = self.lock();
        let slot = slots
            .get_mut(verb)
            .and_then(|providers| providers.last_mut())
            .ok_or_else(|| RollbackError::UnknownVerb(verb.to_owned()))?;
        let previous = slot
            .previous
            .take()
            .ok_or_else(|| RollbackError::NoPrevious(verb.to_owned()))?;
        let replaced = std::mem::replace(&mut slot.current, previous);
        let done = swap(verb, Some(&replaced), Some(&slot.current));
        slot.previous = Some(replaced);
        self.publish(&slots, std::slice::from_ref(&done));
        Ok(done)
    }

    /// Every verb with its active version, in verb order.
    pub fn list(&self) -> Vec<VersionInfo> {
        let slots = self.lock();
        slots
            .iter()
            .filter_map(|(verb, providers)| {
                let slot = providers.last()?;
                let v = &slot.current;
                Some(VersionInfo {
                    verb: verb.clone(),
                    plugin: v.name().to_owned(),
                    version: v.version().to_owned(),
                    sha256: v.sha256().to_owned(),
                    origin: v.origin.to_string(),
                    loaded_at_unix_ms: v
                        .loaded_at
                        .duration_since(UNIX_EPOCH)
                        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
                        .unwrap_or(0),
                    calls: v.calls(),
                    traps: v.traps(),
                    previous: slot.previous.as_ref().map(|p| PreviousInfo {
                        version: p.version().to_owned(),
                        sha256: p.sha256().to_owned(),
                        origin: p.origin.to_string(),
                    }),
                })
            })
            .collect()
    }

    /// The writers' lock. A writer that panicked left the table consistent (every change is
    /// built before it is published), so a poisoned lock is used as it is.
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Vec<Slot<H>>>> {
        self.slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes the table's top providers and logs the swaps.
    fn publish(&self, slots: &BTreeMap<String, Vec<Slot<H>>>, swaps: &[Swap]) {
        let active: Active<H> = slots
            .iter()
            .filter_map(|(verb, providers)| Some((verb.clone(), providers.last()?.current.clone())))
            .collect();
        self.active.store(Arc::new(active));
        for swap in swaps {
            let show = |v: &Option<VersionRef>| {
                v.as_ref().map_or_else(
                    || "none".to_owned(),
                    |v| {
                        format!(
                            "{} {} ({}, sha256 {})",
                            v.plugin, v.version, v.origin, v.sha256
                        )
                    },
                )
            };
            tracing::info!(verb = %swap.verb, from = %show(&swap.from), to = %show(&swap.to), "verb swapped");
        }
    }
}

/// Removes `origin`'s slot from each of `verbs`; returns the swaps of those whose top changed.
fn remove_origin<H: CallHost>(
    slots: &mut BTreeMap<String, Vec<Slot<H>>>,
    verbs: &[String],
    origin: &Origin,
) -> Vec<Swap> {
    let mut swaps = Vec::new();
    for verb in verbs {
        let Some(providers) = slots.get_mut(verb) else {
            continue;
        };
        let Some(index) = providers.iter().position(|slot| &slot.origin == origin) else {
            continue;
        };
        let was_top = index + 1 == providers.len();
        let removed = providers.remove(index);
        if was_top {
            let now = providers.last().map(|slot| slot.current.clone());
            swaps.push(swap(verb, Some(&removed.current), now.as_ref()));
        }
        if providers.is_empty() {
            slots.remove(verb);
        }
    }
    swaps
}

fn swap<H: CallHost>(verb: &str, from: Option<&Version<H>>, to: Option<&Arc<Version<H>>>) -> Swap {
    Swap {
        verb: verb.to_owned(),
        from: from.map(Version::reference),
        to: to.map(|v| v.reference()),
    }
}
