//! The compiled-component cache on disk: see [`crate::RuntimeConfig::cache_dir`].

use std::fmt::Write as _;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

/// What the compiled cache did since the runtime started, for metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// True while the cache is in use: a directory is configured and writable.
    pub enabled: bool,
    /// Compiles answered from the cache.
    pub hits: u64,
    /// Compiles that had to run the compiler (no entry, or no cache).
    pub misses: u64,
    /// Entries that failed to load (deleted and rebuilt) and entries that could not be
    /// written.
    pub errors: u64,
}

/// The cache of one engine (shared by its sibling runtimes).
pub(crate) struct Cache {
    dir: Option<PathBuf>,
    engine_hash: String,
    enabled: AtomicBool,
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    temp_seq: AtomicU64,
}

impl Cache {
    /// A cache in `dir` (none when `None`); creates the directory and checks that it can be
    /// written, turning the cache off with one warning when it cannot.
    pub(crate) fn new(dir: Option<PathBuf>, engine: &Engine) -> Cache {
        let engine_hash = engine_hash(engine);
        let enabled = match &dir {
            None => false,
            Some(dir) => match probe(dir) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "the compiled-plugin cache directory cannot be written; plugins are compiled on every load");
                    false
                }
            },
        };
        Cache {
            dir,
            engine_hash,
            enabled: AtomicBool::new(enabled),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            temp_seq: AtomicU64::new(0),
        }
    }

    pub(crate) fn engine_hash(&self) -> &str {
        &self.engine_hash
    }

    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            enabled: self.enabled.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }

    /// The entry of the wasm whose sha256 is `sha256`, when the cache is on.
    fn entry(&self, sha256: &str) -> Option<PathBuf> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let dir = self.dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{}.cwasm", self.engine_hash)))
    }

    /// The cached component, or `compile`'s (then stored); the bool is true for a hit.
    /// Blocking: call it on a blocking thread.
    pub(crate) fn get_or_compile<E>(
        &self,
        engine: &Engine,
        sha256: &str,
        compile: impl FnOnce() -> Result<Component, E>,
    ) -> Result<(Component, bool), E> {
        let entry = self.entry(sha256);
        if let Some(path) = &entry
            && path.exists()
        {
            // SAFETY: `deserialize_file` runs the file's native code unchecked. Only this
            // runtime writes the cache directory, which the operator gives to verbhost alone
            // (see `RuntimeConfig::cache_dir`), and entries appear by rename only when
            // complete. wasmtime itself refuses (with an error, handled below) an artifact of
            // another version or engine config, or one that is not a well-formed artifact.
            match unsafe { Component::deserialize_file(engine, path) } {
                Ok(component) => {
                    self.hits.fetch_add(1, Ordering::Relaxed);
                    return Ok((component, true));
                }
                Err(err) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(entry = %path.display(), error = %format!("{err:#}"), "a compiled-plugin cache entry does not load; deleting and rebuilding it");
                    if let Err(err) = std::fs::remove_file(path) {
                        tracing::warn!(entry = %path.display(), error = %err, "cannot delete the broken cache entry");
                    }
                }
            }
        }
        let component = compile()?;
        self.misses.fetch_add(1, Ordering::Relaxed);
        if let Some(path) = &entry {
            self.write(path, &component);
        }
        Ok((component, false))
    }

    /// Writes an entry atomically (temporary file in the same directory, then rename). A
    /// failure turns the cache off with one warning.
    fn write(&self, path: &Path, component: &Component) {
        let seq = self.temp_seq.fetch_add(1, Ordering::Relaxed);
        let temp = path.with_extension(format!("{}.{seq}.tmp", std::process::id()));
        let written = component
            .serialize()
            .map_err(|e| std::io::Error::other(format!("{e:#}")))
            .and_then(|bytes| std::fs::write(&temp, bytes))
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(err) = written {
            std::fs::remove_file(&temp).ok();
            self.errors.fetch_add(1, Ordering::Relaxed);
            if self.enabled.swap(false, Ordering::Relaxed) {
                tracing::warn!(entry = %path.display(), error = %err, "cannot write the compiled-plugin cache; plugins are compiled on every load from now on");
            }
        }
    }
}

/// Creates `dir` and writes and removes a file in it.
fn probe(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    std::fs::write(&probe, b"")?;
    std::fs::remove_file(&probe)
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Lower-case hex sha256 of `bytes`: how a plugin's wasm is named in the cache, the registry
/// and the admin API.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A stable digest of what makes a compiled artifact usable by `engine`: wasmtime's
/// `precompile_compatibility_hash` (its version and the engine's compilation settings) fed
/// through sha256, so the same build with the same config gives the same name in every
/// process (std's `DefaultHasher` promises no such thing). 16 bytes of it, in hex.
fn engine_hash(engine: &Engine) -> String {
    struct ShaHasher(Sha256);
    impl Hasher for ShaHasher {
        fn finish(&self) -> u64 {
            // Only `write` is used; the digest is read from the inner state.
            0
        }
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }
    }
    let mut hasher = ShaHasher(Sha256::new());
    engine.precompile_compatibility_hash().hash(&mut hasher);
    hex(&hasher.0.finalize()[..16])
}
