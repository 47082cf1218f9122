//! A `strata serve` child process and the CLI run against it, for tests
//! that drive the real binary end to end.

use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// A `strata serve` child on its own data dir and socket, killed when
/// dropped (also when a test panics).
pub struct ServeChild {
    child: Child,
    pub sock: PathBuf,
    pub log: PathBuf,
    tmp: tempfile::TempDir,
}

impl Drop for ServeChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServeChild {
    pub fn start() -> ServeChild {
        Self::start_with(&[], &[])
    }

    /// With more `serve` flags, and environment (HOME is the data dir's
    /// parent unless `env` sets it).
    pub fn start_with(args: &[&str], env: &[(&str, &str)]) -> ServeChild {
        let tmp = tempfile::tempdir().unwrap();
        let sock = tmp.path().join("s.sock");
        let log = tmp.path().join("serve.log");
        let mut child = Command::new(BIN)
            .arg("serve")
            .arg("--data-dir")
            .arg(tmp.path().join("data"))
            .arg("--socket")
            .arg(&sock)
            .args(["--metrics-addr", "off"])
            .args(args)
            .env_remove("STRATA_CONFIG")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("XDG_RUNTIME_DIR")
            .env("HOME", tmp.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        super::wait_for_serve(&mut child, &sock, &log);
        ServeChild {
            child,
            sock,
            log,
            tmp,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    /// `strata --socket S <args>`.
    pub fn run<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Output {
        Command::new(BIN)
            .arg("--socket")
            .arg(&self.sock)
            .args(args)
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_ADDR")
            .env_remove("STRATA_SOCKET")
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// `strata --socket S ARGS` with no registry credentials but those the
    /// test gives: HOME is `home`, no auth file variables, plus `env`.
    pub fn run_clean(&self, home: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
        let mut c = Command::new(BIN);
        c.arg("--socket")
            .arg(&self.sock)
            .args(args)
            .env("HOME", home)
            .env_remove("XDG_RUNTIME_DIR")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("STRATA_REGISTRY_CREDS")
            .env_remove("STRATA_CONFIG")
            .env_remove("STRATA_ADDR")
            .env_remove("STRATA_SOCKET")
            .stdin(Stdio::null());
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    /// Runs a command that must succeed; its stdout.
    pub fn ok<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> String {
        let out = self.run(args);
        let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
        assert!(
            out.status.success(),
            "strata {shown:?} failed ({}): {}\ndaemon log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            fs::read_to_string(&self.log).unwrap_or_default()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    pub fn json<S: AsRef<std::ffi::OsStr>>(&self, args: &[S]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `strata images --json -n NS`, by name.
    pub fn images(&self, ns: &str) -> BTreeMap<String, Value> {
        let v = self.json(&["images", "--json", "-n", ns]);
        let mut m = BTreeMap::new();
        for e in v.as_array().unwrap() {
            let name = e["name"].as_str().unwrap().to_string();
            assert!(
                m.insert(name.clone(), e.clone()).is_none(),
                "{name} twice: {v:#}"
            );
        }
        m
    }

    /// `strata ls --json -n NS`, by digest.
    pub fn ls(&self, ns: &str) -> BTreeMap<String, Value> {
        let v = self.json(&["ls", "--json", "-n", ns]);
        v.as_array()
            .unwrap()
            .iter()
            .map(|b| (b["digest"].as_str().unwrap().to_string(), b.clone()))
            .collect()
    }
}

/// The error line of a failed command (warnings aside): there must be one.
pub fn failure(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "should have failed: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err
        .lines()
        .filter(|l| !l.starts_with("strata: warning:") && !l.trim().is_empty())
        .collect();
    assert_eq!(lines.len(), 1, "one line expected: {err}");
    lines[0].to_string()
}
