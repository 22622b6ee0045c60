//! `--demo`: a vendor with staff, a program and two partners, loaded through the public API
//! (so it exercises the same paths as any client), then example calls printed.

use std::net::SocketAddr;

use tandem_identity::Identity;
use tandem_proto::identity::v1::{
    self as pb, StaffRole, TeamRole, application_service_client::ApplicationServiceClient,
    auth_service_client::AuthServiceClient, invitation_service_client::InvitationServiceClient,
    program_service_client::ProgramServiceClient, staff_service_client::StaffServiceClient,
    team_service_client::TeamServiceClient,
};
use tandem_proto::{
    commissions::v1 as cpb,
    commissions::v1::{
        commission_service_client::CommissionServiceClient, customer_service_client::CustomerServiceClient,
    },
    common::v1::Money,
    deals::v1::{
        self as deals, assignment_rule_service_client::AssignmentRuleServiceClient,
        deal_service_client::DealServiceClient, lead_service_client::LeadServiceClient,
        pipeline_service_client::PipelineServiceClient, queue_service_client::QueueServiceClient,
    },
};
use tonic::{Request, transport::Channel};

pub const ADMIN_EMAIL: &str = "admin@vendor.example";
pub const ADMIN_PASSWORD: &str = "demo-admin-password";
pub const PARTNER_PASSWORD: &str = "demo-partner-password";
const OWNER_EMAIL: &str = "ana@northwind.example";

fn authed<T>(token: &str, message: T) -> Request<T> {
    let mut request = Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().expect("ascii token"));
    request
}

struct Clients {
    auth: AuthServiceClient<Channel>,
    staff: StaffServiceClient<Channel>,
    teams: TeamServiceClient<Channel>,
    invitations: InvitationServiceClient<Channel>,
    programs: ProgramServiceClient<Channel>,
    applications: ApplicationServiceClient<Channel>,
    plans: CommissionServiceClient<Channel>,
    customers: CustomerServiceClient<Channel>,
    pipelines: PipelineServiceClient<Channel>,
    queues: QueueServiceClient<Channel>,
    rules: AssignmentRuleServiceClient<Channel>,
    leads: LeadServiceClient<Channel>,
    deals: DealServiceClient<Channel>,
}

impl Clients {
    async fn login(&mut self, email: &str, password: &str) -> Result<String, tonic::Status> {
        let response = self
            .auth
            .authenticate(pb::AuthenticateRequest { email: email.into(), password: password.into() })
            .await?;
        Ok(response.into_inner().access_token)
    }

    async fn sign_up(&mut self, email: &str, name: &str, team: &str) -> anyhow::Result<(String, pb::Team)> {
        let team = self
            .auth
            .sign_up(pb::SignUpRequest {
                email: email.into(),
                password: PARTNER_PASSWORD.into(),
                display_name: name.into(),
                team_name: team.into(),
            })
            .await?
            .into_inner()
            .team
            .unwrap_or_default();
        Ok((self.login(email, PARTNER_PASSWORD).await?, team))
    }

    /// Invites by email and accepts as a newcomer, as the invitee would from the email link.
    async fn invite(
        &mut self,
        token: &str,
        team_id: &str,
        email: &str,
        name: &str,
        role: TeamRole,
    ) -> anyhow::Result<()> {
        let invitation = self
            .invitations
            .create_invitation(authed(
                token,
                pb::CreateInvitationRequest {
                    team_id: team_id.into(),
                    email: email.into(),
                    role: role.into(),
                },
            ))
            .await?
            .into_inner()
            .invitation
            .unwrap_or_default();
        self.invitations
            .accept_invitation(pb::AcceptInvitationRequest {
                token: invitation.token,
                display_name: name.into(),
                password: PARTNER_PASSWORD.into(),
                email: String::new(),
            })
            .await?;
        Ok(())
    }
}

pub async fn load(identity: &Identity, addr: SocketAddr) -> anyhow::Result<()> {
    identity
        .bootstrap_admin(ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .map_err(|e| anyhow::anyhow!("{}", tonic::Status::from(e)))?;
    let channel = Channel::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut c = Clients {
        auth: AuthServiceClient::new(channel.clone()),
        staff: StaffServiceClient::new(channel.clone()),
        teams: TeamServiceClient::new(channel.clone()),
        invitations: InvitationServiceClient::new(channel.clone()),
        programs: ProgramServiceClient::new(channel.clone()),
        applications: ApplicationServiceClient::new(channel.clone()),
        plans: CommissionServiceClient::new(channel.clone()),
        customers: CustomerServiceClient::new(channel.clone()),
        pipelines: PipelineServiceClient::new(channel.clone()),
        queues: QueueServiceClient::new(channel.clone()),
        rules: AssignmentRuleServiceClient::new(channel.clone()),
        leads: LeadServiceClient::new(channel.clone()),
        deals: DealServiceClient::new(channel),
    };
    if c.login(OWNER_EMAIL, PARTNER_PASSWORD).await.is_err() {
        populate(&mut c).await?;
    }
    print_guide(addr);
    Ok(())
}

async fn populate(c: &mut Clients) -> anyhow::Result<()> {
    let admin = c.login(ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let manager = c
        .staff
        .create_staff_user(authed(
            &admin,
            pb::CreateStaffUserRequest {
                email: "maria@vendor.example".into(),
                display_name: "Maria (channel manager)".into(),
                password: ADMIN_PASSWORD.into(),
                role: StaffRole::ChannelManager.into(),
            },
        ))
        .await?
        .into_inner()
        .user
        .unwrap_or_default();
    let program = c
        .programs
        .create_program(authed(
            &admin,
            pb::CreateProgramRequest {
                name: "Solutions Partner Program".into(),
                description: "Resell, refer and service the vendor's product.".into(),
            },
        ))
        .await?
        .into_inner()
        .program
        .unwrap_or_default();

    // Northwind: a full team enrolled in the program, with the channel manager assigned.
    let (owner, team) = c.sign_up(OWNER_EMAIL, "Ana Owner", "Northwind Consulting").await?;
    c.invite(&owner, &team.id, "ben@northwind.example", "Ben Admin", TeamRole::Admin).await?;
    c.invite(&owner, &team.id, "chloe@northwind.example", "Chloe Member", TeamRole::Member).await?;
    c.invite(&owner, &team.id, "dan@northwind.example", "Dan Finance", TeamRole::Finance).await?;
    c.programs
        .join_program(authed(
            &owner,
            pb::JoinProgramRequest { program_id: program.id.clone(), team_id: team.id.clone() },
        ))
        .await?;
    c.teams
        .update_team(authed(
            &admin,
            pb::UpdateTeamRequest {
                team: Some(pb::Team {
                    id: team.id.clone(),
                    channel_manager_user_id: manager.id,
                    ..Default::default()
                }),
                update_mask: Some(prost_types::FieldMask { paths: vec!["channel_manager_user_id".into()] }),
            },
        ))
        .await?;

    // Commissions: 15 % of every payment for 12 months, held 30 days, paid out from 50 USD;
    // Northwind's first customer waits for its domain's verification.
    let usd = |amount_minor| Some(Money { currency_code: "USD".into(), amount_minor });
    c.plans
        .create_commission_plan(authed(
            &admin,
            cpb::CreateCommissionPlanRequest {
                name: "Standard resale".into(),
                rate_bps: 1_500,
                recurring_months: 12,
                hold_days: 30,
                minimum_payout: usd(5_000),
                tier_multipliers: vec![],
                request_id: "demo-plan".into(),
            },
        ))
        .await?;
    c.customers
        .add_customer(authed(
            &owner,
            cpb::AddCustomerRequest {
                team_id: team.id.clone(),
                org_name: "Fabrikam Retail".into(),
                domain: "fabrikam.example".into(),
                super_admin_email: "it@fabrikam.example".into(),
                plan: "Mail Standard".into(),
                licences: 25,
                renewal_date: None,
                monthly_price: usd(2_500),
                renewal_term_months: 12,
            },
        ))
        .await?;
    populate_deals(c, &admin, &owner, &team.id).await?;

    // Contoso: applies through the partner application and is onboarded by approval.
    let (eve, _) = c.sign_up("eve@contoso.example", "Eve Applicant", "").await?;
    let application = c
        .applications
        .submit_application(authed(
            &eve,
            pb::SubmitApplicationRequest {
                company_name: "Contoso Cloud".into(),
                contact_email: "eve@contoso.example".into(),
                address: "1 Harbour Street, Lisbon".into(),
                primary_expertise: "Cloud migration".into(),
                experience: "Ten years of implementation projects".into(),
                terms_accepted: true,
                program_id: program.id,
                plan: "Resell and service".into(),
            },
        ))
        .await?
        .into_inner()
        .application
        .unwrap_or_default();
    c.applications
        .review_application(authed(
            &admin,
            pb::ReviewApplicationRequest {
                application_id: application.id,
                approve: true,
                note: "Welcome aboard".into(),
            },
        ))
        .await?;
    Ok(())
}

/// Deals for Northwind: a shared-deal pipeline as its default, a queue of Ben and Chloe that
/// French-speaking leads go to in turn, three leads, and a registered deal.
async fn populate_deals(c: &mut Clients, admin: &str, owner: &str, team_id: &str) -> anyhow::Result<()> {
    let mut user_id = async |email: &str| -> anyhow::Result<String> {
        let token = c.login(email, PARTNER_PASSWORD).await?;
        let me = c.auth.get_current_user(authed(&token, pb::GetCurrentUserRequest {})).await?.into_inner();
        Ok(me.user.unwrap_or_default().id)
    };
    let ben = user_id("ben@northwind.example").await?;
    let chloe = user_id("chloe@northwind.example").await?;
    let stages = ["Qualify", "Propose", "Negotiate", "Commit"];
    let pipeline = c
        .pipelines
        .create_pipeline(authed(
            admin,
            deals::CreatePipelineRequest {
                name: "Shared deals".into(),
                stages: stages.iter().map(|s| deals::Stage { name: (*s).into() }).collect(),
            },
        ))
        .await?
        .into_inner()
        .pipeline
        .unwrap_or_default();
    c.pipelines
        .set_default_shared_deal_pipeline(authed(
            owner,
            deals::SetDefaultSharedDealPipelineRequest { team_id: team_id.into(), pipeline_id: pipeline.id },
        ))
        .await?;
    let queue = c
        .queues
        .create_queue(authed(
            admin,
            deals::CreateQueueRequest { name: "Northwind leads".into(), member_user_ids: vec![ben, chloe] },
        ))
        .await?
        .into_inner()
        .queue
        .unwrap_or_default();
    c.rules
        .create_assignment_rule(authed(
            admin,
            deals::CreateAssignmentRuleRequest {
                priority: 10,
                criteria: vec![deals::Criterion {
                    field: "country".into(),
                    operator: deals::CriterionOperator::In.into(),
                    value: "FR,BE,LU".into(),
                }],
                target: Some(deals::create_assignment_rule_request::Target::RoundRobinQueueId(queue.id)),
                team_id: String::new(),
            },
        ))
        .await?;
    for (company, country, employees) in
        [("Fabrikam", "FR", 1_200), ("Tailspin Toys", "BE", 80), ("Wingtip", "DE", 300)]
    {
        c.leads
            .create_lead(authed(
                admin,
                deals::CreateLeadRequest {
                    company_name: company.into(),
                    contact_email: String::new(),
                    country: country.into(),
                    industry: "Manufacturing".into(),
                    employee_count: employees,
                    notify: true,
                },
            ))
            .await?;
    }
    c.deals
        .register_deal(authed(
            owner,
            deals::RegisterDealRequest {
                team_id: team_id.into(),
                program_id: String::new(),
                customer_name: "Fabrikam".into(),
                customer_domain: "fabrikam.example".into(),
                amount: Some(Money { currency_code: "USD".into(), amount_minor: 4_800_000 }),
                products: vec!["Sales Hub".into()],
                expected_close_date: None,
                client_market: "FR".into(),
                deal_type: deals::DealType::NewBusiness.into(),
                request_id: "demo-fabrikam".into(),
                will_manage: true,
            },
        ))
        .await?;
    Ok(())
}

fn print_guide(addr: SocketAddr) {
    println!(
        r#"
Tandem demo is loaded and served on {addr} (gRPC, reflection on).

  Vendor staff admin   {ADMIN_EMAIL} / {ADMIN_PASSWORD}
  Channel manager      maria@vendor.example / {ADMIN_PASSWORD}
  Northwind Consulting ana@ (owner), ben@ (admin), chloe@ (member), dan@ (finance) @northwind.example
  Contoso Cloud        eve@contoso.example (owner, onboarded through an approved application)
  Partner password     {PARTNER_PASSWORD}

Try it with grpcurl:

  grpcurl -plaintext {addr} list
  TOKEN=$(grpcurl -plaintext -d '{{"email":"{OWNER_EMAIL}","password":"{PARTNER_PASSWORD}"}}' \
      {addr} tandem.identity.v1.AuthService/Authenticate | sed -n 's/.*"accessToken": "\(.*\)".*/\1/p')
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" {addr} tandem.identity.v1.TeamService/ListTeams
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" {addr} tandem.identity.v1.AuthService/GetCurrentUser
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" {addr} tandem.identity.v1.NotificationService/ListNotifications
  TEAM=$(grpcurl -plaintext -H "authorization: Bearer $TOKEN" {addr} tandem.identity.v1.TeamService/ListTeams \
      | sed -n 's/.*"id": "\(team_[^"]*\)".*/\1/p' | head -1)
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{{\"teamId\":\"$TEAM\"}}" {addr} tandem.commissions.v1.CustomerService/ListCustomers
  grpcurl -plaintext -H "authorization: Bearer $TOKEN" -d "{{\"teamId\":\"$TEAM\"}}" {addr} tandem.commissions.v1.RewardService/GetRewardBalance

Deals (as the staff admin: leads the rules placed, Northwind's registered deal):

  STAFF=$(grpcurl -plaintext -d '{{"email":"{ADMIN_EMAIL}","password":"{ADMIN_PASSWORD}"}}' \
      {addr} tandem.identity.v1.AuthService/Authenticate | sed -n 's/.*"accessToken": "\(.*\)".*/\1/p')
  grpcurl -plaintext -H "authorization: Bearer $STAFF" {addr} tandem.deals.v1.LeadService/ListLeads
  grpcurl -plaintext -H "authorization: Bearer $STAFF" {addr} tandem.deals.v1.DealService/ListDeals
  grpcurl -plaintext -H "authorization: Bearer $STAFF" {addr} tandem.deals.v1.PipelineService/ListPipelines
"#
    );
}
