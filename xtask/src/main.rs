//! Kite's project commands. `cargo xtask serve`, `cargo xtask test`, `cargo xtask dist`.
//!
//! Each command first installs what it needs and is missing (see `tools`), printing one
//! progress line per step, and stops with what failed, the command, and how to fix it.
//! Standard library only, so it compiles in seconds on a fresh machine.

// xtask is a command-line program: printing is its interface.
#![allow(clippy::print_stdout)]

mod proc;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use proc::{Counts, Failure, cargo, run, run_tests};

const USAGE: &str = "\
cargo xtask <command>

Commands:
  serve [ARGS...]  install missing tools, build the app (release) and the gateway, then run
                   `kite serve ARGS...` (app at http://127.0.0.1:8080/, MQTT at ws://127.0.0.1:8080/mqtt)
  test             install missing tools and Debian packages, then run everything CI runs:
                   fmt, clippy (host + wasm32), host tests, end-to-end tests, wasm tests
  dist             build the release binary and app into target/dist and print the app's size
  bench broker     Kite's embedded broker vs Debian's mosquitto, side by side (release builds;
                   about 25 minutes: every figure the median of 3 runs, `--runs 1` for one);
                   prints the table and writes target/bench/broker.md
  bench gateway    MQTT over WebSocket to mosquitto: TCP, mosquitto's listener, websockify,
                   Kite's gateway, medians of 3 runs (about 6 minutes); writes target/bench/gateway.md
  bench app        the browser app in headless Chromium taking 20,000 msgs/s over 1,000
                   topics for 10 s (about 1 minute); writes target/bench/app.md
  bench history    the history store (ingest, series queries, export, bytes on disk),
                   ingest through the embedded broker with and without the recorder (at
                   saturation, and 50,000 msgs/s recorded beside a load), and the app's
                   chart over 1,000,000 points in headless Chromium (about 5 minutes;
                   `--only store|broker|paced|chart` runs one part); writes
                   target/bench/history.md
  bench devices    the device monitor with 10,000 devices: the devices API's answer times,
                   memory per device, and the broker's deliveries with and without the
                   monitor (about 1 minute); writes target/bench/devices.md
  fuzz [TARGET] [SECS]
                   open-ended fuzzing with cargo-fuzz (installed once from crates.io):
                   TARGET `broker` (the embedded broker, three clients, default), `inbound` (the
                   gateway's checks of what browsers send) or `decode` (the codec), for SECS
                   seconds (default 600); crashes land in fuzz/artifacts/TARGET/. Bounded,
                   seeded runs of all three are part of `cargo xtask test`
  help             this text
";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let command = args.next().unwrap_or_default();
    let rest: Vec<String> = args.collect();
    let root = workspace_root();
    let result = match command.as_str() {
        "serve" => serve(&root, &rest),
        "test" => test(&root, &rest),
        "dist" => dist(&root).map(|_| ()),
        "bench" => bench(&root, &rest),
        "fuzz" => fuzz(&root, &rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprintln!("xtask: unknown command {other:?}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("\n[xtask] error: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask bench broker|gateway [--quick]`: the load generator against Kite and the
/// alternatives (see tests/src/bin/kite-bench.rs).
fn bench(root: &Path, args: &[String]) -> Result<(), Failure> {
    let which = args.first().map(String::as_str).unwrap_or_default();
    if ![
        "broker",
        "gateway",
        "app",
        "history",
        "devices",
        "dashboard",
        "embed",
    ]
    .contains(&which)
    {
        return Err(Failure {
            what: "choosing a benchmark".into(),
            command: format!("cargo xtask bench {}", args.join(" ")),
            detail: "unknown benchmark".into(),
            fix: "use `cargo xtask bench broker`, `cargo xtask bench gateway`, `cargo xtask bench app`, `cargo xtask bench history`, `cargo xtask bench devices`, `cargo xtask bench dashboard` or `cargo xtask bench embed` (the codec's: `cargo bench -p kite-mqtt`)".into(),
        });
    }
    let system = tools::ensure_test_packages()?;
    let websockify = if which == "gateway" {
        Some(tools::ensure_websockify()?)
    } else {
        None
    };
    let env = if ["app", "history", "dashboard", "embed"].contains(&which) {
        // The app is measured as it ships: built by trunk in release.
        let env = tools::ensure_build_tools(root)?;
        build_app(root, &env)?;
        env
    } else {
        tools::Env::new(&[])
    };
    step("building kite and kite-bench (release)");
    run(
        cargo(&env)
            .args([
                "build",
                "--release",
                "-p",
                "kite-gateway",
                "-p",
                "kite-tests",
            ])
            .args(["--bin", "kite", "--bin", "kite-bench"])
            .current_dir(root),
        "building the benchmark",
        "read cargo's error above",
    )?;
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir).map_err(|e| Failure {
        what: "creating target/bench".into(),
        command: format!("mkdir -p {}", out_dir.display()),
        detail: e.to_string(),
        fix: "check the permissions of target/".into(),
    })?;
    step(&format!(
        "running kite-bench {which} (every run against freshly started servers)"
    ));
    let mut cmd = Command::new(root.join("target/release/kite-bench"));
    cmd.arg(which)
        .arg("--kite")
        .arg(root.join("target/release/kite"))
        .arg("--mosquitto")
        .arg(system.mosquitto())
        .arg("--write")
        .arg(out_dir.join(format!("{which}.md")));
    if let Some(dir) = websockify {
        cmd.arg("--websockify").arg(dir);
    }
    if ["app", "history", "dashboard", "embed"].contains(&which) {
        cmd.arg("--assets").arg(app_dir(root));
        system.apply(&mut cmd);
    }
    cmd.args(&args[1..]);
    run(
        &mut cmd,
        "running the benchmark",
        "read its output above; `--quick` runs a tenth of the load",
    )
}

/// `cargo xtask fuzz [TARGET] [SECS]`: cargo-fuzz on a stable toolchain (libFuzzer needs the
/// sanitizer flags of nightly: `RUSTC_BOOTSTRAP=1` unlocks them on this one).
fn fuzz(root: &Path, args: &[String]) -> Result<(), Failure> {
    let target = args.first().map_or("broker", String::as_str);
    if !["broker", "inbound", "decode"].contains(&target) {
        return Err(Failure {
            what: "choosing a fuzz target".into(),
            command: format!("cargo xtask fuzz {}", args.join(" ")),
            detail: format!("unknown target {target:?}"),
            fix: "use `broker`, `inbound` or `decode`".into(),
        });
    }
    let secs: u64 = match args.get(1).map(|s| s.parse()) {
        None => 600,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            return Err(Failure {
                what: "reading how long to fuzz".into(),
                command: format!("cargo xtask fuzz {}", args.join(" ")),
                detail: format!("{:?} is not a number of seconds", args[1]),
                fix: "e.g. `cargo xtask fuzz broker 300`".into(),
            });
        }
    };
    let env = tools::Env::new(&[]);
    tools::ensure_cargo_fuzz(&env)?;
    step(&format!(
        "fuzzing {target} for {secs} s (crashes: fuzz/artifacts/{target}/)"
    ));
    run(
        cargo(&env)
            .args(["fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={secs}"))
            .env("RUSTC_BOOTSTRAP", "1")
            .current_dir(root.join("fuzz")),
        "fuzzing",
        "read the output above: a build error, or a crash libFuzzer saved under fuzz/artifacts/TARGET/ — copy that file to broker/tests/fuzzing/regressions/broker/ or gateway/tests/fuzzing/regressions/inbound/ so every `cargo xtask test` replays it, then fix it",
    )
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map_or(manifest.clone(), Path::to_path_buf)
}

/// Where trunk writes the built app (also set in Trunk.toml).
fn app_dir(root: &Path) -> PathBuf {
    root.join("target/dist/app")
}

/// The app, then `kite.js` beside it.
fn build_app(root: &Path, env: &tools::Env) -> Result<(), Failure> {
    build_trunk_app(root, env)?;
    build_embed(root, env)
}

/// `kite.js` for other web pages (issue #22): the `kite-embed` crate (kite-mqtt's session
/// through wasm-bindgen) as `kite-core.js` + `kite-core_bg.wasm`, optimized as the app is,
/// and the page-facing module `embed/js/kite.js`, all into the app's directory.
fn build_embed(root: &Path, env: &tools::Env) -> Result<(), Failure> {
    step("building kite.js (kite-embed, wasm-bindgen, wasm-opt)");
    run(
        cargo(env)
            .args([
                "build",
                "-p",
                "kite-embed",
                // no_std: no std panic and formatting machinery in the wasm (embed/Cargo.toml).
                "--no-default-features",
                "--target",
                tools::WASM_TARGET,
                "--profile",
                "wasm-release",
            ])
            .current_dir(root),
        "building kite-embed for wasm32",
        "read cargo's error above",
    )?;
    let app = app_dir(root);
    let wasm = root.join("target/wasm32-unknown-unknown/wasm-release/kite_embed.wasm");
    run(
        env.command("wasm-bindgen")
            .args([
                "--target",
                "web",
                "--no-typescript",
                "--out-name",
                "kite-core",
                "--out-dir",
            ])
            .arg(&app)
            .arg(&wasm)
            .current_dir(root),
        "generating kite.js's bindings (wasm-bindgen)",
        "the wasm-bindgen CLI must match Cargo.lock's version (`cargo xtask` installs it)",
    )?;
    let core = app.join("kite-core_bg.wasm");
    run(
        env.command("wasm-opt")
            .args(["-Oz", "--strip-debug", "--strip-producers"])
            .args(WASM_FEATURES)
            .arg(&core)
            .arg("-o")
            .arg(&core)
            .current_dir(root),
        "optimizing kite.js's wasm (wasm-opt)",
        "read wasm-opt's error above",
    )?;
    for (dir, name) in [
        ("embed/js", "kite.js"),
        ("embed/js", "kite.d.ts"),
        ("docs", "embed-example.html"),
    ] {
        let from = root.join(dir).join(name);
        std::fs::copy(&from, app.join(name)).map_err(|e| Failure {
            what: format!("copying {name} into the app's directory"),
            command: format!("cp {} {}", from.display(), app.display()),
            detail: e.to_string(),
            fix: format!("check that {dir}/{name} exists"),
        })?;
    }
    build_classic_embed(root, env, &wasm, &app)?;
    // Minified as they ship; the sources stay readable in embed/js (and kite.d.ts documents).
    for name in ["kite.js", "kite-core.js", "kite.iife.js"] {
        let file = app.join(name);
        run(
            env.command("esbuild")
                .arg(&file)
                .args(["--minify", "--log-level=warning", "--allow-overwrite"])
                .arg(format!("--outfile={}", file.display()))
                .current_dir(root),
            &format!("minifying {name} (esbuild)"),
            "read esbuild's error above: embed/js/kite.js must stay valid JavaScript",
        )?;
    }
    Ok(())
}

/// `kite.iife.js`, for a classic `<script>`: wasm-bindgen's `no-modules` bindings and
/// `kite.js` without its `import`/`export`, in one function that sets `window.Kite`; its
/// wasm is `kite-classic_bg.wasm`.
fn build_classic_embed(
    root: &Path,
    env: &tools::Env,
    wasm: &Path,
    app: &Path,
) -> Result<(), Failure> {
    let scratch = root.join("target/embed-classic");
    run(
        env.command("wasm-bindgen")
            .args([
                "--target",
                "no-modules",
                "--no-typescript",
                "--out-name",
                "kite-classic",
                "--out-dir",
            ])
            .arg(&scratch)
            .arg(wasm)
            .current_dir(root),
        "generating kite.iife.js's bindings (wasm-bindgen --target no-modules)",
        "the wasm-bindgen CLI must match Cargo.lock's version (`cargo xtask` installs it)",
    )?;
    run(
        env.command("wasm-opt")
            .args(["-Oz", "--strip-debug", "--strip-producers"])
            .args(WASM_FEATURES)
            .arg(scratch.join("kite-classic_bg.wasm"))
            .arg("-o")
            .arg(app.join("kite-classic_bg.wasm"))
            .current_dir(root),
        "optimizing kite.iife.js's wasm (wasm-opt)",
        "read wasm-opt's error above",
    )?;
    let read = |path: &Path| {
        std::fs::read_to_string(path).map_err(|e| Failure {
            what: format!("reading {}", path.display()),
            command: format!("cat {}", path.display()),
            detail: e.to_string(),
            fix: "run `cargo xtask dist` again".into(),
        })
    };
    let glue = read(&scratch.join("kite-classic.js"))?;
    let module = read(&root.join("embed/js/kite.js"))?;
    let swaps = [
        (
            "import init, { Session, matches } from \"./kite-core.js\";",
            "const init = wasm_bindgen, { Session, matches } = wasm_bindgen;",
        ),
        (
            "const CORE = new URL(\"./kite-core_bg.wasm\", import.meta.url);",
            "const CORE = new URL(\"./kite-classic_bg.wasm\", document.currentScript.src);",
        ),
        ("export class Kite", "class Kite"),
    ];
    let mut classic = module;
    for (from, to) in swaps {
        if !classic.contains(from) {
            return Err(Failure {
                what: "making kite.iife.js from embed/js/kite.js".into(),
                command: "(string replacement in xtask)".into(),
                detail: format!("embed/js/kite.js no longer has `{from}`"),
                fix: "keep that line in kite.js, or change build_classic_embed with it".into(),
            });
        }
        classic = classic.replacen(from, to, 1);
    }
    let out = app.join("kite.iife.js");
    std::fs::write(
        &out,
        format!("// kite.iife.js: a classic script that defines window.Kite (see kite.js).\n(() => {{\n{glue}\n{classic}\nwindow.Kite = Kite;\n}})();\n"),
    )
    .map_err(|e| Failure {
        what: "writing kite.iife.js".into(),
        command: format!("write {}", out.display()),
        detail: e.to_string(),
        fix: "check the disk space and permissions of target/".into(),
    })
}

/// The WebAssembly features wasm-opt may use (as index.html gives trunk for the app).
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-mutable-globals",
    "--enable-reference-types",
    "--enable-multivalue",
];

fn build_trunk_app(root: &Path, env: &tools::Env) -> Result<(), Failure> {
    step("building the app (trunk build --release --offline)");
    // trunk runs cargo offline: fetch first so a fresh checkout has its crates.
    run(
        cargo(env).arg("fetch").current_dir(root),
        "cargo fetch",
        "check the network access to crates.io",
    )?;
    run(
        env.command("trunk")
            .args(["build", "--release", "--offline"])
            .current_dir(root),
        "building the app with trunk",
        "read trunk's error above; `cargo xtask test` checks the same code with clippy",
    )
}

fn build_gateway(root: &Path, env: &tools::Env) -> Result<PathBuf, Failure> {
    step("building the gateway (cargo build --release -p kite-gateway)");
    run(
        cargo(env)
            .args(["build", "--release", "-p", "kite-gateway"])
            .current_dir(root),
        "building the gateway",
        "read cargo's error above",
    )?;
    Ok(root.join("target/release/kite"))
}

fn serve(root: &Path, args: &[String]) -> Result<(), Failure> {
    let env = tools::ensure_build_tools(root)?;
    build_app(root, &env)?;
    let kite = build_gateway(root, &env)?;
    step(&format!("running kite serve {}", args.join(" ")));
    let mut cmd = Command::new(&kite);
    cmd.arg("serve")
        .args(args)
        .env("KITE_ASSETS", app_dir(root));
    let status = cmd.status().map_err(|e| Failure {
        what: "starting the gateway".into(),
        command: format!("{cmd:?}"),
        detail: e.to_string(),
        fix: "build it with `cargo build --release -p kite-gateway`".into(),
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(Failure {
            what: "kite serve stopped with an error".into(),
            command: format!("{cmd:?}"),
            detail: status.to_string(),
            fix: "read kite's message above (`kite serve --help` lists the options)".into(),
        })
    }
}

fn dist(root: &Path) -> Result<PathBuf, Failure> {
    let env = tools::ensure_build_tools(root)?;
    build_app(root, &env)?;
    let kite = build_gateway(root, &env)?;
    let dist = root.join("target/dist");
    let target = dist.join("kite");
    std::fs::copy(&kite, &target).map_err(|e| Failure {
        what: "copying the kite binary into target/dist".into(),
        command: format!("cp {} {}", kite.display(), target.display()),
        detail: e.to_string(),
        fix: "check the disk space and permissions of target/".into(),
    })?;
    println!(
        "\n[xtask] target/dist/kite and target/dist/app are ready; run: target/dist/kite serve --upstream mqtt://HOST:1883"
    );
    print_bundle_size(&app_dir(root))?;
    Ok(dist)
}

/// Prints the app's wasm + js + css, raw and gzip -9, and the total against the 250 KB budget
/// (issue #21; ARCHITECTURE.md, "Size budget").
fn print_bundle_size(app: &Path) -> Result<(), Failure> {
    let entries = std::fs::read_dir(app).map_err(|e| Failure {
        what: "reading the built app".into(),
        command: format!("ls {}", app.display()),
        detail: e.to_string(),
        fix: "build it with `cargo xtask dist`".into(),
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("wasm" | "js" | "css")
            )
        })
        .collect();
    files.sort();
    let name = |p: &PathBuf| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_owned()
    };
    let (classic, rest): (Vec<PathBuf>, Vec<PathBuf>) = files
        .into_iter()
        .partition(|p| name(p) == "kite.iife.js" || name(p).starts_with("kite-classic"));
    let (embed, app): (Vec<PathBuf>, Vec<PathBuf>) = rest
        .into_iter()
        .partition(|p| name(p) == "kite.js" || name(p).starts_with("kite-core"));
    print_sizes("app bundle", &app, "budget: 250 KB")?;
    print_sizes(
        "kite.js for other pages",
        &embed,
        "budget: 40 KB with its components",
    )?;
    print_sizes("kite.iife.js, the same as a classic script", &classic, "")
}

/// Each file raw and gzip -9, and the total against `budget`.
fn print_sizes(what: &str, files: &[PathBuf], budget: &str) -> Result<(), Failure> {
    println!("[xtask] {what} (gzip -9):");
    let (mut raw_total, mut gz_total) = (0u64, 0u64);
    for file in files {
        let raw = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
        let gz = proc::gzip9_len(file)?;
        raw_total += raw;
        gz_total += gz;
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        println!("  {:>9} B  {:>9} B gz  {name}", raw, gz);
    }
    println!(
        "  {:>9} B  {:>9} B gz  total ({:.1} KB gzip{}{budget})",
        raw_total,
        gz_total,
        gz_total as f64 / 1000.0,
        if budget.is_empty() { "" } else { "; " }
    );
    Ok(())
}

fn test(root: &Path, args: &[String]) -> Result<(), Failure> {
    if let Some(a) = args.first() {
        return Err(Failure {
            what: format!("unknown argument {a:?}"),
            command: "cargo xtask test".into(),
            detail: "`cargo xtask test` takes no arguments".into(),
            fix: "run `cargo test -p CRATE NAME` for a single test".into(),
        });
    }
    let env = tools::ensure_build_tools(root)?;
    let system = tools::ensure_test_packages()?;
    let mut results: Vec<(&str, Result<(), Failure>, f64)> = Vec::new();
    let mut counts = Counts::default();
    let mut stage = |name: &'static str, f: &mut dyn FnMut() -> Result<(), Failure>| {
        step(name);
        let start = Instant::now();
        let r = f();
        if let Err(e) = &r {
            eprintln!("[xtask] {name}: FAILED: {e}");
        }
        results.push((name, r, start.elapsed().as_secs_f64()));
    };
    stage("cargo fmt --check", &mut || {
        run(
            cargo(&env)
                .args(["fmt", "--all", "--", "--check"])
                .current_dir(root),
            "formatting check",
            "run `cargo fmt --all`",
        )
    });
    stage("clippy (host)", &mut || {
        run(
            cargo(&env)
                .args([
                    "clippy",
                    "--workspace",
                    "--all-targets",
                    "--",
                    "-D",
                    "warnings",
                ])
                .current_dir(root),
            "clippy on the host",
            "fix the warnings above",
        )
    });
    stage("clippy (wasm32: shared, frontend, embed)", &mut || {
        let clippy = |packages: &[&str], what: &str, fix: &str| {
            run(
                cargo(&env)
                    .args(["clippy", "--target", tools::WASM_TARGET])
                    .args(packages)
                    .args(["--", "-D", "warnings"])
                    .current_dir(root),
                what,
                fix,
            )
        };
        clippy(
            // Benches (criterion) are not browser targets.
            &[
                "-p",
                "kite-mqtt",
                "-p",
                "kite-frontend",
                "-p",
                "kite-embed",
                "--lib",
                "--bins",
                "--tests",
            ],
            "clippy for wasm32",
            "fix the warnings above; `shared` must build for wasm32-unknown-unknown",
        )?;
        // kite.js's build: kite-embed and kite-mqtt without std.
        clippy(
            &["-p", "kite-embed", "--no-default-features", "--lib"],
            "clippy for wasm32 without std (kite.js)",
            "fix the warnings above; kite-mqtt must build without its `std` feature",
        )
    });
    stage("build the app (trunk, release)", &mut || {
        build_app(root, &env)
    });
    stage("host tests (unit, integration, end-to-end)", &mut || {
        let mut cmd = cargo(&env);
        cmd.args(["test", "--workspace"])
            .current_dir(root)
            .env("KITE_ASSETS", app_dir(root));
        system.apply(&mut cmd);
        run_tests(&mut cmd, "host tests", &mut counts)?;
        // Alone, kite-embed builds kite-mqtt as kite.js ships it: a client's codec, without
        // the `server` feature the workspace run switches on for the broker's crates.
        run_tests(
            cargo(&env)
                .args(["test", "-p", "kite-embed"])
                .current_dir(root),
            "kite-embed's tests in kite.js's client build",
            &mut counts,
        )
    });
    stage("wasm tests in headless Chromium", &mut || {
        let mut cmd = cargo(&env);
        cmd.args([
            "test",
            "--target",
            tools::WASM_TARGET,
            "-p",
            "kite-mqtt",
            "-p",
            "kite-frontend",
        ])
        .current_dir(root)
        .env(
            "CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER",
            "wasm-bindgen-test-runner",
        )
        .env("WASM_BINDGEN_TEST_TIMEOUT", "120");
        system.apply(&mut cmd);
        run_tests(&mut cmd, "wasm tests", &mut counts)
    });
    println!("\n[xtask] summary");
    let mut failed = 0;
    for (name, result, secs) in &results {
        let mark = if result.is_ok() { "ok  " } else { "FAIL" };
        failed += usize::from(result.is_err());
        println!("  {mark}  {name:<45} {secs:>7.1}s");
    }
    // The closing line CI reads: every test of every cargo test run, summed.
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    if failed == 0 {
        Ok(())
    } else {
        Err(Failure {
            what: format!("{failed} of {} checks", results.len()),
            command: "cargo xtask test".into(),
            detail: "see the FAILED lines above".into(),
            fix: "fix them and run `cargo xtask test` again".into(),
        })
    }
}

/// One progress line.
pub fn step(what: &str) {
    println!("[xtask] ▸ {what}");
}
