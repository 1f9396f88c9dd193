//! The house rules of STYLE.md and ARCHITECTURE.md that a tool can check,
//! checked on every `make test` (as rust-analyzer's tidy tests do):
//!
//! - every file under `src/` starts with a `//!` paragraph;
//! - no file under `src/` is longer than 700 lines;
//! - `src/modes/` never imports fjall or Raft (`fjall`, the `raft` crate,
//!   `core::raft`, `core::storage`);
//! - `src/core/` never reads argv or the environment, never exits the
//!   process, never installs signal handlers, and never imports `modes`;
//! - no import cycle between the modules of any folder of `src/`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failed test

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Longest file allowed under `src/`, lines.
const MAX_LINES: usize = 700;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, recursively, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn rel(path: &Path) -> String {
    path.strip_prefix(src()).unwrap().display().to_string()
}

/// The text of a file without its comments (line comments only: the rules
/// below concern code, and docs may name what the code must not do).
fn code_of(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn every_source_file_has_a_header_and_a_bounded_length() {
    let mut problems = Vec::new();
    for path in rust_files(&src()) {
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.starts_with("//!") {
            problems.push(format!("{}: does not start with a //! header", rel(&path)));
        }
        let lines = text.lines().count();
        if lines > MAX_LINES {
            problems.push(format!(
                "{}: {lines} lines, more than {MAX_LINES}",
                rel(&path)
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Lines of the files under `dir` (relative to `src/`) whose code contains
/// one of `needles`.
fn offenders(dir: &str, needles: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for path in rust_files(&src().join(dir)) {
        let code = code_of(&std::fs::read_to_string(&path).unwrap());
        for (n, line) in code.lines().enumerate() {
            for needle in needles {
                if line.contains(needle) {
                    out.push(format!("{}:{}: {}", rel(&path), n + 1, line.trim()));
                }
            }
        }
    }
    out
}

#[test]
fn modes_never_touch_storage_or_raft() {
    let found = offenders(
        "modes",
        &["fjall", "use raft", "raft::", "core::raft", "core::storage"],
    );
    assert!(
        found.is_empty(),
        "modes/ reaches into storage or Raft:\n{}",
        found.join("\n")
    );
}

#[test]
fn core_never_reads_argv_or_env_exits_or_handles_signals() {
    let found = offenders(
        "core",
        &[
            "env::args",
            "env::var",
            "process::exit",
            "tokio::signal",
            "signal_hook",
            "crate::modes",
        ],
    );
    assert!(
        found.is_empty(),
        "core/ reads argv/env, exits, handles signals or imports modes:\n{}",
        found.join("\n")
    );
}

/// For one folder: its children (files and subfolders, by name) and which
/// siblings each one imports (`crate::<folder path>::<sibling>` anywhere in
/// its files, or `super::<sibling>` in its own top file).
fn sibling_imports(dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let module_path = {
        let r = dir.strip_prefix(src()).unwrap();
        let mut p = String::from("crate");
        for part in r.components() {
            p.push_str("::");
            p.push_str(&part.as_os_str().to_string_lossy());
        }
        p
    };
    let mut children: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().to_string();
        if name == "mod" || name == "lib" || name == "main" {
            continue;
        }
        if path.is_dir() {
            children.entry(name).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            children.entry(name).or_default().push(path);
        }
    }
    let names: BTreeSet<String> = children.keys().cloned().collect();
    let mut graph = BTreeMap::new();
    for (name, files) in &children {
        let mut deps = BTreeSet::new();
        for file in files {
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            let top_file = file.parent() == Some(dir)
                || file.file_name().is_some_and(|f| f == "mod.rs")
                    && file.parent().and_then(Path::parent) == Some(dir);
            for other in &names {
                if other == name {
                    continue;
                }
                let absolute = format!("{module_path}::{other}");
                let uses_absolute = code.match_indices(&absolute).any(|(i, _)| {
                    let next = code[i + absolute.len()..].chars().next();
                    !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                });
                let relative = format!("super::{other}");
                let uses_relative = top_file
                    && code.match_indices(&relative).any(|(i, _)| {
                        let next = code[i + relative.len()..].chars().next();
                        !next.is_some_and(|c| c.is_alphanumeric() || c == '_')
                    });
                if uses_absolute || uses_relative {
                    deps.insert(other.clone());
                }
            }
        }
        graph.insert(name.clone(), deps);
    }
    graph
}

/// A cycle in `graph`, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_string(), 1);
        stack.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()).copied().unwrap_or(0) {
                1 => {
                    let start = stack.iter().position(|n| n == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(node.to_string(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if state.get(node.as_str()).copied().unwrap_or(0) == 0 {
            let mut stack = Vec::new();
            if let Some(c) = visit(node, graph, &mut state, &mut stack) {
                return Some(c);
            }
        }
    }
    None
}

#[test]
fn no_import_cycles_between_sibling_modules() {
    let mut dirs = vec![src()];
    let mut cycles = Vec::new();
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            }
        }
        if let Some(cycle) = find_cycle(&sibling_imports(&dir)) {
            cycles.push(format!("{}: {}", dir.display(), cycle.join(" -> ")));
        }
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| {
        (
            k.to_string(),
            v.into_iter().map(str::to_string).collect::<BTreeSet<_>>(),
        )
    })
    .collect();
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    let acyclic: BTreeMap<String, BTreeSet<String>> = [("a", vec!["b"]), ("b", vec![])]
        .into_iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                v.into_iter().map(str::to_string).collect::<BTreeSet<_>>(),
            )
        })
        .collect();
    assert_eq!(find_cycle(&acyclic), None);
}
