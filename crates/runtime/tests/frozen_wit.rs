//! The frozen copies of released contract versions (`wit/frozen/VERSION/`) against the current
//! `wit/plugin.wit`: within a track the contract only grows, so everything a released version
//! has must still be in the newest release of its track, unchanged. See `wit/README.md`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use verbhost_runtime::ContractVersion;
use wit_parser::{
    FunctionKind, Handle, InterfaceId, PackageId, Resolve, Type, TypeDefKind, TypeId, WorldItem,
    WorldKey,
};

fn wit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit")
}

/// One parsed contract version: its own `Resolve` (two versions of one package do not mix).
struct Contract {
    resolve: Resolve,
    package: PackageId,
}

impl Contract {
    fn from_dir(dir: &Path) -> Contract {
        let mut resolve = Resolve::default();
        let (package, _) = resolve
            .push_path(dir)
            .unwrap_or_else(|e| panic!("{} parses: {e:#}", dir.display()));
        Contract { resolve, package }
    }

    fn from_str(text: &str) -> Contract {
        let mut resolve = Resolve::default();
        let package = resolve
            .push_str("edited.wit", text)
            .unwrap_or_else(|e| panic!("the edited WIT parses: {e:#}"));
        Contract { resolve, package }
    }

    fn version(&self) -> ContractVersion {
        let name = &self.resolve.packages[self.package].name;
        assert_eq!(name.namespace, "verbhost");
        assert_eq!(name.name, "plugin");
        let version = name.version.as_ref().expect("the contract is versioned");
        ContractVersion::parse(&version.to_string()).expect("a plain MAJOR.MINOR.PATCH")
    }

    fn interface(&self, name: &str) -> Option<InterfaceId> {
        self.resolve.packages[self.package]
            .interfaces
            .get(name)
            .copied()
    }

    fn interface_name(&self, id: InterfaceId) -> String {
        self.resolve.interfaces[id]
            .name
            .clone()
            .unwrap_or_else(|| "<anonymous>".into())
    }

    /// A world's imports or exports, by name (interfaces by their name).
    fn world_items(&self, world: &str, exports: bool) -> Option<Vec<String>> {
        let world = &self.resolve.worlds[*self.resolve.packages[self.package].worlds.get(world)?];
        let items = if exports {
            &world.exports
        } else {
            &world.imports
        };
        let mut names: Vec<String> = items
            .iter()
            .map(|(key, item)| match (key, item) {
                (WorldKey::Interface(id), _) | (_, WorldItem::Interface { id, .. }) => {
                    self.interface_name(*id)
                }
                (WorldKey::Name(name), _) => name.clone(),
            })
            .collect();
        names.sort();
        Some(names)
    }

    /// A type as text, with named types by `interface.name` (their definitions are compared
    /// on their own) and anonymous ones spelled out.
    fn ty(&self, ty: &Type) -> String {
        match ty {
            Type::Id(id) => self.type_ref(*id),
            other => format!("{other:?}").to_lowercase(),
        }
    }

    fn type_ref(&self, id: TypeId) -> String {
        let def = &self.resolve.types[id];
        match &def.name {
            Some(name) => match def.owner {
                wit_parser::TypeOwner::Interface(owner) => {
                    format!("{}.{name}", self.interface_name(owner))
                }
                _ => name.clone(),
            },
            None => self.type_def(id),
        }
    }

    /// A type's definition as text.
    fn type_def(&self, id: TypeId) -> String {
        let opt = |ty: &Option<Type>| ty.as_ref().map_or("_".to_string(), |t| self.ty(t));
        match &self.resolve.types[id].kind {
            TypeDefKind::Record(r) => {
                let fields: Vec<String> = r
                    .fields
                    .iter()
                    .map(|f| format!("{}: {}", f.name, self.ty(&f.ty)))
                    .collect();
                format!("record {{ {} }}", fields.join(", "))
            }
            TypeDefKind::Variant(v) => {
                let cases: Vec<String> = v
                    .cases
                    .iter()
                    .map(|c| format!("{}({})", c.name, opt(&c.ty)))
                    .collect();
                format!("variant {{ {} }}", cases.join(", "))
            }
            TypeDefKind::Enum(e) => {
                let cases: Vec<&str> = e.cases.iter().map(|c| c.name.as_str()).collect();
                format!("enum {{ {} }}", cases.join(", "))
            }
            TypeDefKind::Flags(f) => {
                let flags: Vec<&str> = f.flags.iter().map(|c| c.name.as_str()).collect();
                format!("flags {{ {} }}", flags.join(", "))
            }
            TypeDefKind::Tuple(t) => {
                let types: Vec<String> = t.types.iter().map(|t| self.ty(t)).collect();
                format!("tuple<{}>", types.join(", "))
            }
            TypeDefKind::Option(t) => format!("option<{}>", self.ty(t)),
            TypeDefKind::Result(r) => format!("result<{}, {}>", opt(&r.ok), opt(&r.err)),
            TypeDefKind::List(t) => format!("list<{}>", self.ty(t)),
            TypeDefKind::Map(k, v) => format!("map<{}, {}>", self.ty(k), self.ty(v)),
            TypeDefKind::FixedLengthList(t, n) => format!("list<{}, {n}>", self.ty(t)),
            TypeDefKind::Future(t) => format!("future<{}>", opt(t)),
            TypeDefKind::Stream(t) => format!("stream<{}>", opt(t)),
            TypeDefKind::Handle(Handle::Own(t)) => format!("own<{}>", self.type_ref(*t)),
            TypeDefKind::Handle(Handle::Borrow(t)) => format!("borrow<{}>", self.type_ref(*t)),
            TypeDefKind::Resource => "resource".into(),
            TypeDefKind::Type(t) => format!("= {}", self.ty(t)),
            TypeDefKind::Unknown => "unknown".into(),
        }
    }

    /// An interface's functions and types as text, by name.
    fn items(&self, id: InterfaceId) -> BTreeMap<String, String> {
        let interface = &self.resolve.interfaces[id];
        let mut items = BTreeMap::new();
        for (name, func) in &interface.functions {
            let params: Vec<String> = func
                .params
                .iter()
                .map(|p| format!("{}: {}", p.name, self.ty(&p.ty)))
                .collect();
            let kind = match &func.kind {
                FunctionKind::Freestanding => String::new(),
                other => format!("{other:?} "),
            };
            let result = func.result.as_ref().map_or("()".into(), |t| self.ty(t));
            items.insert(
                format!("function {name}"),
                format!("{kind}func({}) -> {result}", params.join(", ")),
            );
        }
        for (name, ty) in &interface.types {
            items.insert(format!("type {name}"), self.type_def(*ty));
        }
        items
    }
}

/// What `new` broke of `old` (empty when `new` is a compatible successor in the same track):
/// every interface, function and type of `old` is still there and unchanged; the worlds keep
/// every import and export exactly; interfaces a world exports gain no functions (an old
/// plugin would not export them).
fn incompatibilities(old: &Contract, new: &Contract) -> Vec<String> {
    let mut problems = Vec::new();
    let old_package = &old.resolve.packages[old.package];
    let mut exported = Vec::new();
    for world in old_package.worlds.keys() {
        let (Some(old_imports), Some(new_imports)) =
            (old.world_items(world, false), new.world_items(world, false))
        else {
            problems.push(format!("world {world} was removed"));
            continue;
        };
        for import in old_imports.iter().filter(|i| !new_imports.contains(i)) {
            problems.push(format!("world {world} no longer imports {import}"));
        }
        let old_exports = old.world_items(world, true).unwrap_or_default();
        let new_exports = new.world_items(world, true).unwrap_or_default();
        if old_exports != new_exports {
            problems.push(format!(
                "world {world} exports {new_exports:?} instead of {old_exports:?}"
            ));
        }
        exported.extend(old_exports);
    }
    for (name, old_id) in &old_package.interfaces {
        let Some(new_id) = new.interface(name) else {
            problems.push(format!("interface {name} was removed"));
            continue;
        };
        let old_items = old.items(*old_id);
        let new_items = new.items(new_id);
        for (item, old_def) in &old_items {
            match new_items.get(item) {
                None => problems.push(format!("{name}: {item} was removed")),
                Some(new_def) if new_def != old_def => problems.push(format!(
                    "{name}: {item} changed from `{old_def}` to `{new_def}`"
                )),
                Some(_) => {}
            }
        }
        if exported.contains(name) {
            for item in new_items.keys().filter(|i| !old_items.contains_key(*i)) {
                if item.starts_with("function ") {
                    problems.push(format!(
                        "{name}: {item} was added to an exported interface, which plugins built for {} do not export",
                        old.version()
                    ));
                }
            }
        }
    }
    problems
}

fn current() -> Contract {
    Contract::from_dir(&wit_dir())
}

fn current_text() -> String {
    std::fs::read_to_string(wit_dir().join("plugin.wit")).expect("wit/plugin.wit is readable")
}

/// `wit/frozen/*/`, each with the version its directory names.
fn frozen() -> Vec<(ContractVersion, Contract)> {
    let mut frozen = Vec::new();
    for entry in std::fs::read_dir(wit_dir().join("frozen")).expect("wit/frozen exists") {
        let dir = entry.expect("readable").path();
        let name = dir
            .file_name()
            .expect("named")
            .to_string_lossy()
            .into_owned();
        let version = ContractVersion::parse(&name)
            .unwrap_or_else(|| panic!("wit/frozen/{name} is not named MAJOR.MINOR.PATCH"));
        let contract = Contract::from_dir(&dir);
        assert_eq!(
            contract.version(),
            version,
            "wit/frozen/{name} holds another version"
        );
        frozen.push((version, contract));
    }
    frozen.sort_by_key(|(v, _)| *v);
    frozen
}

#[test]
fn every_frozen_release_is_still_in_the_newest_release_of_its_track() {
    let current = current();
    let version = current.version();
    assert_eq!(version.to_string(), verbhost_runtime::CONTRACT_VERSION);
    let frozen = frozen();
    assert!(
        frozen
            .iter()
            .any(|(v, _)| *v == ContractVersion::new(0, 1, 0)),
        "0.1.0 is released and must stay frozen"
    );
    for (frozen_version, copy) in &frozen {
        // The newest of the track: wit/plugin.wit for the current track (0.1.x today), the
        // newest frozen copy for an older one.
        let (newest_version, newest) = if frozen_version.same_track(version) {
            assert!(
                *frozen_version <= version,
                "wit/frozen/{frozen_version} is newer than wit/plugin.wit ({version})"
            );
            (version, &current)
        } else {
            let (v, c) = frozen
                .iter()
                .filter(|(v, _)| v.same_track(*frozen_version))
                .max_by_key(|(v, _)| *v)
                .expect("the copy itself is in its track");
            (*v, c)
        };
        let problems = incompatibilities(copy, newest);
        assert!(
            problems.is_empty(),
            "{newest_version} breaks the frozen {frozen_version} of its track:\n{}",
            problems.join("\n")
        );
    }
}

#[test]
fn a_released_version_is_never_edited_in_place() {
    // Once wit/frozen/VERSION exists that version is released: wit/plugin.wit may only change
    // after its package version is bumped. (An unreleased version has no frozen copy yet.)
    let current = current();
    if let Some((_, copy)) = frozen().iter().find(|(v, _)| *v == current.version()) {
        assert_eq!(incompatibilities(&current, copy), Vec::<String>::new());
        assert_eq!(incompatibilities(copy, &current), Vec::<String>::new());
    }
}

#[test]
fn a_directory_path_reads_the_top_level_files_only_so_the_frozen_copies_stay_out() {
    // bindgen!/generate! with `path: "../../wit"` parse the directory the same way.
    let current = current();
    assert_eq!(current.resolve.packages.len(), 1, "only verbhost:plugin");
    assert_eq!(
        current.version().to_string(),
        verbhost_runtime::CONTRACT_VERSION
    );
}

fn edited(from: &str, to: &str) -> Contract {
    let text = current_text();
    assert!(text.contains(from), "wit/plugin.wit contains {from:?}");
    Contract::from_str(&text.replacen(from, to, 1))
}

fn problems_of(from: &str, to: &str) -> Vec<String> {
    incompatibilities(&current(), &edited(from, to))
}

#[test]
fn removing_a_function_is_caught() {
    assert_eq!(
        problems_of("    clock-ms: func() -> u64;\n", ""),
        ["host: function clock-ms was removed"]
    );
}

#[test]
fn changing_a_parameter_type_is_caught() {
    assert_eq!(
        problems_of(
            "on-notify: func(refer-id: u32, timeout-ms: u32)",
            "on-notify: func(refer-id: u32, timeout-ms: u64)"
        ),
        ["sip: function on-notify changed from \
          `func(refer-id: u32, timeout-ms: u32) -> result<sip.refer-event, sip.notify-error>` to \
          `func(refer-id: u32, timeout-ms: u64) -> result<sip.refer-event, sip.notify-error>`"]
    );
}

#[test]
fn changing_a_record_field_or_removing_an_interface_is_caught() {
    let problems = problems_of(
        "        /// Header value, without the trailing CRLF.\n        value: string,",
        "        value: list<u8>,",
    );
    assert_eq!(
        problems,
        [
            "types: type header changed from `record { name: string, value: string }` to \
          `record { name: string, value: list<u8> }`"
        ]
    );
    let text = current_text();
    let start = text
        .find("/// Call transfer by SIP REFER")
        .expect("sip interface");
    let end = text
        .find("/// What a plugin exports")
        .expect("verb interface");
    let without_sip =
        format!("{}{}", &text[..start], &text[end..]).replace("    import sip;\n", "");
    let problems = incompatibilities(&current(), &Contract::from_str(&without_sip));
    assert!(
        problems.contains(&"world verb-plugin no longer imports sip".to_string()),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"interface sip was removed".to_string()),
        "{problems:?}"
    );
}

#[test]
fn additions_to_imported_interfaces_are_allowed_but_not_to_the_exported_one() {
    assert_eq!(
        problems_of(
            "    clock-ms: func() -> u64;\n",
            "    clock-ms: func() -> u64;\n    get-config: func(key: string) -> option<string>;\n    record extra { a: u32 }\n"
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        problems_of(
            "    describe: func() -> plugin-info;\n",
            "    describe: func() -> plugin-info;\n    health: func() -> bool;\n"
        ),
        [
            "verb: function health was added to an exported interface, which plugins built for \
          0.1.1 do not export"
        ]
    );
    assert_eq!(
        problems_of("    export verb;\n", "    export verb;\n    export host;\n"),
        [
            "world verb-plugin exports [\"host\", \"verb\"] instead of [\"verb\"]",
            // The 0.1.1 world that includes it changes with it.
            "world checked-verb-plugin exports [\"host\", \"verb\", \"verb-check\"] instead of \
             [\"verb\", \"verb-check\"]"
        ]
    );
}

#[test]
fn the_optional_check_export_gains_no_functions_either() {
    let check = "    check: func(verb: string) -> result<_, verb-error>;\n";
    assert_eq!(
        problems_of(
            check,
            &format!("{check}    lint: func(verb: string) -> bool;\n")
        ),
        [
            "verb-check: function lint was added to an exported interface, which plugins built \
          for 0.1.1 do not export"
        ]
    );
}
