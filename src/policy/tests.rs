//! Case table: facts in, verdict out.

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use super::*;
use crate::credentials::Source;

static AMD64: LazyLock<Landing> = LazyLock::new(|| Landing::Nodes(vec!["linux/amd64".parse().unwrap()]));

fn eval(image: &str, lookup: LookupOutcome) -> Evaluation<'static> {
    Evaluation {
        image: image.into(),
        reference: Reference::parse(image),
        pull_policy_never: false,
        namespace: "production",
        service_account: Some("default"),
        secret_problems: &[],
        candidates: vec![],
        lookup,
        landing: &AMD64,
        providers: vec![],
        node_authenticated: false,
        served_by: None,
        host_notes: vec![],
        node_blocked: None,
        now: 1_795_000_000,
        pods: Some(1),
        pull_budget: None,
    }
}

fn found(platforms: &[&str]) -> LookupOutcome {
    LookupOutcome::Found {
        facts: Facts {
            digest: "sha256:abc".into(),
            platforms: Arc::new(platforms.iter().map(|p| p.parse().unwrap()).collect()),
        },
        used: None,
        rejected: vec![],
    }
}

fn failed(failure: Failure) -> LookupOutcome {
    LookupOutcome::Failed { failure, rejected: vec![] }
}

fn candidate() -> CandidateInfo {
    CandidateInfo {
        source: Source::Secret { namespace: "production".into(), name: "regcred".into() },
        key: "registry.example.com".into(),
        expires: None,
    }
}

/// The codes are a contract (JSON `reason`, SARIF rule ids, metric labels, audit annotations): pinned here, so
/// that renaming a variant fails this test instead of silently changing what users match on.
#[test]
fn reason_codes_are_pinned() {
    let table: &[(Reason, &str)] = &[
        (Reason::Ok, "Ok"),
        (Reason::InvalidReference, "InvalidReference"),
        (Reason::RepositoryNotFound, "RepositoryNotFound"),
        (Reason::TagNotFound, "TagNotFound"),
        (Reason::DigestNotFound, "DigestNotFound"),
        (Reason::DigestMismatch, "DigestMismatch"),
        (Reason::CredentialsMissing, "CredentialsMissing"),
        (Reason::CredentialsRejected, "CredentialsRejected"),
        (Reason::CredentialsExpiring, "CredentialsExpiring"),
        (Reason::PlatformMismatch, "PlatformMismatch"),
        (Reason::NoNodeForPlatform, "NoNodeForPlatform"),
        (Reason::RegistryBlocked, "RegistryBlocked"),
        (Reason::RegistryBlockedOnNodes, "RegistryBlockedOnNodes"),
        (Reason::RateLimited, "RateLimited"),
        (Reason::PullBudgetLow, "PullBudgetLow"),
        (Reason::RegistryUnreachable, "RegistryUnreachable"),
        (Reason::RegistryError, "RegistryError"),
        (Reason::SecretNotFound, "SecretNotFound"),
        (Reason::SecretInOtherNamespace, "SecretInOtherNamespace"),
        (Reason::SecretInvalid, "SecretInvalid"),
        (Reason::CredentialProviderFailed, "CredentialProviderFailed"),
        (Reason::NodeCredentialsUnverified, "NodeCredentialsUnverified"),
        (Reason::ServiceAccountAnnotationMissing, "ServiceAccountAnnotationMissing"),
        (Reason::PullPolicyNever, "PullPolicyNever"),
        (Reason::NotChecked, "NotChecked"),
    ];
    assert_eq!(table.iter().map(|(r, _)| *r).collect::<Vec<_>>(), Reason::ALL, "the table lists every code, in order");
    for (reason, code) in table {
        assert_eq!(reason.as_str(), *code);
        assert_eq!(reason.to_string(), *code);
        assert_eq!(serde_json::to_value(reason).unwrap(), serde_json::json!(code));
    }
}

#[test]
fn verdict_table() {
    let enforce = PolicySettings::default();
    let closed = PolicySettings { fail_closed: true, ..PolicySettings::default() };
    let warn_mode = PolicySettings { mode: Mode::Warn, ..PolicySettings::default() };
    let unauthorized = |sent| Failure::Unauthorized { credential_sent: sent, status: 401, detail: String::new() };
    let cases: Vec<(&str, Evaluation, PolicySettings, Verdict, Reason)> = vec![
        ("ok", eval("nginx", found(&["linux/amd64"])), enforce, Verdict::Allow, Reason::Ok),
        ("invalid", eval("Nginx", LookupOutcome::NotDone), enforce, Verdict::Deny, Reason::InvalidReference),
        (
            "invalid in warn mode",
            eval("Nginx", LookupOutcome::NotDone),
            warn_mode,
            Verdict::Warn,
            Reason::InvalidReference,
        ),
        (
            "repo",
            eval("nginx", failed(Failure::RepositoryNotFound)),
            enforce,
            Verdict::Deny,
            Reason::RepositoryNotFound,
        ),
        (
            "tag",
            eval("nginx:lates", failed(Failure::TagNotFound { tag: "lates".into(), tags: vec!["latest".into()] })),
            enforce,
            Verdict::Deny,
            Reason::TagNotFound,
        ),
        (
            "digest",
            eval("nginx", failed(Failure::DigestNotFound { digest: "sha256:x".into() })),
            enforce,
            Verdict::Deny,
            Reason::DigestNotFound,
        ),
        ("missing", eval("r.io/a", failed(unauthorized(false))), enforce, Verdict::Deny, Reason::CredentialsMissing),
        (
            "rejected",
            eval("r.io/a", failed(Failure::CredentialsRejected { detail: String::new() })),
            enforce,
            Verdict::Deny,
            Reason::CredentialsRejected,
        ),
        ("no access", eval("r.io/a", failed(unauthorized(true))), enforce, Verdict::Deny, Reason::CredentialsRejected),
        (
            "blocked",
            eval("169.254.169.254/a", failed(Failure::Blocked { detail: "x".into() })),
            enforce,
            Verdict::Deny,
            Reason::RegistryBlocked,
        ),
        (
            "rate",
            eval("nginx", failed(Failure::RateLimited { retry_after: Some(Duration::from_secs(60)) })),
            enforce,
            Verdict::Warn,
            Reason::RateLimited,
        ),
        (
            "rate closed",
            eval("nginx", failed(Failure::RateLimited { retry_after: None })),
            closed,
            Verdict::Deny,
            Reason::RateLimited,
        ),
        (
            "down",
            eval("nginx", failed(Failure::Unreachable { detail: "refused".into(), tls: false })),
            enforce,
            Verdict::Warn,
            Reason::RegistryUnreachable,
        ),
        (
            "down closed",
            eval("nginx", failed(Failure::Unreachable { detail: "refused".into(), tls: false })),
            closed,
            Verdict::Deny,
            Reason::RegistryUnreachable,
        ),
        (
            "500",
            eval("nginx", failed(Failure::ServerError { status: 500, detail: "x".into() })),
            enforce,
            Verdict::Warn,
            Reason::RegistryError,
        ),
        (
            "bad manifest",
            eval("nginx", failed(Failure::InvalidManifest { detail: "x".into() })),
            enforce,
            Verdict::Warn,
            Reason::RegistryError,
        ),
        ("arch none", eval("nginx", found(&["linux/arm64"])), enforce, Verdict::Deny, Reason::PlatformMismatch),
        ("offline", eval("nginx", LookupOutcome::NotDone), enforce, Verdict::Skip, Reason::NotChecked),
    ];
    for (name, e, settings, verdict, reason) in cases {
        let d = decide(&e, &settings);
        assert_eq!((d.verdict, d.reason), (verdict, reason), "case {name}: {}", d.message());
        assert!(
            d.message().contains("Fix:") || verdict == Verdict::Allow || verdict == Verdict::Skip,
            "case {name} has no fix: {}",
            d.message()
        );
    }
}

#[test]
fn tag_not_found_suggests() {
    let e = eval(
        "myapp:v2.3.1",
        failed(Failure::TagNotFound { tag: "v2.3.1".into(), tags: vec!["v2.3.0".into(), "v2.3.2".into()] }),
    );
    let d = decide(&e, &PolicySettings::default());
    assert_eq!(d.suggestions, ["v2.3.0", "v2.3.2"]);
    assert!(d.message().contains("Did you mean v2.3.0 or v2.3.2?"), "{}", d.message());
}

#[test]
fn partial_platform_support_warns() {
    let mut e = eval("nginx", found(&["linux/amd64"]));
    let both = Landing::Nodes(vec!["linux/amd64".parse().unwrap(), "linux/arm64".parse().unwrap()]);
    e.landing = &both;
    let d = decide(&e, &PolicySettings::default());
    assert_eq!((d.verdict, d.reason), (Verdict::Warn, Reason::PlatformMismatch));
    assert!(d.message().contains("linux/arm64"), "{}", d.message());
}

#[test]
fn pull_policy_never_skips() {
    let mut e = eval("nginx", LookupOutcome::NotDone);
    e.pull_policy_never = true;
    assert_eq!(decide(&e, &PolicySettings::default()).verdict, Verdict::Skip);
}

#[test]
fn secret_problems_deny_only_when_the_image_needs_them() {
    let problem = SecretProblem::InOtherNamespace { name: "regcred".into(), namespaces: vec!["default".into()] };
    let mut needs = eval(
        "r.io/private",
        failed(Failure::Unauthorized { credential_sent: false, status: 401, detail: String::new() }),
    );
    let problems = [problem.clone()];
    needs.secret_problems = &problems;
    let d = decide(&needs, &PolicySettings::default());
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::SecretInOtherNamespace));
    assert!(
        d.message().contains("exists in default") && d.message().contains("namespace production"),
        "{}",
        d.message()
    );

    let mut public = eval("nginx", found(&["linux/amd64"]));
    let not_found = [SecretProblem::NotFound { name: "regcred".into() }];
    public.secret_problems = &not_found;
    let d = decide(&public, &PolicySettings::default());
    assert_eq!((d.verdict, d.reason), (Verdict::Warn, Reason::SecretNotFound));

    let mut offline = eval("nginx", LookupOutcome::NotDone);
    let invalid = [SecretProblem::Invalid { name: "x".into(), detail: "bad".into() }];
    offline.secret_problems = &invalid;
    assert_eq!(decide(&offline, &PolicySettings::default()).reason, Reason::SecretInvalid);
}

/// The kubelet's `secret.MakeDockerKeyring` fails on a listed secret whose dockerconfig does not parse, before any
/// pull: every container of the pod is denied, public images too; a secret it merely skips (wrong type) is not.
#[test]
fn malformed_secret_fails_every_container_skipped_one_does_not() {
    let mut e = eval("nginx", found(&["linux/amd64"]));
    let malformed = [SecretProblem::Malformed { name: "regcred".into(), detail: "not JSON".into() }];
    e.secret_problems = &malformed;
    let d = decide(&e, &PolicySettings::default());
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::SecretInvalid), "{}", d.message());
    assert!(d.message().contains("every image pull"), "{}", d.message());
    let warn = PolicySettings { mode: Mode::Warn, ..Default::default() };
    assert_eq!(decide(&e, &warn).verdict, Verdict::Warn);
    let skipped = [SecretProblem::Invalid { name: "regcred".into(), detail: "Opaque".into() }];
    e.secret_problems = &skipped;
    assert_eq!(decide(&e, &PolicySettings::default()).verdict, Verdict::Warn);
}

/// Policy gets `CandidateInfo`, which has no credential, so no message can carry a password by construction (it
/// used to get the whole `Candidate`). What remains to check: a refusal names the secret to fix.
#[test]
fn refusals_name_the_secret() {
    let mut e = eval("r.io/a", failed(Failure::CredentialsRejected { detail: "x".into() }));
    e.candidates = vec![candidate()];
    if let LookupOutcome::Failed { rejected, .. } = &mut e.lookup {
        rejected.push((0, Failure::CredentialsRejected { detail: "x".into() }));
    }
    let d = decide(&e, &PolicySettings::default());
    assert!(d.message().contains("secret production/regcred"), "{}", d.message());
}

// One table per failure class: each class function answers for its own failures and no others.

fn reference(image: &str) -> Reference {
    Reference::parse(image).unwrap()
}

#[test]
fn not_there_always_denies() {
    let r = reference("r.io/team/app:v1");
    let cases = [
        (Failure::RepositoryNotFound, Reason::RepositoryNotFound),
        (Failure::TagNotFound { tag: "v1".into(), tags: vec!["v2".into()] }, Reason::TagNotFound),
        (Failure::DigestNotFound { digest: format!("sha256:{}", "a".repeat(64)) }, Reason::DigestNotFound),
    ];
    for (failure, reason) in cases {
        let d = not_there(&r, &failure).unwrap_or_else(|| panic!("{failure:?} is not there"));
        assert_eq!((d.verdict, d.reason), (Verdict::Deny, reason), "{failure:?}");
        assert!(d.fix.is_some(), "{failure:?}");
    }
    assert_eq!(not_there(&r, &Failure::NoRunnablePlatform), None);
}

#[test]
fn no_access_tells_missing_from_refused() {
    let r = reference("r.io/private/app:v1");
    let e = eval("r.io/private/app:v1", LookupOutcome::NotDone);
    let anonymous = Failure::Unauthorized { credential_sent: false, status: 401, detail: String::new() };
    let refused = Failure::CredentialsRejected { detail: String::new() };
    let no_pull = Failure::Unauthorized { credential_sent: true, status: 403, detail: String::new() };
    let cases = [
        (&anonymous, Reason::CredentialsMissing),
        (&refused, Reason::CredentialsRejected),
        (&no_pull, Reason::CredentialsRejected),
    ];
    for (failure, reason) in cases {
        let d = no_access(&e, &r, failure, &[]).unwrap_or_else(|| panic!("{failure:?} is about access"));
        assert_eq!((d.verdict, d.reason), (Verdict::Deny, reason), "{failure:?}: {}", d.message());
    }
    assert_eq!(no_access(&e, &r, &Failure::RepositoryNotFound, &[]), None);
}

#[test]
fn unpullable_and_blocked_always_deny() {
    let r = reference("r.io/team/app:v1");
    let e = eval("r.io/team/app:v1", LookupOutcome::NotDone);
    let mismatch = Failure::DigestMismatch { digest: format!("sha256:{}", "a".repeat(64)), detail: "x".into() };
    let d = unpullable(&e, &r, &mismatch).unwrap();
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::DigestMismatch));
    let d = unpullable(&e, &r, &Failure::NoRunnablePlatform).unwrap();
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::PlatformMismatch));
    let d = blocked(&r, &Failure::Blocked { detail: "169.254.169.254 is blocked".into() }).unwrap();
    assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::RegistryBlocked));
    assert_eq!(unpullable(&e, &r, &Failure::RepositoryNotFound), None);
    assert_eq!(blocked(&r, &Failure::RepositoryNotFound), None);
}

#[test]
fn outages_warn_and_deny_only_under_fail_closed() {
    let r = reference("r.io/team/app:v1");
    let cases = [
        (Failure::RateLimited { retry_after: Some(Duration::from_secs(30)) }, Reason::RateLimited),
        (Failure::Unreachable { detail: "refused".into(), tls: false }, Reason::RegistryUnreachable),
        (
            Failure::TimedOut { waited: Duration::from_secs(4), limit: TimeLimit::LookupTimeout },
            Reason::RegistryUnreachable,
        ),
        (Failure::ServerError { status: 500, detail: "boom".into() }, Reason::RegistryError),
        (Failure::InvalidManifest { detail: "not JSON".into() }, Reason::RegistryError),
        (Failure::Busy { limit: 2048, share: Share::All }, Reason::RegistryUnreachable),
        (Failure::Busy { limit: 256, share: Share::Namespace }, Reason::RegistryUnreachable),
        (Failure::Busy { limit: 512, share: Share::Registry }, Reason::RegistryUnreachable),
    ];
    for (failure, reason) in cases {
        for (fail_closed, verdict) in [(false, Verdict::Warn), (true, Verdict::Deny)] {
            let d = outage(&r, &failure, fail_closed);
            assert_eq!((d.verdict, d.reason), (verdict, reason), "{failure:?}, failClosed {fail_closed}");
            assert!(d.problem.contains(if fail_closed { "failClosed" } else { "admitted" }), "{}", d.problem);
        }
    }
    // Each limit's refusal names its setting and what ran out, first (kubectl cuts long warnings short).
    for (limit, share, says) in [
        (2048, Share::All, "r.io/team/app:v1 was not looked up: 2048 lookups (cache.maxLookupsInFlight) were"),
        (
            256,
            Share::Namespace,
            "r.io/team/app:v1 was not looked up: this namespace's reviews already had 256 lookups \
             (cache.maxLookupsInFlightPerNamespace) waiting",
        ),
        (
            512,
            Share::Registry,
            "r.io/team/app:v1 was not looked up: 512 lookups (cache.maxLookupsInFlightPerRegistry) were already \
             waiting on registry r.io",
        ),
    ] {
        let busy = outage(&r, &Failure::Busy { limit, share }, false);
        assert!(busy.problem.starts_with(says), "{}", busy.problem);
        let fix = busy.fix.unwrap_or_default();
        assert!(fix.ends_with(&format!("If the registries are only slow, raise {}.", share.setting())), "{fix}");
    }
    let tls = outage(&r, &Failure::Unreachable { detail: "x".into(), tls: true }, false);
    assert!(tls.fix.as_deref().is_some_and(|f| f.contains("ca:")), "{:?}", tls.fix);
}

fn platforms(names: &[&str]) -> Vec<Platform> {
    names.iter().map(|p| p.parse().unwrap()).collect()
}

/// A pod pinned to a platform no current node offers: the image is judged against what the pod asks for.
#[test]
fn a_pinned_pod_is_judged_against_the_platform_it_asks_for() {
    let no_node = |asked: &[&str], pinned: bool, live: bool| Landing::NoNode {
        asked: platforms(asked),
        pinned,
        known: platforms(&["linux/amd64"]),
        live,
    };
    // (case, image platforms, landing, verdict, reason, the message mentions)
    let cases = [
        (
            "amd64-only pinned to arm64, live",
            &["linux/amd64"][..],
            no_node(&["linux/arm64"], true, true),
            Verdict::Deny,
            Reason::PlatformMismatch,
            "the pod asks for linux/arm64",
        ),
        (
            "amd64-only pinned to arm64, check",
            &["linux/amd64"][..],
            no_node(&["linux/arm64"], true, false),
            Verdict::Deny,
            Reason::PlatformMismatch,
            "the pod asks for linux/arm64",
        ),
        (
            "multi-arch pinned to arm64, live",
            &["linux/amd64", "linux/arm64"][..],
            no_node(&["linux/arm64"], true, true),
            Verdict::Warn,
            Reason::NoNodeForPlatform,
            "no node the pod can land on exists yet",
        ),
        (
            "multi-arch pinned to arm64, check",
            &["linux/amd64", "linux/arm64"][..],
            no_node(&["linux/arm64"], true, false),
            Verdict::Warn,
            Reason::NoNodeForPlatform,
            "none of the configured platforms (linux/amd64;",
        ),
        (
            "a pool selector, no node yet",
            &["linux/amd64"][..],
            no_node(&["linux/amd64"], false, true),
            Verdict::Allow,
            Reason::Ok,
            "resolves",
        ),
        (
            "NotIn excluded everything",
            &["linux/amd64"][..],
            no_node(&[], false, true),
            Verdict::Allow,
            Reason::Ok,
            "platform not checked",
        ),
        (
            "x86-64-v3 only",
            &["linux/amd64/v3"][..],
            Landing::Nodes(platforms(&["linux/amd64"])),
            Verdict::Warn,
            Reason::PlatformMismatch,
            "x86-64-v3",
        ),
        (
            "v3 with a baseline",
            &["linux/amd64/v3", "linux/amd64"][..],
            Landing::Nodes(platforms(&["linux/amd64"])),
            Verdict::Allow,
            Reason::Ok,
            "resolves",
        ),
    ];
    for (name, image, landing, verdict, reason, mention) in cases {
        let mut e = eval("nginx", found(image));
        e.landing = &landing;
        let d = decide(&e, &PolicySettings::default());
        assert_eq!((d.verdict, d.reason), (verdict, reason), "{name}: {}", d.message());
        assert!(d.message().contains(mention), "{name}: {}", d.message());
    }
}

/// A credentials failure on a registry the nodes may read by their own means: a warning that says why, never a
/// deny — unless the kubelet itself skips the provider (a required ServiceAccount annotation is missing).
#[test]
fn node_credentials_pullguard_cannot_see_warn_instead_of_deny() {
    use crate::credentials::provider::{ProviderFailure, ProviderReport};
    let unauthorized = || failed(Failure::Unauthorized { credential_sent: false, status: 401, detail: "401".into() });
    let with = |providers: Vec<ProviderReport>, node_authenticated: bool| {
        let mut e = eval("123.dkr.ecr.us-east-1.amazonaws.com/team/app:1", unauthorized());
        e.providers = providers;
        e.node_authenticated = node_authenticated;
        e
    };
    let failed_provider = ProviderReport::Failed {
        provider: "ecr-credential-provider".into(),
        failure: ProviderFailure::Exit { status: "exit status: 1".into() },
    };
    let answered = ProviderReport::Answered { provider: "ecr-credential-provider".into() };
    let identity =
        ProviderReport::NeedsPodIdentity { provider: "acr".into(), service_account: "production/app".into() };
    let annotation = ProviderReport::AnnotationMissing {
        provider: "acr".into(),
        service_account: "production/app".into(),
        annotation: "azure.workload.identity/client-id".into(),
    };
    // (case, evaluation, verdict, reason, the message mentions)
    let cases = [
        (
            "no provider, not node-authenticated",
            with(vec![], false),
            Verdict::Deny,
            Reason::CredentialsMissing,
            "requires credentials",
        ),
        (
            "nodeAuthenticated",
            with(vec![], true),
            Verdict::Warn,
            Reason::NodeCredentialsUnverified,
            "nodeAuthenticated",
        ),
        (
            "a provider answered and was refused",
            with(vec![answered], true),
            Verdict::Deny,
            Reason::CredentialsMissing,
            "requires",
        ),
        (
            "the provider failed",
            with(vec![failed_provider], false),
            Verdict::Warn,
            Reason::CredentialProviderFailed,
            "exit status: 1",
        ),
        (
            "token mode",
            with(vec![identity], false),
            Verdict::Warn,
            Reason::NodeCredentialsUnverified,
            "without the pod's own identity",
        ),
        (
            "annotation missing",
            with(vec![annotation], true),
            Verdict::Deny,
            Reason::ServiceAccountAnnotationMissing,
            "azure.workload.identity/client-id",
        ),
    ];
    for (name, e, verdict, reason, mention) in cases {
        let d = decide(&e, &PolicySettings::default());
        assert_eq!((d.verdict, d.reason), (verdict, reason), "{name}: {}", d.message());
        assert!(d.message().contains(mention), "{name}: {}", d.message());
        assert!(d.message().contains("Fix:"), "{name}: {}", d.message());
    }
}

/// A credential that says when it ends: warned within the window, named, never a deny; a provider's answer is
/// left alone (the kubelet asks its plugin again).
#[test]
fn credentials_that_expire_soon_are_a_warning() {
    use crate::credentials::expiry::Expiry;
    let with = |at_offset: i64, source: Source| {
        let mut e = eval(
            "registry.example.com/app:1",
            LookupOutcome::Found {
                facts: Facts { digest: "sha256:abc".into(), platforms: Arc::default() },
                used: Some(0),
                rejected: vec![],
            },
        );
        e.candidates = vec![CandidateInfo {
            source,
            expires: Some(Expiry { at: e.now + at_offset, what: "ECR authorization token" }),
            ..candidate()
        }];
        e
    };
    let day = PolicySettings { expiry_warning: Duration::from_secs(24 * 3600), ..PolicySettings::default() };
    let secret = candidate().source;
    let d = decide(&with(3 * 3600 + 20 * 60, secret.clone()), &day);
    assert_eq!((d.verdict, d.reason), (Verdict::Warn, Reason::CredentialsExpiring));
    assert!(d.problem.contains("secret production/regcred (key registry.example.com), whose ECR authorization token expires at 2026-11-18T14:26:40Z (in 3h 20m)"), "{}", d.problem);
    assert!(d.fix.unwrap().contains("ecr-credential-provider"));
    let d = decide(&with(-90, secret.clone()), &day);
    assert!(d.problem.contains("expired at 2026-11-18T11:05:10Z (1m ago)"), "{}", d.problem);
    assert_eq!(decide(&with(2 * 86_400, secret.clone()), &day).reason, Reason::Ok, "outside the window");
    assert_eq!(
        decide(&with(3600, secret), &PolicySettings::default()).reason,
        Reason::Ok,
        "window 0: only once expired"
    );
    let provider = Source::Provider { name: "ecr-credential-provider".into() };
    assert_eq!(decide(&with(60, provider), &day).reason, Reason::Ok);
    let warn_mode = PolicySettings { mode: Mode::Warn, ..day };
    assert_eq!(decide(&with(60, candidate().source), &warn_mode).verdict, Verdict::Warn);
}

/// The budget a registry announced against the pods a rollout makes; a DaemonSet's count is unknown.
#[test]
fn a_rollout_past_the_announced_pull_budget_is_a_warning() {
    let with = |pods: Option<u32>, budget: Option<(u64, u64)>| {
        let mut e = eval("nginx:1", found(&[]));
        e.pods = pods;
        e.pull_budget = budget;
        decide(&e, &PolicySettings::default())
    };
    let d = with(Some(5), Some((100, 3)));
    assert_eq!((d.verdict, d.reason), (Verdict::Warn, Reason::PullBudgetLow));
    assert!(
        d.problem.contains("docker.io announces 3 of 100 pulls left in its window for anonymous pulls"),
        "{}",
        d.problem
    );
    assert_eq!(with(Some(3), Some((100, 3))).reason, Reason::Ok);
    assert_eq!(with(None, Some((100, 0))).reason, Reason::Ok, "pods unknown");
    assert_eq!(with(Some(5), None).reason, Reason::Ok, "no budget announced");
}
