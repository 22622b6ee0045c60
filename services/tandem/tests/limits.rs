//! The limits of SECURITY.md against a real server (`tandem dev`), one RPC of each service:
//! garbage bytes as the message are INVALID_ARGUMENT and the next request on the same channel
//! succeeds; a message over the size limit is RESOURCE_EXHAUSTED and the server keeps
//! serving; over-long names, emails and free text are INVALID_ARGUMENT naming the field;
//! `page_size` above the cap is capped, a negative one is INVALID_ARGUMENT.

mod support;

use std::future::Future;

use prost::Message;
use support::*;
use tandem_proto::{
    commissions::v1::{self as commissions, customer_service_client::CustomerServiceClient},
    common::v1::Money,
    deals::v1::{
        self as deals, lead_service_client::LeadServiceClient, pipeline_service_client::PipelineServiceClient,
    },
    identity::v1::{
        self as identity, auth_service_client::AuthServiceClient,
        program_service_client::ProgramServiceClient,
    },
    tiers::v1::{
        self as tiers, rates_service_client::RatesServiceClient, tier_service_client::TierServiceClient,
    },
};
use tonic::{Code, Status, transport::Channel};
use tonic_types::StatusExt;

const PASSWORD: &str = "partner password for the limits";
/// The cap of `page_size` (`tandem_platform::paging::MAX_PAGE_SIZE`).
const MAX_PAGE_SIZE: usize = 500;
/// Over the default `TANDEM_MAX_MESSAGE_BYTES` (4 MiB).
const TOO_LARGE: usize = 5 * 1024 * 1024;
/// An unterminated varint: no protobuf message decodes from it.
const GARBAGE: &[u8] = &[0xff; 11];

/// `tandem dev` with the rate limit off (the page-size checks create hundreds of rows), the
/// staff admin's token and a channel.
async fn start() -> (Dev, Channel, String) {
    let dev = Dev::start_with(&[("TANDEM_RATE_LIMIT_PER_SECOND", "0")]);
    let channel = dev.channel().await;
    let admin = login(&channel, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    (dev, channel, admin)
}

async fn login(channel: &Channel, email: &str, password: &str) -> String {
    AuthServiceClient::new(channel.clone())
        .authenticate(identity::AuthenticateRequest { email: email.into(), password: password.into() })
        .await
        .unwrap_or_else(|s| panic!("{email} signs in: {s}"))
        .into_inner()
        .access_token
}

/// Signs a partner up: its token and its default team's id.
async fn partner(channel: &Channel, email: &str) -> (String, String) {
    let team = AuthServiceClient::new(channel.clone())
        .sign_up(identity::SignUpRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Partner".into(),
            team_name: String::new(),
        })
        .await
        .expect("sign up")
        .into_inner()
        .team
        .expect("a default team")
        .id;
    (login(channel, email, PASSWORD).await, team)
}

/// Runs `make(i)` for `i` in `0..n`, a few at a time, and fails on the first error.
async fn many<F, Fut>(n: usize, make: F)
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = Result<(), Status>> + Send + 'static,
{
    let mut running: tokio::task::JoinSet<Result<(), Status>> = tokio::task::JoinSet::new();
    for i in 0..n {
        if running.len() >= 8 {
            running.join_next().await.unwrap().unwrap().expect("create");
        }
        running.spawn(make(i));
    }
    while let Some(done) = running.join_next().await {
        done.unwrap().expect("create");
    }
}

/// Garbage as the message of `path`, then a message over the size limit, each followed by
/// `works` on the same channel.
async fn bad_bodies<Fut>(channel: &Channel, path: &str, token: &str, works: impl Fn() -> Fut)
where
    Fut: Future<Output = ()>,
{
    let garbage = call_raw(channel, path, GARBAGE.to_vec(), Some(token)).await.expect_err("garbage refused");
    assert_eq!(garbage.code(), Code::InvalidArgument, "{path} with garbage: {garbage:?}");
    works().await;

    let large = call_raw(channel, path, vec![b'x'; TOO_LARGE], Some(token)).await.expect_err("too large");
    assert_eq!(large.code(), Code::ResourceExhausted, "{path} over the size limit: {large:?}");
    works().await;
    // A well-formed message, too large only because of its first field (a string in every
    // request used here), is refused alike.
    let mut body = Vec::new();
    prost::encoding::string::encode(1, &"y".repeat(TOO_LARGE), &mut body);
    let large = call_raw(channel, path, body, Some(token)).await.expect_err("too large");
    assert_eq!(large.code(), Code::ResourceExhausted, "{path} over the size limit: {large:?}");
    works().await;
}

/// The refusal is INVALID_ARGUMENT with a `BadRequest` violation for `field`.
fn assert_violation<T: std::fmt::Debug>(answer: Result<T, Status>, field: &str) {
    let status = answer.expect_err(field);
    assert_eq!(status.code(), Code::InvalidArgument, "{field}: {status:?}");
    let violations = status.get_details_bad_request().expect("BadRequest details").field_violations;
    assert!(violations.iter().any(|v| v.field == field), "no violation for {field}: {violations:?}");
}

fn long(n: usize) -> String {
    "n".repeat(n)
}

/// An email address of `n` characters, otherwise well formed: a 64-character local part and
/// a domain of 61-character labels.
fn long_email(n: usize) -> String {
    let mut labels: String =
        (0..n - 64 - 1 - ".example".len()).map(|i| if i % 62 == 61 { '.' } else { 'd' }).collect();
    if labels.ends_with('.') {
        labels.pop();
        labels.push('d');
    }
    let email = format!("{}@{labels}.example", "l".repeat(64));
    assert_eq!(email.len(), n);
    email
}

/// Distinct three-letter codes other than USD.
fn currency(i: usize) -> String {
    let letter = |k: usize| char::from(b'A' + u8::try_from(k % 26).unwrap());
    let code: String = [letter(i / 676), letter(i / 26), letter(i)].into_iter().collect();
    if code == "USD" { "ZZZ".into() } else { code }
}

#[tokio::test]
async fn identity_limits() {
    let (_dev, channel, admin) = start().await;
    let programs = ProgramServiceClient::new(channel.clone());
    let list = |page_size: i32| {
        let mut programs = programs.clone();
        let admin = admin.clone();
        async move {
            programs
                .list_programs(authed(
                    &admin,
                    identity::ListProgramsRequest { page_size, page_token: String::new() },
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    bad_bodies(&channel, "/tandem.identity.v1.ProgramService/CreateProgram", &admin, || async {
        list(0).await.expect("the server keeps serving");
    })
    .await;

    // Names, emails, free text.
    let create = |name: String, description: String| {
        let mut programs = programs.clone();
        let admin = admin.clone();
        async move {
            programs
                .create_program(authed(&admin, identity::CreateProgramRequest { name, description }))
                .await
        }
    };
    assert_violation(create(long(201), String::new()).await, "name");
    assert_violation(create("Resellers".into(), long(4001)).await, "description");
    create(long(200), long(4000)).await.expect("at the limits");
    let sign_up = |email: String, display_name: String| {
        let mut auth = AuthServiceClient::new(channel.clone());
        async move {
            auth.sign_up(identity::SignUpRequest {
                email,
                password: PASSWORD.into(),
                display_name,
                team_name: String::new(),
            })
            .await
        }
    };
    assert_violation(sign_up(long_email(255), "Partner".into()).await, "email");
    assert_violation(sign_up("p@partner.example".into(), long(201)).await, "display_name");
    sign_up(long_email(254), long(200)).await.expect("at the limits");

    // Paging: more programs than a page holds.
    many(MAX_PAGE_SIZE, |i| {
        let create = create(format!("Program {i}"), String::new());
        async move { create.await.map(drop) }
    })
    .await;
    let page = list(i32::MAX).await.expect("a page_size above the cap is capped");
    assert_eq!(page.programs.len(), MAX_PAGE_SIZE);
    assert!(!page.next_page_token.is_empty());
    assert_violation(list(-1).await, "page_size");
}

#[tokio::test]
async fn tiers_limits() {
    let (_dev, channel, admin) = start().await;
    let rates = RatesServiceClient::new(channel.clone());
    let list = |page_size: i32| {
        let mut rates = rates.clone();
        let admin = admin.clone();
        async move {
            rates
                .list_exchange_rates(authed(
                    &admin,
                    tiers::ListExchangeRatesRequest { page_size, page_token: String::new() },
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    bad_bodies(&channel, "/tandem.tiers.v1.RatesService/SetExchangeRate", &admin, || async {
        list(0).await.expect("the server keeps serving");
    })
    .await;

    // Names and free text.
    let program_id = ProgramServiceClient::new(channel.clone())
        .create_program(authed(
            &admin,
            identity::CreateProgramRequest { name: "Resellers".into(), ..Default::default() },
        ))
        .await
        .expect("program")
        .into_inner()
        .program
        .unwrap()
        .id;
    let mut tier_service = TierServiceClient::new(channel.clone());
    let tier = |name: String| tiers::CreateTierRequest {
        program_id: program_id.clone(),
        name,
        rank: 1,
        points_threshold: 100,
        ..Default::default()
    };
    assert_violation(tier_service.create_tier(authed(&admin, tier(long(201)))).await, "name");
    tier_service.create_tier(authed(&admin, tier(long(200)))).await.expect("at the limit");
    let (_, team_id) = partner(&channel, "owner@tiers.example").await;
    let adjust = |reason: String| tiers::AdjustPointsRequest {
        team_id: team_id.clone(),
        program_id: program_id.clone(),
        client_id: "client-1".into(),
        kind: tiers::PointsKind::Sold.into(),
        points: 10,
        reason,
        request_id: "adjust-1".into(),
        ..Default::default()
    };
    let mut points =
        tandem_proto::tiers::v1::points_service_client::PointsServiceClient::new(channel.clone());
    assert_violation(points.adjust_points(authed(&admin, adjust(long(4001)))).await, "reason");

    // Paging: more exchange rates than a page holds.
    many(MAX_PAGE_SIZE + 1, |i| {
        let mut rates = rates.clone();
        let admin = admin.clone();
        async move {
            let request =
                tiers::SetExchangeRateRequest { currency_code: currency(i), usd_per_unit: "1.5".into() };
            rates.set_exchange_rate(authed(&admin, request)).await.map(drop)
        }
    })
    .await;
    let page = list(i32::MAX).await.expect("a page_size above the cap is capped");
    assert_eq!(page.exchange_rates.len(), MAX_PAGE_SIZE);
    assert!(!page.next_page_token.is_empty());
    assert_violation(list(-1).await, "page_size");
}

#[tokio::test]
async fn deals_limits() {
    let (_dev, channel, admin) = start().await;
    let pipelines = PipelineServiceClient::new(channel.clone());
    let list = |page_size: i32| {
        let mut pipelines = pipelines.clone();
        let admin = admin.clone();
        async move {
            pipelines
                .list_pipelines(authed(
                    &admin,
                    deals::ListPipelinesRequest { page_size, page_token: String::new() },
                ))
                .await
                .map(tonic::Response::into_inner)
        }
    };
    bad_bodies(&channel, "/tandem.deals.v1.LeadService/CreateLead", &admin, || async {
        list(0).await.expect("the server keeps serving");
    })
    .await;

    // Names, emails, free text.
    let mut leads = LeadServiceClient::new(channel.clone());
    let lead = |company_name: String, contact_email: String| deals::CreateLeadRequest {
        company_name,
        contact_email,
        country: "FR".into(),
        industry: "Software".into(),
        employee_count: 10,
        notify: false,
    };
    assert_violation(leads.create_lead(authed(&admin, lead(long(201), String::new()))).await, "company_name");
    assert_violation(
        leads.create_lead(authed(&admin, lead("Acme".into(), long_email(255)))).await,
        "contact_email",
    );
    let created = leads
        .create_lead(authed(&admin, lead(long(200), long_email(254))))
        .await
        .expect("at the limits")
        .into_inner()
        .lead
        .unwrap();
    let decline = |reason: String| deals::DeclineLeadRequest { lead_id: created.id.clone(), reason };
    assert_violation(leads.decline_lead(authed(&admin, decline(long(4001)))).await, "reason");

    // Paging: more pipelines than a page holds.
    many(MAX_PAGE_SIZE + 1, |i| {
        let mut pipelines = pipelines.clone();
        let admin = admin.clone();
        async move {
            let request = deals::CreatePipelineRequest {
                name: format!("Pipeline {i}"),
                stages: vec![deals::Stage { name: "Open".into() }],
            };
            pipelines.create_pipeline(authed(&admin, request)).await.map(drop)
        }
    })
    .await;
    let page = list(i32::MAX).await.expect("a page_size above the cap is capped");
    assert_eq!(page.pipelines.len(), MAX_PAGE_SIZE);
    assert!(!page.next_page_token.is_empty());
    assert_violation(list(-1).await, "page_size");
}

#[tokio::test]
async fn commissions_limits() {
    let (_dev, channel, _admin) = start().await;
    let (owner, team_id) = partner(&channel, "owner@commissions.example").await;
    let customers = CustomerServiceClient::new(channel.clone());
    let list = |page_size: i32| {
        let mut customers = customers.clone();
        let (owner, team_id) = (owner.clone(), team_id.clone());
        async move {
            let request = commissions::ListCustomersRequest { team_id, page_size, page_token: String::new() };
            customers.list_customers(authed(&owner, request)).await.map(tonic::Response::into_inner)
        }
    };
    bad_bodies(&channel, "/tandem.commissions.v1.CustomerService/AddCustomer", &owner, || async {
        list(0).await.expect("the server keeps serving");
    })
    .await;

    // Names, emails, free text.
    let customer = |i: usize, org_name: String, super_admin_email: String| commissions::AddCustomerRequest {
        team_id: team_id.clone(),
        org_name,
        domain: format!("customer{i}.example"),
        super_admin_email,
        plan: "Standard".into(),
        licences: 5,
        renewal_date: None,
        monthly_price: Some(Money { currency_code: "USD".into(), amount_minor: 10_000 }),
        renewal_term_months: 12,
    };
    let add = |request: commissions::AddCustomerRequest| {
        let mut customers = customers.clone();
        let owner = owner.clone();
        async move { customers.add_customer(authed(&owner, request)).await.map(tonic::Response::into_inner) }
    };
    assert_violation(add(customer(0, long(201), "admin@customer0.example".into())).await, "org_name");
    assert_violation(add(customer(0, "Customer".into(), long_email(255))).await, "super_admin_email");
    let refund = commissions::RecordRefundRequest {
        payment_id: format!("pay_{}", "0".repeat(32)),
        amount: Some(Money { currency_code: "USD".into(), amount_minor: 100 }),
        request_id: "refund-1".into(),
        reason: long(4001),
    };
    assert_violation(customers.clone().record_refund(authed(&owner, refund)).await, "reason");

    // Paging: more customers than a page holds; the first at the limits.
    add(customer(0, long(200), long_email(254))).await.expect("at the limits");
    many(MAX_PAGE_SIZE, |i| {
        let request = customer(i + 1, format!("Customer {i}"), format!("admin@customer{}.example", i + 1));
        let add = add(request);
        async move { add.await.map(drop) }
    })
    .await;
    let page = list(i32::MAX).await.expect("a page_size above the cap is capped");
    assert_eq!(page.customers.len(), MAX_PAGE_SIZE);
    assert!(!page.next_page_token.is_empty());
    assert_violation(list(-1).await, "page_size");
    // The body of a valid request still decodes after all this.
    let again = commissions::ListCustomersRequest {
        team_id: team_id.clone(),
        page_size: 1,
        page_token: String::new(),
    };
    let bytes = call_raw(
        &channel,
        "/tandem.commissions.v1.CustomerService/ListCustomers",
        again.encode_to_vec(),
        Some(&owner),
    )
    .await
    .expect("a raw valid request");
    let decoded = commissions::ListCustomersResponse::decode(bytes.as_slice()).expect("a response");
    assert_eq!(decoded.customers.len(), 1);
}
