//! The coordinator's layers, checked on its source: every `crate::<module>` a file names
//! must sit in its own layer or below, so nothing below the edges imports an edge, and
//! the modules' imports form no cycle. ARCHITECTURE.md's code map lists the same layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module's layer, outermost first. A module may use its own layer's
/// modules and those below; never one above.
const LAYERS: [(&str, u8); 16] = [
    ("edge", 0),
    ("leadership", 1),
    ("watch", 1),
    ("service", 1),
    ("session", 2),
    ("state", 3),
    ("registry", 4),
    ("events", 4),
    ("demand", 4),
    ("measure", 4),
    ("config", 5),
    ("errors", 5),
    ("clock", 5),
    // Tests inside the crate drive it from the top.
    ("timing_tests", 0),
    ("lib", 0),
    ("main", 0),
];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| {
            panic!("module {module} has no layer: add it to LAYERS and ARCHITECTURE.md")
        })
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to.
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("under src");
    let first = relative.components().next().expect("a component");
    first
        .as_os_str()
        .to_string_lossy()
        .trim_end_matches(".rs")
        .to_string()
}

/// The modules a file names as `crate::<module>`, comments left out.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.insert(name);
            }
        }
        // `use crate::{a, b}` groups.
        if let Some(at) = code.find("use crate::{") {
            let group = &code[at + "use crate::{".len()..];
            for part in group.split([',', '}']) {
                let name: String = part
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let module = module_of(&src, &file);
        let text = std::fs::read_to_string(&file).expect("read source");
        let entry = graph.entry(module.clone()).or_default();
        for used in uses(&text) {
            if used != module {
                entry.insert(used);
            }
        }
    }
    graph
}

#[test]
fn every_module_uses_only_its_layer_and_those_below() {
    let graph = graph();
    assert!(graph.len() >= 12, "found the modules: {graph:?}");
    for (module, used) in &graph {
        for other in used {
            assert!(
                layer(other) >= layer(module),
                "{module} (layer {}) uses {other} (layer {}): an inner module must not \
                 import an outer one",
                layer(module),
                layer(other)
            );
        }
    }
    for (module, used) in &graph {
        if module != "edge" && layer(module) > 0 {
            assert!(!used.contains("edge"), "{module} imports an edge");
        }
    }
}

#[test]
fn the_modules_imports_form_no_cycle() {
    let graph = graph();
    // Depth-first search for a back edge, reporting the cycle.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = path.iter().position(|n| n == node) {
            panic!("import cycle: {} -> {node}", path[at..].join(" -> "));
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            visit(next, graph, path, done);
        }
        path.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for module in graph.keys() {
        visit(module, &graph, &mut Vec::new(), &mut done);
    }
}

#[test]
fn the_checker_reads_use_lines_and_skips_comments() {
    let text = "use crate::state::Mesh;\nuse crate::{events, registry::Cut};\n// crate::edge is only a comment\n";
    assert_eq!(
        uses(text),
        ["events", "registry", "state"].map(String::from).into()
    );
}
