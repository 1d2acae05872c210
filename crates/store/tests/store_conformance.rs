//! One set of [`SessionStore`] tests (`suite`), run against every implementation:
//! `memory::*`, `redb::*` and `etcd::*` (a real etcd per test). `etcd_only` holds what
//! only the cluster store promises: fencing, one revision per write, size limits, splits,
//! and surviving an etcd restart. `redb_only` checks durability across a reopen.

#[macro_use]
mod common;

use agentmesh_core::Status;
use agentmesh_etcd_testkit::EtcdServer;
use agentmesh_store::{EtcdStore, Fence, MemoryStore, RedbStore, SessionStore, StoreError};
use common::{entry, header};
use std::any::Any;
use std::time::Duration;

/// A store and whatever must live as long as it (an etcd process, a temp dir).
struct Fixture {
    store: Box<dyn SessionStore>,
    _keep: Box<dyn Any + Send>,
}

async fn memory() -> Fixture {
    Fixture {
        store: Box::new(MemoryStore::new()),
        _keep: Box::new(()),
    }
}

async fn redb() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    Fixture {
        store: Box::new(RedbStore::open(dir.path()).unwrap()),
        _keep: Box::new(dir),
    }
}

async fn etcd() -> Fixture {
    let server = common::start_etcd().await;
    let client = common::connect(&server).await;
    Fixture {
        store: Box::new(EtcdStore::new(client, agentmesh_store::DEFAULT_PREFIX)),
        _keep: Box::new(server),
    }
}

/// The test functions, generic over the store.
mod suite {
    use super::*;

    const U: &Fence = &Fence::Unfenced;

    pub async fn round_trip(store: &dyn SessionStore) {
        let h1 = header("s1", 100, "CONTRIBUTE", 2);
        let (e1, e2) = (entry(1, "first"), entry(2, "second"));
        store
            .write(U, &h1, &[e1.clone(), e2.clone()])
            .await
            .unwrap();

        assert_eq!(store.get("s1").await.unwrap(), h1);
        assert_eq!(
            store.entries("s1", 0).await.unwrap(),
            vec![e1.clone(), e2.clone()]
        );
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![e1.clone(), e2.clone()]
        );
        assert_eq!(store.entries("s1", 2).await.unwrap(), vec![e2.clone()]);
        assert_eq!(store.entries("s1", 3).await.unwrap(), vec![]);

        let h2 = header("s1", 100, "REVIEW", 3);
        let e3 = entry(3, "third");
        store
            .write(U, &h2, std::slice::from_ref(&e3))
            .await
            .unwrap();
        assert_eq!(store.get("s1").await.unwrap(), h2);
        assert_eq!(store.entries("s1", 1).await.unwrap(), vec![e1, e2, e3]);
        assert_eq!(store.list().await.unwrap(), vec![h2.clone()]);
        assert_eq!(store.unfinished().await.unwrap(), vec![h2]);
    }

    pub async fn seq_gap_on_a_gap_writes_nothing(store: &dyn SessionStore) {
        let h1 = header("s1", 100, "CONTRIBUTE", 1);
        store.write(U, &h1, &[entry(1, "one")]).await.unwrap();

        let later = header("s1", 100, "REVIEW", 3);
        let err = store
            .write(U, &later, &[entry(3, "three")])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::SeqGap {
                id: "s1".into(),
                got: 3,
                have: 1
            }
        );
        assert!(!err.is_retryable());
        assert_eq!(store.get("s1").await.unwrap(), h1, "header untouched");
        assert_eq!(store.entries("s1", 1).await.unwrap(), vec![entry(1, "one")]);
    }

    pub async fn seq_gap_on_a_rewrite_of_a_stored_seq(store: &dyn SessionStore) {
        let h1 = header("s1", 100, "CONTRIBUTE", 2);
        store
            .write(U, &h1, &[entry(1, "one"), entry(2, "two")])
            .await
            .unwrap();

        let h2 = header("s1", 100, "REVIEW", 3);
        let err = store
            .write(U, &h2, &[entry(2, "forged"), entry(3, "three")])
            .await
            .unwrap_err();
        assert_eq!(
            err,
            StoreError::SeqGap {
                id: "s1".into(),
                got: 2,
                have: 2
            }
        );
        assert_eq!(store.get("s1").await.unwrap(), h1);
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![entry(1, "one"), entry(2, "two")],
            "the stored entry is not overwritten and nothing is appended"
        );
    }

    pub async fn seq_gap_on_a_batch_that_is_not_consecutive(store: &dyn SessionStore) {
        let h = header("s1", 100, "CONTRIBUTE", 2);
        let err = store
            .write(U, &h, &[entry(1, "one"), entry(3, "three")])
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SeqGap {
                    got: 1,
                    have: 0,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            store.get("s1").await.unwrap_err(),
            StoreError::NotFound("s1".into())
        );
    }

    pub async fn a_transcript_starts_at_seq_1(store: &dyn SessionStore) {
        let h = header("s1", 100, "CONTRIBUTE", 1);
        let err = store.write(U, &h, &[entry(2, "two")]).await.unwrap_err();
        assert_eq!(
            err,
            StoreError::SeqGap {
                id: "s1".into(),
                got: 2,
                have: 0
            }
        );
        assert_eq!(
            store.get("s1").await.unwrap_err(),
            StoreError::NotFound("s1".into())
        );
    }

    pub async fn header_only_writes(store: &dyn SessionStore) {
        let pending = header("s1", 100, "PENDING", 0);
        store.write(U, &pending, &[]).await.unwrap();
        assert_eq!(store.get("s1").await.unwrap(), pending);
        assert_eq!(store.entries("s1", 1).await.unwrap(), vec![]);

        let framing = header("s1", 100, "FRAMING", 0);
        store.write(U, &framing, &[]).await.unwrap();
        assert_eq!(store.get("s1").await.unwrap(), framing);

        let contribute = header("s1", 100, "CONTRIBUTE", 1);
        store
            .write(U, &contribute, &[entry(1, "one")])
            .await
            .unwrap();
        let cancelled = header("s1", 100, "CANCELLED", 1);
        store.write(U, &cancelled, &[]).await.unwrap();
        assert_eq!(store.get("s1").await.unwrap().status, Status::Cancelled);
        assert_eq!(store.entries("s1", 1).await.unwrap(), vec![entry(1, "one")]);
    }

    pub async fn list_is_newest_first_and_unfinished_skips_ended(store: &dyn SessionStore) {
        let a = header("a", 100, "CONSENSUS", 0);
        let b = header("b", 300, "CONTRIBUTE", 0);
        let c = header("c", 200, "PENDING", 0);
        let d = header("d", 300, "FAILED", 0);
        let e = header("e", 50, "REVIEW", 0);
        for h in [&a, &b, &c, &d, &e] {
            store.write(U, h, &[]).await.unwrap();
        }
        // created_ms descending, then id ascending on a tie.
        assert_eq!(
            store.list().await.unwrap(),
            vec![b.clone(), d, c.clone(), a, e.clone()]
        );
        assert_eq!(store.unfinished().await.unwrap(), vec![b, c, e]);
    }

    pub async fn unknown_sessions_are_not_found(store: &dyn SessionStore) {
        assert_eq!(store.list().await.unwrap(), vec![]);
        assert_eq!(store.unfinished().await.unwrap(), vec![]);
        assert_eq!(
            store.get("nope").await.unwrap_err(),
            StoreError::NotFound("nope".into())
        );
        assert_eq!(
            store.entries("nope", 1).await.unwrap_err(),
            StoreError::NotFound("nope".into())
        );
    }

    pub async fn sessions_whose_ids_share_a_prefix_stay_apart(store: &dyn SessionStore) {
        store
            .write(U, &header("s1", 100, "CONTRIBUTE", 1), &[entry(1, "of s1")])
            .await
            .unwrap();
        store
            .write(
                U,
                &header("s10", 200, "CONTRIBUTE", 2),
                &[entry(1, "of s10"), entry(2, "of s10 again")],
            )
            .await
            .unwrap();
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![entry(1, "of s1")]
        );
        assert_eq!(
            store.entries("s10", 2).await.unwrap(),
            vec![entry(2, "of s10 again")]
        );
        // s1 continues at 2 although s10 already has a seq 2.
        store
            .write(
                U,
                &header("s1", 100, "CONTRIBUTE", 2),
                &[entry(2, "s1 two")],
            )
            .await
            .unwrap();
        assert_eq!(store.entries("s1", 1).await.unwrap().len(), 2);
        assert_eq!(store.list().await.unwrap().len(), 2);
    }

    pub async fn long_transcripts_and_many_sessions_read_back_whole(store: &dyn SessionStore) {
        // More than one read page (64) and, in one write, more than one etcd
        // transaction's worth of operations (128).
        let batch: Vec<_> = (1..=300)
            .map(|seq| entry(seq, &format!("e{seq}")))
            .collect();
        store
            .write(U, &header("long", 1_000, "CONTRIBUTE", 300), &batch)
            .await
            .unwrap();
        assert_eq!(store.entries("long", 1).await.unwrap(), batch);
        assert_eq!(
            store.entries("long", 250).await.unwrap(),
            batch[249..].to_vec()
        );
        assert_eq!(store.get("long").await.unwrap().entry_count, 300);
        store
            .write(
                U,
                &header("long", 1_000, "REVIEW", 301),
                &[entry(301, "e301")],
            )
            .await
            .unwrap();
        assert_eq!(
            store.entries("long", 301).await.unwrap(),
            vec![entry(301, "e301")]
        );

        for n in 0..130 {
            let h = header(&format!("s{n:03}"), n, "PENDING", 0);
            store.write(U, &h, &[]).await.unwrap();
        }
        let listed = store.list().await.unwrap();
        assert_eq!(listed.len(), 131);
        assert_eq!(listed[0].id, "long");
        let created: Vec<i64> = listed[1..].iter().map(|h| h.created_ms).collect();
        assert_eq!(created, (0..130).rev().collect::<Vec<i64>>());
        assert_eq!(store.unfinished().await.unwrap().len(), 131);
    }

    pub async fn ids_that_cannot_be_key_segments_are_refused(store: &dyn SessionStore) {
        for id in ["", "a/b", "/"] {
            let err = store
                .write(U, &header(id, 100, "PENDING", 1), &[entry(1, "one")])
                .await
                .unwrap_err();
            assert!(matches!(err, StoreError::Backend(_)), "{id:?}: {err:?}");
        }
        assert_eq!(store.list().await.unwrap(), vec![]);
    }

    pub async fn too_large_entries_are_refused_and_the_limit_fits(store: &dyn SessionStore) {
        let limit = store.max_entry_bytes();
        assert!(
            limit >= 512 * 1024,
            "room for the coordinator's 512 KiB replies"
        );
        let h = header("big", 100, "CONTRIBUTE", 1);

        let too_big = entry(1, &"x".repeat(limit));
        let err = store.write(U, &h, &[too_big]).await.unwrap_err();
        match err {
            StoreError::TooLarge { bytes, limit: l } => {
                assert!(bytes > limit, "{bytes} > {limit}");
                assert_eq!(l, limit);
            }
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert_eq!(
            store.get("big").await.unwrap_err(),
            StoreError::NotFound("big".into())
        );

        // An entry just under the limit, with its header, is accepted in one write.
        let json_overhead = serde_json::to_string(&entry(1, "")).unwrap().len();
        let fits = entry(1, &"y".repeat(limit - json_overhead));
        assert_eq!(serde_json::to_string(&fits).unwrap().len(), limit);
        store
            .write(U, &h, std::slice::from_ref(&fits))
            .await
            .unwrap();
        assert_eq!(store.entries("big", 1).await.unwrap(), vec![fits]);
    }

    /// The hash chain (issue 13): a batch must chain onto the stored head, as it must
    /// continue its seq. A wrong chain hash, an unchained entry after chained ones, or a
    /// batch chained onto another head is refused and writes nothing.
    pub async fn a_batch_that_does_not_chain_onto_the_stored_head_writes_nothing(
        store: &dyn SessionStore,
    ) {
        let h = header("c1", 100, "CONTRIBUTE", 3);
        let mut transcript = vec![entry(1, "one"), entry(2, "two"), entry(3, "three")];
        agentmesh_core::trust::rechain(&h.id, &h.task, &mut transcript);
        store.write(U, &h, &transcript[..2]).await.unwrap();
        let unchained = |err: StoreError| match err {
            StoreError::Unchained { seq, .. } => seq,
            other => panic!("expected Unchained, got {other:?}"),
        };
        // A wrong chain hash on the next entry.
        let mut wrong = transcript[2].clone();
        wrong.chain_hash.0[0] ^= 1;
        assert_eq!(
            unchained(store.write(U, &h, &[wrong]).await.unwrap_err()),
            3
        );
        // An entry without a chain hash after chained ones.
        let mut bare = transcript[2].clone();
        bare.chain_hash = Default::default();
        assert_eq!(unchained(store.write(U, &h, &[bare]).await.unwrap_err()), 3);
        // An entry chained onto a different entry 2 (its content changed before hashing).
        let mut forked = vec![entry(1, "one"), entry(2, "TWO"), entry(3, "three")];
        agentmesh_core::trust::rechain(&h.id, &h.task, &mut forked);
        let err = store.write(U, &h, &forked[2..]).await.unwrap_err();
        assert_eq!(unchained(err), 3);
        // A first entry that does not start from the session's genesis.
        let other = header("c2", 100, "CONTRIBUTE", 1);
        let err = store.write(U, &other, &transcript[..1]).await.unwrap_err();
        assert_eq!(unchained(err), 1);
        assert_eq!(
            store.entries("c1", 1).await.unwrap(),
            transcript[..2].to_vec()
        );
        assert!(
            store.entries("c2", 1).await.is_err()
                || store.entries("c2", 1).await.unwrap().is_empty()
        );
        // The right continuation goes through.
        store.write(U, &h, &transcript[2..]).await.unwrap();
        assert_eq!(store.entries("c1", 1).await.unwrap(), transcript);
    }
}

macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        backend_suite!(store, memory, super::memory, [$($test),*]);
        backend_suite!(store, redb, super::redb, [$($test),*]);
        backend_suite!(store, etcd, super::etcd, [$($test),*]);
    };
}

all_backends!(
    round_trip,
    seq_gap_on_a_gap_writes_nothing,
    seq_gap_on_a_rewrite_of_a_stored_seq,
    seq_gap_on_a_batch_that_is_not_consecutive,
    a_transcript_starts_at_seq_1,
    header_only_writes,
    list_is_newest_first_and_unfinished_skips_ended,
    unknown_sessions_are_not_found,
    sessions_whose_ids_share_a_prefix_stay_apart,
    too_large_entries_are_refused_and_the_limit_fits,
    long_transcripts_and_many_sessions_read_back_whole,
    ids_that_cannot_be_key_segments_are_refused,
    a_batch_that_does_not_chain_onto_the_stored_head_writes_nothing,
);

mod redb_only {
    use super::*;

    #[tokio::test]
    async fn survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let h = header("s1", 100, "REVIEW", 2);
        {
            let store = RedbStore::open(dir.path()).unwrap();
            store
                .write(&Fence::Unfenced, &h, &[entry(1, "one"), entry(2, "two")])
                .await
                .unwrap();
        }
        assert!(dir.path().join("sessions.redb").is_file());
        let store = RedbStore::open(dir.path()).unwrap();
        assert_eq!(store.get("s1").await.unwrap(), h);
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![entry(1, "one"), entry(2, "two")]
        );
        assert_eq!(store.unfinished().await.unwrap(), vec![h]);
        // The reopened transcript continues where it was, and only there.
        let err = store
            .write(
                &Fence::Unfenced,
                &header("s1", 100, "REVIEW", 3),
                &[entry(2, "again")],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::SeqGap {
                    got: 2,
                    have: 2,
                    ..
                }
            ),
            "{err:?}"
        );
    }
}

mod etcd_only {
    use super::*;
    use agentmesh_store::{Election, EtcdElection, Leadership};
    use common::within;
    use etcd_client::{Client, GetOptions};

    const TTL: Duration = Duration::from_secs(1);

    async fn setup() -> (EtcdServer, Client, EtcdStore) {
        common::init_tracing();
        let server = common::start_etcd().await;
        let client = common::connect(&server).await;
        let store = EtcdStore::new(client.clone(), agentmesh_store::DEFAULT_PREFIX)
            .with_op_timeout(Duration::from_secs(2));
        (server, client, store)
    }

    async fn mod_revision(client: &Client, key: &str) -> i64 {
        let resp = client.clone().get(key, None).await.unwrap();
        resp.kvs().first().expect("key exists").mod_revision()
    }

    async fn etcd_revision(client: &Client) -> i64 {
        let resp = client
            .clone()
            .get("/", Some(GetOptions::new().with_count_only()))
            .await;
        resp.unwrap().header().unwrap().revision()
    }

    /// Leader A is deposed (`depose` ends its lease one way or another) while B waits;
    /// then A's writes are fenced and B's go through.
    async fn deposed_leader_cannot_write(
        depose: impl FnOnce(Leadership) -> tokio::task::JoinHandle<()>,
    ) {
        let (_etcd, client, store) = setup().await;
        let name = agentmesh_store::DEFAULT_ELECTION;
        let a = EtcdElection::new(client.clone(), name, TTL);
        let b = EtcdElection::new(client.clone(), name, TTL);

        let leader_a = within(Duration::from_secs(5), "A leads", a.campaign("a:7000"))
            .await
            .unwrap();
        let fence_a = leader_a.fence.clone();
        assert!(matches!(fence_a, Fence::Leader { .. }));
        let b_campaign = tokio::spawn(async move { b.campaign("b:7000").await });

        let h1 = header("s1", 100, "CONTRIBUTE", 1);
        store
            .write(&fence_a, &h1, &[entry(1, "by a")])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b_campaign.is_finished(), "B waits while A leads");

        let a_lost = leader_a.lost();
        depose(leader_a).await.unwrap();
        let leader_b = within(Duration::from_secs(6), "B takes over", b_campaign)
            .await
            .unwrap()
            .unwrap();
        within(Duration::from_secs(3), "A learns it lost", a_lost).await;

        // A, not knowing better, writes with its old fence: refused, nothing written.
        let h2_by_a = header("s1", 100, "SYNTHESIZE", 2);
        let err = store
            .write(&fence_a, &h2_by_a, &[entry(2, "late, by a")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
        assert!(!err.is_retryable());
        // Also with a batch that would be a gap: the fence is what is reported.
        let err = store
            .write(&fence_a, &h2_by_a, &[entry(5, "gap, by a")])
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
        // And a header-only write.
        let err = store.write(&fence_a, &h2_by_a, &[]).await.unwrap_err();
        assert!(matches!(err, StoreError::Fenced(_)), "{err:?}");
        assert_eq!(store.get("s1").await.unwrap(), h1);
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![entry(1, "by a")]
        );

        let Fence::Leader {
            create_revision: rev_b,
            ..
        } = &leader_b.fence
        else {
            panic!("etcd fences")
        };
        let Fence::Leader {
            create_revision: rev_a,
            ..
        } = &fence_a
        else {
            unreachable!()
        };
        assert!(rev_b > rev_a);
        let h2_by_b = header("s1", 100, "SYNTHESIZE", 2);
        store
            .write(&leader_b.fence, &h2_by_b, &[entry(2, "by b")])
            .await
            .unwrap();
        assert_eq!(store.get("s1").await.unwrap(), h2_by_b);
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![entry(1, "by a"), entry(2, "by b")]
        );
        leader_b.resign().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_whose_lease_expired_is_fenced() {
        // A freezes: no more keep-alives; its lease expires after the TTL.
        deposed_leader_cannot_write(|a| {
            a.abandon();
            tokio::spawn(async {})
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_leader_that_resigned_is_fenced() {
        deposed_leader_cannot_write(|a| tokio::spawn(a.resign())).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_multi_entry_write_is_one_etcd_revision() {
        let (_etcd, client, store) = setup().await;
        let h = header("s1", 100, "CONTRIBUTE", 3);
        let batch = [entry(1, "one"), entry(2, "two"), entry(3, "three")];
        store.write(&Fence::Unfenced, &h, &batch).await.unwrap();

        let header_rev = mod_revision(&client, &store.header_key("s1")).await;
        for seq in 1..=3 {
            let key = store.entry_key("s1", seq);
            assert!(key.ends_with(&format!("/entries/s1/{seq:020}")), "{key}");
            assert_eq!(mod_revision(&client, &key).await, header_rev, "{key}");
        }
        assert_eq!(store.header_key("s1"), "/agentmesh/v1/sessions/s1");
        assert_eq!(
            etcd_revision(&client).await,
            header_rev,
            "nothing else was written"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn too_large_is_refused_without_touching_etcd() {
        let (mut etcd, client, store) = setup().await;
        let before = etcd_revision(&client).await;
        let h = header("s1", 100, "CONTRIBUTE", 1);
        let big = entry(1, &"x".repeat(store.max_entry_bytes() + 1));
        let err = store
            .write(&Fence::Unfenced, &h, std::slice::from_ref(&big))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
        assert_eq!(etcd_revision(&client).await, before);

        // With etcd gone the answer is the same, and immediate: it never asked etcd.
        etcd.kill().unwrap();
        let err = within(
            Duration::from_millis(500),
            "TooLarge without etcd",
            store.write(&Fence::Unfenced, &h, &[big]),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_over_the_request_limit_is_split_with_the_header_last() {
        let (_etcd, client, store) = setup().await;
        // Three entries of 700 KB: each fits, together they exceed etcd's 1.5 MiB.
        let batch: Vec<_> = (1..=3)
            .map(|seq| entry(seq, &"z".repeat(700_000)))
            .collect();
        let h = header("s1", 100, "CONTRIBUTE", 3);
        store.write(&Fence::Unfenced, &h, &batch).await.unwrap();
        assert_eq!(store.entries("s1", 1).await.unwrap(), batch);
        assert_eq!(store.get("s1").await.unwrap(), h);

        let revs: Vec<i64> = futures::future::join_all((1..=3).map(|seq| {
            let client = client.clone();
            let key = store.entry_key("s1", seq);
            async move { mod_revision(&client, &key).await }
        }))
        .await;
        let header_rev = mod_revision(&client, &store.header_key("s1")).await;
        assert!(
            revs[0] < revs[2],
            "split into several transactions: {revs:?}"
        );
        assert_eq!(header_rev, revs[2], "the header is in the last transaction");

        // The split write continues the transcript like any other.
        let h4 = header("s1", 100, "SYNTHESIZE", 4);
        store
            .write(&Fence::Unfenced, &h4, &[entry(4, "four")])
            .await
            .unwrap();
        assert_eq!(
            store.entries("s1", 4).await.unwrap(),
            vec![entry(4, "four")]
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unavailable_while_etcd_is_down_and_working_after_it_restarts() {
        let (etcd, _client, store) = setup().await;
        let h1 = header("s1", 100, "CONTRIBUTE", 1);
        store
            .write(&Fence::Unfenced, &h1, &[entry(1, "one")])
            .await
            .unwrap();

        let etcd = tokio::task::spawn_blocking(move || {
            let mut etcd = etcd;
            etcd.stop().unwrap();
            etcd
        })
        .await
        .unwrap();

        let h2 = header("s1", 100, "REVIEW", 2);
        let err = within(
            Duration::from_secs(5),
            "a write against a stopped etcd fails",
            store.write(&Fence::Unfenced, &h2, &[entry(2, "two")]),
        )
        .await
        .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        let err = store.get("s1").await.unwrap_err();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");

        let etcd = tokio::task::spawn_blocking(move || {
            let mut etcd = etcd;
            etcd.start_again().unwrap();
            etcd
        })
        .await
        .unwrap();

        common::eventually(
            Duration::from_secs(15),
            "write after the restart",
            || async {
                match store.write(&Fence::Unfenced, &h2, &[entry(2, "two")]).await {
                    Ok(()) => Some(()),
                    Err(e) if e.is_retryable() => None,
                    Err(e) => panic!("{e:?}"),
                }
            },
        )
        .await;
        assert_eq!(store.get("s1").await.unwrap(), h2);
        assert_eq!(
            store.entries("s1", 1).await.unwrap(),
            vec![entry(1, "one"), entry(2, "two")],
            "what was written before the restart survived it"
        );
        drop(etcd);
    }
}
