//! Persona files: who a model-backed worker is.
//!
//! A persona is a markdown file with YAML front matter; the body becomes the role's
//! system prompt:
//!
//! ```text
//! ---
//! name: security
//! description: Reviews every design for authentication, secrets and data exposure.
//! role: security
//! allowed-tools: [Read, Grep]
//! ---
//! You are the security engineer of the mesh. ...
//! ```
//!
//! Front matter keys:
//!
//! | key | required | meaning |
//! | --- | --- | --- |
//! | `description` | yes | one line on what this persona is for |
//! | `role` | no | the mesh role a worker with this persona joins as |
//! | `name` | no | the persona's name; the role when `role` is absent |
//! | `allowed-tools` (or `tools`) | no | kept as metadata: `[a, b]`, `a, b`, or `- a` lines |
//!
//! Other keys (`model`, `color`, ...) are kept in [`Persona::extra`], so agent files
//! written for other tools load too. The parser reads the YAML subset such files use
//! — `key: value` (plain, `"double"` or `'single'` quoted), `key: [a, b]`, a `key:`
//! followed by `- item` lines, and `|` / `>` block scalars — and every error names the
//! file and the line: `personas/x.md:3: ...`.
//!
//! Without `--persona`, a worker uses the built-in persona of its role
//! ([`Persona::for_role`]): the files in the repository's `personas/` directory,
//! compiled in, or a generic persona for a role of your own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// A loaded persona. See the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persona {
    /// Where it came from: a path, or `built-in:<role>`.
    pub source: String,
    pub name: Option<String>,
    pub role: Option<String>,
    pub description: String,
    pub allowed_tools: Vec<String>,
    /// Front matter keys this crate does not use, as written.
    pub extra: BTreeMap<String, String>,
    /// The markdown body: the system prompt.
    pub body: String,
}

/// A persona file that cannot be used, with the file and the 1-based line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonaError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for PersonaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "persona {}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for PersonaError {}

/// The default personas, compiled in from the repository's `personas/` directory.
const BUILT_IN: [(&str, &str); 7] = [
    (
        "supervisor",
        include_str!("../../../personas/supervisor.md"),
    ),
    ("backend", include_str!("../../../personas/backend.md")),
    ("frontend", include_str!("../../../personas/frontend.md")),
    ("security", include_str!("../../../personas/security.md")),
    ("architect", include_str!("../../../personas/architect.md")),
    ("devops", include_str!("../../../personas/devops.md")),
    ("database", include_str!("../../../personas/database.md")),
];

impl Persona {
    /// Reads and parses a persona file.
    pub fn load(path: &Path) -> Result<Persona, PersonaError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| PersonaError {
            file: file.clone(),
            line: 0,
            message: format!("cannot read the file: {e}"),
        })?;
        Persona::parse(&text, &file)
    }

    /// Parses persona text; `source` names it in errors.
    pub fn parse(text: &str, source: &str) -> Result<Persona, PersonaError> {
        Parser::new(text, source).persona()
    }

    /// The built-in persona of one of the seven default roles.
    pub fn built_in(role: &str) -> Option<Persona> {
        BUILT_IN.iter().find(|(r, _)| *r == role).map(|(r, text)| {
            Persona::parse(text, &format!("built-in:{r}")).expect("built-in personas parse")
        })
    }

    /// The roles that have a built-in persona.
    pub fn built_in_roles() -> impl Iterator<Item = &'static str> {
        BUILT_IN.iter().map(|(r, _)| *r)
    }

    /// A persona for any role: the built-in one, or a generic specialist.
    pub fn for_role(role: &str) -> Persona {
        Persona::built_in(role).unwrap_or_else(|| Persona::generic(role))
    }

    /// A persona for a role without a built-in one.
    pub fn generic(role: &str) -> Persona {
        Persona {
            source: format!("generic:{role}"),
            name: Some(role.to_string()),
            role: Some(role.to_string()),
            description: format!("The {role} specialist of an agentmesh negotiation."),
            allowed_tools: Vec::new(),
            extra: BTreeMap::new(),
            body: format!(
                "You are the {role} specialist in a mesh of agents that negotiate one technical \
                 design until every participant signs the same proposal version.\n\n\
                 - Judge every text from the point of view of {role}: what must be true for you \
                 to sign it.\n\
                 - Be concrete: name components, limits, failure modes and the exact sentences \
                 the proposal needs.\n\
                 - Object only to what matters for {role}, and say what would settle it.\n\
                 - Approve a version when it settles your concerns, even if you would have \
                 written it differently."
            ),
        }
    }

    /// The role this persona joins the mesh as: `role`, else `name`.
    pub fn mesh_role(&self) -> Option<&str> {
        self.role.as_deref().or(self.name.as_deref())
    }
}

/// A front matter value.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Text(String),
    List(Vec<String>),
}

impl Value {
    fn as_written(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::List(items) => format!("[{}]", items.join(", ")),
        }
    }
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    source: &'a str,
}

impl<'a> Parser<'a> {
    fn new(text: &'a str, source: &'a str) -> Self {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        Parser {
            lines: text.lines().collect(),
            source,
        }
    }

    fn err(&self, line: usize, message: impl Into<String>) -> PersonaError {
        PersonaError {
            file: self.source.to_string(),
            line,
            message: message.into(),
        }
    }

    fn persona(&self) -> Result<Persona, PersonaError> {
        // The front matter opens on the first non-blank line.
        let open = self
            .lines
            .iter()
            .position(|l| !l.trim().is_empty())
            .ok_or_else(|| self.err(1, "the file is empty"))?;
        if self.lines[open].trim_end() != "---" {
            return Err(self.err(
                open + 1,
                "a persona starts with YAML front matter: a `---` line, `key: value` lines, \
                 then `---`",
            ));
        }
        let close = self.lines[open + 1..]
            .iter()
            .position(|l| l.trim_end() == "---")
            .map(|i| open + 1 + i)
            .ok_or_else(|| {
                self.err(
                    open + 1,
                    "the front matter opened here is never closed by a `---` line",
                )
            })?;
        let fields = self.front_matter(open + 1, close)?;

        let mut persona = Persona {
            source: self.source.to_string(),
            name: None,
            role: None,
            description: String::new(),
            allowed_tools: Vec::new(),
            extra: BTreeMap::new(),
            body: String::new(),
        };
        let mut description_line = None;
        for (key, (line, value)) in fields {
            match key.as_str() {
                "description" => {
                    persona.description = self.text(line, &key, value)?;
                    description_line = Some(line);
                }
                "name" => persona.name = Some(self.role_like(line, &key, value)?),
                "role" => persona.role = Some(self.role_like(line, &key, value)?),
                "allowed-tools" | "allowed_tools" | "tools" => {
                    if !persona.allowed_tools.is_empty() {
                        return Err(self.err(line, "allowed-tools is given twice (also as tools)"));
                    }
                    persona.allowed_tools = match value {
                        Value::List(items) => items,
                        // Claude Code agent files write `tools: Read, Grep`.
                        Value::Text(t) => t
                            .split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect(),
                    };
                }
                _ => {
                    persona.extra.insert(key, value.as_written());
                }
            }
        }
        match description_line {
            None => {
                return Err(self.err(
                    open + 1,
                    "the front matter has no `description:` (it is required)",
                ));
            }
            Some(line) if persona.description.trim().is_empty() => {
                return Err(self.err(line, "`description` is empty"));
            }
            Some(_) => {}
        }
        persona.body = self.lines[close + 1..].join("\n").trim().to_string();
        if persona.body.is_empty() {
            return Err(self.err(
                close + 1,
                "the persona has no body: the markdown after the front matter is the role's \
                 system prompt",
            ));
        }
        Ok(persona)
    }

    /// Parses lines `from..to` (0-based, exclusive) into key -> (1-based line, value).
    fn front_matter(
        &self,
        from: usize,
        to: usize,
    ) -> Result<BTreeMap<String, (usize, Value)>, PersonaError> {
        let mut fields: BTreeMap<String, (usize, Value)> = BTreeMap::new();
        let mut i = from;
        while i < to {
            let raw = self.lines[i];
            let line_no = i + 1;
            i += 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            if raw.starts_with([' ', '\t']) {
                return Err(self.err(
                    line_no,
                    format!("unexpected indented line {trimmed:?}: expected `key: value`"),
                ));
            }
            if trimmed.starts_with("- ") || trimmed == "-" {
                return Err(self.err(
                    line_no,
                    "a `- item` line must follow a `key:` line with no value",
                ));
            }
            let Some((key, rest)) = trimmed.split_once(':') else {
                return Err(self.err(line_no, format!("expected `key: value`, found {trimmed:?}")));
            };
            let key = key.trim();
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.err(line_no, format!("{key:?} is not a valid key")));
            }
            let rest = strip_comment(rest.trim());
            let value = if rest.is_empty() {
                // A list of `- item` lines follows (or nothing: an empty value).
                let mut items = Vec::new();
                while i < to {
                    let t = self.lines[i].trim();
                    if t.is_empty() {
                        i += 1;
                        continue;
                    }
                    let Some(item) = t.strip_prefix('-') else {
                        break;
                    };
                    if !(item.is_empty() || item.starts_with(' ')) {
                        break;
                    }
                    items.push(self.scalar(i + 1, item.trim())?);
                    i += 1;
                }
                if items.is_empty() {
                    Value::Text(String::new())
                } else {
                    Value::List(items)
                }
            } else if rest == "|" || rest == ">" || rest == "|-" || rest == ">-" {
                // A block scalar: the indented lines that follow.
                let mut block = Vec::new();
                while i < to
                    && (self.lines[i].trim().is_empty() || self.lines[i].starts_with([' ', '\t']))
                {
                    block.push(self.lines[i].trim());
                    i += 1;
                }
                let joined = if rest.starts_with('|') {
                    block.join("\n")
                } else {
                    block.join(" ")
                };
                Value::Text(joined.trim().to_string())
            } else if let Some(inner) = rest.strip_prefix('[') {
                let inner = inner.strip_suffix(']').ok_or_else(|| {
                    self.err(line_no, format!("the list for {key:?} is missing its `]`"))
                })?;
                let items = split_flow_list(inner)
                    .into_iter()
                    .map(|item| self.scalar(line_no, item.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                Value::List(items.into_iter().filter(|s| !s.is_empty()).collect())
            } else {
                Value::Text(self.scalar(line_no, rest)?)
            };
            if fields.contains_key(key) {
                return Err(self.err(line_no, format!("{key:?} is given twice")));
            }
            fields.insert(key.to_string(), (line_no, value));
        }
        Ok(fields)
    }

    /// A plain or quoted scalar.
    fn scalar(&self, line: usize, text: &str) -> Result<String, PersonaError> {
        for quote in ['"', '\''] {
            if let Some(inner) = text.strip_prefix(quote) {
                let inner = inner.strip_suffix(quote).ok_or_else(|| {
                    self.err(line, format!("unterminated {quote} quoted value: {text}"))
                })?;
                return Ok(if quote == '"' {
                    inner.replace("\\\"", "\"").replace("\\n", "\n")
                } else {
                    inner.replace("''", "'")
                });
            }
        }
        Ok(text.to_string())
    }

    fn text(&self, line: usize, key: &str, value: Value) -> Result<String, PersonaError> {
        match value {
            Value::Text(t) => Ok(t),
            Value::List(_) => Err(self.err(line, format!("`{key}` must be text, not a list"))),
        }
    }

    /// A `name` or `role`: must be a valid mesh role.
    fn role_like(&self, line: usize, key: &str, value: Value) -> Result<String, PersonaError> {
        let text = self.text(line, key, value)?;
        agentmesh_core::session::validate_role(&text)
            .map_err(|why| self.err(line, format!("`{key}`: {why}")))?;
        Ok(text)
    }
}

/// `value # comment` -> `value`, unless the `#` sits inside quotes. Inside double quotes
/// a backslash escapes the next character (`\"` does not end the value).
fn strip_comment(text: &str) -> &str {
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in text.char_indices() {
        if std::mem::take(&mut escaped) {
            continue;
        }
        match (quote, c) {
            (Some('"'), '\\') => escaped = true,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '#') if i == 0 || text[..i].ends_with(' ') => return text[..i].trim_end(),
            _ => {}
        }
    }
    text
}

/// `a, "b, c", d` -> [`a`, `"b, c"`, `d`]: commas inside quotes do not split (and, as in
/// [`strip_comment`], `\"` does not end a double-quoted item).
fn split_flow_list(inner: &str) -> Vec<&str> {
    let mut items = Vec::new();
    let mut quote = None;
    let mut escaped = false;
    let mut start = 0;
    for (i, c) in inner.char_indices() {
        if std::mem::take(&mut escaped) {
            continue;
        }
        match (quote, c) {
            (Some('"'), '\\') => escaped = true,
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, ',') => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Persona, PersonaError> {
        Persona::parse(text, "my-role.md")
    }

    #[test]
    fn front_matter_and_body() {
        let p = parse(
            "---\n\
             name: payments\n\
             # a comment\n\
             description: \"Owns money movement: ledgers, idempotency, refunds.\"\n\
             allowed-tools: [Read, \"Grep, fast\", Bash]\n\
             model: sonnet   # kept as metadata\n\
             ---\n\
             \n\
             You are the payments engineer.\n\
             Check every ledger write.\n",
        )
        .unwrap();
        assert_eq!(p.name.as_deref(), Some("payments"));
        assert_eq!(p.role, None);
        assert_eq!(p.mesh_role(), Some("payments"));
        assert_eq!(
            p.description,
            "Owns money movement: ledgers, idempotency, refunds."
        );
        assert_eq!(p.allowed_tools, ["Read", "Grep, fast", "Bash"]);
        assert_eq!(p.extra.get("model").map(String::as_str), Some("sonnet"));
        assert_eq!(
            p.body,
            "You are the payments engineer.\nCheck every ledger write."
        );
        assert_eq!(p.source, "my-role.md");
    }

    #[test]
    fn role_wins_over_name_and_lists_take_three_forms() {
        let p = parse(
            "---\nname: Security Reviewer Bot\nrole: security\ndescription: d\ntools: Read, Grep\n---\nbody",
        );
        // `name` must be a valid role too.
        let err = p.unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.message.contains("`name`"), "{err}");

        let p = parse(
            "---\nname: sec-bot\nrole: security\ndescription: d\ntools: Read, Grep\n---\nbody",
        )
        .unwrap();
        assert_eq!(p.mesh_role(), Some("security"));
        assert_eq!(p.allowed_tools, ["Read", "Grep"]);

        let p = parse(
            "---\ndescription: >\n  folded\n  text\nallowed-tools:\n  - Read\n  - 'Web Fetch'\n---\nbody",
        )
        .unwrap();
        assert_eq!(p.description, "folded text");
        assert_eq!(p.allowed_tools, ["Read", "Web Fetch"]);
        assert_eq!(p.mesh_role(), None);
    }

    #[test]
    fn malformed_files_name_the_file_and_line() {
        let cases: [(&str, usize, &str); 10] = [
            ("", 1, "empty"),
            ("You are a bot.\n", 1, "front matter"),
            ("---\ndescription: d\nbody\n", 1, "never closed"),
            ("---\nname: x\n---\nbody", 1, "no `description:`"),
            (
                "---\ndescription: d\nthis line has no colon\n---\nbody",
                3,
                "expected `key: value`",
            ),
            (
                "---\ndescription: d\ndescription: e\n---\nbody",
                3,
                "given twice",
            ),
            (
                "---\ndescription: d\nrole: Not A Role\n---\nbody",
                3,
                "`role`",
            ),
            (
                "---\ndescription: d\ntools: [a, b\n---\nbody",
                3,
                "missing its `]`",
            ),
            ("---\ndescription: \"open\n---\nbody", 2, "unterminated"),
            ("---\ndescription: d\n---\n\n  \n", 3, "no body"),
        ];
        for (text, line, needle) in cases {
            let err = parse(text).unwrap_err();
            assert_eq!(err.line, line, "{text:?}: {err}");
            assert!(err.message.contains(needle), "{text:?}: {err}");
            let shown = err.to_string();
            assert!(
                shown.starts_with(&format!("persona my-role.md:{line}: ")),
                "{shown}"
            );
        }
        let err = parse("---\ndescription:\n---\nbody").unwrap_err();
        assert_eq!(
            (err.line, err.message.as_str()),
            (2, "`description` is empty")
        );
        let err = parse("---\ndescription: d\n  indented: x\n---\nbody").unwrap_err();
        assert_eq!(err.line, 3);
        let err = parse("---\n- item\ndescription: d\n---\nbody").unwrap_err();
        assert_eq!(err.line, 2);
    }

    #[test]
    fn an_escaped_quote_does_not_end_a_value_before_a_comment_or_a_comma() {
        // Found by the persona fuzz target: the comment scan and the flow-list split took
        // `\"` for the closing quote, so a ` #` after it cut the value (an error, or a
        // silently shorter value), and a `,` after it split a list item in two.
        let p = parse("---\ndescription: \"a 5\\\" screen # not a comment\"  # one\n---\nbody")
            .unwrap();
        assert_eq!(p.description, "a 5\" screen # not a comment");
        let p = parse("---\ndescription: d\nnotes: \"a\\\" #b\\\"\"\n---\nbody").unwrap();
        assert_eq!(p.extra["notes"], "a\" #b\"");
        // A backslash escapes nothing in single quotes.
        let p = parse("---\ndescription: 'a\\' # c\n---\nbody").unwrap();
        assert_eq!(p.description, "a\\");
        // And a comma after an escaped quote does not split a flow-list item.
        let p = parse("---\ndescription: d\ntools: [\"say \\\"x, y\", b]\n---\nbody").unwrap();
        assert_eq!(p.allowed_tools, ["say \"x, y", "b"]);
    }

    #[test]
    fn load_reports_unreadable_files() {
        let err = Persona::load(Path::new("/nonexistent/persona.md")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/persona.md"), "{err}");
    }

    #[test]
    fn every_default_role_has_a_built_in_persona() {
        for role in [
            "supervisor",
            "backend",
            "frontend",
            "security",
            "architect",
            "devops",
            "database",
        ] {
            let p = Persona::built_in(role).unwrap_or_else(|| panic!("no persona for {role}"));
            assert_eq!(p.mesh_role(), Some(role));
            assert!(!p.description.is_empty());
            for phase in ["FRAMING", "CONTRIBUTE", "SYNTHESIZE", "REVIEW"] {
                assert!(
                    p.body.contains(phase),
                    "{role} persona never mentions {phase}"
                );
            }
        }
        assert_eq!(Persona::built_in_roles().count(), 7);
        let custom = Persona::for_role("payments");
        assert_eq!(custom.mesh_role(), Some("payments"));
        assert!(custom.body.contains("payments"));
    }
}
