//! Contract versions: which versions of the `verbhost:plugin` WIT package this host runs, and
//! how a plugin's version is read and checked at load.
//!
//! A component names the contract version it was built for in every import and export of the
//! package, e.g. `verbhost:plugin/verb@0.1.0`; no custom section is needed. Versions follow
//! semver as the component model applies it: `0.1.0` and `0.1.7` are one track (`0.1.x`), as
//! are `1.0.0` and `1.4.2` (`1.x`); `0.0.9` is a track of its own. Within a track the contract
//! only grows (see `wit/README.md`), so a plugin built for an earlier release of a supported
//! track always loads, and one built for a later release loads unless it imports something
//! this host does not have, in which case it is refused with [`ContractError::HostTooOld`].

use std::fmt;

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;

/// The WIT package of the contract, without a version.
pub const PACKAGE: &str = "verbhost:plugin";

/// A version of the contract, e.g. `0.1.0`, read from a name like `verbhost:plugin/verb@0.1.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContractVersion {
    /// Major version.
    pub major: u64,
    /// Minor version.
    pub minor: u64,
    /// Patch version.
    pub patch: u64,
}

impl ContractVersion {
    /// The version `major.minor.patch`.
    pub const fn new(major: u64, minor: u64, patch: u64) -> Self {
        ContractVersion {
            major,
            minor,
            patch,
        }
    }

    /// Reads `MAJOR.MINOR.PATCH` (digits only; pre-release and build suffixes are not
    /// accepted, since no supported release has one).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let mut number = || -> Option<u64> {
            let part = parts.next()?;
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            part.parse().ok()
        };
        let version = ContractVersion::new(number()?, number()?, number()?);
        parts.next().is_none().then_some(version)
    }

    /// True when a plugin built for `self` and one built for `other` are in the same track,
    /// the rule wasmtime's linker uses to match names: same major from 1.0 on, same minor in
    /// 0.x, the exact version in 0.0.x.
    pub fn same_track(self, other: ContractVersion) -> bool {
        match (self.major, self.minor) {
            (0, 0) => self == other,
            (0, minor) => other.major == 0 && other.minor == minor,
            (major, _) => other.major == major,
        }
    }

    /// The track's name, e.g. `0.1.x` or `1.x`.
    fn track(self) -> String {
        match (self.major, self.minor) {
            (0, 0) => self.to_string(),
            (0, minor) => format!("0.{minor}.x"),
            (major, _) => format!("{major}.x"),
        }
    }

    /// The track's prefix in prose, e.g. `0.1` (for "later 0.1 releases").
    fn track_prefix(self) -> String {
        match (self.major, self.minor) {
            (0, minor) => format!("0.{minor}"),
            (major, _) => major.to_string(),
        }
    }
}

impl fmt::Display for ContractVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// One contract track this host runs: the release of it the host implements, and what the
/// host links of the interfaces a plugin imports.
#[derive(Debug)]
pub struct SupportedTrack {
    /// The release the host's bindings are generated from (its `wit/plugin.wit`, or a frozen
    /// copy for an older track). Plugins built for it or any earlier release of the track load.
    pub implemented: ContractVersion,
    /// Every interface of the package a plugin may import, with the functions the host links
    /// in it. A unit test keeps this equal to the WIT.
    pub imports: &'static [(&'static str, &'static [&'static str])],
}

/// The contract versions this host runs, one entry per track (today only `0.1.x`). When
/// `0.2.0` comes, its entry is added here and the `0.1.x` entry stays: see `wit/README.md`.
pub const SUPPORTED: &[SupportedTrack] = &[SupportedTrack {
    implemented: CURRENT,
    imports: &[
        ("types", &[]),
        ("host", &["log", "emit-event", "clock-ms"]),
        ("sip", &["send-refer", "on-notify"]),
    ],
}];

/// The newest contract version this host implements: the package version of `wit/plugin.wit`
/// (the same as [`crate::CONTRACT_VERSION`]).
pub const CURRENT: ContractVersion = ContractVersion::new(0, 1, 1);

/// Why a plugin's contract version cannot run on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContractError {
    /// The plugin is built for a version in no supported track (e.g. `0.2.0`, `1.0.0`, `0.0.9`).
    #[error(
        "the plugin is built for verbhost:plugin@{found} (it uses {item}); this host supports {}; {}",
        supported(),
        advice(*.found)
    )]
    Unsupported {
        /// The version the plugin names.
        found: ContractVersion,
        /// The import or export that names it, e.g. `verbhost:plugin/verb@0.2.0`.
        item: String,
    },
    /// A `verbhost:plugin` import or export without a readable `@MAJOR.MINOR.PATCH` version.
    #[error(
        "the plugin uses {item}, which names no contract version this host can read (expected verbhost:plugin/NAME@MAJOR.MINOR.PATCH); this host supports {}",
        supported()
    )]
    Unreadable {
        /// The import or export name.
        item: String,
    },
    /// The plugin exports no `verbhost:plugin/verb` interface: it is not a verbhost plugin.
    #[error(
        "the plugin does not export verbhost:plugin/verb (it exports: {exports}), so it is not a verbhost plugin; this host supports {}; build it with verbhost-sdk",
        supported()
    )]
    NoVerbExport {
        /// What it exports instead (`nothing` when it exports nothing).
        exports: String,
    },
    /// The plugin is built for a later release of a supported track and imports something
    /// that release added, which this (older) host does not link.
    #[error(
        "the plugin is built for verbhost:plugin@{plugin}, newer than this host's {host}: it imports {import}, which this host does not have; upgrade verbhost, or rebuild the plugin against verbhost:plugin@{host}"
    )]
    HostTooOld {
        /// The version the plugin is built for.
        plugin: ContractVersion,
        /// The release of that track this host implements.
        host: ContractVersion,
        /// What the host lacks, e.g. ``` `get-config` from verbhost:plugin/host@0.1.1 ```.
        import: String,
    },
    /// The plugin imports something that is not in the contract version it names (a release
    /// this host implements, so the plugin's tooling made it up).
    #[error(
        "the plugin imports {import}, which is not part of verbhost:plugin@{version}; rebuild it with verbhost-sdk"
    )]
    UnknownImport {
        /// What it imports, e.g. ``` `sleep` from verbhost:plugin/host@0.1.0 ```.
        import: String,
        /// The version the plugin names.
        version: ContractVersion,
    },
}

/// The supported tracks in prose, e.g. `verbhost:plugin@0.1.x (0.1.0 and later 0.1 releases)`.
fn supported() -> String {
    let tracks: Vec<String> = SUPPORTED
        .iter()
        .map(|track| {
            let version = track.implemented;
            if version.major == 0 && version.minor == 0 {
                format!("{PACKAGE}@{version}")
            } else {
                // The track's first release: every release of the track up to the one
                // implemented loads, and later ones that use nothing newer.
                let first = match version.major {
                    0 => ContractVersion::new(0, version.minor, 0),
                    major => ContractVersion::new(major, 0, 0),
                };
                format!(
                    "{PACKAGE}@{} ({first} and later {} releases)",
                    version.track(),
                    version.track_prefix()
                )
            }
        })
        .collect();
    tracks.join(" and ")
}

/// What to do about a plugin built for an unsupported version.
fn advice(found: ContractVersion) -> String {
    let newest = SUPPORTED
        .iter()
        .map(|t| t.implemented)
        .max()
        .unwrap_or(CURRENT);
    if found > newest {
        "upgrade verbhost to run it".into()
    } else {
        format!(
            "rebuild it with a verbhost-sdk for verbhost:plugin@{}",
            newest.track()
        )
    }
}

/// Splits `verbhost:plugin/IFACE@VERSION` into the interface and its version. `None` for a
/// name outside the package; an error for a name of the package without a readable version.
pub fn parse_name(name: &str) -> Option<Result<(&str, ContractVersion), ContractError>> {
    let rest = name.strip_prefix(PACKAGE)?.strip_prefix('/')?;
    let unreadable = || ContractError::Unreadable { item: name.into() };
    Some(
        rest.split_once('@')
            .and_then(|(interface, version)| Some((interface, ContractVersion::parse(version)?)))
            .filter(|(interface, _)| !interface.is_empty())
            .ok_or_else(unreadable),
    )
}

/// True when `name` is an import or export of the contract package (any version).
pub(crate) fn is_contract_name(name: &str) -> bool {
    parse_name(name).is_some()
}

/// The supported track of a version `item` names, or why there is none.
fn track_of(found: ContractVersion, item: &str) -> Result<&'static SupportedTrack, ContractError> {
    SUPPORTED
        .iter()
        .find(|track| track.implemented.same_track(found))
        .ok_or_else(|| ContractError::Unsupported {
            found,
            item: item.into(),
        })
}

/// Checks one import of the contract package: a supported version, and nothing in it the host
/// does not link. Call it only for names where [`is_contract_name`] holds.
pub(crate) fn check_import(
    engine: &Engine,
    name: &str,
    item: &ComponentItem,
) -> Result<(), ContractError> {
    let Some(parsed) = parse_name(name) else {
        return Ok(());
    };
    let (interface, found) = parsed?;
    let track = track_of(found, name)?;
    let missing = |import: String| {
        if found > track.implemented {
            ContractError::HostTooOld {
                plugin: found,
                host: track.implemented,
                import,
            }
        } else {
            ContractError::UnknownImport {
                import,
                version: found,
            }
        }
    };
    let Some((_, linked)) = track.imports.iter().find(|(known, _)| *known == interface) else {
        return Err(missing(name.into()));
    };
    if let ComponentItem::ComponentInstance(instance) = item {
        for (export, export_item) in instance.exports(engine) {
            // Types have no definition in the linker; only functions (and resources) must exist.
            if matches!(export_item.ty, ComponentItem::Type(_)) || linked.contains(&export) {
                continue;
            }
            return Err(missing(format!("`{export}` from {name}")));
        }
    }
    Ok(())
}

/// Checks a component's exports: it must export `verbhost:plugin/verb` in a supported
/// version, and every export of the package must be in a supported track.
pub(crate) fn check_exports<'a>(
    exports: impl IntoIterator<Item = &'a str>,
) -> Result<(), ContractError> {
    let mut names = Vec::new();
    let mut has_verb = false;
    for name in exports {
        names.push(name);
        if let Some(parsed) = parse_name(name) {
            let (interface, found) = parsed?;
            track_of(found, name)?;
            has_verb |= interface == "verb";
        }
    }
    if has_verb {
        return Ok(());
    }
    Err(ContractError::NoVerbExport {
        exports: if names.is_empty() {
            "nothing".into()
        } else {
            names.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(text: &str) -> ContractVersion {
        ContractVersion::parse(text).expect("a version")
    }

    #[test]
    fn versions_are_read_from_names_and_bad_ones_are_named() {
        assert_eq!(
            parse_name("verbhost:plugin/verb@0.1.0"),
            Some(Ok(("verb", version("0.1.0"))))
        );
        assert_eq!(
            parse_name("verbhost:plugin/host@12.3.45"),
            Some(Ok(("host", ContractVersion::new(12, 3, 45))))
        );
        assert_eq!(parse_name("wasi:io/streams@0.2.6"), None);
        assert_eq!(parse_name("verbhost:pluginx/verb@0.1.0"), None);
        for bad in [
            "verbhost:plugin/verb",
            "verbhost:plugin/verb@",
            "verbhost:plugin/verb@0.1",
            "verbhost:plugin/verb@0.1.0.1",
            "verbhost:plugin/verb@0.2.0-rc1",
            "verbhost:plugin/verb@+1.0.0",
            "verbhost:plugin/@0.1.0",
            "verbhost:plugin/verb@99999999999999999999.0.0",
        ] {
            let err = parse_name(bad).expect("in the package").unwrap_err();
            assert_eq!(err, ContractError::Unreadable { item: bad.into() });
            assert!(
                err.to_string()
                    .starts_with(&format!("the plugin uses {bad}, which"))
            );
        }
    }

    #[test]
    fn tracks_follow_semver_as_the_component_model_applies_it() {
        assert!(version("0.1.0").same_track(version("0.1.7")));
        assert!(!version("0.1.0").same_track(version("0.2.0")));
        assert!(!version("0.1.0").same_track(version("1.1.0")));
        assert!(version("1.0.0").same_track(version("1.4.2")));
        assert!(!version("1.0.0").same_track(version("2.0.0")));
        assert!(!version("0.0.9").same_track(version("0.0.10")));
        assert!(version("0.0.9").same_track(version("0.0.9")));
    }

    #[test]
    fn exports_of_other_versions_are_refused_naming_both_versions() {
        let supported = "this host supports verbhost:plugin@0.1.x (0.1.0 and later 0.1 releases)";
        for (found, advice) in [
            ("0.2.0", "upgrade verbhost to run it"),
            ("1.0.0", "upgrade verbhost to run it"),
            (
                "0.0.9",
                "rebuild it with a verbhost-sdk for verbhost:plugin@0.1.x",
            ),
        ] {
            let name = format!("verbhost:plugin/verb@{found}");
            let err = check_exports([name.as_str()]).unwrap_err();
            assert_eq!(
                err,
                ContractError::Unsupported {
                    found: version(found),
                    item: name.clone()
                }
            );
            assert_eq!(
                err.to_string(),
                format!(
                    "the plugin is built for verbhost:plugin@{found} (it uses {name}); {supported}; {advice}"
                )
            );
        }
        for ok in ["0.1.0", "0.1.9"] {
            let name = format!("verbhost:plugin/verb@{ok}");
            assert_eq!(check_exports([name.as_str()]), Ok(()));
        }
        // A later 0.1 release may add an optional export: the host ignores it.
        assert_eq!(
            check_exports([
                "verbhost:plugin/verb@0.1.3",
                "verbhost:plugin/verb-batch@0.1.3"
            ]),
            Ok(())
        );
    }

    #[test]
    fn a_component_without_the_verb_export_is_not_a_plugin() {
        let err = check_exports([]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the plugin does not export verbhost:plugin/verb (it exports: nothing), so it is not a \
             verbhost plugin; this host supports verbhost:plugin@0.1.x (0.1.0 and later 0.1 \
             releases); build it with verbhost-sdk"
        );
        let err = check_exports(["wasi:cli/run@0.2.6", "verbhost:plugin/other@0.1.0"]).unwrap_err();
        assert_eq!(
            err,
            ContractError::NoVerbExport {
                exports: "wasi:cli/run@0.2.6, verbhost:plugin/other@0.1.0".into()
            }
        );
    }

    /// The imported interfaces and functions of the `verb-plugin` world in `wit/plugin.wit`.
    fn wit_imports() -> (ContractVersion, Vec<(String, Vec<String>)>) {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../wit");
        let mut resolve = wit_parser::Resolve::default();
        let (package, _) = resolve.push_path(dir).expect("wit/ parses");
        let package = &resolve.packages[package];
        let wit_version = package
            .name
            .version
            .as_ref()
            .expect("the package is versioned");
        let world = package.worlds["verb-plugin"];
        let mut imports = Vec::new();
        for item in resolve.worlds[world].imports.values() {
            if let wit_parser::WorldItem::Interface { id, .. } = item {
                let interface = &resolve.interfaces[*id];
                let name = interface.name.clone().expect("named interface");
                imports.push((name, interface.functions.keys().cloned().collect()));
            }
        }
        imports.sort();
        (version(&wit_version.to_string()), imports)
    }

    #[test]
    fn the_table_of_linked_imports_is_the_current_wit() {
        let (wit_version, wit) = wit_imports();
        assert_eq!(wit_version, CURRENT);
        assert_eq!(CURRENT.to_string(), crate::CONTRACT_VERSION);
        let track = SUPPORTED
            .iter()
            .find(|t| t.implemented == CURRENT)
            .expect("the current version is supported");
        let mut table: Vec<(String, Vec<String>)> = track
            .imports
            .iter()
            .map(|(name, funcs)| {
                let mut funcs: Vec<String> = funcs.iter().map(|f| f.to_string()).collect();
                funcs.sort();
                (name.to_string(), funcs)
            })
            .collect();
        table.sort();
        let wit: Vec<(String, Vec<String>)> = wit
            .into_iter()
            .map(|(name, mut funcs)| {
                funcs.sort();
                (name, funcs)
            })
            .collect();
        assert_eq!(
            table, wit,
            "contract::SUPPORTED must list what wit/plugin.wit's world imports"
        );
    }
}
