//! Watches the plugin directory and says which `*.wasm` files are ready to load or gone.
//!
//! A file is ready when the writer closes it or renames it into place (Linux reports both),
//! or, for a writer whose close is not reported, once it has been quiet for `quiet`. A write
//! in progress is therefore not loaded half-written when the writer behaves (write then
//! rename, or write then close); when it does not, the half-written file is refused by the
//! loader (not a component) and loaded when the next write completes it. When the kernel's
//! event queue overflows, or our own queue fills, the watcher asks for a rescan of the whole
//! directory instead of losing a change.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind, RenameMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// A change to the plugin directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    /// The file was written completely (closed, renamed into place, or quiet): load it.
    Ready(PathBuf),
    /// The file is gone (removed or renamed away): retire its verbs.
    Removed(PathBuf),
    /// Changes may have been missed: compare the whole directory with what is loaded.
    Rescan,
}

/// Raw events queued between notify's thread and the debouncer; past this, a rescan.
const RAW_QUEUE: usize = 1024;

/// Keeps the watch alive; dropping it stops the watcher and ends the change stream.
pub(crate) struct DirWatch {
    _watcher: notify::RecommendedWatcher,
}

/// Starts watching `dir` (not recursively). Changes arrive on the receiver.
pub(crate) fn watch(
    dir: &Path,
    quiet: Duration,
) -> Result<(DirWatch, mpsc::Receiver<Change>), notify::Error> {
    let (raw_tx, raw_rx) = mpsc::channel::<Raw>(RAW_QUEUE);
    let overflow_tx = raw_tx.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<Event>| {
        let raw = match event {
            Ok(event) => Raw::Event(event),
            Err(err) => {
                tracing::warn!(error = %err, "the plugin directory watcher reported an error; rescanning");
                Raw::Rescan
            }
        };
        if raw_tx.try_send(raw).is_err() {
            // Full: one rescan covers whatever was dropped (and never blocks notify's thread).
            let _ = overflow_tx.try_send(Raw::Rescan);
        }
    })?;
    watcher.watch(dir, RecursiveMode::NonRecursive)?;
    let (tx, rx) = mpsc::channel(RAW_QUEUE);
    tokio::spawn(debounce(raw_rx, tx, quiet));
    Ok((DirWatch { _watcher: watcher }, rx))
}

enum Raw {
    Event(Event),
    Rescan,
}

/// Turns notify's events into [`Change`]s: at once for close and rename, after `quiet` for a
/// file that was only created or modified.
async fn debounce(mut raw: mpsc::Receiver<Raw>, out: mpsc::Sender<Change>, quiet: Duration) {
    let mut pending: HashMap<PathBuf, Instant> = HashMap::new();
    loop {
        let next = pending.values().min().copied();
        let raw_event = tokio::select! {
            event = raw.recv() => match event {
                Some(event) => event,
                None => return,
            },
            () = sleep_until(next) => {
                let now = Instant::now();
                let due: Vec<PathBuf> = pending
                    .iter()
                    .filter(|(_, at)| **at <= now)
                    .map(|(path, _)| path.clone())
                    .collect();
                for path in due {
                    pending.remove(&path);
                    if out.send(Change::Ready(path)).await.is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        let changes = match raw_event {
            Raw::Rescan => vec![Change::Rescan],
            Raw::Event(event) => classify(&event, &mut pending, quiet),
        };
        for change in changes {
            if out.send(change).await.is_err() {
                return;
            }
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What one notify event means for the `*.wasm` files it names.
fn classify(
    event: &Event,
    pending: &mut HashMap<PathBuf, Instant>,
    quiet: Duration,
) -> Vec<Change> {
    if event.need_rescan() {
        return vec![Change::Rescan];
    }
    let wasm = |path: &&PathBuf| is_plugin_file(path);
    let mut changes = Vec::new();
    match event.kind {
        // Written and closed, or renamed into place: complete.
        EventKind::Access(AccessKind::Close(AccessMode::Write))
        | EventKind::Modify(ModifyKind::Name(RenameMode::To)) => {
            for path in event.paths.iter().filter(wasm) {
                pending.remove(path);
                changes.push(Change::Ready(path.clone()));
            }
        }
        // inotify reports a rename inside the directory three times: from, to, and both
        // paths together. The first two are handled on their own.
        EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => {}
        EventKind::Modify(ModifyKind::Name(RenameMode::From)) | EventKind::Remove(_) => {
            for path in event.paths.iter().filter(wasm) {
                pending.remove(path);
                changes.push(Change::Removed(path.clone()));
            }
        }
        // Being written: load once it is closed, or has been quiet for a while.
        EventKind::Create(_) | EventKind::Modify(_) => {
            for path in event.paths.iter().filter(wasm) {
                pending.insert(path.clone(), Instant::now() + quiet);
            }
        }
        // Opened, read, or something notify cannot name: nothing to do, or look again.
        EventKind::Access(_) => {}
        EventKind::Any | EventKind::Other => changes.push(Change::Rescan),
    }
    changes
}

/// A plugin file: `*.wasm` directly in the directory, not hidden (editors and `rsync` write
/// hidden temporary files).
pub(crate) fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|ext| ext == "wasm")
        && path
            .file_name()
            .and_then(|name| name.to_str())
            .is_some_and(|name| !name.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn next(rx: &mut mpsc::Receiver<Change>) -> Change {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a change within 5 s")
            .expect("the watcher runs")
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("verbhost-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_rename_into_place_a_closed_write_and_a_removal_are_reported() {
        let dir = temp_dir("basic");
        let (_watch, mut rx) = watch(&dir, Duration::from_secs(30)).unwrap();
        // Write then rename: the temporary (hidden) file is ignored, the rename is ready.
        std::fs::write(dir.join(".a.wasm.tmp"), b"x").unwrap();
        std::fs::rename(dir.join(".a.wasm.tmp"), dir.join("a.wasm")).unwrap();
        assert_eq!(next(&mut rx).await, Change::Ready(dir.join("a.wasm")));
        // Written in place and closed: ready at the close, long before the 30 s quiet time.
        std::fs::write(dir.join("b.wasm"), b"y").unwrap();
        assert_eq!(next(&mut rx).await, Change::Ready(dir.join("b.wasm")));
        // Files that are not plugins are ignored.
        std::fs::write(dir.join("notes.txt"), b"z").unwrap();
        std::fs::remove_file(dir.join("a.wasm")).unwrap();
        assert_eq!(next(&mut rx).await, Change::Removed(dir.join("a.wasm")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn a_file_held_open_is_ready_after_the_quiet_time() {
        use std::io::Write;
        let dir = temp_dir("quiet");
        let (_watch, mut rx) = watch(&dir, Duration::from_millis(200)).unwrap();
        let mut file = std::fs::File::create(dir.join("c.wasm")).unwrap();
        file.write_all(b"part").unwrap();
        file.flush().unwrap();
        let started = std::time::Instant::now();
        assert_eq!(next(&mut rx).await, Change::Ready(dir.join("c.wasm")));
        assert!(started.elapsed() >= Duration::from_millis(150));
        drop(file);
        // The close then reports it once more, complete.
        assert_eq!(next(&mut rx).await, Change::Ready(dir.join("c.wasm")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
