//! Installing what the project needs on a fresh machine, once. Second runs only check.
//!
//! | tool                  | how                                                    |
//! |-----------------------|--------------------------------------------------------|
//! | wasm32 target         | `rustup target add wasm32-unknown-unknown`              |
//! | trunk 0.22.1          | `cargo install --locked` without fat LTO (~13 min)      |
//! | wasm-bindgen-cli      | `cargo install`, version read from Cargo.lock (~4 min)  |
//! | wasm-opt (binaryen)   | `npm install binaryen@132` into the user's cache dir    |
//! | esbuild 0.25.12       | `npm install` into the cache dir (minifies kite.js)     |
//! | chromium, chromedriver, mosquitto, mosquitto-clients | `apt-get install` (as root)  |
//! | paho-mqtt 2.1.0 (tests) | `python3 -m pip install --target` into the cache dir  |

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::proc::{Failure, run, show};
use crate::step;

pub const WASM_TARGET: &str = "wasm32-unknown-unknown";
const TRUNK_VERSION: &str = "0.22.1";
const BINARYEN_VERSION: &str = "132";
const ESBUILD_VERSION: &str = "0.25.12";
const PAHO_VERSION: &str = "2.1.0";
const DEBIAN_PACKAGES: [(&str, &str); 4] = [
    ("chromium", "chromium"),
    ("chromium-driver", "chromedriver"),
    ("mosquitto", "mosquitto"),
    ("mosquitto-clients", "mosquitto_pub"),
];

/// The environment for child processes: PATH with cargo's bin dir and the tool dirs first.
#[derive(Debug, Clone)]
pub struct Env {
    path: OsString,
}

impl Env {
    pub fn new(extra: &[PathBuf]) -> Self {
        let mut dirs: Vec<PathBuf> = extra.to_vec();
        dirs.push(cargo_home().join("bin"));
        if let Some(path) = std::env::var_os("PATH") {
            dirs.extend(std::env::split_paths(&path));
        }
        // /usr/sbin holds mosquitto; it is not on a normal user's PATH.
        dirs.push(PathBuf::from("/usr/sbin"));
        let path = std::env::join_paths(dirs).unwrap_or_default();
        Self { path }
    }

    /// A command with this environment's PATH.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let program = program.as_ref();
        let resolved = self
            .which(program)
            .unwrap_or_else(|| PathBuf::from(program));
        let mut cmd = Command::new(resolved);
        cmd.env("PATH", &self.path);
        cmd
    }

    /// Finds an executable on this environment's PATH.
    pub fn which(&self, program: impl AsRef<OsStr>) -> Option<PathBuf> {
        let program = program.as_ref();
        if Path::new(program).components().count() > 1 {
            return Some(PathBuf::from(program));
        }
        std::env::split_paths(&self.path)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    }

    /// The first line a tool prints for `--version`, if it runs.
    fn version(&self, program: &str) -> Option<String> {
        let path = self.which(program)?;
        let out = Command::new(path)
            .arg("--version")
            .env("PATH", &self.path)
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        out.status
            .success()
            .then(|| text.lines().next().unwrap_or("").trim().to_owned())
    }
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cargo"))
}

fn home() -> PathBuf {
    std::env::var_os("HOME").map_or_else(|| PathBuf::from("/root"), PathBuf::from)
}

/// Where npm-installed tools live: outside the repository, so a fresh clone reuses them.
fn cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("kite")
}

/// Where npm installs `package` at `version`: one directory per version.
fn npm_dir(package: &str, version: &str) -> PathBuf {
    cache_dir().join(format!("{package}-{version}"))
}

/// Makes sure the wasm toolchain is present; returns the environment to run it in.
pub fn ensure_build_tools(root: &Path) -> Result<Env, Failure> {
    let binaryen_bin = npm_dir("binaryen", BINARYEN_VERSION).join("node_modules/.bin");
    let esbuild_bin = npm_dir("esbuild", ESBUILD_VERSION).join("node_modules/.bin");
    let env = Env::new(&[binaryen_bin, esbuild_bin]);
    let wasm_bindgen = wasm_bindgen_version(root)?;
    check_trunk_toml(root, &wasm_bindgen)?;

    // 1. The wasm32 target.
    let installed = env
        .command("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| Failure {
            what: "asking rustup for the installed targets".into(),
            command: "rustup target list --installed".into(),
            detail: e.to_string(),
            fix: "install Rust with rustup (https://rustup.rs); Kite needs rustup for the wasm32 target".into(),
        })?;
    if String::from_utf8_lossy(&installed.stdout)
        .lines()
        .any(|l| l.trim() == WASM_TARGET)
    {
        progress(1, "Rust target wasm32-unknown-unknown", "present");
    } else {
        progress(
            1,
            "Rust target wasm32-unknown-unknown",
            "installing (rustup, under a minute)",
        );
        run(
            env.command("rustup").args(["target", "add", WASM_TARGET]),
            "adding the wasm32 target",
            "check the network access to rustup's server, then run `rustup target add wasm32-unknown-unknown`",
        )?;
    }

    // 2. trunk.
    let want = format!("trunk {TRUNK_VERSION}");
    match env.version("trunk") {
        Some(v) if v == want => progress(2, &want, "present"),
        found => {
            let found = found.map_or_else(|| "missing".to_owned(), |v| format!("found {v:?}"));
            progress(
                2,
                &want,
                &format!("{found}, installing with cargo install (about 13 min on 2 cores, once)"),
            );
            // trunk's own release profile uses fat LTO (~23 min here); thin codegen halves it.
            run(
                env.command(cargo_bin())
                    .args(["install", "--locked", "--ignore-rust-version", "--force"])
                    .arg(format!("trunk@{TRUNK_VERSION}"))
                    .env("CARGO_PROFILE_RELEASE_LTO", "false")
                    .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
                "installing trunk",
                "read cargo's error above; the install needs crates.io and about 2 GB of disk",
            )?;
        }
    }

    // 3. wasm-bindgen-cli, exactly the version in Cargo.lock (it brings wasm-bindgen-test-runner).
    let want = format!("wasm-bindgen {wasm_bindgen}");
    let runner_ok = env
        .version("wasm-bindgen-test-runner")
        .is_some_and(|v| v.ends_with(&wasm_bindgen));
    match env.version("wasm-bindgen") {
        Some(v) if v == want && runner_ok => progress(3, &want, "present"),
        found => {
            let found = found.map_or_else(|| "missing".to_owned(), |v| format!("found {v:?}"));
            progress(
                3,
                &want,
                &format!("{found}, installing wasm-bindgen-cli (about 4 min, once)"),
            );
            // Not --locked: the registry here lacks one locked dependency version.
            run(
                env.command(cargo_bin())
                    .args(["install", "--force"])
                    .arg(format!("wasm-bindgen-cli@{wasm_bindgen}")),
                "installing wasm-bindgen-cli",
                "read cargo's error above; the version must equal wasm-bindgen in Cargo.lock",
            )?;
        }
    }

    // 4. wasm-opt from npm's binaryen (Debian's is too old for wasm-bindgen's output).
    npm_tool(
        &env,
        4,
        ("binaryen", BINARYEN_VERSION),
        "wasm-opt",
        &format!("version {BINARYEN_VERSION}"),
    )?;
    // 5. esbuild, which minifies kite.js and its bindings (trunk minifies the app's own).
    npm_tool(
        &env,
        5,
        ("esbuild", ESBUILD_VERSION),
        "esbuild",
        ESBUILD_VERSION,
    )?;
    Ok(env)
}

fn cargo_bin() -> OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

fn progress(n: usize, what: &str, state: &str) {
    println!("[xtask] ({n}/5) {what:<40} {state}");
}

/// Makes sure `bin` of npm's `package`@`version` is in its cache directory and first on
/// `env`'s PATH (its `--version` containing `version_says`); installs it with npm if not.
fn npm_tool(
    env: &Env,
    n: usize,
    (package, version): (&str, &str),
    bin: &str,
    version_says: &str,
) -> Result<(), Failure> {
    let want = format!("{bin} ({package} {version})");
    let dir = npm_dir(package, version);
    let path = dir.join("node_modules/.bin").join(bin);
    let present = env
        .version(path.to_str().unwrap_or(bin))
        .is_some_and(|v| v.contains(version_says));
    if present && env.which(bin) == Some(path.clone()) {
        progress(n, &want, "present");
        return Ok(());
    }
    progress(
        n,
        &want,
        &format!("installing with npm into {}", dir.display()),
    );
    if env.which("npm").is_none() {
        return Err(Failure {
            what: format!("installing {bin}"),
            command: format!("npm install --prefix {} {package}@{version}", dir.display()),
            detail: "npm is not installed".into(),
            fix: "install Node.js 20 and npm (apt-get install nodejs npm), then run again".into(),
        });
    }
    run(
        env.command("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--no-save",
                "--prefix",
            ])
            .arg(&dir)
            .arg(format!("{package}@{version}")),
        &format!("installing {bin} (npm {package})"),
        "check the network access to the npm registry",
    )
}

/// The `wasm-bindgen` version pinned in Cargo.lock.
fn wasm_bindgen_version(root: &Path) -> Result<String, Failure> {
    let lock = root.join("Cargo.lock");
    let text = std::fs::read_to_string(&lock).map_err(|e| Failure {
        what: "reading Cargo.lock".into(),
        command: format!("cat {}", lock.display()),
        detail: e.to_string(),
        fix: "run `cargo generate-lockfile` in the workspace".into(),
    })?;
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        if line.trim() == "name = \"wasm-bindgen\""
            && let Some(v) = lines
                .next()
                .and_then(|l| l.trim().strip_prefix("version = \""))
        {
            return Ok(v.trim_end_matches('"').to_owned());
        }
    }
    Err(Failure {
        what: "finding wasm-bindgen in Cargo.lock".into(),
        command: format!("grep -A1 'name = \"wasm-bindgen\"' {}", lock.display()),
        detail: "no wasm-bindgen package in the lock file".into(),
        fix: "the frontend depends on wasm-bindgen; run `cargo generate-lockfile`".into(),
    })
}

/// trunk must ask for the wasm-bindgen we install, or it would try to download another.
fn check_trunk_toml(root: &Path, version: &str) -> Result<(), Failure> {
    let path = root.join("Trunk.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let line = format!("wasm_bindgen = \"{version}\"");
    if text.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    Err(Failure {
        what: "checking Trunk.toml".into(),
        command: format!("grep wasm_bindgen {}", path.display()),
        detail: format!("Trunk.toml does not pin `{line}` (Cargo.lock has wasm-bindgen {version})"),
        fix: format!("set `{line}` under [tools] in Trunk.toml"),
    })
}

/// The Debian programs the end-to-end and wasm tests drive.
#[derive(Debug, Clone)]
pub struct System {
    chromedriver: PathBuf,
    mosquitto: PathBuf,
    paho: PathBuf,
}

impl System {
    /// mosquitto's path.
    pub fn mosquitto(&self) -> &Path {
        &self.mosquitto
    }

    /// Tells the tests where the programs are.
    pub fn apply(&self, cmd: &mut Command) {
        cmd.env("CHROMEDRIVER", &self.chromedriver)
            .env("KITE_MOSQUITTO", &self.mosquitto)
            .env("KITE_PAHO", &self.paho);
    }
}

/// Makes sure chromium, chromedriver, mosquitto and mosquitto_pub are installed.
pub fn ensure_test_packages() -> Result<System, Failure> {
    let env = Env::new(&[]);
    let missing: Vec<&str> = DEBIAN_PACKAGES
        .iter()
        .filter(|(_, bin)| env.which(bin).is_none())
        .map(|(pkg, _)| *pkg)
        .collect();
    if missing.is_empty() {
        println!(
            "[xtask] Debian packages {:<29} present",
            "(chromium, mosquitto)"
        );
    } else {
        let list = missing.join(" ");
        println!("[xtask] Debian packages {list}: missing");
        if !is_root() {
            return Err(Failure {
                what: "installing the test programs".into(),
                command: format!("apt-get install -y {list}"),
                detail: "not running as root, so xtask will not install system packages".into(),
                fix: format!(
                    "run `sudo apt-get update && sudo apt-get install -y {list}`, then run again"
                ),
            });
        }
        step(&format!("installing {list} with apt-get (about 1 min)"));
        run(
            Command::new("apt-get").args(["update", "-q"]),
            "apt-get update",
            "check the network access to Debian's mirrors",
        )?;
        let mut install = Command::new("apt-get");
        install
            .args(["install", "-y", "-q"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        let shown = show(&install);
        run(
            &mut install,
            "installing Debian packages",
            &format!("run `{shown}` by hand and read its error"),
        )?;
    }
    let find = |bin: &str| {
        env.which(bin).ok_or_else(|| Failure {
            what: format!("finding {bin}"),
            command: format!("which {bin}"),
            detail: "not on PATH after installing".into(),
            fix: "check the apt-get output above".into(),
        })
    };
    Ok(System {
        chromedriver: find("chromedriver")?,
        mosquitto: find("mosquitto")?,
        paho: ensure_paho()?,
    })
}

/// websockify (Python, PyPI) for `cargo xtask bench gateway`, into the cache dir; returns the
/// directory to put on PYTHONPATH.
pub fn ensure_websockify() -> Result<PathBuf, Failure> {
    pip_target(
        "websockify",
        "0.13.0",
        "websockify/__init__.py",
        "the gateway benchmark",
    )
}

/// A Python package from PyPI into `~/.cache/kite/<name>-<version>` (`pip install --target`:
/// no virtualenv, nothing system-wide); `marker` is a file that proves it is there.
fn pip_target(name: &str, version: &str, marker: &str, for_what: &str) -> Result<PathBuf, Failure> {
    let dir = cache_dir().join(format!("{name}-{version}"));
    if dir.join(marker).is_file() {
        println!("[xtask] {:<33} present", format!("{name} {version}"));
        return Ok(dir);
    }
    step(&format!(
        "installing {name} {version} (Python, for {for_what}) into {}",
        dir.display()
    ));
    let has_pip = Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_pip && is_root() {
        step("installing python3-pip with apt-get");
        let mut apt = Command::new("apt-get");
        apt.args(["install", "-y", "-q", "python3-pip"])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(
            &mut apt,
            "installing python3-pip",
            "run `apt-get update && apt-get install -y python3-pip` by hand and read its error",
        )?;
    }
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
    ])
    .arg(&dir)
    .arg(format!("{name}=={version}"))
    .env("PIP_ROOT_USER_ACTION", "ignore");
    run(
        &mut pip,
        &format!("installing {name} from PyPI"),
        "check that python3 and pip are installed (apt-get install python3-pip) and PyPI is reachable",
    )?;
    Ok(dir)
}

/// Eclipse Paho's Python client for the device interop tests, from PyPI into the cache dir
/// (a `--target` directory: no virtualenv, nothing system-wide). Returns the directory to put
/// on PYTHONPATH.
fn ensure_paho() -> Result<PathBuf, Failure> {
    pip_target(
        "paho-mqtt",
        PAHO_VERSION,
        "paho/mqtt/client.py",
        "the device interop tests",
    )
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure `cargo fuzz` is installed (from crates.io, once: about 2 minutes).
pub fn ensure_cargo_fuzz(env: &Env) -> Result<(), Failure> {
    let present = env
        .command(cargo_bin())
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if present {
        progress(1, "cargo-fuzz", "present");
        return Ok(());
    }
    progress(
        1,
        "cargo-fuzz",
        "missing, installing with cargo install (about 2 min, once)",
    );
    run(
        env.command(cargo_bin())
            .args(["install", "--locked", "cargo-fuzz"]),
        "installing cargo-fuzz",
        "check the network access to crates.io, then run `cargo install --locked cargo-fuzz`",
    )
}
