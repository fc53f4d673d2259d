//! The crate's modules import each other one way only (issue 15): the top-level
//! modules, and the files of each folder, form graphs without a cycle. A cycle means a
//! type that two capabilities share lives in one of them instead of below both (in
//! `domain`, usually), and once one is in, the next goes unnoticed; so this test reads
//! `src/` and fails naming the cycle and the files that make each of its edges.
//!
//! It reads the source as text (a lexer that skips comments and literals, and follows
//! `crate::`, `$crate::`, `self::` and `super::` paths, `use` groups included) instead
//! of asking a tool, so the check needs nothing but `cargo test`. A folder's `mod.rs`
//! (and `lib.rs` for the top level) is no node of its folder's graph: it declares its
//! children and may name any of them; a child naming an item that `mod.rs` re-exports
//! from a sibling is counted as naming that sibling (a glob, `use super::*`, is not
//! followed). `domain`, at the bottom, must name no other module and no crate that
//! does I/O.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::Path;

type ModPath = Vec<String>;

/// Within one folder: each child (file or subfolder) and, for each sibling it names, the
/// files doing so.
type Graph = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other(char),
}

/// Rust source as the tokens that make paths and modules; comments, string and
/// character literals are skipped, so a `crate::x` in a doc comment or an SQL text is
/// no import.
fn lex(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let is_ident = |c: char| c == '_' || c.is_alphanumeric();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1);
        } else if c == '\'' {
            if at(i + 1) == '\\' {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                // A lifetime: its name follows as an identifier, which names no module.
                tokens.push(Token::Other(c));
                i += 1;
            }
        } else if let Some(end) = raw_string_end(&chars, i) {
            i = end;
        } else if (c == 'b' || c == 'c') && at(i + 1) == '"' {
            i = skip_string(&chars, i + 2);
        } else if c == 'b' && at(i + 1) == '\'' {
            i += 2;
            if at(i) == '\\' {
                i += 1;
            }
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
        } else if is_ident(c) || (c == '$' && is_ident(at(i + 1))) {
            if c == 'r' && at(i + 1) == '#' {
                i += 2;
            }
            let start = i;
            i += 1;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            tokens.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push(Token::PathSep);
            i += 2;
        } else {
            tokens.push(match c {
                '{' => Token::Open,
                '}' => Token::Close,
                ',' => Token::Comma,
                other => Token::Other(other),
            });
            i += 1;
        }
    }
    tokens
}

/// The index after the closing quote of a string whose content starts at `i`.
fn skip_string(chars: &[char], mut i: usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' => i += 2,
            '"' => return i + 1,
            _ => i += 1,
        }
    }
    i
}

/// The index after a raw string (`r"…"`, `r#"…"#`, `br`/`cr` too) starting at `i`.
fn raw_string_end(chars: &[char], i: usize) -> Option<usize> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let hashes = chars[j..].iter().take_while(|&&c| c == '#').count();
    j += hashes;
    if chars.get(j) != Some(&'"') {
        return None;
    }
    j += 1;
    while j < chars.len() {
        if chars[j] == '"' && chars[j + 1..].iter().take_while(|&&c| c == '#').count() >= hashes {
            return Some(j + 1 + hashes);
        }
        j += 1;
    }
    Some(j)
}

/// One path a file names, made absolute, and the name it is known by where it is
/// imported (its last segment, or what follows `as`).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Named {
    path: ModPath,
    name: String,
}

/// Every path in `source` that starts at `crate`, `$crate`, `self` or `super`, made
/// absolute from `module`, the file's own module (inline `mod x { … }` blocks
/// followed). With `relative`, a `use` path starting at any other name is taken as
/// relative too, as a `mod.rs` names its children.
fn paths(source: &str, module: &[String], relative: bool) -> Vec<Named> {
    let tokens = lex(source);
    let mut found = Vec::new();
    let mut depth = 0;
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let here = || {
            let mut here = module.to_vec();
            here.extend(inline.iter().map(|(name, _)| name.clone()));
            here
        };
        let after_separator = i > 0 && tokens[i - 1] == Token::PathSep;
        match &tokens[i] {
            Token::Ident(word) if word == "mod" => {
                if let (Some(Token::Ident(name)), Some(Token::Open)) =
                    (tokens.get(i + 1), tokens.get(i + 2))
                {
                    depth += 1;
                    inline.push((name.clone(), depth));
                    i += 3;
                    continue;
                }
            }
            Token::Open => depth += 1,
            Token::Close => {
                if inline.last().is_some_and(|&(_, open)| open == depth) {
                    inline.pop();
                }
                depth -= 1;
            }
            Token::Ident(word)
                if !after_separator
                    && matches!(word.as_str(), "crate" | "$crate" | "self" | "super")
                    && tokens.get(i + 1) == Some(&Token::PathSep) =>
            {
                let (base, next) = anchor(&tokens, i, here());
                i = tree(&tokens, next, base, &mut found);
                continue;
            }
            Token::Ident(word) if relative && word == "use" => {
                let (base, next) = match tokens.get(i + 1) {
                    Some(Token::Ident(first))
                        if matches!(first.as_str(), "crate" | "self" | "super") =>
                    {
                        anchor(&tokens, i + 1, here())
                    }
                    _ => (here(), i + 1),
                };
                i = tree(&tokens, next, base, &mut found);
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Where a path starting at `tokens[i]` (`crate`, `$crate`, `self`, `super`, with any
/// further `super`s) is anchored, and the index of its first name after the anchor.
fn anchor(tokens: &[Token], mut i: usize, mut here: ModPath) -> (ModPath, usize) {
    loop {
        match &tokens[i] {
            Token::Ident(word) if word == "crate" || word == "$crate" => here.clear(),
            Token::Ident(word) if word == "super" => {
                here.pop();
            }
            Token::Ident(word) if word == "self" => {}
            _ => return (here, i),
        }
        if tokens.get(i + 1) != Some(&Token::PathSep) {
            return (here, i + 1);
        }
        i += 2;
    }
}

/// Reads a path or a `use` tree (`a::b`, `a::{b, c::{d, e}}`, `self`, `*`, `x as y`)
/// from `tokens[i]` under `base`; returns the index after it.
fn tree(tokens: &[Token], mut i: usize, mut base: ModPath, found: &mut Vec<Named>) -> usize {
    loop {
        match tokens.get(i) {
            Some(Token::Open) => {
                i += 1;
                while !matches!(tokens.get(i), Some(Token::Close) | None) {
                    i = tree(tokens, i, base.clone(), found);
                    if tokens.get(i) == Some(&Token::Comma) {
                        i += 1;
                    }
                }
                return i + 1;
            }
            Some(Token::Ident(word)) if word == "self" => {
                let name = base.last().cloned().unwrap_or_default();
                found.push(Named { path: base, name });
                return i + 1;
            }
            Some(Token::Ident(word)) => {
                base.push(word.clone());
                if tokens.get(i + 1) == Some(&Token::PathSep)
                    && matches!(tokens.get(i + 2), Some(Token::Ident(_) | Token::Open))
                {
                    i += 2;
                    continue;
                }
                i += 1;
                let mut name = word.clone();
                if let (Some(Token::Ident(r#as)), Some(Token::Ident(alias))) =
                    (tokens.get(i), tokens.get(i + 1))
                {
                    if r#as == "as" {
                        name = alias.clone();
                        i += 2;
                    }
                }
                found.push(Named { path: base, name });
                return i;
            }
            _ => {
                if !base.is_empty() {
                    let name = base.last().cloned().unwrap_or_default();
                    found.push(Named { path: base, name });
                }
                return i;
            }
        }
    }
}

/// A source file of the crate: its path from the crate root and its module.
struct File {
    shown: String,
    module: ModPath,
    text: String,
}

/// Every `.rs` file under `src/` but `lib.rs` (the root, which names every module) and
/// `main.rs` (another crate, the binary).
fn files() -> Vec<File> {
    fn walk(dir: &Path, module: &ModPath, files: &mut Vec<File>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
            .map(|entry| entry.expect("a directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .expect("a UTF-8 file name");
            let mut child = module.clone();
            if path.is_dir() {
                child.push(name.to_owned());
                walk(&path, &child, files);
                continue;
            }
            let Some(stem) = name.strip_suffix(".rs") else {
                continue;
            };
            if module.is_empty() && (stem == "lib" || stem == "main") {
                continue;
            }
            if stem != "mod" {
                child.push(stem.to_owned());
            }
            let root = Path::new(env!("CARGO_MANIFEST_DIR"));
            files.push(File {
                shown: path
                    .strip_prefix(root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                module: child,
                text: std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
            });
        }
    }
    let mut files = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &Vec::new(),
        &mut files,
    );
    files
}

/// Each folder's graph (the crate root's is the top-level modules'), keyed by the
/// folder's module path.
fn graphs(files: &[File]) -> BTreeMap<ModPath, Graph> {
    let modules: BTreeSet<ModPath> = files.iter().map(|f| f.module.clone()).collect();
    // What each `mod.rs` re-exports: (its module, the name) → the path it stands for.
    let mut reexports: BTreeMap<(ModPath, String), ModPath> = BTreeMap::new();
    for file in files.iter().filter(|f| f.shown.ends_with("mod.rs")) {
        for named in paths(&file.text, &file.module, true) {
            reexports.insert((file.module.clone(), named.name), named.path);
        }
    }
    // The deepest module a path names, through re-exports.
    let module_named = |mut path: ModPath| -> ModPath {
        let mut known = 0;
        for _ in 0..8 {
            while known < path.len() && modules.contains(&path[..=known]) {
                known += 1;
            }
            let Some(name) = path.get(known) else { break };
            match reexports.get(&(path[..known].to_vec(), name.clone())) {
                Some(target) if *target != path[..=known] => {
                    let mut through = target.clone();
                    through.extend_from_slice(&path[known + 1..]);
                    path = through;
                    known = 0;
                }
                _ => break,
            }
        }
        path.truncate(known);
        path
    };
    let mut graphs: BTreeMap<ModPath, Graph> = BTreeMap::new();
    for file in files {
        for named in paths(&file.text, &file.module, false) {
            let target = module_named(named.path);
            let from = &file.module;
            let Some(split) = (0..from.len().min(target.len())).find(|&k| from[k] != target[k])
            else {
                continue;
            };
            graphs
                .entry(from[..split].to_vec())
                .or_default()
                .entry(from[split].clone())
                .or_default()
                .entry(target[split].clone())
                .or_default()
                .insert(file.shown.clone());
        }
    }
    graphs
}

/// Each cycle of `graph`, as one readable paragraph per group of modules that reach
/// each other: the shortest cycle through its first module, then every edge among
/// them with the files that make it.
fn cycles(folder: &ModPath, graph: &Graph) -> Vec<String> {
    let reach = |from: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut queue: VecDeque<&str> = VecDeque::from([from]);
        while let Some(node) = queue.pop_front() {
            for next in graph.get(node).into_iter().flat_map(BTreeMap::keys) {
                if seen.insert(next.clone()) {
                    queue.push_back(next);
                }
            }
        }
        seen
    };
    let mut reported: BTreeSet<String> = BTreeSet::new();
    let mut found = Vec::new();
    let where_ = if folder.is_empty() {
        "the top-level modules".to_owned()
    } else {
        format!("the files of src/{}/", folder.join("/"))
    };
    for start in graph.keys() {
        if reported.contains(start) {
            continue;
        }
        let group: BTreeSet<String> = reach(start)
            .into_iter()
            .filter(|other| reach(other).contains(start))
            .collect();
        if group.is_empty() {
            continue;
        }
        reported.extend(group.iter().cloned());
        let mut text = format!(
            "{where_}: {} import each other in a cycle: {}\n",
            group.iter().cloned().collect::<Vec<_>>().join(", "),
            shortest_cycle(graph, start).join(" → ")
        );
        for (from, edges) in graph.iter().filter(|(from, _)| group.contains(*from)) {
            for (to, files) in edges.iter().filter(|(to, _)| group.contains(*to)) {
                let files: Vec<&str> = files.iter().map(String::as_str).collect();
                text += &format!("  {from} → {to}: {}\n", files.join(", "));
            }
        }
        found.push(text);
    }
    found
}

/// The shortest way from `start` back to itself, both ends named.
fn shortest_cycle(graph: &Graph, start: &str) -> Vec<String> {
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue: VecDeque<String> = VecDeque::from([start.to_owned()]);
    while let Some(node) = queue.pop_front() {
        for next in graph.get(&node).into_iter().flat_map(BTreeMap::keys) {
            if next == start {
                let mut way = vec![node.clone()];
                while let Some(before) = came_from.get(way.last().expect("a node")) {
                    way.push(before.clone());
                }
                way.reverse();
                way.push(start.to_owned());
                return way;
            }
            if next != start && !came_from.contains_key(next) {
                came_from.insert(next.clone(), node.clone());
                queue.push_back(next.clone());
            }
        }
    }
    vec![start.to_owned()]
}

/// Folders whose files still import each other in a cycle, and why. Each is a debt:
/// the test fails once the folder has no cycle left, so the entry goes with it.
const KNOWN_CYCLES: &[(&str, &str)] = &[];

/// Crates (and parts of std) that do I/O or serve requests: none belongs in `domain`.
const IO: &[&str] = &[
    "sqlx", "rusqlite", "tokio", "axum", "hyper", "tower", "reqwest", "lettre", "fs", "net",
];

#[test]
fn the_top_level_modules_import_each_other_one_way_only() {
    let graphs = graphs(&files());
    let top = graphs
        .get(&Vec::new())
        .expect("the modules import each other");
    let found = cycles(&Vec::new(), top);
    assert!(found.is_empty(), "{}", found.join("\n"));
}

/// The layers of docs/ARCHITECTURE.md, bottom first: a module may use its own layer
/// (one way: the test above) and the layers below, never one above.
const LAYERS: &[&[&str]] = &[
    &["domain", "clock", "history"],
    &["store"],
    &[
        "detect", "alert", "auth", "metrics", "watch", "booking", "audit",
    ],
    &["http", "web", "demo", "check", "loadtest"],
    &["app"],
    &["cli"],
];

#[test]
fn each_module_uses_only_its_own_layer_and_the_layers_below() {
    let graphs = graphs(&files());
    let top = graphs
        .get(&Vec::new())
        .expect("the modules import each other");
    let layer = |module: &str| LAYERS.iter().position(|l| l.contains(&module));
    let mut found = Vec::new();
    for (from, uses) in top {
        let Some(from_layer) = layer(from) else {
            found.push(format!(
                "src/{from} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md"
            ));
            continue;
        };
        for (to, by) in uses {
            if layer(to).is_some_and(|to_layer| to_layer > from_layer) {
                found.push(format!(
                    "{from} (layer {}) uses {to} (layer {}), above it: {}",
                    from_layer + 1,
                    layer(to).map_or(0, |l| l + 1),
                    by.iter().cloned().collect::<Vec<_>>().join(", ")
                ));
            }
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_files_of_each_folder_import_each_other_one_way_only() {
    let graphs = graphs(&files());
    let known = |folder: &ModPath| KNOWN_CYCLES.iter().any(|(k, _)| *k == folder.join("/"));
    let mut found: Vec<String> = graphs
        .iter()
        .filter(|(folder, _)| !folder.is_empty() && !known(folder))
        .flat_map(|(folder, graph)| cycles(folder, graph))
        .collect();
    for (folder, _) in KNOWN_CYCLES {
        let path: ModPath = folder.split('/').map(str::to_owned).collect();
        if graphs
            .get(&path)
            .is_none_or(|graph| cycles(&path, graph).is_empty())
        {
            found.push(format!(
                "the files of src/{folder}/ import each other one way now: remove it from \
                 KNOWN_CYCLES"
            ));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}

#[test]
fn the_domain_names_no_other_module_and_no_crate_that_does_io() {
    let files = files();
    let mut found = Vec::new();
    for file in files
        .iter()
        .filter(|f| f.module.first().is_some_and(|m| m == "domain"))
    {
        let tokens = lex(&file.text);
        for (i, pair) in tokens.windows(2).enumerate() {
            let after_separator = i > 0 && tokens[i - 1] == Token::PathSep;
            let std_part = i > 1 && tokens[i - 2] == Token::Ident("std".into());
            if let [Token::Ident(name), Token::PathSep] = pair {
                if IO.contains(&name.as_str()) && (!after_separator || std_part) {
                    found.push(format!("{}: {name}", file.shown));
                }
            }
        }
    }
    let graphs = graphs(&files);
    for (other, shown) in graphs
        .get(&Vec::new())
        .and_then(|top| top.get("domain"))
        .into_iter()
        .flatten()
    {
        found.push(format!(
            "domain → {other}: {}",
            shown.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    assert!(
        found.is_empty(),
        "domain is pure and at the bottom:\n{}",
        found.join("\n")
    );
}

#[test]
fn paths_are_read_through_use_groups_supers_and_inline_modules_but_not_comments() {
    let source = r##"
        use crate::{alpha::One, beta::{gamma::{Two, Three}, delta}};
        use super::super::epsilon::Four as Five;
        // use crate::commented::Out;
        const SQL: &str = r#"crate::quoted::Out"#;
        fn f<'a>(c: char) { let _ = crate::zeta::make::<u8>('"'); }
        macro_rules! m { () => { $crate::eta::Six } }
        mod tests { use super::*; use super::super::theta::Seven; }
    "##;
    let named: Vec<String> = paths(source, &["x".into(), "y".into(), "z".into()], false)
        .into_iter()
        .map(|n| format!("{} as {}", n.path.join("::"), n.name))
        .collect();
    assert_eq!(
        named,
        [
            "alpha::One as One",
            "beta::gamma::Two as Two",
            "beta::gamma::Three as Three",
            "beta::delta as delta",
            "x::epsilon::Four as Five",
            "zeta::make as make",
            "eta::Six as Six",
            "x::y::z as z",
            "x::y::theta::Seven as Seven",
        ]
    );
}
