//! PostgreSQL crashes under load: calls fail with UNAVAILABLE within their deadline, the
//! services recover by themselves when it returns, and no acknowledged write is lost.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use tandem_proto::{
    common::v1::Money,
    deals::v1::{self as deals, deal_service_client::DealServiceClient},
    identity::v1::{self as identity, auth_service_client::AuthServiceClient},
};
use tandem_system_tests::{Cluster, Options, PrivatePostgres, authed};

/// What one call of the load came to.
struct Outcome {
    request_id: String,
    result: Result<String, tonic::Code>,
    took: Duration,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_crash_fails_calls_cleanly_and_the_services_recover_without_losing_writes() {
    if std::env::var("TANDEM_TEST_POSTGRES_URL").is_err() {
        eprintln!("skipping: TANDEM_TEST_POSTGRES_URL is not set (the system tests run with PostgreSQL)");
        return;
    }
    let postgres = PrivatePostgres::start().expect("a PostgreSQL of this test");
    let options = Options {
        postgres_admin_url: Some(postgres.admin_url()),
        // The four clients send as one partner, faster than its fair share; what is tested
        // here is the crash, so every refusal must be the database's.
        env: vec![("TANDEM_RATE_LIMIT_PER_SECOND".into(), "0".into())],
        ..Options::default()
    };
    let cluster = Cluster::start(options).await.expect("start the cluster").expect("PostgreSQL");
    let pids: Vec<Option<u32>> =
        [&cluster.identity, &cluster.deals, &cluster.tiers, &cluster.commissions].map(|s| s.pid()).to_vec();

    let signed_up = AuthServiceClient::new(cluster.identity.channel())
        .sign_up(identity::SignUpRequest {
            email: "ana@northwind.example".into(),
            password: "faults-partner-password".into(),
            display_name: "Ana".into(),
            team_name: "Northwind".into(),
        })
        .await
        .expect("sign up")
        .into_inner();
    let team = signed_up.team.unwrap().id;
    let token = AuthServiceClient::new(cluster.identity.channel())
        .authenticate(identity::AuthenticateRequest {
            email: "ana@northwind.example".into(),
            password: "faults-partner-password".into(),
        })
        .await
        .expect("sign in")
        .into_inner()
        .access_token;

    // Four clients register deals without pause.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(Mutex::new(Vec::<Outcome>::new()));
    let mut clients = Vec::new();
    for client in 0..4 {
        let (stop, outcomes, token, team) = (stop.clone(), outcomes.clone(), token.clone(), team.clone());
        let mut deals_client = DealServiceClient::new(cluster.deals.channel());
        clients.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let request_id = format!("faults-{client}-{n}");
                let started = Instant::now();
                let result = deals_client
                    .register_deal(authed(
                        &token,
                        deals::RegisterDealRequest {
                            team_id: team.clone(),
                            customer_name: format!("Customer {client}-{n}"),
                            customer_domain: format!("c{client}-{n}.example"),
                            amount: Some(Money { currency_code: "USD".into(), amount_minor: 100_000 }),
                            products: vec!["Sales Hub".into()],
                            client_market: "US".into(),
                            deal_type: deals::DealType::NewBusiness.into(),
                            request_id: request_id.clone(),
                            ..Default::default()
                        },
                    ))
                    .await
                    .map(|r| r.into_inner().deal.unwrap().id)
                    .map_err(|s| s.code());
                let failed = result.is_err();
                outcomes.lock().unwrap().push(Outcome { request_id, result, took: started.elapsed() });
                if failed {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(2)).await;
    postgres.crash().expect("crash PostgreSQL");
    let crashed_at = outcomes.lock().unwrap().len();
    tokio::time::sleep(Duration::from_secs(4)).await;
    postgres.start_again().expect("start PostgreSQL again");
    let restarted_at = Instant::now();
    // Recovery without a restart: calls succeed again.
    loop {
        let recovered = outcomes.lock().unwrap().iter().skip(crashed_at).any(|o| o.result.is_ok());
        if recovered {
            break;
        }
        assert!(restarted_at.elapsed() < Duration::from_secs(60), "the services never recovered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let pids_after: Vec<Option<u32>> =
        [&cluster.identity, &cluster.deals, &cluster.tiers, &cluster.commissions].map(|s| s.pid()).to_vec();
    assert_eq!(pids, pids_after, "no service was restarted");

    let outcomes = std::mem::take(&mut *outcomes.lock().unwrap());
    let failures: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    assert!(!failures.is_empty(), "the crash failed no call");
    for failure in &failures {
        assert_eq!(failure.result, Err(tonic::Code::Unavailable), "{}", failure.request_id);
        assert!(failure.took < Duration::from_secs(10), "{} took {:?}", failure.request_id, failure.took);
    }

    // Every acknowledged registration is there, once.
    let mut client = DealServiceClient::new(cluster.deals.channel());
    let acknowledged: Vec<&String> = outcomes.iter().filter_map(|o| o.result.as_ref().ok()).collect();
    assert!(acknowledged.len() > failures.len() / 10, "too little load got through");
    for deal_id in &acknowledged {
        let deal = client
            .get_deal(authed(&token, deals::GetDealRequest { deal_id: (*deal_id).clone() }))
            .await
            .unwrap_or_else(|s| panic!("acknowledged deal {deal_id} lost: {s:?}"))
            .into_inner()
            .deal
            .expect("a deal");
        assert_eq!(deal.id, **deal_id);
    }
}
