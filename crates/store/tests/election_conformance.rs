//! One set of [`Election`] tests (`suite`), run against `sole::*` ([`SoleLeader`]) and
//! `etcd::*` (a real etcd per test). `etcd_only` covers two candidates: who leads, the
//! take-over after the leader freezes or resigns, and loss when etcd goes away.

#[macro_use]
mod common;

use agentmesh_etcd_testkit::EtcdServer;
use agentmesh_store::{Election, EtcdElection, Fence, Leadership, SoleLeader};
use common::{eventually, within};
use std::any::Any;
use std::time::{Duration, Instant};

/// Two seconds: short for a fast suite, long enough that a loaded CI machine answers
/// keep-alives (three per TTL) in time.
const TTL: Duration = Duration::from_secs(2);

struct Fixture {
    election: Box<dyn Election>,
    _keep: Box<dyn Any + Send>,
}

async fn sole() -> Fixture {
    Fixture {
        election: Box::new(SoleLeader::new()),
        _keep: Box::new(()),
    }
}

async fn etcd() -> Fixture {
    let server = common::start_etcd().await;
    let client = common::connect(&server).await;
    Fixture {
        election: Box::new(EtcdElection::new(
            client,
            agentmesh_store::DEFAULT_ELECTION,
            TTL,
        )),
        _keep: Box::new(server),
    }
}

async fn leader_becomes(election: &dyn Election, expect: Option<&str>) {
    let what = format!("leader() == {expect:?}");
    eventually(Duration::from_secs(5), &what, || async {
        (election.leader().await.unwrap().as_deref() == expect).then_some(())
    })
    .await;
}

/// Not resolved within `quiet`.
async fn still_pending(
    lost: &mut (impl std::future::Future<Output = ()> + Unpin),
    quiet: Duration,
) {
    assert!(
        tokio::time::timeout(quiet, lost).await.is_err(),
        "leadership reported lost"
    );
}

mod suite {
    use super::*;

    pub async fn campaign_leads_and_leader_reports_its_value(election: &dyn Election) {
        assert_eq!(election.leader().await.unwrap(), None, "nobody leads yet");
        let leadership = within(
            Duration::from_secs(5),
            "campaign",
            election.campaign("127.0.0.1:7001"),
        )
        .await
        .unwrap();
        assert_eq!(leadership.value(), "127.0.0.1:7001");
        assert_eq!(
            election.leader().await.unwrap().as_deref(),
            Some("127.0.0.1:7001")
        );
        assert!(!leadership.is_lost());

        // It stays leading for longer than its TTL while kept alive.
        let mut lost = Box::pin(leadership.lost());
        still_pending(&mut lost, TTL * 3 / 2).await;
        assert!(!leadership.is_lost());
        assert_eq!(
            election.leader().await.unwrap().as_deref(),
            Some("127.0.0.1:7001")
        );

        leadership.resign().await;
        within(Duration::from_secs(1), "lost() after resign", lost).await;
        leader_becomes(election, None).await;
    }

    pub async fn dropping_leadership_resigns(election: &dyn Election) {
        let leadership = election.campaign("127.0.0.1:7001").await.unwrap();
        let lost = leadership.lost();
        drop(leadership);
        within(Duration::from_secs(3), "lost() after drop", lost).await;
        leader_becomes(election, None).await;
    }

    pub async fn lost_resolves_at_once_when_taken_after_the_loss(election: &dyn Election) {
        let leadership = election.campaign("127.0.0.1:7001").await.unwrap();
        let taken_before = leadership.lost();
        leadership.resign().await;
        // Resolved at the first poll: the loss was recorded before `resign` returned.
        assert!(
            futures::FutureExt::now_or_never(taken_before).is_some(),
            "lost() taken before a resign must be ready once it has returned"
        );
        // A leader can campaign again after resigning.
        let again = election.campaign("127.0.0.1:7001").await.unwrap();
        assert!(!again.is_lost());
        assert_eq!(
            election.leader().await.unwrap().as_deref(),
            Some("127.0.0.1:7001")
        );
        again.resign().await;
    }
}

macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        backend_suite!(election, sole, super::sole, [$($test),*]);
        backend_suite!(election, etcd, super::etcd, [$($test),*]);
    };
}

all_backends!(
    campaign_leads_and_leader_reports_its_value,
    dropping_leadership_resigns,
    lost_resolves_at_once_when_taken_after_the_loss,
);

mod sole_only {
    use super::*;

    #[tokio::test]
    async fn the_sole_leader_is_unfenced() {
        let leadership = SoleLeader::new().campaign("local").await.unwrap();
        assert_eq!(leadership.fence, Fence::Unfenced);
    }
}

mod etcd_only {
    use super::*;

    async fn two_candidates() -> (EtcdServer, etcd_client::Client, EtcdElection, EtcdElection) {
        common::init_tracing();
        let server = common::start_etcd().await;
        let client = common::connect(&server).await;
        let name = agentmesh_store::DEFAULT_ELECTION;
        let a = EtcdElection::new(client.clone(), name, TTL);
        let b = EtcdElection::new(client.clone(), name, TTL);
        (server, client, a, b)
    }

    fn revision(fence: &Fence) -> i64 {
        match fence {
            Fence::Leader {
                create_revision, ..
            } => *create_revision,
            Fence::Unfenced => panic!("etcd leadership is fenced"),
        }
    }

    /// A leads, B waits; `depose` ends A; B takes over within `takeover` and A's
    /// `lost()` fires.
    async fn take_over(
        depose: impl FnOnce(Leadership) -> tokio::task::JoinHandle<()>,
        takeover: Duration,
    ) {
        let (_etcd, client, a, b) = two_candidates().await;
        let leader_a = within(Duration::from_secs(5), "A campaigns", a.campaign("a:7001"))
            .await
            .unwrap();
        let Fence::Leader {
            key,
            create_revision,
        } = &leader_a.fence
        else {
            panic!("etcd fences")
        };
        // The fence names A's key in etcd, under the election's name.
        let stored = client.clone().get(key.clone(), None).await.unwrap();
        assert_eq!(stored.kvs()[0].create_revision(), *create_revision);
        assert_eq!(stored.kvs()[0].value(), b"a:7001");
        assert!(String::from_utf8_lossy(key).starts_with("/agentmesh/v1/leader/"));

        let b2 = b.clone();
        let b_campaign = tokio::spawn(async move { b2.campaign("b:7002").await });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b_campaign.is_finished(), "only one leads");
        assert_eq!(b.leader().await.unwrap().as_deref(), Some("a:7001"));

        let a_lost = leader_a.lost();
        let fence_a = leader_a.fence.clone();
        let deposed_at = Instant::now();
        depose(leader_a).await.unwrap();
        let leader_b = within(takeover, "B takes over", b_campaign)
            .await
            .unwrap()
            .unwrap();
        let took = deposed_at.elapsed();
        within(Duration::from_secs(3), "A's lost()", a_lost).await;
        assert_eq!(a.leader().await.unwrap().as_deref(), Some("b:7002"));
        assert!(revision(&leader_b.fence) > revision(&fence_a));
        assert!(!leader_b.is_lost());
        tracing::info!("B took over {took:?} after A was deposed");
        leader_b.resign().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_other_candidate_takes_over_within_the_ttl_after_the_leader_freezes() {
        // A frozen leader sends no keep-alives: its lease expires after the TTL (etcd
        // checks expiry every 500 ms), then B leads.
        take_over(
            |a| {
                a.abandon();
                tokio::spawn(async {})
            },
            TTL + Duration::from_secs(3),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_other_candidate_takes_over_at_once_after_a_resign() {
        take_over(|a| tokio::spawn(a.resign()), Duration::from_secs(1)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_frozen_leader_learns_it_lost_before_the_next_one_leads() {
        let (_etcd, _client, a, b) = two_candidates().await;
        let leader_a = a.campaign("a:7001").await.unwrap();
        // Each instant is taken where its event happens, by a task of its own, so the
        // order below is the order of the events, not of this test's awaits.
        let b_campaign = tokio::spawn(async move {
            let leadership = b.campaign("b:7002").await;
            (leadership, Instant::now())
        });
        let a_lost = leader_a.lost();
        let a_stopped = tokio::spawn(async move {
            a_lost.await;
            Instant::now()
        });
        leader_a.abandon();
        let (leader_b, led_at) = within(Duration::from_secs(5), "B leads", b_campaign)
            .await
            .unwrap();
        let lost_at = within(Duration::from_secs(5), "A's lost()", a_stopped)
            .await
            .unwrap();
        // A counts its TTL from before etcd does, so it stops first: never two leaders.
        assert!(
            lost_at <= led_at,
            "A noticed its loss {:?} after B led",
            lost_at - led_at
        );
        leader_b.unwrap().resign().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leadership_is_lost_when_etcd_is_unreachable_for_the_ttl() {
        let (etcd, _client, a, _b) = two_candidates().await;
        let leader_a = a.campaign("a:7001").await.unwrap();
        let mut lost = Box::pin(leader_a.lost());
        still_pending(&mut lost, Duration::from_millis(500)).await;
        let start = Instant::now();
        // A frozen etcd: connections stay open, nothing answers.
        etcd.pause().unwrap();
        within(
            TTL + Duration::from_secs(2),
            "lost() with etcd frozen",
            lost,
        )
        .await;
        // Not at the first missed keep-alive (they go every TTL/3): only once a whole TTL
        // has passed since the last one etcd answered, which was at most TTL/3 ago.
        assert!(
            start.elapsed() >= TTL / 2,
            "gave up after {:?}, before the lease could have expired",
            start.elapsed()
        );
        assert!(leader_a.is_lost());
        etcd.resume().unwrap();
        drop(leader_a);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_campaign_waits_through_an_etcd_restart() {
        let (etcd, _client, a, _b) = two_candidates().await;
        let etcd = tokio::task::spawn_blocking(move || {
            let mut etcd = etcd;
            etcd.stop().unwrap();
            etcd
        })
        .await
        .unwrap();
        let a2 = a.clone();
        let campaign = tokio::spawn(async move { a2.campaign("a:7001").await });
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!campaign.is_finished(), "no etcd, no leadership");
        let etcd = tokio::task::spawn_blocking(move || {
            let mut etcd = etcd;
            etcd.start_again().unwrap();
            etcd
        })
        .await
        .unwrap();
        let leader = within(Duration::from_secs(10), "campaign after restart", campaign)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(a.leader().await.unwrap().as_deref(), Some("a:7001"));
        leader.resign().await;
        drop(etcd);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_campaign_broken_by_an_etcd_outage_is_withdrawn_before_the_next_one() {
        let (etcd, client, a, b) = two_candidates().await;
        let leader_a = a.campaign("a:7001").await.unwrap();
        let b2 = b.clone();
        let b_campaign = tokio::spawn(async move { b2.campaign("b:7002").await });
        // B is queued: its candidacy key exists beside A's.
        let prefix = format!("{}/", agentmesh_store::DEFAULT_ELECTION);
        let Fence::Leader { key: a_key, .. } = leader_a.fence.clone() else {
            panic!("etcd fences")
        };
        let broken_key = eventually(Duration::from_secs(5), "B's candidacy key", || {
            let (mut c, prefix, a_key) = (client.clone(), prefix.clone(), a_key.clone());
            async move {
                let resp = c
                    .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
                    .await
                    .ok()?;
                resp.kvs()
                    .iter()
                    .map(|kv| kv.key().to_vec())
                    .find(|key| *key != a_key)
            }
        })
        .await;

        // etcd goes away: B's campaign call breaks, and A loses its lease's keep-alives.
        let a_lost = leader_a.lost();
        let mut etcd = tokio::task::spawn_blocking(move || {
            let mut etcd = etcd;
            etcd.stop().unwrap();
            etcd
        })
        .await
        .unwrap();
        within(TTL + Duration::from_secs(3), "A's lost()", a_lost).await;
        // B's campaign broke on the outage; B gives it up (a coordinator shutting down, or
        // campaigning anew) while etcd cannot hear the withdrawal.
        b_campaign.abort();
        let _ = b_campaign.await;
        etcd = tokio::task::spawn_blocking(move || {
            etcd.start_again().unwrap();
            etcd
        })
        .await
        .unwrap();
        // Back, etcd renews every lease it had, the broken candidacy's too. A hands over
        // as a coordinator does once it can; the oldest candidacy left is B's broken one.
        leader_a.resign().await;
        let leader_b = within(Duration::from_secs(20), "B leads", b.campaign("b:7002"))
            .await
            .unwrap();
        let Fence::Leader {
            create_revision: won_at,
            ..
        } = leader_b.fence.clone()
        else {
            panic!("etcd fences")
        };
        // B withdrew the broken candidacy (revoked its lease) before it campaigned again:
        // otherwise that key, named leader while B did not lead, would have outlived B's
        // new key's creation until its lease ran out.
        let mut watcher = client.watch_client();
        let mut stream = watcher
            .watch(
                broken_key.clone(),
                Some(etcd_client::WatchOptions::new().with_start_revision(1)),
            )
            .await
            .unwrap();
        let deleted_at = within(Duration::from_secs(5), "the broken key's deletion", async {
            loop {
                let resp = stream.message().await.unwrap().expect("watch open");
                if let Some(event) = resp
                    .events()
                    .iter()
                    .find(|e| e.event_type() == etcd_client::EventType::Delete)
                {
                    return event.kv().map_or(0, |kv| kv.mod_revision());
                }
            }
        })
        .await;
        assert!(
            deleted_at < won_at,
            "the broken candidacy {} was deleted at revision {deleted_at}, after B's new key at {won_at}",
            String::from_utf8_lossy(&broken_key)
        );
        leader_b.resign().await;
        drop(etcd);
    }
}
