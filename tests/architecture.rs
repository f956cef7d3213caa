//! The pure layers do no IO. The protocol layer (the sync core under
//! `src/sync/`, conflict analysis under `src/conflict/`, pending-event rules,
//! rights, signing, the clocks, member ids) and the model layer (schema,
//! values, documents, the codec) name no tokio, libp2p, sled, file system, network,
//! threads or wall clock, and neither the replica nor the store: time comes
//! in as a parameter, and the shells around them do the IO. Test modules at
//! the end of a file (`#[cfg(test)] mod …`) may use anything.

use std::path::{Path, PathBuf};

const FORBIDDEN: [&str; 13] = [
    "tokio",
    "libp2p",
    "sled",
    "std::fs",
    "std::net",
    "std::thread",
    "std::time",
    "SystemTime",
    "Instant",
    "crate::replica",
    "crate::store",
    "crate::node",
    "Replica",
];

/// Every file of the pure layers: whole directories and single files.
fn pure_files() -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    for dir in ["sync", "conflict", "schema"] {
        for entry in std::fs::read_dir(src.join(dir)).expect("the directory exists") {
            let path = entry.expect("readable entry").path();
            if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    for file in [
        "pending.rs",
        "rights.rs",
        "sign.rs",
        "hlc.rs",
        "clock.rs",
        "member.rs",
        "value.rs",
        "doc.rs",
        "codec.rs",
    ] {
        files.push(src.join(file));
    }
    files
}

/// The lines of `text` that are code outside test modules, numbered from 1,
/// with comments cut.
fn code_lines(text: &str) -> Vec<(usize, &str)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim_start());
        if line.trim() == "#[cfg(test)]" && next.starts_with("mod ") {
            break;
        }
        out.push((i + 1, line.split("//").next().unwrap_or("")));
    }
    out
}

/// Names that are forbidden inside a grouped import of their root
/// (`use std::{fs, net::TcpStream}`, `use crate::{replica::Replica}`).
const FORBIDDEN_IN_GROUP: [(&str, &[&str]); 2] = [
    ("std::{", &["fs", "net", "thread", "time"]),
    ("crate::{", &["replica", "store", "node"]),
];

/// The forbidden names `text` uses outside comments and test modules.
fn violations(text: &str) -> Vec<(usize, &'static str)> {
    let mut found = Vec::new();
    // The root of the grouped import the line is in, if any (groups may span
    // lines: `use std::{` … `};`).
    let mut group: Option<(&'static str, &'static [&'static str])> = None;
    for (n, code) in code_lines(text) {
        for w in FORBIDDEN {
            if code.contains(w) {
                found.push((n, w));
            }
        }
        let mut rest = code;
        loop {
            if group.is_none() {
                let start = FORBIDDEN_IN_GROUP
                    .iter()
                    .filter_map(|(root, names)| rest.find(root).map(|at| (at, *root, *names)))
                    .min_by_key(|(at, _, _)| *at);
                let Some((at, root, names)) = start else {
                    break;
                };
                group = Some((root, names));
                rest = &rest[at + root.len()..];
            }
            let Some((root, names)) = group else {
                break;
            };
            let (inside, closed) = match rest.find('}') {
                Some(end) => (&rest[..end], Some(end)),
                None => (rest, None),
            };
            let words = inside.split(|c: char| !(c.is_alphanumeric() || c == '_'));
            if words.into_iter().any(|word| names.contains(&word)) {
                found.push((n, root));
            }
            match closed {
                Some(end) => {
                    group = None;
                    rest = &rest[end + 1..];
                }
                None => break,
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn the_pure_layers_do_no_io() {
    let files = pure_files();
    assert!(
        files.len() >= 19,
        "expected the pure layers' files, found {}",
        files.len()
    );
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable source");
        let found = violations(&text);
        assert!(
            found.is_empty(),
            "{}: the pure layers must not use {:?} (line, name)",
            path.display(),
            found
        );
    }
}

#[test]
fn the_check_finds_io_and_skips_comments_and_test_modules() {
    let bad = "use std::fs;\nfn f() { let _ = std::time::Instant::now(); }\n";
    assert_eq!(
        violations(bad),
        vec![(1, "std::fs"), (2, "Instant"), (2, "std::time")]
    );
    let fine = "// tokio is mentioned in a comment\nfn f() {}\n#[cfg(test)]\nmod tests {\n    use std::fs;\n}\n";
    assert!(violations(fine).is_empty());
    // A `#[cfg(test)]` item that is not a module does not end the check.
    let item = "#[cfg(test)]\nfn helper() { std::thread::yield_now() }\n";
    assert_eq!(violations(item), vec![(2, "std::thread")]);
    // Grouped imports, on one line or several.
    let grouped = "use std::{collections::HashMap, fs};\nuse crate::{\n    value::Value,\n    store::Storage,\n};\nuse std::{fmt, sync::Arc};\n";
    assert_eq!(violations(grouped), vec![(1, "std::{"), (4, "crate::{")]);
}
