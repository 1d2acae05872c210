//! Small, deterministic text helpers shared by the brains: keyword matching against a
//! task, whitespace- and case-insensitive containment checks against a proposal, and
//! the short title a task is referred to by.

/// Lower-cases `text` and collapses every run of whitespace into one space, so that a
/// sentence still matches after it was re-wrapped or re-indented.
pub fn normalize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut pending_space = false;
    for ch in text.chars() {
        if ch.is_whitespace() {
            pending_space = !out.is_empty();
        } else {
            if pending_space {
                out.push(' ');
                pending_space = false;
            }
            out.extend(ch.to_lowercase());
        }
    }
    out
}

/// True if `haystack` contains `needle`, ignoring case and whitespace layout.
pub fn contains_normalized(haystack: &str, needle: &str) -> bool {
    let needle = normalize(needle);
    !needle.is_empty() && normalize(haystack).contains(&needle)
}

/// True if `text` mentions `keyword` as a whole word or phrase (case-insensitive), also
/// in its plural with a trailing `s` or `es`. "tenant" matches "multi-tenant" and
/// "tenants" but not "tenantless"; "api" does not match "rapid".
pub fn mentions(text: &str, keyword: &str) -> bool {
    let text = normalize(text);
    let keyword = normalize(keyword);
    if keyword.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_alphanumeric();
    for (at, _) in text.match_indices(&keyword) {
        let before_ok = text[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let rest = &text[at + keyword.len()..];
        let rest = rest
            .strip_prefix("es")
            .filter(|r| r.chars().next().is_none_or(|c| !is_word(c)))
            .or_else(|| rest.strip_prefix('s'))
            .unwrap_or(rest);
        let after_ok = rest.chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            return true;
        }
    }
    false
}

/// The first of `keywords` that `text` mentions, if any.
pub fn first_mention<'k>(text: &str, keywords: &'k [String]) -> Option<&'k str> {
    keywords
        .iter()
        .find(|k| mentions(text, k))
        .map(String::as_str)
}

/// A short title for a task: its first clause (up to `:`, `;` or the end of the first
/// sentence), at most about 80 characters, cut at a word boundary.
pub fn title_of(task: &str) -> String {
    let task = task.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut end = task.len();
    for (i, ch) in task.char_indices() {
        let sentence_end = ch == '.' && task[i + 1..].starts_with(' ');
        if ch == ':' || ch == ';' || sentence_end {
            end = i;
            break;
        }
    }
    let clause = task[..end].trim().trim_end_matches('.');
    const MAX: usize = 80;
    if clause.chars().count() <= MAX {
        return clause.to_string();
    }
    let mut cut = String::new();
    for word in clause.split(' ') {
        if cut.chars().count() + word.chars().count() + 1 > MAX {
            break;
        }
        if !cut.is_empty() {
            cut.push(' ');
        }
        cut.push_str(word);
    }
    cut.push('…');
    cut
}

/// The technologies a task names, in a fixed order, each once.
pub fn technologies(task: &str) -> Vec<&'static str> {
    const KNOWN: [(&str, &str); 20] = [
        ("kubernetes", "Kubernetes"),
        ("k8s", "Kubernetes"),
        ("postgresql", "PostgreSQL"),
        ("postgres", "PostgreSQL"),
        ("mysql", "MySQL"),
        ("redis", "Redis"),
        ("kafka", "Kafka"),
        ("rabbitmq", "RabbitMQ"),
        ("react", "React"),
        ("graphql", "GraphQL"),
        ("grpc", "gRPC"),
        ("rest", "REST"),
        ("aws", "AWS"),
        ("gcp", "GCP"),
        ("azure", "Azure"),
        ("terraform", "Terraform"),
        ("docker hub", "Docker Hub"),
        ("helm", "Helm"),
        ("etcd", "etcd"),
        ("s3", "S3"),
    ];
    let mut found: Vec<&'static str> = Vec::new();
    for (keyword, name) in KNOWN {
        if mentions(task, keyword) && !found.contains(&name) {
            found.push(name);
        }
    }
    found
}

/// "1 point", "3 points": a count with the right noun form.
pub fn count(n: usize, singular: &str, plural: &str) -> String {
    format!("{n} {}", if n == 1 { singular } else { plural })
}

/// The first 12 hex digits of a hash, for prose.
pub fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_collapses_case_and_whitespace() {
        assert_eq!(normalize("  A  b\n\tC "), "a b c");
        assert!(contains_normalized(
            "- [x] Every API error\n  returns a CODE.",
            "every api error returns a code."
        ));
        assert!(!contains_normalized("anything", "   "));
    }

    #[test]
    fn mentions_respects_word_boundaries_and_plurals() {
        assert!(mentions("a multi-tenant SaaS", "tenant"));
        assert!(mentions("many tenants", "tenant"));
        assert!(mentions("search order history", "search"));
        assert!(mentions("full-text searches", "search"));
        assert!(mentions("Docker Hub images", "docker hub"));
        assert!(!mentions("a rapid prototype", "api"));
        assert!(!mentions("tenantless", "tenant"));
        assert!(!mentions("restaurants", "rest"));
        assert!(mentions("a REST API", "rest"));
    }

    #[test]
    fn title_takes_the_first_clause() {
        assert_eq!(title_of("Design X for Y: details. More."), "Design X for Y");
        assert_eq!(title_of("Build a cache. Then more."), "Build a cache");
        assert_eq!(title_of("no punctuation at all"), "no punctuation at all");
        let long = "word ".repeat(40);
        let title = title_of(&long);
        assert!(title.ends_with('…'));
        assert!(title.chars().count() <= 81);
    }

    #[test]
    fn technologies_are_named_once_in_fixed_order() {
        assert_eq!(
            technologies("runs on k8s and Kubernetes with Postgres and React"),
            vec!["Kubernetes", "PostgreSQL", "React"]
        );
        assert!(technologies("nothing here").is_empty());
        assert_eq!(count(1, "point", "points"), "1 point");
        assert_eq!(count(0, "point", "points"), "0 points");
    }
}
