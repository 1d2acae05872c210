use agentmesh_e2e::{Cluster, CoordinatorOpts};
use std::time::Duration;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_request::MessageRequest,
    server_reflection_response::MessageResponse,
};

#[test]
fn health_and_reflection_are_served() {
    let cluster = Cluster::start(CoordinatorOpts::default());
    let url = cluster.url.clone();
    let (health, services) = cluster.rt.block_on(async move {
        let channel = tonic::transport::Endpoint::from_shared(url)
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel.clone());
        let mut statuses = Vec::new();
        for service in [
            "",
            "agentmesh.v1.WorkerService",
            "agentmesh.v1.SessionService",
        ] {
            let response = health
                .check(HealthCheckRequest {
                    service: service.to_string(),
                })
                .await
                .unwrap()
                .into_inner();
            statuses.push(response.status);
        }
        let mut reflection = ServerReflectionClient::new(channel);
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut stream = reflection
            .server_reflection_info(tokio_stream::iter(vec![request]))
            .await
            .unwrap()
            .into_inner();
        let response = stream.message().await.unwrap().unwrap();
        let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
            panic!("unexpected reflection response");
        };
        (
            statuses,
            list.service.into_iter().map(|s| s.name).collect::<Vec<_>>(),
        )
    });
    assert!(
        health.iter().all(|s| *s == ServingStatus::Serving as i32),
        "{health:?}"
    );
    for name in [
        "agentmesh.v1.WorkerService",
        "agentmesh.v1.SessionService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.iter().any(|s| s == name),
            "{name} not in {services:?}"
        );
    }
}

#[test]
fn sigterm_stops_the_coordinator_and_idle_workers_gracefully() {
    let mut cluster = Cluster::start(CoordinatorOpts::default());
    cluster.add_roles(&["supervisor", "backend"], 1, &["--think-ms", "300"]);
    let id = cluster
        .create("Design a payments ledger", &["backend"], 0)
        .id;
    cluster.wait_session(&id, Duration::from_secs(10), "holding its workers", |s| {
        s.assignments.len() == 2
    });

    // Workers first: idle or not, each leaves cleanly.
    for worker in cluster.workers.values() {
        worker.signal("TERM");
    }
    for (id, worker) in cluster.workers.iter_mut() {
        assert_eq!(
            worker.wait_exit(Duration::from_secs(15)),
            Some(0),
            "{id} exit"
        );
    }
    // The coordinator saw every worker leave and took their roles back from the session.
    assert!(cluster.workers_connected().is_empty());
    assert!(cluster.session(&id).assignments.is_empty());
    cluster.coordinator.signal("TERM");
    assert_eq!(
        cluster.coordinator.wait_exit(Duration::from_secs(15)),
        Some(0),
        "coordinator exit:\n{}",
        cluster.logs()
    );
    assert!(
        cluster
            .coordinator
            .log_text()
            .contains("coordinator stopped")
    );
}
