//! `persona`: arbitrary text into the persona parser. It never panics; an error names
//! the source and a line of the text; a persona it accepts re-checks (the rules the
//! parser enforces hold of what it returns), and written back out as a canonical persona
//! file it parses to the same persona.

use agentmesh_brain::persona::Persona;
use agentmesh_core::session::validate_role;
use std::fmt::Write;

const SOURCE: &str = "fuzz.md";

/// Keys the parser gives a meaning; everything else lands in `extra`.
const KNOWN_KEYS: [&str; 6] = [
    "description",
    "name",
    "role",
    "allowed-tools",
    "allowed_tools",
    "tools",
];

pub fn run(data: &[u8]) {
    // `Persona::load` reads files with `read_to_string`: only UTF-8 reaches the parser.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Persona::parse(text, SOURCE) {
        Err(e) => {
            let lines = text
                .strip_prefix('\u{feff}')
                .unwrap_or(text)
                .lines()
                .count();
            assert_eq!(e.file, SOURCE);
            assert!(
                e.line >= 1 && e.line <= lines.max(1),
                "line {} of {lines}: {e}",
                e.line
            );
            assert!(!e.message.is_empty());
            assert!(
                e.to_string()
                    .starts_with(&format!("persona {SOURCE}:{}: ", e.line))
            );
        }
        Ok(p) => {
            recheck(&p);
            // The tools as `- item` lines, and as a flow list `[a, b]` (which drops
            // empty items, so only when there are none).
            let flow_too = !p.allowed_tools.iter().any(String::is_empty);
            for flow in [false, true].into_iter().filter(|f| !f || flow_too) {
                if let Some(canonical) = render(&p, flow) {
                    let again = Persona::parse(&canonical, SOURCE).unwrap_or_else(|e| {
                        panic!("the canonical form {canonical:?} of {p:?} fails: {e}")
                    });
                    assert_eq!(again, p, "{canonical:?}");
                }
            }
        }
    }
}

/// What every accepted persona satisfies.
fn recheck(p: &Persona) {
    assert_eq!(p.source, SOURCE);
    assert!(!p.description.trim().is_empty(), "{p:?}");
    assert!(!p.body.is_empty() && p.body.trim() == p.body, "{p:?}");
    for role in [&p.name, &p.role].into_iter().flatten() {
        assert!(validate_role(role).is_ok(), "{p:?}");
    }
    assert_eq!(p.mesh_role(), p.role.as_deref().or(p.name.as_deref()));
    for key in p.extra.keys() {
        assert!(!KNOWN_KEYS.contains(&key.as_str()), "{key:?} is not extra");
        assert!(
            !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "{key:?}"
        );
    }
}

/// A value as a quoted scalar the parser reads back exactly, if there is one: single
/// quotes on one line, double quotes (with `\"` and `\n`) across lines.
fn quote(value: &str) -> Option<String> {
    if !value.contains(['\n', '\r']) {
        Some(format!("'{}'", value.replace('\'', "''")))
    } else if !value.contains('\\') && !value.contains('\r') {
        Some(format!(
            "\"{}\"",
            value.replace('"', "\\\"").replace('\n', "\\n")
        ))
    } else {
        None
    }
}

/// The persona as a canonical persona file, when every value has a quoted form and the
/// body survives line splitting (no carriage returns).
fn render(p: &Persona, flow: bool) -> Option<String> {
    if p.body.contains('\r') {
        return None;
    }
    let mut out = String::from("---\n");
    if let Some(name) = &p.name {
        writeln!(out, "name: {name}").unwrap();
    }
    if let Some(role) = &p.role {
        writeln!(out, "role: {role}").unwrap();
    }
    writeln!(out, "description: {}", quote(&p.description)?).unwrap();
    if !p.allowed_tools.is_empty() {
        if flow {
            let items: Option<Vec<String>> = p.allowed_tools.iter().map(|t| quote(t)).collect();
            writeln!(out, "allowed-tools: [{}]", items?.join(", ")).unwrap();
        } else {
            out.push_str("allowed-tools:\n");
            for tool in &p.allowed_tools {
                writeln!(out, "  - {}", quote(tool)?).unwrap();
            }
        }
    }
    for (key, value) in &p.extra {
        writeln!(out, "{key}: {}", quote(value)?).unwrap();
    }
    out.push_str("---\n");
    out.push_str(&p.body);
    out.push('\n');
    Some(out)
}
