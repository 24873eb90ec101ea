//! docs/configuration.md lists exactly the environment variables the code reads,
//! so the reference cannot drift from `src/config.rs`.
//!
//! The variables of `src/config.rs` are the upper-case string literals of its
//! code (comments and the test module left out): every read names its variable
//! with one, whatever helper does the reading. Reading the configuration through
//! a recording lookup checks that scan from the other side. Variables read
//! anywhere else in `src/` must be in the table of those read outside config.rs.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use lambda_batches::config::Config;

const DOCS: &str = "docs/configuration.md";
/// The table of the variables `src/config.rs` reads.
const CONFIG_SECTION: &str = "## Variables";
/// The table of the variables read elsewhere (libraries, fault injection).
const OUTSIDE_SECTION: &str = "## Read outside `src/config.rs`";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// The string literals of Rust source, outside comments. Enough for this
/// crate's own files: plain `"…"` strings with escapes; no raw strings needed.
fn string_literals(source: &str) -> Vec<String> {
    let mut literals = Vec::new();
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            // A char literal may be a quote ('"'); skip it whole.
            '\'' => {
                let rest: String = chars.clone().take(3).collect();
                if rest.starts_with("\"'") {
                    chars.nth(1);
                } else if rest.starts_with("\\\"'") {
                    chars.nth(2);
                }
            }
            '"' => {
                let mut literal = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            chars.next();
                        }
                        '"' => break,
                        c => literal.push(c),
                    }
                }
                literals.push(literal);
            }
            _ => {}
        }
    }
    literals
}

fn is_variable_name(text: &str) -> bool {
    text.len() > 1
        && text.starts_with(|c: char| c.is_ascii_uppercase())
        && text
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// The variables `src/config.rs` names in its code (not its tests).
fn config_rs_variables() -> BTreeSet<String> {
    let source = read(&root().join("src/config.rs"));
    let code = source.split("#[cfg(test)]").next().unwrap_or_default();
    string_literals(code)
        .into_iter()
        .filter(|literal| is_variable_name(literal))
        .collect()
}

/// The variables `Config::from_lookup` asks for, in configurations that take
/// each of its branches.
fn variables_read_by_config() -> BTreeSet<String> {
    let configurations: [&[(&str, &str)]; 4] = [
        &[],
        &[("BATCHES_AUTH", "jwt")],
        &[("BATCHES_AUTH", "api-keys")],
        &[
            ("BATCHES_TABLE", "batches"),
            ("BATCHES_BUCKET", "files"),
            ("BATCHES_QUEUE_URL", "https://sqs.example/queue"),
            ("BATCHES_API_KEYS", "key:tenant"),
        ],
    ];
    let asked = RefCell::new(BTreeSet::new());
    for vars in configurations {
        let lookup = |name: &str| {
            asked.borrow_mut().insert(name.to_string());
            vars.iter()
                .find(|(variable, _)| *variable == name)
                .map(|(_, value)| value.to_string())
        };
        if let Err(e) = Config::from_lookup(lookup) {
            panic!("the configuration {vars:?} should be valid: {e}");
        }
    }
    asked.into_inner()
}

/// The variable names in the first column of the table under `heading`.
fn documented(heading: &str) -> BTreeSet<String> {
    let docs = read(&root().join(DOCS));
    let section = docs
        .split_once(&format!("\n{heading}\n"))
        .map(|(_, after)| after.split("\n## ").next().unwrap_or_default())
        .unwrap_or_else(|| panic!("{DOCS} has no section {heading:?}"));
    let mut names = BTreeSet::new();
    for row in section.lines().filter(|line| line.starts_with("| `")) {
        let first_cell = row.split('|').nth(1).unwrap_or_default();
        for (index, part) in first_cell.split('`').enumerate() {
            if index % 2 == 1 && is_variable_name(part) {
                names.insert(part.to_string());
            }
        }
    }
    assert!(
        !names.is_empty(),
        "{DOCS}: the table under {heading:?} lists no variable"
    );
    names
}

fn difference(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

#[test]
fn the_configuration_reference_lists_exactly_the_variables_config_rs_reads() {
    let code = config_rs_variables();
    let docs = documented(CONFIG_SECTION);

    let undocumented = difference(&code, &docs);
    let not_read = difference(&docs, &code);
    assert!(
        undocumented.is_empty() && not_read.is_empty(),
        "{DOCS} ({CONFIG_SECTION}) and src/config.rs disagree.\n\
         read by src/config.rs but not documented: {undocumented:?}\n\
         documented but not read by src/config.rs: {not_read:?}"
    );
}

#[test]
fn every_variable_the_configuration_asks_for_is_one_the_scan_of_config_rs_found() {
    let scanned = config_rs_variables();
    let asked = variables_read_by_config();

    let missed = difference(&asked, &scanned);
    assert!(
        missed.is_empty(),
        "Config::from_lookup reads {missed:?}, which the scan of src/config.rs's literals \
         does not find: name each variable with a string literal in src/config.rs"
    );
    // Not a vacuous check: the configurations above do reach the reads.
    assert!(asked.contains("BATCHES_JWT_TENANT_CLAIM") && asked.contains("PORT"));
}

/// `std::env::var("NAME")` and `var_os` calls in `src/` outside config.rs, by file.
fn reads_outside_config_rs() -> BTreeMap<String, PathBuf> {
    let mut reads = BTreeMap::new();
    let mut pending = vec![root().join("src")];
    while let Some(dir) = pending.pop() {
        let entries = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && !path.ends_with("src/config.rs")
            {
                let source = read(&path);
                for call in ["env::var(\"", "env::var_os(\""] {
                    for (at, _) in source.match_indices(call) {
                        let rest = &source[at + call.len()..];
                        let name = rest.split('"').next().unwrap_or_default();
                        reads.insert(name.to_string(), path.clone());
                    }
                }
            }
        }
    }
    reads
}

#[test]
fn variables_read_outside_config_rs_are_documented_as_such() {
    let outside = documented(OUTSIDE_SECTION);
    let config = documented(CONFIG_SECTION);

    let undocumented: Vec<String> = reads_outside_config_rs()
        .into_iter()
        .filter(|(name, _)| !outside.contains(name))
        .map(|(name, path)| format!("{name} ({})", path.display()))
        .collect();
    assert!(
        undocumented.is_empty(),
        "read outside src/config.rs but not in {DOCS} ({OUTSIDE_SECTION}): {undocumented:?}; \
         read settings in src/config.rs, or document the variable there"
    );
    let both: Vec<&String> = outside.intersection(&config).collect();
    assert!(both.is_empty(), "{DOCS} lists {both:?} in both tables");
}
