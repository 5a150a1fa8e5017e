//! The server's modules in layers: each module uses only modules of its own layer or below,
//! and the owner API and the console never use each other (both sit on `ops`). A `use
//! crate::…` (or an inline `crate::…` path) pointing up a layer fails this test, naming the
//! file and line.

use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer, lowest first (lib.rs says what each is).
const LAYERS: &[(&str, u8)] = &[
    ("config", 1),
    ("error", 1),
    ("tags", 1),
    ("mask", 1),
    ("listener", 1),
    ("metrics", 2),
    ("logs", 2),
    ("runs", 2),
    ("realtime", 2),
    ("invalidate", 2),
    ("state", 3),
    ("extract", 4),
    ("auth", 4),
    ("middleware", 4),
    ("ops", 5),
    ("api", 6),
    ("console", 6),
    ("router", 7),
    ("serve", 8),
];

/// Modules of one layer that must not use each other.
const APART: &[(&str, &str)] = &[("api", "console"), ("console", "api")];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(m, _)| *m == module).map(|(_, l)| *l)
}

/// The top-level module a file under `src/` belongs to (`None` for lib.rs).
fn module_of(rel: &Path) -> Option<String> {
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    if first == "lib.rs" {
        return None;
    }
    Some(first.trim_end_matches(".rs").to_string())
}

/// The violations in one file's text: `(line, from, to)`.
fn violations(module: &str, text: &str) -> Vec<(usize, String, String)> {
    let own = layer(module).unwrap_or_else(|| panic!("module {module} has no layer in LAYERS"));
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let target: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // `use crate::{a, b}`: every name in the braces.
            let targets: Vec<String> = if target.is_empty() && after.starts_with('{') {
                after[1..after.find('}').unwrap_or(after.len())]
                    .split(',')
                    .map(|t| t.trim().split("::").next().unwrap_or("").to_string())
                    .filter(|t| !t.is_empty())
                    .collect()
            } else {
                vec![target]
            };
            for t in targets {
                let Some(theirs) = layer(&t) else { continue };
                let apart = APART.contains(&(module, t.as_str()));
                if theirs > own || apart {
                    out.push((i + 1, module.to_string(), t));
                }
            }
            rest = after;
        }
    }
    out
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

#[test]
fn no_module_uses_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        let Some(module) = module_of(rel) else {
            continue;
        };
        let text = std::fs::read_to_string(f).unwrap();
        for (line, from, to) in violations(&module, &text) {
            found.push(format!("{}:{line}: {from} uses {to}", rel.display()));
        }
    }
    assert!(files.len() > 30, "the walk found {} files", files.len());
    assert!(
        found.is_empty(),
        "modules using a layer above them:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_module_has_a_layer() {
    let lib =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(
                layer(m).is_some(),
                "lib.rs declares {m}, which LAYERS does not place"
            );
        }
    }
}

#[test]
fn the_check_catches_an_upward_use() {
    let bad = "use crate::state::AppState;\nuse crate::{ops, error};\n// use crate::router;\n";
    let v = violations("extract", bad);
    assert_eq!(v, vec![(2, "extract".into(), "ops".into())]);
    let v = violations("metrics", "let s = crate::state::AppState::new(x);");
    assert_eq!(v.len(), 1);
    let v = violations("console", "use crate::api::jobs;");
    assert_eq!(
        v,
        vec![(1, "console".into(), "api".into())],
        "the API and the console stay apart"
    );
    assert!(violations("router", "use crate::{api, console, ops};").is_empty());
}
