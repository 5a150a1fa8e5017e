//! A real SMTP server for tests (feature `testing`): aiosmtpd (PyPI) running
//! `smtp_server.py`, on a free loopback port, stopped by its pid when dropped. Each accepted
//! message is parsed with Python's MIME parser and kept as JSON (headers, both bodies decoded,
//! the transfer encoding, whether the client authenticated, its port). Recipients starting
//! with `reject` are refused with 550, `busy` with 451; AUTH accepts `keel` / `s3cret`.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The running server.
pub struct SmtpServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
    child: Child,
}

impl SmtpServer {
    /// Starts one; with `require_auth`, a client must authenticate.
    pub fn start(require_auth: bool) -> SmtpServer {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("smtp_server.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script).arg(dir.path());
        if require_auth {
            cmd.arg("--auth");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 with aiosmtpd (pip install aiosmtpd; .ci/run installs it)");
        let mut line = String::new();
        let _ = BufReader::new(child.stdout.take().expect("piped")).read_line(&mut line);
        let port = line.trim().parse().unwrap_or_else(|_| {
            panic!("the SMTP server did not start (is aiosmtpd installed?): {line:?}")
        });
        SmtpServer { port, dir, child }
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// The messages received so far, in order.
    pub fn received(&self) -> Vec<Value> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|x| x == "json"));
        files.sort();
        files
            .iter()
            .filter_map(|p| serde_json::from_slice(&std::fs::read(p).ok()?).ok())
            .collect()
    }

    /// How many messages arrived.
    pub fn count(&self) -> usize {
        self.received().len()
    }

    /// Waits (20 s at most) until at least `n` messages arrived; returns them all.
    pub async fn messages(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "{n} messages did not arrive (got {})",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
