//! No code: this crate only pins the features of shared dependencies (see its Cargo.toml), so
//! every `-p` selection of the workspace reuses one build of wasmtime and the rest.
