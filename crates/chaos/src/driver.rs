//! The session driver: keeps `target` sessions in flight while the soak runs, and
//! watches every session's progress by polling `ListSessions`, so the run knows when
//! each ended and the longest any session waited without progress.
//!
//! A CreateSession whose answer was lost may still have created its session: such a
//! session shows up in the listing and is adopted (counted, tracked and checked like the
//! others). The final checks read every session etcd holds, not only the driver's.

use crate::checks::is_terminal;
use crate::client::Clients;
use agentmesh_proto::v1;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the driver lists the sessions.
const POLL: Duration = Duration::from_millis(200);

/// The six default specialists.
const SPECIALISTS: [&str; 6] = [
    "backend",
    "frontend",
    "security",
    "architect",
    "devops",
    "database",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Keep `target` sessions in flight.
    Soak = 0,
    /// Start nothing new; keep watching.
    Drain = 1,
    Stop = 2,
}

#[derive(Clone, Debug)]
pub struct Tracked {
    pub status: i32,
    pub round: u32,
    pub entries: u64,
    pub task: String,
    pub last_change: Instant,
}

/// The longest wait without progress seen so far.
#[derive(Clone, Debug, Default)]
pub struct Stall {
    pub waited: Duration,
    pub session: String,
    /// What the session was doing while it waited.
    pub status: String,
    pub round: u32,
    /// When the wait ended or was last measured, from the start of the soak.
    pub at: Duration,
}

#[derive(Default)]
pub struct Tracker {
    pub sessions: BTreeMap<String, Tracked>,
    /// Sessions CreateSession answered for.
    pub created: BTreeSet<String>,
    /// Sessions found in a listing that no answered CreateSession named.
    pub adopted: BTreeSet<String>,
    pub create_failures: u64,
    pub create_failure_examples: Vec<String>,
    pub list_failures: u64,
    pub ended: usize,
    pub stall: Stall,
    /// Successful listings since the last mode change.
    pub listings_since_mode: u64,
}

impl Tracker {
    pub fn in_flight(&self) -> usize {
        self.sessions
            .values()
            .filter(|s| !is_terminal(s.status))
            .count()
    }

    /// Sessions by outcome name, e.g. CONSENSUS → 412.
    pub fn outcomes(&self) -> BTreeMap<&'static str, usize> {
        let mut out = BTreeMap::new();
        for s in self.sessions.values() {
            *out.entry(agentmesh_proto::status_name(s.status))
                .or_default() += 1;
        }
        out
    }

    fn note_wait(&mut self, id: &str, s: &Tracked, now: Instant, start: Instant) {
        let waited = now.saturating_duration_since(s.last_change);
        if waited > self.stall.waited {
            self.stall = Stall {
                waited,
                session: id.to_string(),
                status: agentmesh_proto::status_name(s.status).to_string(),
                round: s.round,
                at: now.saturating_duration_since(start),
            };
        }
    }

    /// Folds one listing in: progress is any change of status, round or entry count.
    fn update(&mut self, listed: Vec<v1::Session>, now: Instant, start: Instant) {
        self.listings_since_mode += 1;
        for s in listed {
            let tracked = Tracked {
                status: s.status,
                round: s.round,
                entries: s.entry_count,
                task: s.task.clone(),
                last_change: now,
            };
            match self.sessions.get(&s.id).cloned() {
                None => {
                    if !self.created.contains(&s.id) {
                        self.adopted.insert(s.id.clone());
                    }
                    if is_terminal(s.status) {
                        self.ended += 1;
                    }
                    self.sessions.insert(s.id, tracked);
                }
                Some(old) => {
                    if is_terminal(old.status) {
                        continue;
                    }
                    let changed =
                        (old.status, old.round, old.entries) != (s.status, s.round, s.entry_count);
                    if changed {
                        self.note_wait(&s.id, &old, now, start);
                        if is_terminal(s.status) {
                            self.ended += 1;
                        }
                        self.sessions.insert(s.id, tracked);
                    } else {
                        self.note_wait(&s.id, &old, now, start);
                    }
                }
            }
        }
    }
}

pub struct Driver {
    pub tracker: Arc<Mutex<Tracker>>,
    pub mode: Arc<AtomicU8>,
}

/// What a session is asked to negotiate.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub task: String,
    pub roles: Vec<String>,
    pub max_rounds: u32,
}

/// The n-th session of a run: mostly the demo task (settled in round 2) over all six
/// specialists or a random subset, and a share of conflict tasks (never settled: they
/// end NO_CONSENSUS after `max_rounds`), which always include security and devops, the
/// two roles whose demands clash.
pub fn spec(rng: &mut StdRng, n: u64, conflict_ratio: f64) -> Spec {
    let conflict = rng.random_bool(conflict_ratio.clamp(0.0, 1.0));
    let mut roles: Vec<String> = if rng.random_bool(0.5) {
        SPECIALISTS.iter().map(|r| r.to_string()).collect()
    } else {
        let k = rng.random_range(1..=SPECIALISTS.len());
        SPECIALISTS
            .choose_multiple(rng, k)
            .map(|r| r.to_string())
            .collect()
    };
    if conflict {
        for needed in ["security", "devops"] {
            if !roles.iter().any(|r| r == needed) {
                roles.push(needed.to_string());
            }
        }
    }
    roles.sort_by_key(|r| SPECIALISTS.iter().position(|s| s == r));
    let base = if conflict {
        agentmesh_brain::CONFLICT_TASK
    } else {
        agentmesh_brain::DEMO_TASK
    };
    Spec {
        task: format!("{base} (chaos session {n})"),
        roles,
        max_rounds: rng.random_range(2..=4),
    }
}

impl Driver {
    /// Starts the driver on `rt`; it runs until the mode is [`Mode::Stop`].
    pub fn spawn(
        rt: &tokio::runtime::Handle,
        urls: Arc<Mutex<Vec<String>>>,
        target: usize,
        seed: u64,
        conflict_ratio: f64,
        start: Instant,
    ) -> (Driver, tokio::task::JoinHandle<()>) {
        let tracker = Arc::new(Mutex::new(Tracker::default()));
        let mode = Arc::new(AtomicU8::new(Mode::Soak as u8));
        let driver = Driver {
            tracker: tracker.clone(),
            mode: mode.clone(),
        };
        let handle = rt.spawn(async move {
            let mut clients = Clients::new(urls);
            let mut rng = StdRng::seed_from_u64(seed ^ 0x5e55_10e5_c0ff_ee00);
            let mut next = 0u64;
            let mut pending_spec: Option<Spec> = None;
            let mut reported = 0usize;
            let mut seen_mode = Mode::Soak as u8;
            loop {
                let tick = tokio::time::Instant::now() + POLL;
                let m = mode.load(Ordering::SeqCst);
                if m == Mode::Stop as u8 {
                    return;
                }
                if m != seen_mode {
                    seen_mode = m;
                    tracker.lock().expect("tracker").listings_since_mode = 0;
                }
                match clients.list_sessions().await {
                    Ok(listed) => {
                        tracker
                            .lock()
                            .expect("tracker")
                            .update(listed, Instant::now(), start);
                    }
                    Err(_) => tracker.lock().expect("tracker").list_failures += 1,
                }
                if m == Mode::Soak as u8 {
                    loop {
                        if mode.load(Ordering::SeqCst) != Mode::Soak as u8
                            || tracker.lock().expect("tracker").in_flight() >= target
                        {
                            break;
                        }
                        let spec = pending_spec.take().unwrap_or_else(|| {
                            next += 1;
                            spec(&mut rng, next, conflict_ratio)
                        });
                        let request = v1::CreateSessionRequest {
                            task: spec.task.clone(),
                            roles: spec.roles.clone(),
                            max_rounds: spec.max_rounds,
                            ..Default::default()
                        };
                        let asked = Instant::now();
                        match clients.create_session(request).await {
                            Ok(session) => {
                                let mut t = tracker.lock().expect("tracker");
                                t.created.insert(session.id.clone());
                                t.adopted.remove(&session.id);
                                t.sessions.entry(session.id.clone()).or_insert(Tracked {
                                    status: session.status,
                                    round: session.round,
                                    entries: session.entry_count,
                                    task: session.task,
                                    last_change: asked,
                                });
                            }
                            Err(why) => {
                                let mut t = tracker.lock().expect("tracker");
                                t.create_failures += 1;
                                if t.create_failure_examples.len() < 5 {
                                    t.create_failure_examples.push(why);
                                }
                                // The same spec next time: the sequence of sessions a
                                // seed asks for does not depend on when faults hit.
                                pending_spec = Some(spec);
                                break;
                            }
                        }
                    }
                }
                {
                    // One line per ten sessions ended (after this tick's creates, so
                    // "in flight" counts the replacements).
                    let t = tracker.lock().expect("tracker");
                    if t.ended / 10 > reported / 10 {
                        reported = t.ended;
                        let outcomes = t
                            .outcomes()
                            .into_iter()
                            .filter(|(name, _)| crate::is_terminal_name(name))
                            .map(|(name, n)| format!("{name} {n}"))
                            .collect::<Vec<_>>()
                            .join(", ");
                        crate::progress(&format!(
                            "{reported} sessions ended ({outcomes}); {} in flight",
                            t.in_flight()
                        ));
                    }
                }
                tokio::time::sleep_until(tick).await;
            }
        });
        (driver, handle)
    }

    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_seeded_and_conflicts_carry_both_clashing_roles() {
        let specs = |seed| {
            let mut rng = StdRng::seed_from_u64(seed);
            (1..=200)
                .map(|n| spec(&mut rng, n, 0.2))
                .collect::<Vec<_>>()
        };
        assert_eq!(specs(3), specs(3));
        let all = specs(3);
        let conflicts: Vec<&Spec> = all
            .iter()
            .filter(|s| crate::is_conflict_task(&s.task))
            .collect();
        assert!((20..=60).contains(&conflicts.len()), "{}", conflicts.len());
        for s in &conflicts {
            assert!(s.roles.iter().any(|r| r == "security"));
            assert!(s.roles.iter().any(|r| r == "devops"));
        }
        for s in &all {
            assert!(!s.roles.is_empty() && (2..=4).contains(&s.max_rounds));
            let mut sorted = s.roles.clone();
            sorted.dedup();
            assert_eq!(sorted.len(), s.roles.len(), "no role twice: {s:?}");
        }
        assert!(all.iter().any(|s| s.roles.len() == 6));
        assert!(all.iter().any(|s| s.roles.len() < 6));
    }

    #[test]
    fn the_tracker_measures_waits_and_counts_each_end_once() {
        let start = Instant::now();
        let mut t = Tracker::default();
        let session = |status: v1::SessionStatus, entries| v1::Session {
            id: "s".into(),
            status: status as i32,
            entry_count: entries,
            ..Default::default()
        };
        t.update(
            vec![session(v1::SessionStatus::Contribute, 1)],
            start,
            start,
        );
        assert_eq!(t.adopted.len(), 1, "not created by us: adopted");
        let later = start + Duration::from_secs(3);
        t.update(
            vec![session(v1::SessionStatus::Contribute, 1)],
            later,
            start,
        );
        assert_eq!(t.stall.waited, Duration::from_secs(3));
        let end = start + Duration::from_secs(4);
        t.update(vec![session(v1::SessionStatus::Consensus, 9)], end, start);
        t.update(
            vec![session(v1::SessionStatus::Consensus, 9)],
            end + Duration::from_secs(60),
            start,
        );
        assert_eq!(t.ended, 1);
        assert_eq!(t.in_flight(), 0);
        assert_eq!(
            t.stall.waited,
            Duration::from_secs(4),
            "an ended session waits no more"
        );
        assert_eq!(t.stall.status, "CONTRIBUTE");
    }
}
