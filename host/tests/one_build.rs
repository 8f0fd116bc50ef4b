//! One build of the dependencies for the README's commands: whatever `cargo build -p verbhost`
//! (the demo, `cargo install --path host`) and `cargo bench -p ...` need is already built by
//! `cargo test --workspace`, with the same features, so none of them compiles wasmtime (or
//! anything else but the workspace's own crates) again.
//!
//! Cargo resolves features per selection of packages; a dependency built with other features
//! is a different build, and so is everything above it. This test asks `cargo tree` what each
//! selection resolves, for the target's code and for proc macros and build scripts apart, and
//! checks each against the tests' build. `crates/workspace-hack` is what makes them equal.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// Where a dependency is compiled for: the target's code, or the host's (proc macros, build
/// scripts and what they use). Cargo resolves the features of the two apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Side {
    Target,
    Host,
}

/// `name vX.Y.Z [feature,...]` of every dependency a selection builds, with its side.
type Resolved = BTreeSet<(Side, String)>;

/// Runs `cargo tree` for `selection` and returns what it resolves. `dev`: whether the command
/// builds dev-dependencies (tests and benches do, `cargo build` does not).
fn resolve(selection: &[&str], dev: bool) -> Resolved {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let edges = if dev {
        "normal,build,dev"
    } else {
        "normal,build"
    };
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(&root)
        .args([
            "tree",
            "--locked",
            "--offline",
            "-e",
            edges,
            "-f",
            "{p} [{f}]",
        ])
        .args(selection)
        .output()
        .expect("cargo tree runs");
    assert!(
        output.status.success(),
        "cargo tree {selection:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    sides(&String::from_utf8_lossy(&output.stdout))
}

/// A `cargo tree` line's node, `name vX.Y.Z [features]` (without a local package's path and the
/// `(proc-macro)` and `(*)` marks), and whether it is a proc macro.
fn node(text: &str) -> (String, bool) {
    let text = text.strip_suffix(" (*)").unwrap_or(text);
    let features = text.rfind(" [").map_or("[]", |i| &text[i + 1..]);
    let mut words = text.split(' ');
    let name = words.next().unwrap_or_default();
    let version = words.next().unwrap_or_default();
    (
        format!("{name} {version} {features}"),
        text.contains(" (proc-macro) "),
    )
}

/// Reads `cargo tree`'s indented output into a graph and walks it from the workspace's
/// packages: a build-dependency, a proc macro and everything below either is on the host side.
fn sides(tree: &str) -> Resolved {
    // node -> its children, each with whether the edge is a build-dependency.
    let mut children: BTreeMap<String, BTreeSet<(String, bool)>> = BTreeMap::new();
    let mut proc_macros = BTreeSet::new();
    let mut roots = BTreeSet::new();
    // The node at each depth on the current path, and the section (build or not) that the
    // children at each depth are in.
    let mut path: Vec<String> = Vec::new();
    let mut build_section: Vec<bool> = Vec::new();
    for line in tree.lines().filter(|l| !l.trim().is_empty()) {
        let start = line
            .char_indices()
            .find(|(_, c)| !matches!(c, '│' | '├' | '└' | '─' | ' ' | '\u{a0}'))
            .map_or(0, |(i, _)| i);
        let indent = line[..start].chars().count();
        let text = &line[start..];
        if text.starts_with("[build-dependencies]")
            || text.starts_with("[dev-dependencies]")
            || text.starts_with("[dependencies]")
        {
            // Applies to the children of the node at depth indent/4.
            let depth = indent / 4 + 1;
            build_section.resize(depth + 1, false);
            build_section[depth] = text.starts_with("[build-dependencies]");
            continue;
        }
        let depth = indent / 4;
        let (name, proc_macro) = node(text);
        if proc_macro {
            proc_macros.insert(name.clone());
        }
        path.truncate(depth);
        build_section.resize(depth + 2, false);
        // A new node at this depth starts a fresh list of children below it.
        build_section[depth + 1] = false;
        if depth == 0 {
            roots.insert(name.clone());
        } else if let Some(parent) = path.last() {
            children
                .entry(parent.clone())
                .or_default()
                .insert((name.clone(), build_section[depth]));
        }
        path.push(name);
    }
    let mut seen = Resolved::new();
    let mut todo: Vec<(Side, String)> = roots.into_iter().map(|r| (Side::Target, r)).collect();
    while let Some((side, name)) = todo.pop() {
        if !seen.insert((side, name.clone())) {
            continue;
        }
        let below = if proc_macros.contains(&name) {
            Side::Host
        } else {
            side
        };
        for (child, build) in children.get(&name).into_iter().flatten() {
            let child_side = if *build || proc_macros.contains(child) {
                Side::Host
            } else {
                below
            };
            todo.push((child_side, child.clone()));
        }
    }
    // The workspace's own packages are rebuilt when they change anyway.
    seen.retain(|(_, name)| !name.starts_with("verbhost"));
    seen
}

#[test]
fn the_demo_and_the_benches_reuse_the_tests_build_of_every_dependency() {
    let tests = resolve(&["--workspace"], true);
    assert!(
        tests
            .iter()
            .any(|(side, n)| *side == Side::Target && n.starts_with("wasmtime v")),
        "cargo tree output not understood: no wasmtime among {} nodes",
        tests.len()
    );
    let mut report = String::new();
    for (command, selection, dev) in [
        (
            "cargo run --release -p verbhost -- demo",
            &["-p", "verbhost"][..],
            false,
        ),
        (
            "cargo bench -p verbhost-mock",
            &["-p", "verbhost-mock"],
            true,
        ),
        (
            "cargo bench -p verbhost-runtime",
            &["-p", "verbhost-runtime"],
            true,
        ),
        ("cargo bench -p verbhost-sip", &["-p", "verbhost-sip"], true),
        ("cargo bench (every bench)", &["--workspace"], true),
    ] {
        let resolved = resolve(selection, dev);
        for (side, missing) in resolved.difference(&tests) {
            let package = missing.split(" [").next().unwrap_or(missing);
            let have: Vec<&str> = tests
                .iter()
                .filter(|(s, n)| s == side && n.split(" [").next() == Some(package))
                .map(|(_, n)| n.as_str())
                .collect();
            report.push_str(&format!(
                "`{command}` builds {missing} ({side:?} side); `cargo test --workspace` builds {have:?}\n"
            ));
        }
    }
    assert!(
        report.is_empty(),
        "these would be compiled a second time, with other features:\n{report}\
         Pin each one's features to the tests' set in crates/workspace-hack/Cargo.toml \
         ([dependencies] for the Target side, [build-dependencies] for the Host side)."
    );
}
