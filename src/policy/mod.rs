//! Verdicts: facts in, verdict out. No I/O, no clocks, no HTTP types.
//!
//! A denial is a value ([`Decision`]), not an error. Lookup failures that say nothing about the image
//! (rate limits, outages) map to warn, or to deny under `failClosed`, in one place: [`decide`].

use std::fmt;

use serde::Serialize;

use crate::cache::Facts;
use crate::cluster::SecretProblem;
use crate::credentials::CandidateInfo;
use crate::credentials::expiry::rfc3339;
use crate::credentials::provider::ProviderReport;
use crate::platform::{Platform, PlatformFit, fit};
use crate::reference::{Reference, ReferenceError};
use crate::registry::{Failure, Share, TimeLimit, fmt_duration};
use crate::scheduling::Landing;
use crate::suggest::suggest_tags;

/// What happens to a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow,
    Skip,
    Warn,
    Deny,
}

impl Verdict {
    /// The word users see, in JSON, metrics and messages alike.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Skip => "skip",
            Verdict::Warn => "warn",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Verdict {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// Why. Stable codes: they appear in JSON, SARIF rule ids, audit annotations and metrics, always through
/// [`Reason::as_str`], so renaming a variant cannot change them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Ok,
    InvalidReference,
    RepositoryNotFound,
    TagNotFound,
    DigestNotFound,
    DigestMismatch,
    CredentialsMissing,
    CredentialsRejected,
    CredentialsExpiring,
    PlatformMismatch,
    NoNodeForPlatform,
    RegistryBlocked,
    RegistryBlockedOnNodes,
    RateLimited,
    PullBudgetLow,
    RegistryUnreachable,
    RegistryError,
    SecretNotFound,
    SecretInOtherNamespace,
    SecretInvalid,
    CredentialProviderFailed,
    NodeCredentialsUnverified,
    ServiceAccountAnnotationMissing,
    PullPolicyNever,
    NotChecked,
}

impl Reason {
    pub const ALL: [Reason; 25] = [
        Reason::Ok,
        Reason::InvalidReference,
        Reason::RepositoryNotFound,
        Reason::TagNotFound,
        Reason::DigestNotFound,
        Reason::DigestMismatch,
        Reason::CredentialsMissing,
        Reason::CredentialsRejected,
        Reason::CredentialsExpiring,
        Reason::PlatformMismatch,
        Reason::NoNodeForPlatform,
        Reason::RegistryBlocked,
        Reason::RegistryBlockedOnNodes,
        Reason::RateLimited,
        Reason::PullBudgetLow,
        Reason::RegistryUnreachable,
        Reason::RegistryError,
        Reason::SecretNotFound,
        Reason::SecretInOtherNamespace,
        Reason::SecretInvalid,
        Reason::CredentialProviderFailed,
        Reason::NodeCredentialsUnverified,
        Reason::ServiceAccountAnnotationMissing,
        Reason::PullPolicyNever,
        Reason::NotChecked,
    ];

    /// The code as users see it. A contract: the table test in `policy::tests` pins every string.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Ok => "Ok",
            Reason::InvalidReference => "InvalidReference",
            Reason::RepositoryNotFound => "RepositoryNotFound",
            Reason::TagNotFound => "TagNotFound",
            Reason::DigestNotFound => "DigestNotFound",
            Reason::DigestMismatch => "DigestMismatch",
            Reason::CredentialsMissing => "CredentialsMissing",
            Reason::CredentialsRejected => "CredentialsRejected",
            Reason::CredentialsExpiring => "CredentialsExpiring",
            Reason::PlatformMismatch => "PlatformMismatch",
            Reason::NoNodeForPlatform => "NoNodeForPlatform",
            Reason::RegistryBlocked => "RegistryBlocked",
            Reason::RegistryBlockedOnNodes => "RegistryBlockedOnNodes",
            Reason::RateLimited => "RateLimited",
            Reason::PullBudgetLow => "PullBudgetLow",
            Reason::RegistryUnreachable => "RegistryUnreachable",
            Reason::RegistryError => "RegistryError",
            Reason::SecretNotFound => "SecretNotFound",
            Reason::SecretInOtherNamespace => "SecretInOtherNamespace",
            Reason::SecretInvalid => "SecretInvalid",
            Reason::CredentialProviderFailed => "CredentialProviderFailed",
            Reason::NodeCredentialsUnverified => "NodeCredentialsUnverified",
            Reason::ServiceAccountAnnotationMissing => "ServiceAccountAnnotationMissing",
            Reason::PullPolicyNever => "PullPolicyNever",
            Reason::NotChecked => "NotChecked",
        }
    }

    /// One line on what the code means, for SARIF rules and docs.
    pub fn summary(self) -> &'static str {
        match self {
            Reason::Ok => "The image resolves and serves the pod's platforms.",
            Reason::InvalidReference => "The image string is not a valid image reference.",
            Reason::RepositoryNotFound => "The repository does not exist on the registry.",
            Reason::TagNotFound => "The tag does not exist in the repository.",
            Reason::DigestNotFound => "The digest does not exist in the repository.",
            Reason::DigestMismatch => {
                "The registry serves content that does not match the digest; the kubelet refuses it."
            }
            Reason::CredentialsMissing => "The registry requires credentials and the pod has none for it.",
            Reason::CredentialsRejected => "The registry refused the pod's credentials.",
            Reason::CredentialsExpiring => {
                "The credential that pulls the image carries an expiry (an ECR token, a JWT) that is near or past: \
                 the next pull after it fails."
            }
            Reason::PlatformMismatch => "The image does not serve the platforms the pod may run on.",
            Reason::NoNodeForPlatform => {
                "The image serves the platform the pod asks for, but no node the pod can land on exists yet."
            }
            Reason::RegistryBlocked => "The registry host is in a blocked network and was not contacted.",
            Reason::RegistryBlockedOnNodes => "The nodes' registries.conf blocks the registry or repository.",
            Reason::RateLimited => "The registry is rate-limiting pulls.",
            Reason::PullBudgetLow => {
                "The registry announces fewer pulls left in its window than a rollout of the workload makes."
            }
            Reason::RegistryUnreachable => "The registry could not be reached (DNS, connect, TLS, timeout).",
            Reason::RegistryError => "The registry answered with an error.",
            Reason::SecretNotFound => "A pull secret the pod names does not exist.",
            Reason::SecretInOtherNamespace => "A pull secret the pod names exists only in another namespace.",
            Reason::SecretInvalid => "A pull secret the pod names cannot be used.",
            Reason::CredentialProviderFailed => {
                "A kubelet credential provider plugin failed, so the node's credentials were not checked."
            }
            Reason::NodeCredentialsUnverified => {
                "The registry wants credentials the nodes may have but pullguard cannot check (instance role, \
                 the pod's own identity)."
            }
            Reason::ServiceAccountAnnotationMissing => {
                "The pod's ServiceAccount lacks an annotation its node's credential provider requires."
            }
            Reason::PullPolicyNever => "imagePullPolicy: Never; the image is never pulled.",
            Reason::NotChecked => "Offline: the image was not looked up.",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// enforce: deny what would fail; warn: admit it with warnings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    #[default]
    Enforce,
    Warn,
}

#[derive(Clone, Copy, Debug, Default)]
pub struct PolicySettings {
    pub mode: Mode,
    pub fail_closed: bool,
    /// Warn when the credential that pulls an image expires within this long (`credentialExpiryWarning`).
    pub expiry_warning: std::time::Duration,
}

/// The outcome of walking the credential candidates.
#[derive(Clone, Debug)]
pub enum LookupOutcome {
    /// `--offline`, or nothing to look up.
    NotDone,
    Found {
        facts: Facts,
        /// Index into the candidates of the credential that worked; `None` for anonymous.
        used: Option<usize>,
        /// Candidates the registry refused before one worked.
        rejected: Vec<(usize, Failure)>,
    },
    Failed {
        failure: Failure,
        rejected: Vec<(usize, Failure)>,
    },
}

/// Everything known about one container. Built by the engine, judged by [`decide`]; what the pod's
/// containers share (namespace, service account, secret problems, landing) is borrowed from the pod's.
#[derive(Clone, Debug)]
pub struct Evaluation<'a> {
    pub image: String,
    pub reference: Result<Reference, ReferenceError>,
    pub pull_policy_never: bool,
    pub namespace: &'a str,
    pub service_account: Option<&'a str>,
    pub secret_problems: &'a [SecretProblem],
    pub candidates: Vec<CandidateInfo>,
    pub lookup: LookupOutcome,
    /// Where the pod can land: node selector, affinity and tolerations against the node inventory.
    pub landing: &'a Landing,
    /// What the kubelet's credential provider plugins said for this image, in configuration order.
    pub providers: Vec<ProviderReport>,
    /// The image is on a `nodeAuthenticated` registry.
    pub node_authenticated: bool,
    /// The host that served the image, when mirrors are configured for its registry.
    pub served_by: Option<String>,
    /// What the hosts tried before the one that decided answered (`mirror https://…: tag not found`).
    pub host_notes: Vec<String>,
    /// The nodes' registries.conf blocks the reference under this prefix.
    pub node_blocked: Option<String>,
    /// Now, in Unix seconds, for credentials that carry an expiry.
    pub now: i64,
    /// Pods a rollout of the workload makes at once (`Workload::pods`).
    pub pods: Option<u32>,
    /// The pull budget the registry last announced for the identity that pulled: (limit, remaining).
    pub pull_budget: Option<(u64, u64)>,
}

/// The verdict for one container, with what to do about it. Every face renders from these fields: the
/// human report prints `fix`, `problem` and `notes` on their own lines; JSON, SARIF, JUnit and the admission
/// response carry [`Decision::message`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// What is wrong, or what was found: whole sentences.
    pub problem: String,
    /// What to do about it, whole sentences; `None` when there is nothing to do.
    pub fix: Option<String>,
    /// Facts that did not decide the verdict but matter to whoever fixes it (another secret problem,
    /// credentials refused before an outage): whole sentences.
    pub notes: Vec<String>,
    pub suggestions: Vec<String>,
}

impl Decision {
    /// One paragraph: the problem, `Fix: ` and the fix, then the notes.
    pub fn message(&self) -> String {
        let fix = self.fix.as_ref().map_or(0, |f| f.len() + 6);
        let notes: usize = self.notes.iter().map(|n| n.len() + 1).sum();
        let mut m = String::with_capacity(self.problem.len() + fix + notes);
        m.push_str(&self.problem);
        if let Some(fix) = &self.fix {
            m.push_str(" Fix: ");
            m.push_str(fix);
        }
        for note in &self.notes {
            m.push(' ');
            m.push_str(note);
        }
        m
    }
}

fn decision(verdict: Verdict, reason: Reason, problem: String, fix: Option<String>) -> Decision {
    Decision { verdict, reason, problem, fix, notes: vec![], suggestions: vec![] }
}

/// Judges one container.
pub fn decide(e: &Evaluation, settings: &PolicySettings) -> Decision {
    let mut d = decide_enforcing(e, settings);
    if matches!(d.reason, Reason::CredentialsMissing | Reason::CredentialsRejected) {
        d = node_credentials(e, d);
    }
    if !e.host_notes.is_empty() {
        let tried = e.host_notes.join("; ");
        d.notes.push(match &e.served_by {
            Some(host) => format!("Served by {host} after: {tried}."),
            None => format!("Also tried, as the node's containerd would: {tried}."),
        });
    }
    if settings.mode == Mode::Warn && d.verdict == Verdict::Deny {
        d.verdict = Verdict::Warn;
    }
    d
}

/// A credentials failure the node may not have: its credential providers failed here, or sign in with the
/// pod's own identity or the node's instance role, which pullguard cannot reproduce. Then it is a warning
/// that says so, never a deny — except where the kubelet itself would skip the provider.
fn node_credentials(e: &Evaluation, d: Decision) -> Decision {
    let was = format!("{} ({})", d.problem.trim_end_matches('.'), d.reason);
    for p in &e.providers {
        if let ProviderReport::AnnotationMissing { provider, service_account, annotation } = p {
            return decision(
                Verdict::Deny,
                Reason::ServiceAccountAnnotationMissing,
                format!(
                    "{was}. The node's credential provider {provider} signs in with the pod's ServiceAccount, but \
                     {service_account} lacks the annotation {annotation:?} the provider requires, so the kubelet \
                     does not run it for this pod."
                ),
                Some(format!(
                    "annotate the ServiceAccount: kubectl annotate serviceaccount -n {} {} {annotation}=... (the \
                     value your cloud's identity binding expects).",
                    service_account.split('/').next().unwrap_or_default(),
                    service_account.split('/').nth(1).unwrap_or_default()
                )),
            );
        }
    }
    for p in &e.providers {
        if let ProviderReport::Failed { provider, failure } = p {
            return decision(
                Verdict::Warn,
                Reason::CredentialProviderFailed,
                format!(
                    "{was}. The credential provider {provider} failed here ({failure}), so the node's credentials \
                     for this registry were not checked."
                ),
                Some(format!(
                    "check the plugin: run it with a CredentialProviderRequest on stdin (as the kubelet does), and \
                     the identity it uses (the webhook's ServiceAccount) for read access to {}.",
                    e.reference.as_ref().map(|r| r.domain.clone()).unwrap_or_default()
                )),
            );
        }
    }
    let needs_identity = e.providers.iter().find_map(|p| match p {
        ProviderReport::NeedsPodIdentity { provider, service_account } => Some((provider, service_account)),
        _ => None,
    });
    let answered = e.providers.iter().any(|p| matches!(p, ProviderReport::Answered { .. }));
    let why = match needs_identity {
        Some((provider, sa)) => format!(
            "the node's credential provider {provider} signs in with a token of the pod's ServiceAccount {sa}, \
             which pullguard does not mint, so the image was checked without the pod's own identity"
        ),
        None if e.node_authenticated && !answered => {
            "the nodes sign in to this registry by means pullguard cannot reproduce (nodeAuthenticated: an \
             instance role or workload identity), so their credentials were not checked"
                .to_string()
        }
        None => return d,
    };
    decision(
        Verdict::Warn,
        Reason::NodeCredentialsUnverified,
        format!("{was}; {why}."),
        Some(
            "nothing to change if the nodes can read this repository; otherwise grant the node role pull \
             access, or add an imagePullSecret. Configure credentialProviders as on the nodes for a full check."
                .into(),
        ),
    )
}

fn decide_enforcing(e: &Evaluation, settings: &PolicySettings) -> Decision {
    let r = match &e.reference {
        Err(err) => {
            return decision(
                Verdict::Deny,
                Reason::InvalidReference,
                format!("image {:?} is not a valid image reference: {err}.", e.image),
                Some("correct the image field.".into()),
            );
        }
        Ok(r) => r,
    };
    if e.pull_policy_never {
        return decision(
            Verdict::Skip,
            Reason::PullPolicyNever,
            format!("imagePullPolicy is Never: {r} must already be on the node; it is not checked."),
            None,
        );
    }
    if let Some(prefix) = &e.node_blocked {
        return decision(
            Verdict::Deny,
            Reason::RegistryBlockedOnNodes,
            format!(
                "{r} is blocked on the nodes: their registries.conf marks {prefix:?} blocked, so CRI-O refuses the pull."
            ),
            Some(format!(
                "use an image from a registry the nodes allow, or lift the block for {prefix} in the nodes' \
                 registries.conf."
            )),
        );
    }
    if let Some(p) = e.secret_problems.iter().find(|p| p.fails_every_pull()) {
        let (reason, what, fix) = secret_problem_text(p, e.namespace, e.service_account);
        return decision(
            Verdict::Deny,
            reason,
            format!("{what}; the kubelet fails every image pull of a pod that lists it, {r} included."),
            Some(format!("{fix}.")),
        );
    }
    match &e.lookup {
        LookupOutcome::NotDone => match secret_decision(e, Verdict::Warn, "") {
            Some(d) => d,
            None => decision(Verdict::Skip, Reason::NotChecked, format!("{r} was not looked up (offline)."), None),
        },
        LookupOutcome::Failed { failure, rejected } => failed(e, r, failure, rejected, settings),
        LookupOutcome::Found { facts, used, .. } => found(e, r, facts, *used, settings),
    }
}

/// The lookup failed: one function per class of failure, then what else the user should know.
fn failed(
    e: &Evaluation,
    r: &Reference,
    failure: &Failure,
    rejected: &[(usize, Failure)],
    settings: &PolicySettings,
) -> Decision {
    // Each class answers for its own failures (None for the others); what no class claims is an outage.
    let mut d = not_there(r, failure)
        .or_else(|| no_access(e, r, failure, rejected))
        .or_else(|| unpullable(e, r, failure))
        .or_else(|| blocked(r, failure))
        .unwrap_or_else(|| outage(r, failure, settings.fail_closed));
    // Refused credentials matter even when something else ended the walk (a timeout, an outage).
    if !rejected.is_empty() && !failure.is_auth() {
        let who: Vec<String> = rejected.iter().map(|(i, _)| describe_candidate(&e.candidates[*i])).collect();
        d.notes.push(format!("Before that, the registry refused the credentials in {}.", who.join(", ")));
    }
    let secret_note = secret_problems_text(e);
    if !secret_note.is_empty()
        && !matches!(d.reason, Reason::SecretNotFound | Reason::SecretInvalid | Reason::SecretInOtherNamespace)
    {
        d.notes.push(format!("Also: {secret_note}"));
    }
    d
}

/// The registry answered that the image is not there: always a deny.
fn not_there(r: &Reference, failure: &Failure) -> Option<Decision> {
    let registry = &r.domain;
    let repo = r.repository();
    Some(match failure {
        Failure::RepositoryNotFound => decision(
            Verdict::Deny,
            Reason::RepositoryNotFound,
            format!("repository {repo} does not exist on {registry}."),
            Some(
                "check the image name for a typo \
                 (registry, organisation, repository), or push the image first."
                    .into(),
            ),
        ),
        Failure::TagNotFound { tag, tags } => {
            let suggestions = suggest_tags(tag, tags);
            let hint = match suggestions.as_slice() {
                [] if tags.is_empty() => String::new(),
                [] => format!(" Existing tags include: {}.", sample(tags)),
                s => format!(" Did you mean {}?", or_list(s)),
            };
            let mut d = decision(
                Verdict::Deny,
                Reason::TagNotFound,
                format!("tag {tag:?} does not exist in {repo}."),
                Some(format!(
                    "use a tag that exists, or push {tag} \
                     before deploying.{hint}"
                )),
            );
            d.suggestions = suggestions;
            d
        }
        Failure::DigestNotFound { digest } => decision(
            Verdict::Deny,
            Reason::DigestNotFound,
            format!("digest {digest} does not exist in {repo} (never pushed there, or deleted)."),
            Some(
                "pin a \
                 digest that exists, e.g. re-resolve the tag you meant."
                    .into(),
            ),
        ),
        _ => return None,
    })
}

/// The registry wants credentials the pod lacks, or refused the ones it has.
fn no_access(e: &Evaluation, r: &Reference, failure: &Failure, rejected: &[(usize, Failure)]) -> Option<Decision> {
    Some(match failure {
        Failure::Unauthorized { credential_sent: false, .. } if rejected.is_empty() => {
            match secret_decision(e, Verdict::Deny, " and the image cannot be pulled without it") {
                Some(d) => d,
                None => credentials_missing(e, r),
            }
        }
        Failure::Unauthorized { .. } | Failure::CredentialsRejected { .. } => {
            credentials_rejected(e, r, failure, rejected)
        }
        _ => return None,
    })
}

/// The registry serves the image, but no node could run what it serves: always a deny.
fn unpullable(e: &Evaluation, r: &Reference, failure: &Failure) -> Option<Decision> {
    let repo = r.repository();
    Some(match failure {
        Failure::DigestMismatch { digest, detail } => decision(
            Verdict::Deny,
            Reason::DigestMismatch,
            format!(
                "{repo}@{digest} cannot be pulled: {detail}. The kubelet verifies every digest and refuses \
                 such content."
            ),
            Some(format!(
                "pin the digest the registry really serves (re-resolve the tag, e.g. \
                 skopeo inspect docker://{repo}:TAG), or repair the registry or mirror that serves other \
                 content under this digest."
            )),
        ),
        Failure::NoRunnablePlatform => decision(
            Verdict::Deny,
            Reason::PlatformMismatch,
            format!(
                "{r} is an index that lists no runnable image (only attestations or unknown/unknown \
                 entries), so no node can pull it."
            ),
            Some(format!(
                "publish the image with its platforms (docker buildx build --platform {} --push).",
                join(&e.landing.known()).replace(", ", ",")
            )),
        ),
        _ => return None,
    })
}

/// The registry host, a realm or a redirect is in a blocked network: a deny, never contacted.
fn blocked(r: &Reference, failure: &Failure) -> Option<Decision> {
    let Failure::Blocked { detail } = failure else { return None };
    let registry = &r.domain;
    Some(decision(
        Verdict::Deny,
        Reason::RegistryBlocked,
        format!("registry {registry} was not contacted: {detail}."),
        Some(
            "use an image from a legitimate registry; if this registry is legitimate, remove its network from \
             blockedNetworks in the pullguard configuration."
                .into(),
        ),
    ))
}

/// Nothing is known about the image (rate limit, outage, timeout, a broken answer): warn, or deny under
/// failClosed.
fn outage(r: &Reference, failure: &Failure, fail_closed: bool) -> Decision {
    let registry = &r.domain;
    let fail_open = if fail_closed { Verdict::Deny } else { Verdict::Warn };
    let open_note = if fail_closed {
        "failClosed is set, so this is denied"
    } else {
        "pullguard could not verify the image, so it is admitted"
    };
    match failure {
        Failure::RateLimited { retry_after } => decision(
            fail_open,
            Reason::RateLimited,
            format!(
                "{registry} is rate-limiting pulls{}; nodes pulling {r} now may hit the same limit \
                 ({open_note}).",
                retry_after.map(|d| format!(" (retry after {}s)", d.as_secs())).unwrap_or_default()
            ),
            Some("authenticate pulls with an imagePullSecret, or mirror the image to a registry you control.".into()),
        ),
        Failure::Unreachable { detail, tls } => {
            let tls_hint = if *tls {
                " If the registry uses a private CA, configure its ca: file (nodes need to trust it too)."
            } else {
                ""
            };
            decision(
                fail_open,
                Reason::RegistryUnreachable,
                format!("registry {registry} is unreachable: {detail} ({open_note})."),
                Some(format!(
                    "check the registry \
                     host name, DNS, and egress from the cluster to it.{tls_hint}"
                )),
            )
        }
        Failure::Busy { limit, share } => {
            let setting = share.setting();
            // What ran out first: kubectl cuts long warnings short.
            let (problem, fix) = match share {
                Share::All => (
                    format!("{limit} lookups ({setting}) were already waiting on registries that have not answered"),
                    "find the registry that does not answer (pullguard_lookups_in_flight, and other reviews' \
                     RegistryUnreachable warnings)"
                        .to_string(),
                ),
                Share::Namespace => (
                    format!(
                        "this namespace's reviews already had {limit} lookups ({setting}) waiting on registries \
                         that have not answered"
                    ),
                    "find which registry of this namespace's images does not answer (its other \
                     RegistryUnreachable warnings); other namespaces' images are still looked up"
                        .to_string(),
                ),
                Share::Registry => (
                    format!(
                        "{limit} lookups ({setting}) were already waiting on registry {registry}, which has not answered them"
                    ),
                    format!(
                        "check that {registry} answers from the cluster (DNS, egress, its status); images of other \
                         registries are still looked up"
                    ),
                ),
            };
            decision(
                fail_open,
                Reason::RegistryUnreachable,
                format!("{r} was not looked up: {problem} ({open_note})."),
                Some(format!("{fix}. If the registries are only slow, raise {setting}.")),
            )
        }
        Failure::TimedOut { waited, limit } => {
            let what = match limit {
                TimeLimit::LookupTimeout => {
                    format!("registry {registry} did not answer within lookupTimeout ({})", fmt_duration(*waited))
                }
                TimeLimit::ReviewDeadline if waited.as_millis() < 50 => format!(
                    "no time was left in this review to look up {r} (the API server's timeout for the \
                     webhook was used up); the lookup goes on, and its answer is cached for the next review"
                ),
                TimeLimit::ReviewDeadline => format!(
                    "registry {registry} did not answer within the {} left of this review's time (the API \
                     server's timeout for the webhook); the lookup goes on, and its answer is cached for the \
                     next review",
                    fmt_duration(*waited)
                ),
            };
            decision(
                fail_open,
                Reason::RegistryUnreachable,
                format!("{what} ({open_note})."),
                Some(
                    "check the registry's health and latency from the cluster; \
                     if it is only slow, raise lookupTimeout or the webhook's timeoutSeconds."
                        .into(),
                ),
            )
        }
        Failure::ServerError { detail, .. } | Failure::InvalidManifest { detail } => decision(
            fail_open,
            Reason::RegistryError,
            format!("registry {registry} failed for {r}: {detail} ({open_note})."),
            Some(
                "retry later, or check \
                 the registry's health."
                    .into(),
            ),
        ),
        // Not an outage class; only reached if a new failure has no class yet. Say what it was, warn-or-deny.
        other => decision(
            fail_open,
            Reason::RegistryError,
            format!("registry {registry} failed for {r}: {other} ({open_note})."),
            Some("retry later, or check the registry's health.".into()),
        ),
    }
}

/// The image resolved: the platforms, then the credentials that were refused on the way, then secret problems.
fn found(e: &Evaluation, r: &Reference, facts: &Facts, used: Option<usize>, settings: &PolicySettings) -> Decision {
    if let Some(d) = platform_decision(e, r, facts) {
        return d;
    }
    if let Some(d) = secret_decision(e, Verdict::Warn, "; the image is pullable without it") {
        return d;
    }
    if let Some(d) = used.and_then(|i| expiring(e, r, &e.candidates[i], settings)) {
        return d;
    }
    if let Some(d) = budget_decision(e, r, used) {
        return d;
    }
    // Written into one buffer sized for the usual message: this runs for every allowed container.
    use std::fmt::Write;
    let mut msg = String::with_capacity(256);
    r.push_to(&mut msg);
    msg.push_str(" resolves to ");
    msg.push_str(&facts.digest);
    if let Some(i) = used {
        let _ = write!(msg, " with {}", Described(&e.candidates[i]));
    }
    if let Some(host) = &e.served_by {
        msg.push_str(" from ");
        msg.push_str(host);
    }
    if !facts.platforms.is_empty() {
        msg.push_str(" (");
        push_joined(&mut msg, facts.platforms.iter(), ", ");
        msg.push(')');
    }
    match e.landing {
        Landing::NoNode { asked, known, .. } if asked.is_empty() && !known.is_empty() => {
            let _ = write!(
                msg,
                "; platform not checked: the pod's node selector or affinity matches none of the cluster \
                 platforms ({})",
                join(known)
            );
        }
        _ => {}
    }
    msg.push('.');
    decision(Verdict::Allow, Reason::Ok, msg, None)
}

/// The credential that pulled the image says it ends within the warning window (or has ended). A provider's
/// answers are left alone: the kubelet asks its plugin again when they run out.
fn expiring(e: &Evaluation, r: &Reference, c: &CandidateInfo, settings: &PolicySettings) -> Option<Decision> {
    let x = c.expires?;
    let left = x.at - e.now;
    if c.source.provider_name().is_some() || left > settings.expiry_warning.as_secs() as i64 {
        return None;
    }
    let when = if left > 0 {
        format!("expires at {} (in {})", rfc3339(x.at), human_duration(left))
    } else {
        format!("expired at {} ({} ago)", rfc3339(x.at), human_duration(-left))
    };
    let source = describe_candidate(c);
    let refresh = match x.what {
        "ECR authorization token" => {
            "ECR tokens last 12 hours: run the kubelet's ecr-credential-provider on the nodes instead of a pull \
             secret, or a CronJob that rewrites the secret every few hours"
        }
        _ => "automate the refresh before the token's lifetime runs out",
    };
    Some(decision(
        Verdict::Warn,
        Reason::CredentialsExpiring,
        format!(
            "{r} pulls with {source}, whose {} {when}: every pull after that (a reschedule, a scale-up, a new node) \
             fails, and the pods stay in ImagePullBackOff.",
            x.what
        ),
        Some(format!("refresh {source} before then; {refresh}.")),
    ))
}

/// The registry announced (Docker Hub's `ratelimit-remaining`) fewer pulls left for the identity that pulled
/// than a rollout of this workload makes: some of its pods would hit 429 and stay in ImagePullBackOff. The
/// budget is per account, so it is shared with the nodes when they pull with the same credential; an
/// anonymous budget is per egress address, shared only where the nodes and pullguard leave by the same one.
fn budget_decision(e: &Evaluation, r: &Reference, used: Option<usize>) -> Option<Decision> {
    let ((limit, remaining), pods) = (e.pull_budget?, e.pods?);
    if remaining >= u64::from(pods) {
        return None;
    }
    let who = match used {
        Some(i) => describe_candidate(&e.candidates[i]),
        None => "anonymous pulls (counted per egress address)".to_string(),
    };
    Some(decision(
        Verdict::Warn,
        Reason::PullBudgetLow,
        format!(
            "{} announces {remaining} of {limit} pulls left in its window for {who}, and a rollout of this \
             workload pulls {r} on up to {pods} nodes: the pulls past the budget are refused (429) and those pods \
             stay in ImagePullBackOff until the window resets.",
            r.domain
        ),
        Some(
            "pull with an account that has budget left (a pull secret), mirror the image, or roll out after the \
             registry's window resets."
                .into(),
        ),
    ))
}

/// `3h 20m`, `45m`, `2d 4h`.
fn human_duration(secs: i64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    match (d, h) {
        (0, 0) => format!("{}m", m.max(1)),
        (0, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

/// The image's platforms against where the pod can land: the nodes it fits, or — when none fits yet — the
/// platforms it asks for.
fn platform_decision(e: &Evaluation, r: &Reference, facts: &Facts) -> Option<Decision> {
    let (targets, no_node) = match e.landing {
        Landing::Nodes(ps) => (ps, None),
        Landing::NoNode { asked, pinned, known, live } => (asked, Some((*pinned, known, *live))),
    };
    if facts.platforms.is_empty() || targets.is_empty() {
        return None;
    }
    // Worded only when there is a mismatch to report: this runs for every allowed container.
    let offers = || join(&facts.platforms);
    let fix = || {
        let mut wanted: Vec<&Platform> = facts.platforms.iter().chain(targets).collect();
        wanted.sort();
        wanted.dedup();
        format!(
            "publish a multi-platform image (docker buildx build --platform {} --push), or restrict the pod to \
             supported nodes with nodeSelector kubernetes.io/arch.",
            join_with(wanted, ",")
        )
    };
    let asks = match no_node {
        Some((true, ..)) => "the pod asks for",
        _ => "the pod can run only on",
    };
    match fit(&facts.platforms, targets) {
        PlatformFit::None => {
            return Some(decision(
                Verdict::Deny,
                Reason::PlatformMismatch,
                format!("{r} offers only {}, but {asks} {}.", offers(), join(targets)),
                Some(fix()),
            ));
        }
        PlatformFit::Some { unsupported } => {
            return Some(decision(
                Verdict::Warn,
                Reason::PlatformMismatch,
                format!(
                    "{r} offers only {}; pods scheduled on {} nodes will fail to pull.",
                    offers(),
                    join(&unsupported)
                ),
                Some(fix()),
            ));
        }
        PlatformFit::All => {}
    }
    if let Some(level) = targets.iter().filter_map(|n| n.cpu_level_needed(&facts.platforms)).max() {
        return Some(decision(
            Verdict::Warn,
            Reason::PlatformMismatch,
            format!(
                "{r} offers only {}: it runs only on nodes whose CPU supports x86-64-v{level}. Node labels \
                 do not say which do; containerd reads the level from the CPU and refuses the pull below it.",
                offers()
            ),
            Some(format!(
                "add a baseline linux/amd64 entry (docker buildx build --platform linux/amd64,{} --push), or \
                 keep the pod on nodes known to support x86-64-v{level} with a nodeSelector.",
                join_with(facts.platforms.iter(), ",")
            )),
        ));
    }
    match no_node {
        Some((true, known, live)) => {
            let nodes = if live {
                format!("none of the cluster's nodes ({})", join(known))
            } else {
                format!("none of the configured platforms ({}; `platforms` in the configuration)", join(known))
            };
            Some(decision(
                Verdict::Warn,
                Reason::NoNodeForPlatform,
                format!(
                    "{r} offers {} as the pod asks, but no node the pod can land on exists yet: its node \
                     selector, affinity and tolerations match {nodes}. The image pulls once such a node joins.",
                    join(targets)
                ),
                Some(format!(
                    "nothing to change if an autoscaler adds {} nodes for this pod (Karpenter, a \
                     cluster-autoscaler node group); otherwise add such a node pool, or change the pod's node \
                     selector or affinity.",
                    join(targets)
                )),
            ))
        }
        _ => None,
    }
}

fn credentials_missing(e: &Evaluation, r: &Reference) -> Decision {
    let registry = &r.domain;
    let ns = e.namespace;
    let where_ = match &e.service_account {
        Some(sa) => format!("imagePullSecrets (or to ServiceAccount {sa})"),
        None => "the pod's imagePullSecrets".to_string(),
    };
    let had = if e.candidates.is_empty() {
        format!("none of the pod's credentials match {registry}")
    } else {
        "the registry did not accept anonymous access".into()
    };
    decision(
        Verdict::Deny,
        Reason::CredentialsMissing,
        format!("{} requires credentials (or does not exist) and {had}.", r.repository()),
        Some(format!(
            "kubectl create secret docker-registry regcred --docker-server={registry} --docker-username=... \
             --docker-password=... -n {ns}, then add it to {where_}."
        )),
    )
}

fn credentials_rejected(e: &Evaluation, r: &Reference, failure: &Failure, rejected: &[(usize, Failure)]) -> Decision {
    let who: Vec<String> = rejected.iter().map(|(i, _)| describe_candidate(&e.candidates[*i])).collect();
    let who = if who.is_empty() {
        "the pod's credentials".to_string()
    } else {
        format!("the credentials in {}", who.join(", "))
    };
    let first = rejected.first().map_or(failure, |(_, f)| f);
    let (what, fix) = match first {
        Failure::Unauthorized { credential_sent: true, .. } => (
            "were accepted but do not grant pull access to this repository",
            "grant that account pull access to the repository, or use credentials that have it",
        ),
        _ => ("were refused (wrong or expired username, password or token)", ""),
    };
    let refresh;
    let fix = if fix.is_empty() {
        let secret = rejected.iter().find_map(|(i, _)| match &e.candidates[*i].source {
            crate::credentials::Source::Secret { name, .. } => Some(name.clone()),
            _ => None,
        });
        refresh = match secret {
            Some(name) => format!(
                "refresh it with current credentials: kubectl create secret docker-registry {name} \
                 --docker-server={} --docker-username=... --docker-password=... -n {} --dry-run=client -o yaml | \
                 kubectl apply -f -",
                r.domain, e.namespace
            ),
            None => "refresh the node's registry credentials".to_string(),
        };
        refresh.as_str()
    } else {
        fix
    };
    decision(
        Verdict::Deny,
        Reason::CredentialsRejected,
        format!("{} on {}: {who} {what}.", r.repository(), r.domain),
        Some(format!("{fix}.")),
    )
}

/// A decision for the first secret problem, if any: `verdict` applies, `why` completes the sentence.
fn secret_decision(e: &Evaluation, verdict: Verdict, why: &str) -> Option<Decision> {
    let first = e.secret_problems.first()?;
    let ns = e.namespace;
    let (reason, what, fix) = secret_problem_text(first, ns, e.service_account);
    let mut d = decision(verdict, reason, format!("{what}{why}."), Some(format!("{fix}.")));
    if e.secret_problems.len() > 1 {
        let rest: Vec<String> = e.secret_problems[1..].iter().map(|p| secret_problem_text(p, ns, None).1).collect();
        d.notes.push(format!("Also: {}.", rest.join("; ")));
    }
    Some(d)
}

fn secret_problems_text(e: &Evaluation) -> String {
    e.secret_problems
        .iter()
        .map(|p| secret_problem_text(p, e.namespace, e.service_account).1)
        .collect::<Vec<_>>()
        .join("; ")
}

/// (reason, what is wrong, the fix) for one pull-secret problem.
fn secret_problem_text(p: &SecretProblem, ns: &str, sa: Option<&str>) -> (Reason, String, String) {
    let via = sa.map(|s| format!(" (named by ServiceAccount {s})")).unwrap_or_default();
    match p {
        SecretProblem::NotFound { name } => (
            Reason::SecretNotFound,
            format!("imagePullSecret {name:?}{via} does not exist in namespace {ns}"),
            format!(
                "create it there (kubectl create secret docker-registry {name} --docker-server=... -n {ns}) or correct the name"
            ),
        ),
        SecretProblem::InOtherNamespace { name, namespaces } => (
            Reason::SecretInOtherNamespace,
            format!(
                "imagePullSecret {name:?}{via} is not in namespace {ns} but exists in {}; pods can only use secrets \
                 of their own namespace",
                namespaces.join(", ")
            ),
            format!(
                "copy it into {ns}: kubectl get secret {name} -n {} -o json | jq 'del(.metadata.namespace, \
                 .metadata.uid, .metadata.resourceVersion, .metadata.creationTimestamp)' | kubectl apply -n {ns} -f -",
                namespaces[0]
            ),
        ),
        SecretProblem::Invalid { name, detail } | SecretProblem::Malformed { name, detail } => (
            Reason::SecretInvalid,
            format!("imagePullSecret {name:?}{via} in namespace {ns} cannot be used: {detail}"),
            format!("recreate it with kubectl create secret docker-registry {name} -n {ns}"),
        ),
    }
}

fn describe_candidate(c: &CandidateInfo) -> String {
    Described(c).to_string()
}

/// How a message names a candidate, written straight into the message (the allow message names one for every
/// container with a credential).
struct Described<'a>(&'a CandidateInfo);

impl std::fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use crate::credentials::Source;
        let key = &self.0.key;
        match &self.0.source {
            Source::Secret { namespace, name } => write!(f, "secret {namespace}/{name} (key {key})"),
            Source::Provider { name } => write!(f, "credential provider {name} (key {key})"),
            Source::Node => write!(f, "node credentials (key {key})"),
        }
    }
}

fn join(p: &[Platform]) -> String {
    join_with(p, ", ")
}

/// The platforms written one after the other into one string.
fn join_with<'a>(p: impl IntoIterator<Item = &'a Platform>, separator: &str) -> String {
    let mut out = String::with_capacity(64);
    push_joined(&mut out, p, separator);
    out
}

/// Appends the platforms to `out`, `separator` between them.
fn push_joined<'a>(out: &mut String, p: impl IntoIterator<Item = &'a Platform>, separator: &str) {
    for (i, platform) in p.into_iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        platform.push_to(out);
    }
}

fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

fn sample(tags: &[String]) -> String {
    let mut t: Vec<&String> = tags.iter().take(8).collect();
    t.sort();
    let more = if tags.len() > 8 { format!(" (and {} more)", tags.len() - 8) } else { String::new() };
    format!("{}{more}", t.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "))
}

#[cfg(test)]
mod tests;
