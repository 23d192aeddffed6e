//! The code's layout holds: no import circle between sibling modules of any crate in the
//! workspace, and no source file over `MAX_LINES`. A circle is found from the paths the code
//! names (`use crate::…`, `super::…`, `self::…`, and the same paths written inline), at every
//! level of the module tree: the modules under one parent, each with its own descendants folded
//! in, may not reach each other in a ring.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A file over this many lines is two files waiting to be named.
const MAX_LINES: usize = 800;

type Module = Vec<String>;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n != "target" && n != "node_modules")
            {
                rust_files(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Each crate's source directory: `<crate>/src`.
fn crate_sources() -> Vec<PathBuf> {
    let root = workspace();
    let mut dirs = vec![root.join("shared/src"), root.join("local/src")];
    for entry in std::fs::read_dir(root.join("functions")).unwrap() {
        let src = entry.unwrap().path().join("src");
        if src.is_dir() {
            dirs.push(src);
        }
    }
    dirs
}

/// The module a file is, from its path under `src`.
fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Module = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and without what follows its first `#[cfg(test)]`
/// (a test module may reach anything).
fn code_of(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The paths of one use tree starting at `s` (after a `::`): segments, an optional `{…}` group
/// of trees, each yielding a full path. Returns the paths and the rest of the input.
fn use_tree(mut s: &str, prefix: Vec<String>) -> (Vec<Vec<String>>, &str) {
    let mut path = prefix;
    loop {
        s = s.trim_start();
        if let Some(rest) = s.strip_prefix('{') {
            let mut out = vec![];
            s = rest;
            loop {
                s = s.trim_start();
                if let Some(rest) = s.strip_prefix('}') {
                    return (out, rest);
                }
                if let Some(rest) = s.strip_prefix(',') {
                    s = rest;
                    continue;
                }
                let (paths, rest) = use_tree(s, path.clone());
                if rest.len() == s.len() {
                    // Not a tree (an expression in braces): stop here.
                    return (out, rest);
                }
                out.extend(paths);
                s = rest;
            }
        }
        let end = s.find(|c: char| !is_ident(c)).unwrap_or(s.len());
        if end == 0 {
            return (vec![path], s);
        }
        path.push(s[..end].to_string());
        s = &s[end..];
        match s.strip_prefix("::") {
            Some(rest) => s = rest,
            None => return (vec![path], s),
        }
    }
}

/// Every module path a file's code names, resolved against the module it is.
fn named_paths(code: &str, me: &Module) -> Vec<Module> {
    let mut out = vec![];
    for (i, _) in code.match_indices("::") {
        let head_start = code[..i].rfind(|c: char| !is_ident(c)).map_or(0, |p| p + 1);
        let head = &code[head_start..i];
        let base: Module = match head {
            "crate" => vec![],
            "self" => me.clone(),
            "super" => {
                // Only the first `super` of a chain starts a path.
                if code[..head_start].ends_with("::") {
                    continue;
                }
                let mut base = me.clone();
                base.pop();
                let mut rest = &code[i + 2..];
                while let Some(r) = rest.strip_prefix("super::") {
                    base.pop();
                    rest = r;
                }
                let (paths, _) = use_tree(rest, base);
                out.extend(paths);
                continue;
            }
            _ => continue,
        };
        let (paths, _) = use_tree(&code[i + 2..], base);
        out.extend(paths);
    }
    out
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &[String], modules: &BTreeSet<Module>) -> Module {
    (0..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
        .unwrap_or_default()
}

/// The rings among the children of `parent` (each child with its descendants folded in), each
/// with the edges that make it.
fn rings_under(
    parent: &Module,
    edges: &BTreeMap<Module, BTreeSet<Module>>,
) -> Vec<(BTreeSet<String>, Vec<String>)> {
    let child_of = |m: &Module| -> Option<String> {
        (m.len() > parent.len() && m[..parent.len()] == parent[..]).then(|| m[parent.len()].clone())
    };
    let mut graph: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for (from, tos) in edges {
        let Some(a) = child_of(from) else { continue };
        for to in tos {
            let Some(b) = child_of(to) else { continue };
            if a != b {
                graph
                    .entry(a.clone())
                    .or_default()
                    .entry(b.clone())
                    .or_default()
                    .push(format!("{} -> {}", from.join("::"), to.join("::")));
            }
        }
    }
    // Two children are in one ring when each reaches the other.
    let reach = |start: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.clone()];
        while let Some(n) = todo.pop() {
            for next in graph.get(&n).map(|m| m.keys()).into_iter().flatten() {
                if seen.insert(next.clone()) {
                    todo.push(next.clone());
                }
            }
        }
        seen
    };
    let nodes: Vec<String> = graph.keys().cloned().collect();
    let reaches: BTreeMap<&String, BTreeSet<String>> =
        nodes.iter().map(|n| (n, reach(n))).collect();
    let mut rings: Vec<(BTreeSet<String>, Vec<String>)> = vec![];
    for n in &nodes {
        if !reaches[n].contains(n) || rings.iter().any(|(r, _)| r.contains(n)) {
            continue;
        }
        let ring: BTreeSet<String> = nodes
            .iter()
            .filter(|m| reaches[n].contains(*m) && reaches[*m].contains(n))
            .cloned()
            .collect();
        let why = ring
            .iter()
            .flat_map(|a| {
                graph[a]
                    .iter()
                    .filter(|(b, _)| ring.contains(*b))
                    .flat_map(|(_, e)| e.clone())
            })
            .collect();
        rings.push((ring, why));
    }
    rings
}

#[test]
fn no_module_imports_a_sibling_that_imports_it_back() {
    let mut found = vec![];
    for src in crate_sources() {
        let mut files = vec![];
        rust_files(&src, &mut files);
        let modules: BTreeSet<Module> = files.iter().map(|f| module_of(&src, f)).collect();
        let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
        for file in &files {
            let me = module_of(&src, file);
            let code = code_of(&std::fs::read_to_string(file).unwrap());
            for path in named_paths(&code, &me) {
                let to = resolve(&path, &modules);
                if to != me {
                    edges.entry(me.clone()).or_default().insert(to);
                }
            }
        }
        for parent in &modules {
            for (ring, why) in rings_under(parent, &edges) {
                found.push(format!(
                    "{}: {{{}}} import each other:\n    {}",
                    src.join(parent.join("/")).display(),
                    ring.into_iter().collect::<Vec<_>>().join(", "),
                    why.join("\n    ")
                ));
            }
        }
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_finder_sees_a_circle_and_a_path_through_a_group() {
    // GIVEN two sibling modules that name each other, one through a nested use group
    let a: Module = vec!["a".into()];
    let b: Module = vec!["b".into()];
    let modules = BTreeSet::from([vec![], a.clone(), b.clone()]);
    let from_a = named_paths("use crate::{b::{Thing, other::X}, c};", &a);
    let from_b = named_paths("fn f() { super::a::call() }", &b);
    let edges = BTreeMap::from([
        (
            a.clone(),
            from_a.iter().map(|p| resolve(p, &modules)).collect(),
        ),
        (
            b.clone(),
            from_b.iter().map(|p| resolve(p, &modules)).collect(),
        ),
    ]);
    // THEN the ring {a, b} is found, and nothing else
    let rings = rings_under(&vec![], &edges);
    assert_eq!(rings.len(), 1, "{rings:?}");
    assert_eq!(
        rings[0].0,
        BTreeSet::from(["a".to_string(), "b".to_string()])
    );
}

#[test]
fn no_source_file_is_over_the_line_limit() {
    let root = workspace();
    let mut files = vec![];
    for dir in ["shared", "local", "functions", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}
