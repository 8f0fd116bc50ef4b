//! `verbhost plugin new` as a plugin author runs it: the scaffolded crate builds for
//! wasm32-wasip2 and passes `verbhost test` as written; bad names and existing directories are
//! refused; and the README's plugin example is the template's code.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A fresh directory for one test.
fn scratch(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("verbhost-plugin-new-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Runs `command` to its end; one still running after `limit` is killed and fails the test
/// (a hang guard, not a timing assertion).
fn output_within(mut command: Command, limit: Duration) -> Output {
    let shown = format!("{command:?}");
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let started = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let output = child.wait_with_output().expect("output");
            panic!(
                "{shown} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("output")
}

fn verbhost(dir: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_verbhost"));
    command.current_dir(dir).args(args);
    output_within(command, Duration::from_secs(60))
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The target directory the workspace's own plugins were built in (by verbhost-guests'
/// build script): building the new plugin there reuses wit-bindgen and the other
/// dependencies it shares with them instead of compiling them again.
fn guests_target_dir() -> PathBuf {
    let wasm = Path::new(verbhost_guests::SIP_REFER);
    // <target>/wasm32-wasip2/release/verbhost_guest_sip_refer.wasm
    wasm.ancestors()
        .nth(3)
        .expect("the guests' wasm sits in <target>/wasm32-wasip2/release")
        .to_path_buf()
}

#[test]
fn a_new_rust_plugin_builds_and_passes_verbhost_test_as_written() {
    let work = scratch("build");
    let out = verbhost(&work, &["plugin", "new", "my-verb"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("created my-verb (verb my:verb, rust) in my-verb:\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("verbhost test target/wasm32-wasip2/release/my_verb.wasm scenarios/*.json"),
        "{stdout}"
    );
    let crate_dir = work.join("my-verb");
    for file in [
        "Cargo.toml",
        ".gitignore",
        "README.md",
        "app.json",
        "src/lib.rs",
        "scenarios/greet.json",
    ] {
        let contents = std::fs::read_to_string(crate_dir.join(file))
            .unwrap_or_else(|e| panic!("{file} was not written: {e}"));
        assert!(!contents.contains("{{"), "{file} kept a placeholder");
    }
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).expect("manifest");
    let sdk = root()
        .join("crates/sdk")
        .canonicalize()
        .expect("the SDK exists");
    assert!(
        manifest.contains(&format!(
            "verbhost-sdk = {{ path = \"{}\" }}",
            sdk.display()
        )),
        "{manifest}"
    );

    // The build command of the plugin's README, unchanged but for where the output goes
    // (`--offline`: every crate it needs is already downloaded for the workspace's plugins).
    let target = guests_target_dir();
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(&crate_dir)
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--offline",
        ])
        .env("CARGO_TARGET_DIR", &target);
    // The outer build's flags are not the plugin author's.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WORKSPACE_WRAPPER",
    ] {
        build.env_remove(var);
    }
    let built = output_within(build, Duration::from_secs(900));
    assert!(
        built.status.success(),
        "the plugin does not build:\n{}",
        text(&built)
    );
    let wasm = target.join("wasm32-wasip2/release/my_verb.wasm");
    assert!(wasm.exists(), "{} is missing", wasm.display());

    // The test command of its README.
    let tested = verbhost(
        &crate_dir,
        &[
            "test",
            wasm.to_str().expect("UTF-8 path"),
            "scenarios/greet.json",
        ],
    );
    let report = text(&tested);
    assert!(tested.status.success(), "{report}");
    assert!(
        report.contains("plugin my-verb 0.1.0 (my:verb)\n"),
        "{report}"
    );
    assert!(report.contains("3 passed, 0 failed"), "{report}");
    let _ = std::fs::remove_dir_all(&work);
}

#[test]
fn plugin_new_refuses_bad_names_and_existing_directories() {
    let work = scratch("refuse");
    for (name, why) in [
        ("My-Verb", "plugin name \"My-Verb\": 'M' is not allowed"),
        ("../escape", "plugin name \"../escape\": '.' is not allowed"),
        ("2fast", "must start with a letter"),
        ("test", "reserved in Rust"),
    ] {
        let out = verbhost(&work, &["plugin", "new", name]);
        assert_eq!(out.status.code(), Some(2), "{name}: {}", text(&out));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{name}: {stderr}");
    }
    assert_eq!(
        std::fs::read_dir(&work).expect("scratch").count(),
        0,
        "a refused name wrote something"
    );

    let existing = work.join("taken");
    std::fs::create_dir(&existing).expect("dir");
    std::fs::write(existing.join("mine.txt"), "keep me").expect("file");
    let out = verbhost(&work, &["plugin", "new", "my-verb", "--dir", "taken"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("taken already exists"),
        "{}",
        text(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&existing)
        .expect("dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["mine.txt"], "the existing directory was changed");
    assert_eq!(
        std::fs::read_to_string(existing.join("mine.txt")).expect("file"),
        "keep me"
    );

    let out = verbhost(
        &work,
        &[
            "plugin",
            "new",
            "my-verb",
            "--sdk-path",
            work.to_str().expect("UTF-8"),
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--sdk-path: cannot read"),
        "{}",
        text(&out)
    );
    assert!(
        !work.join("my-verb").exists(),
        "a refused SDK path wrote the plugin"
    );
    let _ = std::fs::remove_dir_all(&work);
}

/// The first code block of `lang` after `heading` in the README.
fn readme_block(heading: &str, lang: &str) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let section = readme
        .split_once(heading)
        .unwrap_or_else(|| panic!("the README has a {heading:?} section"))
        .1;
    section
        .split_once(&format!("```{lang}\n"))
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("the {heading:?} section has a {lang} code block"))
        .0
        .to_owned()
}

/// A template file as `plugin new my-verb` writes it (the placeholders the README shows).
fn template(path: &str) -> String {
    std::fs::read_to_string(root().join("host/templates").join(path))
        .expect("template")
        .replace("{{name}}", "my-verb")
        .replace("{{verb}}", "my:verb")
}

#[test]
fn the_readme_plugin_examples_are_the_templates() {
    for (heading, lang, path) in [
        ("\n## Writing a plugin\n", "rust", "rust/src/lib.rs"),
        ("\n### The JavaScript template\n", "js", "js/plugin.js"),
        ("\n### The Python template\n", "python", "python/app.py"),
    ] {
        assert_eq!(
            readme_block(heading, lang).trim_end(),
            template(path).trim_end(),
            "the README's example under {heading:?} must be host/templates/{path} with my-verb / my:verb"
        );
    }
}
