//! Test support: run the `verbhost` binary (`serve`, `call`, `test`, ...) from a test of the
//! `verbhost` package, and temporary files for its input.
//!
//! Integration tests include this file with `#[path = "support/serve.rs"] mod serve;`. It
//! needs `CARGO_BIN_EXE_verbhost`, so only tests of the `verbhost` package can use it.

// Each test binary uses a different subset, and the module is private there.
#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::{Child, Command};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The `verbhost` binary, run in the workspace root, with `RUST_LOG` unset and killed when
/// dropped.
pub fn verbhost() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_verbhost"));
    command
        .current_dir(root())
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    command
}

/// A temporary file holding `text`, removed with the returned guard's directory.
pub struct TempFile {
    pub dir: PathBuf,
    pub path: PathBuf,
}

impl TempFile {
    pub fn new(name: &str, text: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("verbhost-e2e-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        TempFile { dir, path }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A running `verbhost serve`, its log in a file.
pub struct Server {
    pub child: Child,
    pub admin: String,
    pub log: TempFile,
}

impl Server {
    /// Starts `verbhost serve ARGS --admin 127.0.0.1:<admin_port>` and waits for /health.
    pub async fn start(args: &[&str], admin_port: u16) -> Server {
        Self::start_within(args, admin_port, Duration::from_secs(30)).await
    }

    /// [`Server::start`], waiting up to `limit` for /health (the server answers once its
    /// plugins have loaded, and a large plugin compiles for a while).
    pub async fn start_within(args: &[&str], admin_port: u16, limit: Duration) -> Server {
        let log = TempFile::new("serve.log", "");
        let admin = format!("127.0.0.1:{admin_port}");
        let child = verbhost()
            .arg("serve")
            .args(args)
            .args(["--admin", &admin])
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log.path).unwrap())
            .spawn()
            .expect("verbhost serve starts");
        let server = Server { child, admin, log };
        for _ in 0..limit.as_millis().div_ceil(100) {
            if let Ok(response) = reqwest::get(format!("http://{}/health", server.admin)).await {
                assert!(response.status().is_success());
                return server;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("verbhost serve did not come up:\n{}", server.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log.path).unwrap_or_default()
    }

    pub async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(format!("http://{}{path}", self.admin))
            .await
            .expect("admin answers");
        (response.status().as_u16(), response.text().await.unwrap())
    }

    pub fn sigterm(&self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, then the exit code and the log.
    pub async fn stop(mut self) -> (i32, String) {
        if self.child.id().is_some() {
            self.sigterm();
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("verbhost serve exits within 30 s of SIGTERM")
            .unwrap();
        (status.code().unwrap_or(-1), self.log())
    }
}
