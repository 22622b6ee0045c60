//! What every server serves beside its API: health and reflection.

mod common;

use common::*;
use tandem_platform::testing::TestDb;
use tonic::Code;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus};

backend_tests!(health_and_reflection);

/// Every service identity serves.
const IDENTITY_SERVICES: [&str; 9] = [
    "tandem.identity.v1.AuthService",
    "tandem.identity.v1.StaffService",
    "tandem.identity.v1.TeamService",
    "tandem.identity.v1.InvitationService",
    "tandem.identity.v1.DomainService",
    "tandem.identity.v1.ProgramService",
    "tandem.identity.v1.ApplicationService",
    "tandem.identity.v1.AccessService",
    "tandem.identity.v1.NotificationService",
];

async fn health_and_reflection(db: TestDb) {
    let app = TestApp::spawn(db).await;

    // Health: SERVING for the server and for each service by name.
    for service in [""].into_iter().chain(IDENTITY_SERVICES) {
        let answer = app.health().check(HealthCheckRequest { service: service.into() }).await.must();
        assert_eq!(answer.status(), ServingStatus::Serving, "{service:?}");
    }
    app.health()
        .check(HealthCheckRequest { service: "tandem.nothing.v1.Nope".into() })
        .await
        .fails(Code::NotFound);

    // Reflection, v1alpha (grpcurl, grpcio) and v1: the services are listed, and described.
    {
        use tonic_reflection::pb::v1alpha::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let ask = |request: MessageRequest| ServerReflectionRequest {
            host: String::new(),
            message_request: Some(request),
        };
        let mut client = ServerReflectionClient::new(app.channel.clone());
        let requests = vec![
            ask(MessageRequest::ListServices(String::new())),
            ask(MessageRequest::FileContainingSymbol("tandem.identity.v1.TeamService".into())),
        ];
        let mut answers = client.server_reflection_info(futures::stream::iter(requests)).await.must();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a list of services");
        };
        let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
        for service in IDENTITY_SERVICES.into_iter().chain(["grpc.health.v1.Health"]) {
            assert!(names.iter().any(|n| n == service), "{service} missing from {names:?}");
        }
        let Some(MessageResponse::FileDescriptorResponse(files)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a file descriptor");
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }
    {
        use tonic_reflection::pb::v1::{
            ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
            server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
        };
        let request = ServerReflectionRequest {
            host: String::new(),
            message_request: Some(MessageRequest::ListServices(String::new())),
        };
        let mut client = ServerReflectionClient::new(app.channel.clone());
        let mut answers = client.server_reflection_info(futures::stream::iter(vec![request])).await.must();
        let Some(MessageResponse::ListServicesResponse(list)) =
            answers.message().await.unwrap().unwrap().message_response
        else {
            panic!("not a list of services");
        };
        assert!(list.service.iter().any(|s| s.name == "tandem.identity.v1.TeamService"));
    }
}
