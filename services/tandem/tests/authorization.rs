//! The authorization matrix of the whole suite: every RPC in the descriptors, called as each
//! team role, each staff role, a partner of another team and no one, against the objects of
//! one team, answers as the policy table below says. List answers never carry another team's
//! rows. An RPC without an entry in the table fails the test: a new RPC forces a decision.

mod support;

use std::collections::{BTreeMap, BTreeSet};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, Kind, MessageDescriptor, ReflectMessage, Value};
use support::*;
use tandem_proto::{
    common::v1::Money,
    deals::v1::{self as deals, deal_service_client::DealServiceClient},
    identity::v1::{
        self as pb, auth_service_client::AuthServiceClient,
        invitation_service_client::InvitationServiceClient, program_service_client::ProgramServiceClient,
        staff_service_client::StaffServiceClient, team_service_client::TeamServiceClient,
    },
};
use tonic::{Code, transport::Channel};

const PASSWORD: &str = "partner password for the matrix";

/// Who calls. Team roles are members of the victim team; the outsider owns another team.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    Anonymous,
    Outsider,
    StaffFinance,
    StaffChannelManager,
    StaffAdmin,
    Finance,
    Member,
    Admin,
    Owner,
}

/// Least privileged first, so an allowed call that consumes something comes last.
const EVERYONE: [Who; 9] = [
    Who::Anonymous,
    Who::Outsider,
    Who::StaffFinance,
    Who::StaffChannelManager,
    Who::StaffAdmin,
    Who::Finance,
    Who::Member,
    Who::Admin,
    Who::Owner,
];

impl Who {
    /// The letter the table uses: o a m f for team roles, A C F for staff roles.
    fn letter(self) -> char {
        match self {
            Who::Owner => 'o',
            Who::Admin => 'a',
            Who::Member => 'm',
            Who::Finance => 'f',
            Who::StaffAdmin => 'A',
            Who::StaffChannelManager => 'C',
            Who::StaffFinance => 'F',
            Who::Outsider | Who::Anonymous => '-',
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum Policy {
    /// No token needed (signing up, signing in, public keys, token-bearing links).
    Public,
    /// Any signed-in user, acting on what is its own; never another team's rows.
    SignedIn,
    /// Any signed-in partner (what makes or joins teams); vendor staff are refused.
    Partner,
    /// The victim team's: the callers named (o a m f / A C F) pass, every other caller is
    /// refused with PERMISSION_DENIED or NOT_FOUND.
    Team(&'static str),
}

/// An allowed call may still meet NOT_FOUND: it consumed its object earlier in the run
/// (revoked, removed), or acts on an object the scene does not hold.
const STRICT: bool = false;
const LENIENT: bool = true;

fn table() -> Vec<(&'static str, Policy, bool)> {
    use Policy::*;
    let view = Team("oamf ACF");
    let manage = Team("oa");
    let staff = Team("A C F");
    let staff_admin = Team("A");
    // Every staff role passes the staff guard of the business services.
    let staff_ops = staff;
    // Members see rewards while the team shows them (the default).
    let rewards = Team("oamf ACF");
    // Staff act on a team's deals too (registering for a partner, closing).
    let contribute = Team("oam ACF");
    // Registrations are reviewed by the staff who run the relationship, as applications are;
    // finance staff handle money.
    let review = Team("A C");
    vec![
        // identity
        ("tandem.identity.v1.AuthService.SignUp", Public, STRICT),
        ("tandem.identity.v1.AuthService.Authenticate", Public, STRICT),
        ("tandem.identity.v1.AuthService.RefreshToken", Public, STRICT),
        ("tandem.identity.v1.AuthService.VerifyEmail", Public, STRICT),
        ("tandem.identity.v1.AuthService.GetJwks", Public, STRICT),
        ("tandem.identity.v1.AuthService.GetCurrentUser", SignedIn, STRICT),
        ("tandem.identity.v1.StaffService.CreateStaffUser", staff_admin, STRICT),
        ("tandem.identity.v1.StaffService.DeactivateUser", staff_admin, STRICT),
        ("tandem.identity.v1.StaffService.ActivateUser", staff_admin, STRICT),
        ("tandem.identity.v1.StaffService.ListUsers", staff, STRICT),
        ("tandem.identity.v1.TeamService.CreateTeam", Partner, STRICT),
        ("tandem.identity.v1.TeamService.GetTeam", view, STRICT),
        ("tandem.identity.v1.TeamService.ListTeams", SignedIn, STRICT),
        ("tandem.identity.v1.TeamService.UpdateTeam", manage, STRICT),
        ("tandem.identity.v1.TeamService.ListMembers", view, STRICT),
        ("tandem.identity.v1.TeamService.UpdateMemberRole", manage, LENIENT),
        ("tandem.identity.v1.InvitationService.CreateInvitation", manage, STRICT),
        ("tandem.identity.v1.InvitationService.ListInvitations", manage, STRICT),
        ("tandem.identity.v1.InvitationService.ResendInvitation", manage, LENIENT),
        ("tandem.identity.v1.InvitationService.AcceptInvitation", Public, STRICT),
        ("tandem.identity.v1.DomainService.AddDomain", manage, STRICT),
        ("tandem.identity.v1.DomainService.VerifyDomain", manage, LENIENT),
        ("tandem.identity.v1.DomainService.ListDomains", view, STRICT),
        ("tandem.identity.v1.DomainService.JoinTeamByDomain", Partner, STRICT),
        ("tandem.identity.v1.ProgramService.CreateProgram", Team("A C"), STRICT),
        ("tandem.identity.v1.ProgramService.ListPrograms", SignedIn, STRICT),
        ("tandem.identity.v1.ProgramService.JoinProgram", Team("o"), STRICT),
        ("tandem.identity.v1.ProgramService.CheckProgramAccess", staff, STRICT),
        ("tandem.identity.v1.ProgramService.ListEnrollments", staff, STRICT),
        ("tandem.identity.v1.ApplicationService.SubmitApplication", Partner, STRICT),
        ("tandem.identity.v1.ApplicationService.ListApplications", SignedIn, STRICT),
        ("tandem.identity.v1.ApplicationService.ReviewApplication", Team("A C"), LENIENT),
        ("tandem.identity.v1.AccessService.CheckPermission", staff, STRICT),
        ("tandem.identity.v1.AccessService.GetUserAccess", view, STRICT),
        ("tandem.identity.v1.AccessService.CheckTeamEnrollment", view, STRICT),
        ("tandem.identity.v1.NotificationService.ListNotifications", SignedIn, STRICT),
        ("tandem.identity.v1.NotificationService.MarkNotificationRead", SignedIn, LENIENT),
        // tiers
        ("tandem.tiers.v1.TierService.CreateTier", staff_ops, STRICT),
        ("tandem.tiers.v1.TierService.ListTiers", SignedIn, STRICT),
        ("tandem.tiers.v1.TierService.UpdateTier", staff_ops, LENIENT),
        ("tandem.tiers.v1.TierService.RecordCertification", staff_ops, LENIENT),
        ("tandem.tiers.v1.PointsService.GetTierStatus", view, LENIENT),
        ("tandem.tiers.v1.PointsService.AdjustPoints", staff_ops, STRICT),
        ("tandem.tiers.v1.PointsService.ListPointsChanges", view, STRICT),
        ("tandem.tiers.v1.PointsService.ListPointsBreakdown", view, STRICT),
        ("tandem.tiers.v1.PointsService.GetClientPoints", view, LENIENT),
        ("tandem.tiers.v1.PointsService.GetProgressOverTime", view, STRICT),
        ("tandem.tiers.v1.PointsService.CalculatePoints", SignedIn, STRICT),
        ("tandem.tiers.v1.PointsService.ConvertPoints", SignedIn, STRICT),
        ("tandem.tiers.v1.RatesService.SetExchangeRate", staff_ops, STRICT),
        ("tandem.tiers.v1.RatesService.ListExchangeRates", SignedIn, STRICT),
        ("tandem.tiers.v1.RatesService.SetMarketMultiplier", staff_ops, STRICT),
        ("tandem.tiers.v1.RatesService.ListMarketMultipliers", SignedIn, STRICT),
        // commissions
        ("tandem.commissions.v1.CustomerService.AddCustomer", Team("oa ACF"), STRICT),
        ("tandem.commissions.v1.CustomerService.ListCustomers", view, STRICT),
        ("tandem.commissions.v1.CustomerService.VerifyCustomerDomain", manage, LENIENT),
        ("tandem.commissions.v1.CustomerService.ChangePlan", manage, LENIENT),
        ("tandem.commissions.v1.CustomerService.RecordPayment", manage, LENIENT),
        ("tandem.commissions.v1.CustomerService.RecordRefund", manage, LENIENT),
        ("tandem.commissions.v1.CommissionService.CreateCommissionPlan", staff_ops, STRICT),
        ("tandem.commissions.v1.CommissionService.ListCommissions", rewards, STRICT),
        ("tandem.commissions.v1.CommissionService.GetCommissionSummary", rewards, STRICT),
        ("tandem.commissions.v1.CommissionService.ListStatements", rewards, STRICT),
        ("tandem.commissions.v1.RewardService.GetRewardBalance", rewards, STRICT),
        ("tandem.commissions.v1.RewardService.ListRewards", rewards, STRICT),
        ("tandem.commissions.v1.RewardService.RequestWithdrawal", Team("of"), STRICT),
        ("tandem.commissions.v1.RewardService.CheckTeamRewards", staff, STRICT),
        ("tandem.commissions.v1.PayoutService.CreatePayoutBatch", staff, STRICT),
        ("tandem.commissions.v1.PayoutService.ListPayouts", rewards, STRICT),
        ("tandem.commissions.v1.PayoutService.MarkPayoutPaid", staff, LENIENT),
        ("tandem.commissions.v1.RenewalService.ListRenewals", view, STRICT),
        // deals
        ("tandem.deals.v1.LeadService.CreateLead", staff_ops, STRICT),
        ("tandem.deals.v1.LeadService.GetLead", view, LENIENT),
        ("tandem.deals.v1.LeadService.ListLeads", view, STRICT),
        ("tandem.deals.v1.LeadService.UpdateLead", Team("oam AC"), LENIENT),
        ("tandem.deals.v1.LeadService.AssignLead", staff_ops, LENIENT),
        ("tandem.deals.v1.LeadService.ClaimLead", Team("oam"), LENIENT),
        ("tandem.deals.v1.LeadService.DeclineLead", Team("oam"), LENIENT),
        ("tandem.deals.v1.LeadService.BulkReassignLeads", staff_ops, LENIENT),
        ("tandem.deals.v1.QueueService.CreateQueue", staff_ops, LENIENT),
        ("tandem.deals.v1.QueueService.AddQueueMember", staff_ops, LENIENT),
        ("tandem.deals.v1.QueueService.RemoveQueueMember", staff_ops, LENIENT),
        ("tandem.deals.v1.QueueService.ListQueues", SignedIn, STRICT),
        ("tandem.deals.v1.AssignmentRuleService.CreateAssignmentRule", staff_ops, LENIENT),
        ("tandem.deals.v1.AssignmentRuleService.ListAssignmentRules", staff_ops, STRICT),
        ("tandem.deals.v1.AssignmentRuleService.DeleteAssignmentRule", staff_ops, LENIENT),
        ("tandem.deals.v1.AssignmentRuleService.ApplyAssignmentRules", staff_ops, LENIENT),
        ("tandem.deals.v1.DealService.RegisterDeal", contribute, STRICT),
        ("tandem.deals.v1.DealService.GetDeal", view, STRICT),
        ("tandem.deals.v1.DealService.ListDeals", view, STRICT),
        ("tandem.deals.v1.DealService.UpdateDeal", contribute, STRICT),
        ("tandem.deals.v1.DealService.AddDealTeamMember", contribute, LENIENT),
        ("tandem.deals.v1.DealService.RemoveDealTeamMember", contribute, LENIENT),
        ("tandem.deals.v1.DealService.ApproveRegistration", review, STRICT),
        ("tandem.deals.v1.DealService.RejectRegistration", review, STRICT),
        ("tandem.deals.v1.DealService.CloseDeal", contribute, STRICT),
        ("tandem.deals.v1.PipelineService.CreatePipeline", staff_ops, STRICT),
        ("tandem.deals.v1.PipelineService.ListPipelines", SignedIn, STRICT),
        ("tandem.deals.v1.PipelineService.SetDefaultSharedDealPipeline", manage, LENIENT),
        // Last: these take the scene apart.
        ("tandem.identity.v1.InvitationService.RevokeInvitation", manage, LENIENT),
        ("tandem.identity.v1.TeamService.RemoveMember", manage, LENIENT),
        ("tandem.identity.v1.ProgramService.LeaveProgram", Team("o"), LENIENT),
        ("tandem.identity.v1.TeamService.DeleteTeam", Team("o"), STRICT),
        ("tandem.identity.v1.TeamService.LeaveTeam", Team("oamf"), STRICT),
    ]
}

/// The victim team and what it holds, with a signed-in caller of each kind.
struct Scene {
    tokens: BTreeMap<Who, String>,
    /// Field name (`team_id`, `deal_id`, …) → the victim's object.
    ids: BTreeMap<&'static str, String>,
}

async fn login(channel: &Channel, email: &str, password: &str) -> String {
    AuthServiceClient::new(channel.clone())
        .authenticate(pb::AuthenticateRequest { email: email.into(), password: password.into() })
        .await
        .unwrap_or_else(|s| panic!("{email} signs in: {s}"))
        .into_inner()
        .access_token
}

async fn sign_up(channel: &Channel, email: &str) -> (String, String) {
    let response = AuthServiceClient::new(channel.clone())
        .sign_up(pb::SignUpRequest {
            email: email.into(),
            password: PASSWORD.into(),
            display_name: "Partner".into(),
            team_name: String::new(),
        })
        .await
        .unwrap_or_else(|s| panic!("{email} signs up: {s}"))
        .into_inner();
    (login(channel, email, PASSWORD).await, response.user.unwrap().id)
}

async fn scene(channel: &Channel) -> Scene {
    let mut tokens = BTreeMap::new();
    let mut ids = BTreeMap::new();
    let admin = login(channel, ADMIN_EMAIL, ADMIN_PASSWORD).await;
    for (who, email, role) in [
        (Who::StaffChannelManager, "cm@vendor.example", pb::StaffRole::ChannelManager),
        (Who::StaffFinance, "fin@vendor.example", pb::StaffRole::Finance),
    ] {
        StaffServiceClient::new(channel.clone())
            .create_staff_user(authed(
                &admin,
                pb::CreateStaffUserRequest {
                    email: email.into(),
                    display_name: "Staff".into(),
                    password: PASSWORD.into(),
                    role: role.into(),
                },
            ))
            .await
            .expect("create staff");
        tokens.insert(who, login(channel, email, PASSWORD).await);
    }
    tokens.insert(Who::StaffAdmin, admin.clone());

    let (owner, _) = sign_up(channel, "owner@victim.example").await;
    let team_id = TeamServiceClient::new(channel.clone())
        .list_teams(authed(&owner, pb::ListTeamsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .teams[0]
        .id
        .clone();
    let invite = |role: pb::TeamRole| {
        let (channel, owner, team_id) = (channel.clone(), owner.clone(), team_id.clone());
        async move {
            InvitationServiceClient::new(channel)
                .create_invitation(authed(
                    &owner,
                    pb::CreateInvitationRequest { team_id, email: String::new(), role: role.into() },
                ))
                .await
                .expect("invite")
                .into_inner()
                .invitation
                .unwrap()
        }
    };
    let mut extra_user = String::new();
    for (who, email, role) in [
        (Who::Admin, "admin@victim.example", pb::TeamRole::Admin),
        (Who::Member, "member@victim.example", pb::TeamRole::Member),
        (Who::Finance, "finance@victim.example", pb::TeamRole::Finance),
        (Who::Anonymous, "extra@victim.example", pb::TeamRole::Member),
    ] {
        let (token, user_id) = sign_up(channel, email).await;
        let invitation = invite(role).await;
        InvitationServiceClient::new(channel.clone())
            .accept_invitation(authed(
                &token,
                pb::AcceptInvitationRequest { token: invitation.token, ..Default::default() },
            ))
            .await
            .expect("accept");
        if who == Who::Anonymous {
            // A member to act on (re-role, remove, deactivate), not one of the callers.
            extra_user = user_id;
        } else {
            tokens.insert(who, token);
        }
    }
    tokens.insert(Who::Owner, owner.clone());
    let (outsider, _) = sign_up(channel, "outsider@elsewhere.example").await;
    tokens.insert(Who::Outsider, outsider);

    let program = ProgramServiceClient::new(channel.clone())
        .create_program(authed(
            &admin,
            pb::CreateProgramRequest { name: "Resellers".into(), ..Default::default() },
        ))
        .await
        .expect("program")
        .into_inner()
        .program
        .unwrap()
        .id;
    ProgramServiceClient::new(channel.clone())
        .join_program(authed(
            &owner,
            pb::JoinProgramRequest { program_id: program.clone(), team_id: team_id.clone() },
        ))
        .await
        .expect("enrol");
    let deal = DealServiceClient::new(channel.clone())
        .register_deal(authed(
            &owner,
            deals::RegisterDealRequest {
                team_id: team_id.clone(),
                program_id: program.clone(),
                customer_name: "Contoso".into(),
                customer_domain: "contoso.example".into(),
                amount: Some(Money { currency_code: "USD".into(), amount_minor: 1_000_000 }),
                products: vec!["Sales Hub".into()],
                expected_close_date: None,
                client_market: "US".into(),
                deal_type: deals::DealType::NewBusiness.into(),
                request_id: "matrix-1".into(),
                will_manage: false,
            },
        ))
        .await
        .expect("register a deal")
        .into_inner()
        .deal
        .unwrap()
        .id;
    let invitation = invite(pb::TeamRole::Member).await.id;
    ids.insert("team_id", team_id);
    ids.insert("program_id", program);
    ids.insert("user_id", extra_user);
    ids.insert("deal_id", deal);
    ids.insert("invitation_id", invitation);
    Scene { tokens, ids }
}

/// A ghost id of the right kind for fields the scene holds no object for.
fn ghost(field: &str) -> String {
    let prefix = match field.trim_end_matches("_id") {
        "customer" => "cust",
        "payout" => "pout",
        "batch" => "batch",
        "queue" | "round_robin_queue" => "queue",
        "pipeline" => "pipe",
        "plan" => "plan",
        "payment" => "pay",
        "commission" => "com",
        "notification" => "ntf",
        "application" => "app",
        "rule" => "rule",
        "lead" => "lead",
        "tier" | "target_tier" => "tier",
        "client" => "cust",
        other if other.ends_with("user") => "user",
        _ => "obj",
    };
    format!("{prefix}_0190b2c4e5f67a8b9c0d1e2f3a4b5c6d")
}

/// A plausible value for a string field, so that requests pass validation and reach the
/// authorization check.
fn text(field: &str, parent: &str, scene: &Scene, n: usize) -> String {
    if field == "id" {
        let kind = match parent {
            "Team" => "team_id",
            "Deal" => "deal_id",
            "Program" => "program_id",
            other => return ghost(&format!("{}_id", other.to_lowercase())),
        };
        return scene.ids.get(kind).cloned().unwrap_or_default();
    }
    if let Some(id) = scene.ids.get(field) {
        return id.clone();
    }
    match field {
        f if f.ends_with("_id") && f != "request_id" => ghost(f),
        f if f.ends_with("_ids") => ghost(f.trim_end_matches('s')),
        "request_id" => format!("matrix-{n}"),
        f if f.ends_with("email") => format!("probe{n}@victim.example"),
        "password" => PASSWORD.into(),
        "page_token" => String::new(),
        "token" | "refresh_token" => "not-a-token".into(),
        "currency_code" | "from_currency" | "to_currency" | "currency" => "EUR".into(),
        "country" | "client_market" | "market" | "country_code" => "US".into(),
        "field" => "country".into(),
        "operator" => "EQUALS".into(),
        f if f.contains("domain") => format!("d{n}.victim.example"),
        f if f.contains("rate") || f.contains("multiplier") || f.contains("per_") => "1.5".into(),
        _ => format!("Probe {n}"),
    }
}

fn fill(message: &mut DynamicMessage, scene: &Scene, n: usize, depth: usize) {
    let descriptor = message.descriptor();
    let parent = descriptor.name().to_owned();
    for field in descriptor.fields() {
        if field.is_map() {
            continue;
        }
        let name = field.name().to_owned();
        let value = match field.kind() {
            Kind::String => Value::String(text(&name, &parent, scene, n)),
            // A team role to give is a member's; otherwise the first value that means something.
            Kind::Enum(e) if e.full_name() == "tandem.identity.v1.TeamRole" => {
                Value::EnumNumber(tandem_proto::identity::v1::TeamRole::Member as i32)
            }
            Kind::Enum(e) => Value::EnumNumber(e.values().map(|v| v.number()).find(|v| *v != 0).unwrap_or(0)),
            Kind::Int32 | Kind::Sint32 | Kind::Sfixed32 => Value::I32(i32::from(name != "page_size")),
            Kind::Int64 | Kind::Sint64 | Kind::Sfixed64 => {
                Value::I64(if name.contains("amount") || name.contains("points") { 100_000 } else { 1 })
            }
            Kind::Uint32 | Kind::Fixed32 => Value::U32(1),
            Kind::Uint64 | Kind::Fixed64 => Value::U64(1),
            Kind::Bool => Value::Bool(false),
            Kind::Double => Value::F64(1.0),
            Kind::Float => Value::F32(1.0),
            Kind::Bytes => continue,
            Kind::Message(m) => {
                if depth >= 3 {
                    continue;
                }
                let mut inner = DynamicMessage::new(m.clone());
                if m.full_name() == "google.protobuf.FieldMask" {
                    // Every update RPC may change a name or a note-like field; one path is enough to
                    // pass validation.
                    let path = if parent.contains("Lead") || parent.contains("Deal") {
                        "customer_name"
                    } else {
                        "name"
                    };
                    let path = if parent.contains("Lead") { "company_name" } else { path };
                    inner.set_field_by_name("paths", Value::List(vec![Value::String(path.into())]));
                } else if m.full_name() == "google.protobuf.Timestamp" {
                    // Ends and closing dates lie ahead; everything else (earned, start) behind.
                    let ahead = name.contains("end") || name.contains("close") || name.contains("expire");
                    let offset = if ahead { 30 * 86_400 } else { -86_400 };
                    inner.set_field_by_name(
                        "seconds",
                        Value::I64(tandem_platform::testing::now_secs() + offset),
                    );
                } else {
                    fill(&mut inner, scene, n, depth + 1);
                }
                Value::Message(inner)
            }
        };
        let value = if field.is_list() { Value::List(vec![value]) } else { value };
        message.set_field(&field, value);
    }
}

fn request(input: &MessageDescriptor, scene: &Scene, n: usize) -> Vec<u8> {
    let mut message = DynamicMessage::new(input.clone());
    fill(&mut message, scene, n, 0);
    message.encode_to_vec()
}

/// What the policy says of one caller: `Ok(())` or why not.
fn judge(
    policy: Policy,
    lenient: bool,
    who: Who,
    answer: &Result<Vec<u8>, tonic::Status>,
) -> Result<(), String> {
    let code = answer.as_ref().err().map_or(Code::Ok, tonic::Status::code);
    let denied = matches!(code, Code::PermissionDenied | Code::NotFound);
    let passed = !matches!(code, Code::Unauthenticated | Code::PermissionDenied)
        && (lenient || code != Code::NotFound);
    let fine = match (policy, who) {
        // Public RPCs answer on their own terms (wrong credentials are UNAUTHENTICATED); what
        // they answer is tested in identity's suite. Here: nothing of the team leaks.
        (Policy::Public, _) => true,
        (_, Who::Anonymous) => code == Code::Unauthenticated,
        (Policy::SignedIn, _) => passed,
        (Policy::Partner, Who::StaffAdmin | Who::StaffChannelManager | Who::StaffFinance) => denied,
        (Policy::Partner, _) => passed,
        (Policy::Team(_), Who::Outsider) => denied,
        (Policy::Team(allowed), _) if allowed.contains(who.letter()) => passed,
        (Policy::Team(_), _) => denied,
    };
    if fine { Ok(()) } else { Err(format!("{code:?}")) }
}

#[tokio::test]
async fn every_rpc_answers_the_policy_table_for_every_caller() {
    let dev = Dev::start();
    let channel = dev.channel().await;
    let scene = scene(&channel).await;

    let pool = DescriptorPool::decode(tandem_proto::FILE_DESCRIPTOR_SET).expect("descriptors");
    let mut methods = BTreeMap::new();
    for service in pool.services().filter(|s| s.full_name().starts_with("tandem.")) {
        for method in service.methods() {
            methods.insert(format!("{}.{}", service.full_name(), method.name()), method);
        }
    }
    let table = table();
    let listed: BTreeSet<&str> = table.iter().map(|(rpc, _, _)| *rpc).collect();
    let missing: Vec<&String> = methods.keys().filter(|m| !listed.contains(m.as_str())).collect();
    assert!(missing.is_empty(), "RPCs without a policy: decide and add them to the table: {missing:?}");
    let unknown: Vec<&&str> = listed.iter().filter(|m| !methods.contains_key(**m)).collect();
    assert!(unknown.is_empty(), "the table names RPCs that do not exist: {unknown:?}");
    assert_eq!(listed.len(), table.len(), "an RPC is listed twice");

    // Programs are the vendor's, listed to every partner; the rest is the team's.
    let victim_ids: Vec<&String> =
        scene.ids.iter().filter(|(field, _)| **field != "program_id").map(|(_, id)| id).collect();
    let mut wrong = Vec::new();
    let mut n = 0;
    for (rpc, policy, lenient) in &table {
        let method = &methods[*rpc];
        let path = format!("/{}/{}", method.parent_service().full_name(), method.name());
        for who in EVERYONE {
            n += 1;
            let body = request(&method.input(), &scene, n);
            let answer = call_raw(&channel, &path, body, scene.tokens.get(&who).map(String::as_str)).await;
            if let Err(code) = judge(*policy, *lenient, who, &answer) {
                let message = answer.as_ref().err().map(|s| s.message().to_owned()).unwrap_or_default();
                wrong.push(format!("{rpc} as {who:?} ({policy:?}): {code} {message}"));
            }
            // Whatever a caller outside the team gets back never names the team's objects.
            if let (Who::Outsider, Ok(bytes)) = (who, &answer) {
                for id in &victim_ids {
                    if bytes.windows(id.len()).any(|w| w == id.as_bytes()) {
                        wrong.push(format!("{rpc} as outsider: the answer carries {id}"));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{} answers break the policy:\n{}", wrong.len(), wrong.join("\n"));
}
