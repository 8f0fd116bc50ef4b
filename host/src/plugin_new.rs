//! `verbhost plugin new NAME`: writes a ready plugin crate (or package) from the templates
//! under `host/templates/<lang>/`, which are embedded in the binary.
//!
//! Each template file is copied as it is, with these placeholders replaced in its contents:
//!
//! | placeholder | value | example |
//! |---|---|---|
//! | `{{name}}` | the package name, NAME | `my-verb` |
//! | `{{verb}}` | the verb it implements (`--verb`, default NAME with its first `-` as `:`) | `my:verb` |
//! | `{{lib}}` | NAME with `_` for `-` (a Rust library's name, so the `.wasm` file's stem) | `my_verb` |
//! | `{{sdk_path}}` | the absolute path of `verbhost-sdk` (`--sdk-path`) | `/src/verbhost/crates/sdk` |
//! | `{{wit_dir}}` | the absolute path of the contract's `wit/` directory beside it | `/src/verbhost/wit` |
//! | `{{root}}` | the verbhost source tree the SDK is in (the JS and Python SDKs live under its `guest/`) | `/src/verbhost` |
//!
//! Any other `{{...}}` is left as it is. Exit code 0 when written, 2 for bad input (the name, an
//! existing directory, a language this build has no template for).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Subcommand, ValueEnum};

/// `verbhost plugin ...`.
#[derive(Debug, Args)]
pub(crate) struct PluginArgs {
    #[command(subcommand)]
    command: PluginCommand,
}

#[derive(Debug, Subcommand)]
enum PluginCommand {
    /// Write a new plugin from a template: its manifest, a small verb, mock-host scenarios and a
    /// README saying how to build and test it.
    New(NewArgs),
}

/// `verbhost plugin new`.
#[derive(Debug, Args)]
struct NewArgs {
    /// The package name: lowercase letters, digits and single dashes, starting with a letter
    /// (at most 64), e.g. my-verb.
    name: String,
    /// The plugin's language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The directory to create; it must not exist [default: NAME]
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// The verb the plugin implements [default: NAME with its first dash as a colon, e.g.
    /// my:verb]
    #[arg(long, value_name = "VERB")]
    verb: Option<String>,
    /// The verbhost-sdk crate the plugin depends on [default: crates/sdk of the source tree
    /// this verbhost was built from]
    #[arg(long, value_name = "DIR")]
    sdk_path: Option<PathBuf>,
}

/// `--lang`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Lang {
    /// Rust, with verbhost-sdk (built with cargo for wasm32-wasip2).
    Rust,
    /// JavaScript, with verbhost's JS SDK (built with componentize-js: `npm run build`).
    Js,
    /// Python, with verbhost's Python SDK (built with componentize-py: `./build.sh`).
    Python,
}

impl Lang {
    /// The template directory's name, `host/templates/<name>/`.
    fn dir_name(self) -> &'static str {
        match self {
            Lang::Rust => "rust",
            Lang::Js => "js",
            Lang::Python => "python",
        }
    }
}

/// One file of a template: where it goes in the new plugin, and its text.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
}

/// The files of `host/templates/<lang>/`, listed once: `template!("rust": "Cargo.toml", ...)`.
macro_rules! template {
    ($lang:literal: $($path:literal),+ $(,)?) => {
        &[$(TemplateFile {
            path: $path,
            text: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $lang, "/", $path)),
        }),+]
    };
}

/// Every template this build has. Adding a language is one entry here.
const TEMPLATES: &[(Lang, &[TemplateFile])] = &[
    (
        Lang::Rust,
        template!("rust":
            "Cargo.toml",
            ".gitignore",
            "README.md",
            "app.json",
            "src/lib.rs",
            "scenarios/greet.json",
        ),
    ),
    (
        Lang::Js,
        template!("js":
            "package.json",
            "plugin.js",
            "README.md",
            "scenarios/greet.json",
        ),
    ),
    (
        Lang::Python,
        template!("python":
            "app.py",
            "build.sh",
            "requirements.txt",
            ".gitignore",
            "README.md",
            "scenarios/greeting.json",
        ),
    ),
];

/// The longest package name accepted.
const MAX_NAME: usize = 64;
/// The longest verb name the host accepts from `describe()`.
const MAX_VERB: usize = 128;

/// Names a plugin package cannot take: Rust keywords and the standard crates (cargo refuses
/// them, or the library would shadow them).
const RESERVED: &[&str] = &[
    "alloc",
    "as",
    "async",
    "await",
    "break",
    "const",
    "continue",
    "core",
    "crate",
    "dyn",
    "else",
    "enum",
    "extern",
    "false",
    "fn",
    "for",
    "gen",
    "if",
    "impl",
    "in",
    "let",
    "loop",
    "match",
    "mod",
    "move",
    "mut",
    "proc-macro",
    "pub",
    "ref",
    "return",
    "self",
    "static",
    "std",
    "struct",
    "super",
    "test",
    "trait",
    "true",
    "type",
    "unsafe",
    "use",
    "where",
    "while",
];

pub(crate) fn run(args: PluginArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        PluginCommand::New(args) => new(args),
    }
}

fn new(args: NewArgs) -> anyhow::Result<ExitCode> {
    check_name(&args.name)?;
    let verb = match args.verb {
        Some(verb) => {
            check_verb(&verb)?;
            verb
        }
        None => default_verb(&args.name),
    };
    let Some(files) = TEMPLATES
        .iter()
        .find(|(lang, _)| *lang == args.lang)
        .map(|(_, files)| *files)
    else {
        bail!(
            "--lang {}: that template is not in this build (it has: {})",
            args.lang.dir_name(),
            TEMPLATES
                .iter()
                .map(|(lang, _)| lang.dir_name())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let sdk = sdk_path(args.sdk_path.as_deref())?;
    let root = sdk
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| sdk.clone());
    let wit = root.join("wit");
    let values = Values {
        name: &args.name,
        verb: &verb,
        lib: &args.name.replace('-', "_"),
        sdk_path: path_text(&sdk, "--sdk-path")?,
        wit_dir: path_text(&wit, "the wit directory beside --sdk-path")?,
        root: path_text(&root, "the source tree of --sdk-path")?,
    };
    let dir = args.dir.unwrap_or_else(|| PathBuf::from(&args.name));
    write_all(&dir, files, &values)?;

    let mut out = format!(
        "created {} (verb {verb}, {}) in {}:\n",
        args.name,
        args.lang.dir_name(),
        dir.display()
    );
    for file in files {
        let _ = writeln!(out, "  {}", file.path);
    }
    if args.lang == Lang::Rust {
        let _ = write!(
            out,
            "next:\n  cd {}\n  cargo build --release --target wasm32-wasip2\n  \
             verbhost test target/wasm32-wasip2/release/{}.wasm scenarios/*.json\n",
            dir.display(),
            values.lib
        );
    } else {
        let build = if args.lang == Lang::Js {
            "npm run build"
        } else {
            "./build.sh"
        };
        let _ = write!(
            out,
            "next:\n  cd {}\n  {build}\n  verbhost test {}.wasm scenarios/*.json\n",
            dir.display(),
            args.name
        );
    }
    print!("{out}");
    Ok(ExitCode::SUCCESS)
}

/// Checks a package name: lowercase letters, digits and single dashes, starting with a
/// letter and not ending with a dash, 1 to [`MAX_NAME`] bytes, not [`RESERVED`].
fn check_name(name: &str) -> anyhow::Result<()> {
    let shown = shown(name);
    if name.is_empty() || name.len() > MAX_NAME {
        bail!(
            "plugin name {shown}: must be 1 to {MAX_NAME} characters, not {}",
            name.len()
        );
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        bail!(
            "plugin name {shown}: {bad:?} is not allowed (lowercase letters, digits and dashes, e.g. my-verb)"
        );
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        bail!("plugin name {shown}: must start with a letter");
    }
    if name.ends_with('-') || name.contains("--") {
        bail!("plugin name {shown}: dashes go between letters or digits, one at a time");
    }
    if RESERVED.contains(&name) {
        bail!("plugin name {shown}: reserved in Rust; pick another, e.g. {name}-verb");
    }
    Ok(())
}

/// Checks a verb name as the host checks what `describe()` lists: 1 to [`MAX_VERB`]
/// characters of `A-Z a-z 0-9 : _ - .`.
fn check_verb(verb: &str) -> anyhow::Result<()> {
    let shown = shown(verb);
    if verb.is_empty() || verb.len() > MAX_VERB {
        bail!(
            "--verb {shown}: must be 1 to {MAX_VERB} characters, not {}",
            verb.len()
        );
    }
    if let Some(bad) = verb
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '-' | '.')))
    {
        bail!("--verb {shown}: {bad:?} is not allowed (letters, digits and : _ - .)");
    }
    Ok(())
}

/// `my-verb` -> `my:verb`, `crm-lookup-v2` -> `crm:lookup-v2`, `hello` -> `hello`.
fn default_verb(name: &str) -> String {
    name.replacen('-', ":", 1)
}

/// A name as an error shows it: quoted, and cut so that a huge argument stays one line.
fn shown(text: &str) -> String {
    let cut: String = text.chars().take(MAX_VERB).collect();
    if cut.len() < text.len() {
        format!("{cut:?}...")
    } else {
        format!("{cut:?}")
    }
}

/// The verbhost-sdk crate the new plugin depends on, as an absolute path.
fn sdk_path(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    let (path, flag) = match given {
        Some(path) => (path.to_path_buf(), "--sdk-path"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../crates/sdk"),
            "the default SDK path (the source tree verbhost was built from)",
        ),
    };
    let hint = "pass --sdk-path with the crates/sdk directory of a verbhost checkout";
    let manifest = path.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("{flag}: cannot read {}; {hint}", manifest.display()))?;
    if !text
        .lines()
        .any(|line| line.trim() == r#"name = "verbhost-sdk""#)
    {
        bail!(
            "{flag}: {} is not the verbhost-sdk crate; {hint}",
            manifest.display()
        );
    }
    path.canonicalize()
        .with_context(|| format!("{flag}: cannot resolve {}", path.display()))
}

/// A path as it goes into a template (a TOML or JSON string): refused when it would need
/// escaping there.
fn path_text(path: &Path, what: &str) -> anyhow::Result<String> {
    let text = path
        .to_str()
        .with_context(|| format!("{what}: {} is not UTF-8", path.display()))?;
    if let Some(bad) = text
        .chars()
        .find(|c| matches!(c, '"' | '\\') || c.is_control())
    {
        bail!("{what}: {text:?} contains {bad:?}, which the plugin's manifest cannot hold");
    }
    Ok(text.to_owned())
}

/// What the placeholders stand for.
struct Values<'a> {
    name: &'a str,
    verb: &'a str,
    lib: &'a str,
    sdk_path: String,
    wit_dir: String,
    root: String,
}

impl Values<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        Some(match key {
            "name" => self.name,
            "verb" => self.verb,
            "lib" => self.lib,
            "sdk_path" => &self.sdk_path,
            "wit_dir" => &self.wit_dir,
            "root" => &self.root,
            _ => return None,
        })
    }

    /// `text` with every known `{{key}}` replaced, in one pass (a value is never read again
    /// for placeholders).
    fn fill(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            match after
                .find("}}")
                .and_then(|end| self.get(&after[..end]).map(|v| (end, v)))
            {
                Some((end, value)) => {
                    out.push_str(value);
                    rest = &after[end + 2..];
                }
                None => {
                    out.push_str("{{");
                    rest = after;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Creates `dir` (which must not exist) and writes the template into it; on failure removes
/// what it created, so a retry starts clean.
fn write_all(dir: &Path, files: &[TemplateFile], values: &Values<'_>) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    if let Err(err) = std::fs::create_dir(dir) {
        if err.kind() == std::io::ErrorKind::AlreadyExists {
            bail!(
                "{} already exists; verbhost plugin new writes only into a new directory (pick another --dir)",
                dir.display()
            );
        }
        return Err(err).with_context(|| format!("cannot create {}", dir.display()));
    }
    let written = files.iter().try_for_each(|file| {
        let path = dir.join(file.path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, values.fill(file.text))
            .with_context(|| format!("cannot write {}", path.display()))?;
        if file.path.ends_with(".sh") {
            make_executable(&path)?;
        }
        Ok(())
    });
    if written.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

/// Scripts (`*.sh`, such as a build script) are written executable, as in the repository.
#[cfg(unix)]
fn make_executable(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("cannot make {} executable", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> anyhow::Result<()> {
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> Values<'static> {
        Values {
            name: "my-verb",
            verb: "my:verb",
            lib: "my_verb",
            sdk_path: "/src/verbhost/crates/sdk".into(),
            wit_dir: "/src/verbhost/wit".into(),
            root: "/src/verbhost".into(),
        }
    }

    #[test]
    fn placeholders_are_filled_in_one_pass() {
        let values = Values {
            name: "{{verb}}",
            ..values()
        };
        assert_eq!(
            values.fill("a {{name}} b {{verb}} {{unknown}} {{ c}} {{"),
            "a {{verb}} b my:verb {{unknown}} {{ c}} {{"
        );
    }

    #[test]
    fn every_language_has_a_template() {
        for lang in Lang::value_variants() {
            assert!(
                TEMPLATES.iter().any(|(l, _)| l == lang),
                "--lang {} has no template in TEMPLATES",
                lang.dir_name()
            );
        }
    }

    #[test]
    fn every_placeholder_of_every_template_is_known() {
        for (lang, files) in TEMPLATES {
            for file in *files {
                let filled = values().fill(file.text);
                assert!(
                    !filled.contains("{{"),
                    "{}/{}: an unknown placeholder is left: {filled}",
                    lang.dir_name(),
                    file.path
                );
            }
        }
    }

    #[test]
    fn names_are_checked() {
        for good in ["my-verb", "a", "crm-lookup-v2", "x1"] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for (bad, why) in [
            ("", "1 to 64"),
            ("My-verb", "'M' is not allowed"),
            ("my_verb", "'_' is not allowed"),
            ("my verb", "' ' is not allowed"),
            ("../x", "'.' is not allowed"),
            ("1verb", "start with a letter"),
            ("my--verb", "one at a time"),
            ("verb-", "one at a time"),
            ("test", "reserved"),
            ("fn", "reserved"),
        ] {
            let err = check_name(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
        let long = "a".repeat(MAX_NAME + 1);
        let err = check_name(&long).expect_err("too long").to_string();
        assert!(err.contains("not 65"), "{err}");
    }

    #[test]
    fn verbs_are_checked_and_derived() {
        assert_eq!(default_verb("my-verb"), "my:verb");
        assert_eq!(default_verb("crm-lookup-v2"), "crm:lookup-v2");
        assert_eq!(default_verb("hello"), "hello");
        assert!(check_verb("acme:crm.lookup_v2").is_ok());
        assert!(check_verb("my verb").is_err());
        assert!(check_verb("a\"b").is_err());
        assert!(check_verb(&"v".repeat(MAX_VERB + 1)).is_err());
    }

    #[test]
    fn files_are_written_filled_and_scripts_executable() {
        let dir =
            std::env::temp_dir().join(format!("verbhost-plugin-new-unit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let files = [
            TemplateFile {
                path: "src/x.txt",
                text: "{{name}} {{verb}}",
            },
            TemplateFile {
                path: "build.sh",
                text: "#!/bin/sh\n",
            },
        ];
        write_all(&dir, &files, &values()).expect("written");
        assert_eq!(
            std::fs::read_to_string(dir.join("src/x.txt")).expect("x"),
            "my-verb my:verb"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("build.sh"))
                .expect("sh")
                .permissions()
                .mode();
            assert_eq!(mode & 0o111, 0o111, "build.sh is not executable: {mode:o}");
        }
        let again = write_all(&dir, &files, &values()).expect_err("exists");
        assert!(again.to_string().contains("already exists"), "{again}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn paths_that_need_escaping_are_refused() {
        assert!(path_text(Path::new("/a/b"), "x").is_ok());
        assert!(path_text(Path::new("/a\"b"), "x").is_err());
        assert!(path_text(Path::new("/a\\b"), "x").is_err());
        assert!(path_text(Path::new("/a\nb"), "x").is_err());
    }
}
