//! The cluster's etcd key layout: every key a worker, a client or the store writes or
//! reads about workers and the election is built here.

/// The key prefix of the cluster mode's etcd data.
pub const DEFAULT_PREFIX: &str = "/agentmesh/v1";

/// The etcd election name the coordinators campaign on.
pub const DEFAULT_ELECTION: &str = "/agentmesh/v1/leader";

/// Trims trailing slashes so `{prefix}/workers/...` never holds `//`.
pub fn normalize_prefix(prefix: &str) -> String {
    prefix.trim_end_matches('/').to_string()
}

/// `{prefix}/workers/`: the range every worker record lives in.
pub fn workers_prefix(prefix: &str) -> String {
    format!("{}/workers/", normalize_prefix(prefix))
}

/// `{prefix}/workers/<role>/<worker-id>`: one worker's record.
pub fn worker_key(prefix: &str, role: &str, worker_id: &str) -> String {
    format!("{}{role}/{worker_id}", workers_prefix(prefix))
}

/// The role and worker id a worker key names, or `None` for a key outside the range.
pub fn parse_worker_key<'a>(prefix: &str, key: &'a str) -> Option<(&'a str, &'a str)> {
    let rest = key.strip_prefix(&workers_prefix(prefix))?;
    rest.split_once('/')
}

/// Why `value` cannot be a key segment, if it cannot: it must be non-empty and hold no
/// '/', or one id's keys could fall inside another's range.
pub fn check_segment(what: &str, value: &str) -> Result<(), String> {
    if value.is_empty() || value.contains('/') {
        return Err(format!(
            "{what} {value:?} cannot be an etcd key segment: it must be non-empty and hold no '/'"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_keys_round_trip() {
        let key = worker_key("/agentmesh/v1/", "backend", "w1");
        assert_eq!(key, "/agentmesh/v1/workers/backend/w1");
        assert_eq!(
            parse_worker_key(DEFAULT_PREFIX, &key),
            Some(("backend", "w1"))
        );
        assert_eq!(
            parse_worker_key(DEFAULT_PREFIX, "/agentmesh/v1/sessions/s"),
            None
        );
        assert!(DEFAULT_ELECTION.starts_with(DEFAULT_PREFIX));
    }

    #[test]
    fn segments_hold_no_slash() {
        assert!(check_segment("role", "backend").is_ok());
        assert!(check_segment("role", "").is_err());
        assert!(check_segment("role", "a/b").is_err());
    }
}
