//! The written form of one review concern.
//!
//! A concern names the concern id in brackets and carries the exact sentence the next
//! proposal version has to adopt, so that whoever synthesizes can compute the fix from
//! the transcript alone:
//!
//! ```text
//! [be-errors] Every API error returns a stable machine-readable code, ...
//! [sec-airgap] The cluster runs with no internet egress ... — contradicted by: "pull images from public registries"
//! ```
//!
//! The second form says the requirement cannot hold while the proposal also says the
//! quoted phrase. Concerns without a bracketed id (free-form text, e.g. from a language
//! model) parse with `id: None` and the whole text as the requirement.

/// Separates a requirement from the phrase of the proposal that contradicts it.
pub const CONTRADICTED_BY: &str = " — contradicted by: ";

/// One concern, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedConcern {
    /// The concern id inside the leading brackets, if there is one.
    pub id: Option<String>,
    /// The sentence the proposal must contain.
    pub requirement: String,
    /// The proposal phrase that rules the requirement out, if the concern names one.
    pub contradicted_by: Option<String>,
}

/// Writes a concern in the form [`parse()`] reads.
pub fn format(id: &str, requirement: &str, contradicted_by: Option<&str>) -> String {
    match contradicted_by {
        Some(phrase) => format!("[{id}] {requirement}{CONTRADICTED_BY}\"{phrase}\""),
        None => format!("[{id}] {requirement}"),
    }
}

/// Reads a concern written by [`format()`]; anything else becomes a free-form requirement.
pub fn parse(concern: &str) -> ParsedConcern {
    let concern = concern.trim();
    let (id, rest) = match concern.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((id, rest)) if is_id(id) => (Some(id.to_string()), rest.trim_start()),
        _ => (None, concern),
    };
    let (requirement, contradicted_by) = match rest.split_once(CONTRADICTED_BY) {
        Some((requirement, phrase)) => {
            let phrase = phrase.trim().trim_matches('"').trim();
            (
                requirement,
                (!phrase.is_empty()).then(|| phrase.to_string()),
            )
        }
        None => (rest, None),
    };
    ParsedConcern {
        id,
        requirement: requirement.trim().to_string(),
        contradicted_by,
    }
}

fn is_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 80
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let plain = format("be-errors", "Errors carry a code.", None);
        assert_eq!(plain, "[be-errors] Errors carry a code.");
        assert_eq!(
            parse(&plain),
            ParsedConcern {
                id: Some("be-errors".into()),
                requirement: "Errors carry a code.".into(),
                contradicted_by: None,
            }
        );
        let conflict = format("sec-airgap", "No egress.", Some("pull from the internet"));
        let parsed = parse(&conflict);
        assert_eq!(parsed.id.as_deref(), Some("sec-airgap"));
        assert_eq!(parsed.requirement, "No egress.");
        assert_eq!(
            parsed.contradicted_by.as_deref(),
            Some("pull from the internet")
        );
    }

    #[test]
    fn free_form_concerns_keep_their_text() {
        let parsed = parse("  The rollout plan is missing.  ");
        assert_eq!(parsed.id, None);
        assert_eq!(parsed.requirement, "The rollout plan is missing.");
        let parsed = parse("[Not An Id] text");
        assert_eq!(parsed.id, None);
        assert_eq!(parsed.requirement, "[Not An Id] text");
    }
}
