//! The gateway's modules form no circle: no module imports from a module that imports it back
//! (ARCHITECTURE.md). Read from the sources: every `crate::a::b` path, every `super::x` and
//! every path through a child module (`env::apply` in `config`) is an edge from the module
//! that writes it to the module it names; test modules (`#[cfg(test)] mod tests`) and
//! comments are left out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

type Graph = BTreeMap<String, BTreeSet<String>>;

/// The module name of a source file (`config/mod.rs` is `config`, `config/env.rs`
/// `config::env`); `None` for the crate roots.
fn module_name(rel: &str) -> Option<String> {
    let rel = rel.strip_suffix(".rs")?;
    if rel == "lib" || rel == "main" {
        return None;
    }
    Some(rel.strip_suffix("/mod").unwrap_or(rel).replace('/', "::"))
}

/// The code of a file without its test module and comments.
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths written after `prefix` (`crate::`, `super::`, or a word boundary), as their
/// segments.
fn paths_after(code: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(i) = code[from..].find(prefix) {
        let start = from + i;
        from = start + prefix.len();
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        if prefix != "crate::"
            && prefix != "super::"
            && start > 1
            && &code[start - 2..start] == "::"
        {
            continue;
        }
        let rest = &code[from..];
        let path: Vec<String> = rest
            .split("::")
            .map(|seg| {
                seg.chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|seg| !seg.is_empty())
            .collect();
        if !path.is_empty() {
            out.push(path);
        }
    }
    out
}

/// The module graph of a crate's sources: (path relative to `src/`, text) pairs.
fn graph(files: &[(String, String)]) -> Graph {
    let modules: BTreeMap<String, String> = files
        .iter()
        .filter_map(|(rel, text)| Some((module_name(rel)?, code(text))))
        .collect();
    let mut g = Graph::new();
    for (m, code) in &modules {
        let edges = g.entry(m.clone()).or_default();
        let mut add = |target: String| {
            if &target != m {
                edges.insert(target);
            }
        };
        // The longest prefix of a path that is a module.
        let longest = |base: &[String], path: &[String]| -> Option<String> {
            (1..=path.len()).rev().find_map(|k| {
                let name = base
                    .iter()
                    .chain(&path[..k])
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("::");
                modules.contains_key(&name).then_some(name)
            })
        };
        for path in paths_after(code, "crate::") {
            if let Some(target) = longest(&[], &path) {
                add(target);
            }
        }
        let segments: Vec<String> = m.split("::").map(str::to_owned).collect();
        let parent = &segments[..segments.len() - 1];
        if !parent.is_empty() {
            for path in paths_after(code, "super::") {
                add(longest(parent, &path).unwrap_or_else(|| parent.join("::")));
            }
        }
        // A child module named by its own name (`env::apply` in `config`).
        let children: Vec<&String> = modules
            .keys()
            .filter(|c| {
                c.strip_prefix(&format!("{m}::"))
                    .is_some_and(|r| !r.contains("::"))
            })
            .collect();
        for child in children {
            let own = child.rsplit("::").next().unwrap_or(child);
            if !paths_after(code, &format!("{own}::")).is_empty() {
                add(child.clone());
            }
        }
    }
    g
}

/// A circle of modules, if there is one.
fn circle(g: &Graph) -> Option<Vec<String>> {
    fn visit(
        g: &Graph,
        m: &str,
        done: &mut BTreeSet<String>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut c = path[i..].to_vec();
            c.push(m.to_owned());
            return Some(c);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for next in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(g, next, done, path) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|m| visit(g, m, &mut done, &mut Vec::new()))
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((rel, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn the_gateway_modules_form_no_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let g = graph(&files);
    // The reader is reading what it should: known edges are found.
    assert!(g["http"].contains("state"), "{g:#?}");
    assert!(g["config::check"].contains("config::env"), "{g:#?}");
    assert!(g["config::check"].contains("config"), "{g:#?}");
    if let Some(c) = circle(&g) {
        panic!(
            "the gateway's modules import each other in a circle: {} — move what both need into a module of its own",
            c.join(" → ")
        );
    }
}

#[test]
fn a_circle_is_found() {
    let files = [
        ("a.rs", "use crate::b::X;\n"),
        ("b.rs", "pub struct X;\nfn f() { crate::c::go() }\n"),
        ("c/mod.rs", "pub fn go() { d::f() }\n"),
        // A child that names its parent closes a circle too; comments and tests do not count.
        (
            "c/d.rs",
            "pub fn f() { super::super::a::y() } // crate::x\n",
        ),
        ("lib.rs", "mod a;\n"),
    ];
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(p, t)| ((*p).to_owned(), (*t).to_owned()))
        .collect();
    let g = graph(&files);
    assert_eq!(g["c"], BTreeSet::from(["c::d".to_owned()]));
    assert_eq!(g["c::d"], BTreeSet::from(["c".to_owned()]));
    let c = circle(&g).expect("c → c::d → c");
    assert!(c.len() >= 3, "{c:?}");
    let without: Vec<(String, String)> = files.into_iter().filter(|(p, _)| p != "c/d.rs").collect();
    assert_eq!(circle(&graph(&without)), None);
}
