//! One set of [`WorkerRegistry`] tests (`suite`), run against `memory::*` and `etcd::*`
//! (a real etcd per test). `etcd_only` covers what only etcd can do to a registry: restart
//! under a watcher, and take a worker's lease away.

#[macro_use]
mod common;

use agentmesh_etcd_testkit::EtcdServer;
use agentmesh_store::{
    EtcdRegistry, MemoryRegistry, RegistryEvent, StoreError, WorkerRecord, WorkerRegistry,
};
use common::within;
use futures::StreamExt;
use futures::stream::BoxStream;
use std::any::Any;
use std::time::{Duration, Instant};

const TTL: Duration = Duration::from_secs(1);

struct Fixture {
    registry: Box<dyn WorkerRegistry>,
    _keep: Box<dyn Any + Send>,
}

async fn memory() -> Fixture {
    Fixture {
        registry: Box::new(MemoryRegistry::new()),
        _keep: Box::new(()),
    }
}

async fn etcd() -> Fixture {
    let server = common::start_etcd().await;
    let client = common::connect(&server).await;
    Fixture {
        registry: Box::new(
            EtcdRegistry::new(client, agentmesh_store::DEFAULT_PREFIX)
                .with_op_timeout(Duration::from_secs(2)),
        ),
        _keep: Box::new(server),
    }
}

fn worker(role: &str, id: &str) -> WorkerRecord {
    WorkerRecord {
        role: role.into(),
        worker_id: id.into(),
        capacity: 4,
        version: "0.1.0".into(),
        address: format!("127.0.0.1:0/{id}"),
        public_key: String::new(),
    }
}

async fn next(events: &mut BoxStream<'static, RegistryEvent>) -> RegistryEvent {
    within(
        Duration::from_secs(10),
        "next registry event",
        events.next(),
    )
    .await
    .expect("the watch never ends")
}

/// Asserts that nothing arrives for `quiet`.
async fn nothing_for(events: &mut BoxStream<'static, RegistryEvent>, quiet: Duration) {
    if let Ok(event) = tokio::time::timeout(quiet, events.next()).await {
        panic!("expected quiet for {quiet:?}, got {event:?}");
    }
}

mod suite {
    use super::*;

    pub async fn register_shows_in_list_and_watch(registry: &dyn WorkerRegistry) {
        let mut events = registry.watch();
        assert_eq!(next(&mut events).await, RegistryEvent::Snapshot(vec![]));

        let w1 = worker("backend", "w1");
        let _reg = registry.register(w1.clone(), TTL).await.unwrap();
        assert_eq!(next(&mut events).await, RegistryEvent::Up(w1.clone()));
        assert_eq!(registry.list().await.unwrap(), vec![w1.clone()]);

        // A watch started later begins with everyone registered.
        let mut late = registry.watch();
        assert_eq!(next(&mut late).await, RegistryEvent::Snapshot(vec![w1]));
    }

    pub async fn revoke_reports_down_at_once(registry: &dyn WorkerRegistry) {
        let w1 = worker("backend", "w1");
        let reg = registry.register(w1.clone(), TTL * 10).await.unwrap();
        let mut events = registry.watch();
        assert_eq!(next(&mut events).await, RegistryEvent::Snapshot(vec![w1]));

        let start = Instant::now();
        reg.revoke().await;
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Down {
                role: "backend".into(),
                worker_id: "w1".into()
            }
        );
        assert!(start.elapsed() < TTL * 10 / 2, "not by expiry");
        assert_eq!(registry.list().await.unwrap(), vec![]);
    }

    pub async fn abandon_reports_down_after_the_ttl(registry: &dyn WorkerRegistry) {
        let w1 = worker("backend", "w1");
        let reg = registry.register(w1.clone(), TTL).await.unwrap();
        let mut events = registry.watch();
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Snapshot(vec![w1.clone()])
        );

        let start = Instant::now();
        reg.abandon();
        // Still registered for a while: abandoning does not revoke.
        nothing_for(&mut events, Duration::from_millis(300)).await;
        assert_eq!(registry.list().await.unwrap(), vec![w1]);
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Down {
                role: "backend".into(),
                worker_id: "w1".into()
            }
        );
        let waited = start.elapsed();
        assert!(
            waited < TTL + Duration::from_secs(3),
            "expired after {waited:?}"
        );
        assert_eq!(registry.list().await.unwrap(), vec![]);
    }

    pub async fn drop_revokes(registry: &dyn WorkerRegistry) {
        let reg = registry
            .register(worker("backend", "w1"), TTL * 10)
            .await
            .unwrap();
        let mut events = registry.watch();
        assert!(matches!(next(&mut events).await, RegistryEvent::Snapshot(v) if v.len() == 1));
        drop(reg);
        assert!(matches!(
            next(&mut events).await,
            RegistryEvent::Down { .. }
        ));
        assert_eq!(registry.list().await.unwrap(), vec![]);
    }

    pub async fn a_registration_outlives_its_ttl_while_kept_alive(registry: &dyn WorkerRegistry) {
        let w1 = worker("backend", "w1");
        let reg = registry.register(w1.clone(), TTL).await.unwrap();
        let mut events = registry.watch();
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Snapshot(vec![w1.clone()])
        );
        nothing_for(&mut events, TTL * 3).await;
        assert_eq!(registry.list().await.unwrap(), vec![w1]);
        reg.revoke().await;
    }

    pub async fn list_is_ordered_by_role_then_worker(registry: &dyn WorkerRegistry) {
        let mut regs = Vec::new();
        for (role, id) in [
            ("backend", "w2"),
            ("backend-x", "w0"),
            ("architect", "w9"),
            ("backend", "w1"),
        ] {
            regs.push(registry.register(worker(role, id), TTL * 10).await.unwrap());
        }
        let listed: Vec<(String, String)> = registry
            .list()
            .await
            .unwrap()
            .into_iter()
            .map(|w| (w.role, w.worker_id))
            .collect();
        let expect = [
            ("architect", "w9"),
            ("backend", "w1"),
            ("backend", "w2"),
            ("backend-x", "w0"),
        ];
        let expect: Vec<(String, String)> = expect
            .iter()
            .map(|(r, w)| (r.to_string(), w.to_string()))
            .collect();
        assert_eq!(listed, expect);
        for reg in regs {
            reg.revoke().await;
        }
        assert_eq!(registry.list().await.unwrap(), vec![]);
    }

    pub async fn ids_that_cannot_be_key_segments_are_refused(registry: &dyn WorkerRegistry) {
        for (role, id) in [
            ("back/end", "w1"),
            ("backend", "w/1"),
            ("", "w1"),
            ("backend", ""),
        ] {
            let err = registry.register(worker(role, id), TTL).await.unwrap_err();
            assert!(
                matches!(err, StoreError::Backend(_)),
                "{role:?}/{id:?}: {err:?}"
            );
        }
        assert_eq!(registry.list().await.unwrap(), vec![]);
    }
}

macro_rules! all_backends {
    ($($test:ident),* $(,)?) => {
        backend_suite!(registry, memory, super::memory, [$($test),*]);
        backend_suite!(registry, etcd, super::etcd, [$($test),*]);
    };
}

all_backends!(
    register_shows_in_list_and_watch,
    revoke_reports_down_at_once,
    abandon_reports_down_after_the_ttl,
    drop_revokes,
    a_registration_outlives_its_ttl_while_kept_alive,
    list_is_ordered_by_role_then_worker,
    ids_that_cannot_be_key_segments_are_refused,
);

mod etcd_only {
    use super::*;
    use etcd_client::Client;

    async fn setup() -> (EtcdServer, Client, EtcdRegistry) {
        common::init_tracing();
        let server = common::start_etcd().await;
        let client = common::connect(&server).await;
        let registry = EtcdRegistry::new(client.clone(), agentmesh_store::DEFAULT_PREFIX)
            .with_op_timeout(Duration::from_secs(1));
        (server, client, registry)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keys_live_under_the_workers_prefix_with_a_lease() {
        let (_etcd, client, registry) = setup().await;
        let w1 = worker("backend", "w1");
        let reg = registry.register(w1.clone(), TTL).await.unwrap();
        assert_eq!(reg.key(), "/agentmesh/v1/workers/backend/w1");
        let resp = client.clone().get(reg.key(), None).await.unwrap();
        let kv = resp.kvs().first().expect("registered");
        assert_ne!(kv.lease(), 0, "attached to a lease");
        let stored: WorkerRecord = serde_json::from_slice(kv.value()).unwrap();
        assert_eq!(stored, w1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_re_snapshots_after_an_etcd_restart() {
        let (etcd, _client, registry) = setup().await;
        let w1 = worker("backend", "w1");
        // Long enough a ttl that the lease cannot expire during the restart.
        let reg1 = registry
            .register(w1.clone(), Duration::from_secs(5))
            .await
            .unwrap();
        let mut events = registry.watch();
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Snapshot(vec![w1.clone()])
        );

        let etcd = tokio::task::spawn_blocking(move || {
            let mut etcd = etcd;
            etcd.stop().unwrap();
            std::thread::sleep(Duration::from_millis(500));
            etcd.start_again().unwrap();
            etcd
        })
        .await
        .unwrap();

        // The broken watch is replaced by a fresh list: a new snapshot, w1 still in it.
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Snapshot(vec![w1.clone()])
        );
        // And it resumes: changes after the restart arrive as events.
        let w2 = worker("frontend", "w2");
        let reg2 = registry.register(w2.clone(), TTL).await.unwrap();
        assert_eq!(next(&mut events).await, RegistryEvent::Up(w2.clone()));
        reg1.revoke().await;
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Down {
                role: "backend".into(),
                worker_id: "w1".into()
            }
        );
        assert_eq!(registry.list().await.unwrap(), vec![w2]);
        reg2.revoke().await;
        drop(etcd);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_whose_lease_is_gone_registers_again() {
        let (_etcd, client, registry) = setup().await;
        let w1 = worker("backend", "w1");
        let reg = registry.register(w1.clone(), TTL).await.unwrap();
        let mut events = registry.watch();
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Snapshot(vec![w1.clone()])
        );

        // Take the lease away behind the registration's back, as an expiry during an
        // outage would.
        let lease = client.clone().get(reg.key(), None).await.unwrap().kvs()[0].lease();
        client.clone().lease_revoke(lease).await.unwrap();
        assert_eq!(
            next(&mut events).await,
            RegistryEvent::Down {
                role: "backend".into(),
                worker_id: "w1".into()
            }
        );
        // The keep-alive task notices on its next refresh and puts the key back.
        assert_eq!(next(&mut events).await, RegistryEvent::Up(w1.clone()));
        let resp = client.clone().get(reg.key(), None).await.unwrap();
        let new_lease = resp.kvs()[0].lease();
        assert_ne!(new_lease, lease, "under a new lease");
        // Which is kept alive like the first.
        nothing_for(&mut events, TTL * 2).await;
        reg.revoke().await;
        assert!(matches!(
            next(&mut events).await,
            RegistryEvent::Down { .. }
        ));
        assert!(
            client
                .clone()
                .get("/agentmesh/v1/workers/", None)
                .await
                .unwrap()
                .kvs()
                .is_empty()
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_registration_survives_an_etcd_outage_longer_than_its_ttl() {
        let (etcd, client, registry) = setup().await;
        let w1 = worker("backend", "w1");
        let reg = registry.register(w1.clone(), TTL).await.unwrap();
        // Frozen for more than twice the ttl: keep-alives time out meanwhile, and the
        // lease is past its expiry when etcd runs again.
        etcd.pause().unwrap();
        tokio::time::sleep(TTL * 5 / 2).await;
        etcd.resume().unwrap();

        // The registration comes back by itself (same lease if etcd did not get to
        // expire it, a new one if it did) and then stays.
        common::eventually(Duration::from_secs(10), "registered again", || async {
            let listed = registry.list().await.ok()?;
            (listed == vec![w1.clone()]).then_some(())
        })
        .await;
        tokio::time::sleep(TTL * 2).await;
        assert_eq!(registry.list().await.unwrap(), vec![w1]);
        let resp = client.clone().get(reg.key(), None).await.unwrap();
        assert_ne!(resp.kvs()[0].lease(), 0);
        reg.revoke().await;
        assert_eq!(registry.list().await.unwrap(), vec![]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn list_is_unavailable_while_etcd_is_down() {
        let (mut etcd, _client, registry) = setup().await;
        etcd.kill().unwrap();
        let err = registry.list().await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        let err = registry
            .register(worker("backend", "w1"), TTL)
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
    }
}
