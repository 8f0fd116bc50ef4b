//! Nothing to build: the script exists so that this crate's build-dependencies (the host-side
//! feature pins in Cargo.toml) take part in feature resolution.

fn main() {}
