//! Running commands, and saying clearly what failed.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use crate::tools::Env;

/// A step that failed: what, the command, what it said, and how to fix it.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub command: String,
    pub detail: String,
    pub fix: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed\n  command: {}\n  result:  {}\n  fix:     {}",
            self.what, self.command, self.detail, self.fix
        )
    }
}

/// `cargo`, the one that runs this xtask, with the tool PATH.
pub fn cargo(env: &Env) -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    env.command(cargo)
}

/// Shows a command the way a person would type it.
pub fn show(cmd: &Command) -> String {
    let mut s = String::new();
    for (k, v) in cmd.get_envs() {
        if k != "PATH"
            && let Some(v) = v
        {
            s.push_str(&format!("{}={} ", k.to_string_lossy(), v.to_string_lossy()));
        }
    }
    s.push_str(&cmd.get_program().to_string_lossy());
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited output; a non-zero exit is a [`Failure`].
pub fn run(cmd: &mut Command, what: &str, fix: &str) -> Result<(), Failure> {
    let shown = show(cmd);
    println!("[xtask]   $ {shown}");
    let _ = std::io::stdout().flush();
    match cmd.status() {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Failure {
            what: what.into(),
            command: shown,
            detail: status.to_string(),
            fix: fix.into(),
        }),
        Err(e) => Err(Failure {
            what: what.into(),
            command: shown,
            detail: format!("could not start it: {e}"),
            fix: fix.into(),
        }),
    }
}

/// Test counts summed over cargo test's `test result:` lines.
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl Counts {
    pub fn add(&mut self, other: Counts) {
        self.passed += other.passed;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Parses `test result: ok. 9 passed; 0 failed; 1 ignored; 0 measured; ...`.
    fn parse(line: &str) -> Option<Counts> {
        let rest = line.trim().strip_prefix("test result: ")?;
        let mut counts = Counts::default();
        for part in rest.split(';') {
            let words: Vec<&str> = part.split_whitespace().collect();
            let n = words
                .iter()
                .rev()
                .nth(1)
                .and_then(|n| n.parse::<u64>().ok());
            match (n, words.last()) {
                (Some(n), Some(&"passed")) => counts.passed = n,
                (Some(n), Some(&"failed")) => counts.failed = n,
                (Some(n), Some(&"ignored")) => counts.ignored = n,
                _ => {}
            }
        }
        Some(counts)
    }
}

/// Runs `cargo test ...`, echoing its output, and sums its result lines.
pub fn run_tests(cmd: &mut Command, what: &str, counts: &mut Counts) -> Result<(), Failure> {
    let shown = show(cmd);
    println!("[xtask]   $ {shown}");
    let fail = |detail: String| Failure {
        what: what.into(),
        command: shown.clone(),
        detail,
        fix: "read the failing test's output above".into(),
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("could not start it: {e}")))?;
    if let Some(out) = child.stdout.take() {
        let mut stdout = std::io::stdout();
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let _ = writeln!(stdout, "{line}");
            if let Some(c) = Counts::parse(&line) {
                counts.add(c);
            }
        }
    }
    let status = child.wait().map_err(|e| fail(e.to_string()))?;
    if status.success() {
        Ok(())
    } else {
        Err(fail(status.to_string()))
    }
}

/// Size of a file compressed with `gzip -9`.
pub fn gzip9_len(file: &Path) -> Result<u64, Failure> {
    let out = Command::new("gzip")
        .args(["-9", "-c"])
        .arg(file)
        .output()
        .map_err(|e| Failure {
            what: "measuring the compressed size".into(),
            command: format!("gzip -9 -c {}", file.display()),
            detail: e.to_string(),
            fix: "install gzip (apt-get install gzip)".into(),
        })?;
    Ok(out.stdout.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cargo_test_result_lines() {
        let c = Counts::parse(
            "test result: FAILED. 9 passed; 2 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s",
        )
        .unwrap();
        assert_eq!((c.passed, c.failed, c.ignored), (9, 2, 1));
        assert!(Counts::parse("running 3 tests").is_none());
    }
}
