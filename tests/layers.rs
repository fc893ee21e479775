//! The top-level modules of `src/` form layers, in the order the data flows (issue 10):
//! a module may name only modules in a lower layer, so no two modules can import each other,
//! directly or through others.
//!
//! The check reads the sources rather than asking the compiler: it strips comments and
//! literals, tracks inline `mod` blocks, and resolves every `crate::X`, `crate::{X, ..}` and
//! `super::` path to the top-level module it names. Doc comments do not count (a link in a
//! comment is not an import). Test modules inside `src/` count like any other code.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

/// Lowest first. `main.rs` is its own crate on top of all of these and is not read.
/// `logging` is not in the issue's list: it needs `config`'s `LogFormat` and only the agent
/// uses it, so it sits beside `vault`.
const LAYERS: &[&[&str]] = &[
    &["credential", "lease", "time"],
    &["state", "render", "sink", "notify", "drain"],
    &["config"],
    &["vault", "logging"],
    &["metrics", "status"],
    &["http"],
    &["secret"],
    &["agent"],
];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

/// One reference from a file to a top-level module.
#[derive(Debug, PartialEq)]
struct Reference {
    target: String,
    line: usize,
}

#[test]
fn top_level_modules_form_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let unplaced: Vec<&String> = modules.iter().filter(|m| layer_of(m).is_none()).collect();
    assert!(
        unplaced.is_empty(),
        "top-level modules not placed in a layer (add them to LAYERS in tests/layers.rs): {unplaced:?}"
    );

    let mut edges = 0;
    let mut offending = Vec::new();
    for file in rust_files(&src) {
        let rel = file.strip_prefix(&src).expect("under src/");
        let Some(path) = module_path(rel) else {
            continue; // lib.rs and main.rs
        };
        let text = fs::read_to_string(&file).expect("readable source file");
        let from = path[0].clone();
        let from_layer = layer_of(&from).expect("every module is placed (checked above)");
        for r in references(&text, &path) {
            if r.target == from || !modules.contains(&r.target) {
                continue; // itself, or an item of the crate root
            }
            edges += 1;
            let to_layer = layer_of(&r.target).expect("every module is placed");
            if to_layer >= from_layer {
                offending.push(format!(
                    "{from} (layer {}) -> {} (layer {}) at src/{}:{}",
                    from_layer + 1,
                    r.target,
                    to_layer + 1,
                    rel.display(),
                    r.line
                ));
            }
        }
    }
    // The scan itself must work: the agent names a dozen modules.
    assert!(
        edges > 20,
        "found only {edges} cross-module references; is the scan broken?"
    );
    assert!(
        offending.is_empty(),
        "modules refer to a module in the same or a higher layer:\n  {}",
        offending.join("\n  ")
    );
}

/// `src/*.rs` (but lib.rs and main.rs) and `src/*/mod.rs`.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for entry in fs::read_dir(src).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let folder = path.is_dir() && path.join("mod.rs").is_file();
        let file = path.extension().is_some_and(|e| e == "rs") && name != "lib" && name != "main";
        if folder || file {
            found.insert(name.to_string());
        }
    }
    found
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).expect("readable directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// `vault/auth.rs` is `[vault, auth]`, `vault/mod.rs` is `[vault]`; `None` for the crate roots.
fn module_path(rel: &Path) -> Option<Vec<String>> {
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_string())
        .collect();
    if parts.len() == 1 && (parts[0] == "lib" || parts[0] == "main") {
        return None;
    }
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    Some(parts)
}

/// The top-level modules that `text` (the file at module `path`) refers to.
fn references(text: &str, path: &[String]) -> Vec<Reference> {
    let tokens = tokenize(&strip(text));
    let mut out = Vec::new();
    let mut module: Vec<String> = path.to_vec();
    // For each open brace: whether it opened an inline `mod name { .. }`.
    let mut braces: Vec<bool> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let (tok, line) = (&tokens[i].0, tokens[i].1);
        let at = |k: usize| tokens.get(k).map(|t| t.0.as_str());
        match tok.as_str() {
            "mod" if at(i + 2) == Some("{") => {
                module.push(tokens[i + 1].0.clone());
                braces.push(true);
                i += 3;
                continue;
            }
            "{" => braces.push(false),
            "}" if braces.pop() == Some(true) => {
                module.pop();
            }
            "crate" | "$crate" if at(i + 1) == Some("::") => {
                i = named_after(&tokens, i + 2, line, &mut out);
                continue;
            }
            "super" if at(i + 1) == Some("::") => {
                let mut ups = 0;
                let mut k = i;
                while at(k) == Some("super") && at(k + 1) == Some("::") {
                    ups += 1;
                    k += 2;
                }
                if ups >= module.len() {
                    // Climbed to the crate root: the next segment names a top-level module.
                    i = named_after(&tokens, k, line, &mut out);
                } else {
                    out.push(Reference {
                        target: module[0].clone(),
                        line,
                    });
                    i = k;
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// After `crate::`: a name, or a `{ a, b::c, .. }` group. Returns the index to go on from.
fn named_after(
    tokens: &[(String, usize)],
    i: usize,
    line: usize,
    out: &mut Vec<Reference>,
) -> usize {
    match tokens.get(i).map(|t| t.0.as_str()) {
        Some("{") => {
            let mut depth = 0;
            let mut item_start = true;
            let mut k = i;
            while let Some((tok, _)) = tokens.get(k) {
                match tok.as_str() {
                    "{" => {
                        depth += 1;
                        item_start = depth == 1;
                    }
                    "}" => {
                        depth -= 1;
                        if depth == 0 {
                            return k + 1;
                        }
                    }
                    "," => item_start = depth == 1,
                    name if item_start && depth == 1 => {
                        if is_ident(name) && name != "self" {
                            out.push(Reference {
                                target: name.to_string(),
                                line,
                            });
                        }
                        item_start = false;
                    }
                    _ => {}
                }
                k += 1;
            }
            k
        }
        Some(name) if is_ident(name) => {
            out.push(Reference {
                target: name.to_string(),
                line,
            });
            i + 1
        }
        _ => i,
    }
}

fn is_ident(s: &str) -> bool {
    s.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers (with a leading `$`), `::`, and single punctuation characters, with line numbers.
fn tokenize(text: &str) -> Vec<(String, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' || c == '$' {
            let start = i;
            i += 1;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push((chars[start..i].iter().collect(), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push(("::".to_string(), line));
            i += 2;
        } else {
            out.push((c.to_string(), line));
            i += 1;
        }
    }
    out
}

/// Blanks out comments and string and character literals, keeping line breaks.
fn strip(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |out: &mut String, s: &[char]| {
        out.extend(s.iter().map(|&ch| if ch == '\n' { '\n' } else { ' ' }));
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let prev_ident = i > 0 && ident(c[i - 1]);
        let end = if c[i] == '/' && c.get(i + 1) == Some(&'/') {
            let mut k = i;
            while k < c.len() && c[k] != '\n' {
                k += 1;
            }
            k
        } else if c[i] == '/' && c.get(i + 1) == Some(&'*') {
            let (mut k, mut depth) = (i + 2, 1);
            while k < c.len() && depth > 0 {
                if c[k] == '/' && c.get(k + 1) == Some(&'*') {
                    depth += 1;
                    k += 2;
                } else if c[k] == '*' && c.get(k + 1) == Some(&'/') {
                    depth -= 1;
                    k += 2;
                } else {
                    k += 1;
                }
            }
            k
        } else if c[i] == 'r' && !prev_ident && matches!(c.get(i + 1), Some('"') | Some('#')) {
            // A raw string r"..", r#".."#: ends at a quote followed by as many hashes.
            let mut k = i + 1;
            let mut hashes = 0;
            while c.get(k) == Some(&'#') {
                hashes += 1;
                k += 1;
            }
            if c.get(k) != Some(&'"') {
                out.push(c[i]);
                i += 1;
                continue;
            }
            k += 1;
            loop {
                if k >= c.len() {
                    break k;
                }
                if c[k] == '"' && (1..=hashes).all(|h| c.get(k + h) == Some(&'#')) {
                    break k + 1 + hashes;
                }
                k += 1;
            }
        } else if c[i] == '"' {
            let mut k = i + 1;
            while k < c.len() && c[k] != '"' {
                k += if c[k] == '\\' { 2 } else { 1 };
            }
            k + 1
        } else if c[i] == '\'' && c.get(i + 1) == Some(&'\\') {
            let mut k = i + 2;
            while k < c.len() && c[k] != '\'' {
                k += 1;
            }
            k + 1
        } else if c[i] == '\'' && c.get(i + 2) == Some(&'\'') {
            i + 3
        } else {
            out.push(c[i]);
            i += 1;
            continue;
        };
        let end = end.min(c.len());
        blank(&mut out, &c[i..end]);
        i = end;
    }
    out
}

// The scanner's own tests: each shape of reference, and what must not count.

fn targets(text: &str, path: &[&str]) -> Vec<String> {
    let path: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    references(text, &path)
        .into_iter()
        .map(|r| r.target)
        .collect()
}

#[test]
fn crate_paths_and_groups_are_found() {
    let text = "use crate::state::State;\nuse crate::{config::Config, vault, self};\nfn f() { crate::time::round(x); }\n";
    assert_eq!(
        targets(text, &["agent"]),
        ["state", "config", "vault", "time"]
    );
    let refs = references(text, &["agent".to_string()]);
    assert_eq!(refs[0].line, 1);
    assert_eq!(refs[3].line, 3);
}

#[test]
fn super_resolves_through_files_and_inline_modules() {
    // In src/http/probes.rs, `super::super::testing` inside `mod tests` is http::testing.
    let text = "mod tests {\n use super::super::testing::router;\n}\nuse super::router::Router;\n";
    assert_eq!(targets(text, &["http", "probes"]), ["http", "http"]);
    // In src/config.rs, `super::` in `mod tests` is config; `super::super::x` is the root's x.
    let text = "mod tests { use super::*; mod deeper { use super::super::super::state::X; } }";
    assert_eq!(targets(text, &["config"]), ["config", "state"]);
    // From src/vault/mod.rs, `super::config` is the crate root's config.
    assert_eq!(
        targets("use super::config::VaultConfig;", &["vault"]),
        ["config"]
    );
}

#[test]
fn comments_and_literals_do_not_count() {
    let text = r##"
        // crate::metrics::x
        /* crate::agent /* nested */ crate::secret */
        /// [`crate::http`]
        let s = "crate::status::page";
        let r = r#"crate::config " still raw"#;
        let c = '"'; let q = '\''; fn f<'a>(x: &'a str) {}
        use crate::lease::Lease;
    "##;
    assert_eq!(targets(text, &["state"]), ["lease"]);
}

#[test]
fn module_paths_follow_the_file_layout() {
    let p = |s: &str| module_path(Path::new(s));
    assert_eq!(
        p("vault/auth.rs"),
        Some(vec!["vault".into(), "auth".into()])
    );
    assert_eq!(p("config/mod.rs"), Some(vec!["config".into()]));
    assert_eq!(p("state.rs"), Some(vec!["state".into()]));
    assert_eq!(p("lib.rs"), None);
}
