//! AdmissionReview v1 ⇄ engine. [`service`] serves `POST /validate` exactly as the API server calls it.
//!
//! The webhook is a thin shell: it finds the pod template, decides which containers need a look (all on
//! CREATE; on UPDATE only those whose image, pull policy or pull secrets changed), runs the engine under the
//! review's deadline, and turns the verdicts into an AdmissionResponse.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kube::core::admission::{AdmissionResponse, Operation};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::cluster::{ClusterState, Confirm, ConfirmedView};
use crate::contract::ContainerResult;
use crate::engine::Engine;
use crate::metrics::{Metrics, ReasonLabels, ReviewLabels};
use crate::policy::{Mode, Reason, Verdict};
use crate::registry::Registry;
use crate::workload::{ContainerType, Workload};

mod wire;
pub use wire::{Request, ReviewError};

/// The API server admits objects up to ~1.5 MiB; a review carries the object and the old object.
pub const MAX_BODY: usize = 8 * 1024 * 1024;
/// The API server truncates longer warnings.
pub const MAX_WARNING: usize = 256;
/// Answer this long before the API server's timeout, by default (`--deadline-margin`).
pub const DEFAULT_DEADLINE_MARGIN: Duration = Duration::from_millis(1500);
/// The API server's webhook timeout when the URL carries none (its own default).
pub const API_SERVER_DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Never checked unless `--exempt-namespace` says otherwise: the control plane must not depend on registries.
pub const DEFAULT_EXEMPT_NAMESPACE: &str = "kube-system";

/// Webhook settings beyond the engine's.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    pub exempt_namespaces: BTreeSet<String>,
    /// Look up again what kube-controller-manager makes from an owner's template (Pods of a ReplicaSet, Job…,
    /// a Deployment's ReplicaSets, a CronJob's Jobs): that template was checked when the owner was admitted.
    pub check_controlled_pods: bool,
    /// Answer this long before the API server's timeout.
    pub deadline_margin: Duration,
    /// The API server's timeout when the URL carries none (its default is 10 s).
    pub default_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            mode: Mode::Enforce,
            exempt_namespaces: [DEFAULT_EXEMPT_NAMESPACE.to_string()].into(),
            check_controlled_pods: false,
            deadline_margin: DEFAULT_DEADLINE_MARGIN,
            default_timeout: API_SERVER_DEFAULT_TIMEOUT,
        }
    }
}

/// Shared state of the webhook.
pub struct AppState<R> {
    pub engine: Arc<Engine<R>>,
    pub cluster: Arc<dyn ClusterState>,
    pub settings: Settings,
    pub metrics: Arc<Metrics>,
    /// Reviews evaluated at once. A review waits for a slot only until its deadline, then is admitted
    /// unchecked: a queue must never make the API server time out.
    pub slots: Arc<tokio::sync::Semaphore>,
}

/// No review may take longer: the API server's own timeout is at most 30 s. The review's deadline bounds its
/// lookups; this bounds everything else (a client that trickles its body, say), so that a connection can never
/// hold a concurrency slot for long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// `POST /validate`: the method, the arrival time, the body limit and its 413, the request timeout and the
/// review, in one service with one boxed future per request. The same stack built from tower and axum layers
/// (two `from_fn` middlewares, `HandleError`, `Timeout`, `DefaultBodyLimit` and a method router) cloned and
/// boxed each layer's service and future per request: about 7k instructions of a warm review's 117k.
pub fn service<R: Registry>(state: Arc<AppState<R>>) -> Validate<R> {
    Validate { state, timeout: REQUEST_TIMEOUT }
}

/// The service [`service`] returns.
pub struct Validate<R> {
    state: Arc<AppState<R>>,
    timeout: Duration,
}

impl<R> Clone for Validate<R> {
    fn clone(&self) -> Self {
        Self { state: Arc::clone(&self.state), timeout: self.timeout }
    }
}

impl<R: Registry> tower::Service<axum::extract::Request> for Validate<R> {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<Box<dyn Future<Output = Result<Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: axum::extract::Request) -> Self::Future {
        // The API server's timeout runs from the request's arrival, before any wait for a slot.
        let arrival = Instant::now();
        let (state, timeout) = (Arc::clone(&self.state), self.timeout);
        Box::pin(async move {
            let response = tokio::time::timeout(timeout, handle(&state, req, arrival)).await;
            Ok(response
                .unwrap_or_else(|_| (StatusCode::REQUEST_TIMEOUT, "pullguard: request timed out\n").into_response()))
        })
    }
}

/// Checks the method, reads the body within [`MAX_BODY`], and reviews it.
async fn handle<R: Registry>(state: &AppState<R>, req: axum::extract::Request, arrival: Instant) -> Response {
    use axum::http::{HeaderValue, Method, Version, header};
    if req.method() != Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, HeaderValue::from_static("POST"))]).into_response();
    }
    // A 413 leaves the rest of the body unread, and hyper then drops an HTTP/1.1 connection. Saying so in the
    // response (RFC 9112 §9.6) keeps a keep-alive client from pooling it and losing its next review to it.
    let too_large = |version: Version| {
        let mut response =
            (StatusCode::PAYLOAD_TOO_LARGE, format!("pullguard: a review body is at most {MAX_BODY} bytes\n"))
                .into_response();
        if version < Version::HTTP_2 {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    };
    // Read up to the limit even when a longer length is declared, as axum's body limit does: answering
    // before reading any of it, hyper closes the connection under a client still sending, which then sees a
    // broken pipe instead of the 413.
    let (parts, body) = req.into_parts();
    let body = match http_body_util::BodyExt::collect(http_body_util::Limited::new(body, MAX_BODY)).await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(parts.version),
        Err(e) => {
            return (StatusCode::BAD_REQUEST, format!("pullguard: cannot read the request body: {e}\n"))
                .into_response();
        }
    };
    validate(state, parts.uri.query(), arrival, &body).await
}

async fn validate<R: Registry>(state: &AppState<R>, query: Option<&str>, started: Instant, body: &[u8]) -> Response {
    // Read the body ourselves: the API server sends application/json, but a missing header must not turn a
    // review into an unexplained 415.
    let request = match Request::parse(body) {
        Ok(r) => r,
        Err(e @ ReviewError::NoRequest) => {
            return (StatusCode::BAD_REQUEST, format!("pullguard: {e}\n")).into_response();
        }
        Err(e) => {
            warn!(error = %e, "unreadable AdmissionReview");
            return (StatusCode::BAD_REQUEST, format!("pullguard: cannot read the AdmissionReview: {e}\n"))
                .into_response();
        }
    };
    let timeout = query_value(query.unwrap_or_default(), "timeout")
        .and_then(|t| parse_go_duration(&t))
        .unwrap_or(state.settings.default_timeout);
    let deadline = started + timeout.saturating_sub(state.settings.deadline_margin);
    let response = match tokio::time::timeout_at(deadline, state.slots.clone().acquire_owned()).await {
        Ok(Ok(_slot)) => review_request(state, &request, deadline).await,
        _ => {
            warn!(uid = %request.uid, "overloaded: admitted without a check");
            overloaded(&request)
        }
    };
    let elapsed = started.elapsed();
    state.metrics.latency.observe(elapsed.as_secs_f64());
    let verdict = response.verdict;
    state
        .metrics
        .reviews
        .get_or_create(&ReviewLabels {
            kind: request.kind.kind.clone(),
            operation: operation_label(&request.operation),
            verdict,
        })
        .inc();
    // What a user acts on (warnings and denials) at info; an allowed review is already in the API server's
    // audit log through auditAnnotations, so it is logged at debug and costs nothing at the default level.
    macro_rules! decision {
        ($level:ident) => {
            $level!(
                uid = %request.uid,
                namespace = %request.namespace.as_deref().unwrap_or_default(),
                kind = %request.kind.kind,
                name = %request.name,
                operation = ?request.operation,
                dry_run = request.dry_run,
                verdict,
                reasons = %response.reasons,
                duration_ms = elapsed.as_millis() as u64,
                "decision"
            )
        };
    }
    if matches!(verdict, "warn" | "deny") {
        decision!(info);
    } else {
        decision!(debug);
    }
    json_response(&response.response.into_review())
}

/// A JSON body, serialized into a buffer sized for the usual review response: axum's `Json` writes through a
/// growing `BytesMut` writer, a copy and a capacity check per fragment, several regrowths per response.
fn json_response(value: &impl serde::Serialize) -> Response {
    let mut body = Vec::with_capacity(512);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => {
            ([(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"))], body)
                .into_response()
        }
        Err(e) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("pullguard: cannot write the response: {e}\n")).into_response()
        }
    }
}

/// The metrics label of an operation, without formatting one per review.
fn operation_label(op: &Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
        Operation::Connect => "CONNECT",
    }
}

/// Fail-open answer when no slot frees up before the deadline.
fn overloaded(request: &Request) -> Reviewed {
    let mut response = request.response();
    response.audit_annotations.insert("skipped".into(), "overloaded".into());
    response.warnings = Some(vec!["pullguard: overloaded; the images were not checked".into()]);
    Reviewed { response, verdict: "skip", reasons: String::new() }
}

/// A response and what to log about it.
pub struct Reviewed {
    pub response: AdmissionResponse,
    /// `allow`, `warn`, `deny`, or `skip` (not looked at).
    pub verdict: &'static str,
    /// `container=Reason,…`
    pub reasons: String,
}

/// Decides one admission request.
pub async fn review_request<R: Registry>(state: &AppState<R>, request: &Request, deadline: Instant) -> Reviewed {
    let skip = |why: &str| {
        let mut response = request.response();
        response.audit_annotations.insert("skipped".into(), why.into());
        Reviewed { response, verdict: "skip", reasons: String::new() }
    };
    if !matches!(request.operation, Operation::Create | Operation::Update) {
        return skip("operation");
    }
    let namespace = request.namespace.clone().unwrap_or_default();
    if state.settings.exempt_namespaces.contains(&namespace) {
        return skip("exempt namespace");
    }
    let mode = match mode_of(state.cluster.namespace_mode(&namespace).as_deref(), state.settings.mode) {
        Some(mode) => mode,
        None => return skip("namespace mode off"),
    };
    let Some(object) = &request.object else {
        return skip("no object");
    };
    let workload = match object {
        Ok(Some(w)) => w,
        Ok(None) => return skip("kind has no pod template"),
        Err(e) => {
            // The API server validates the schema after us; an unreadable spec is its to reject.
            warn!(uid = %request.uid, error = %e, "cannot read the pod template");
            return skip("unreadable pod template");
        }
    };
    if !state.settings.check_controlled_pods
        && created_by_controller(request.user_info.username.as_deref().unwrap_or_default(), workload)
    {
        return skip("created by a controller from a template checked with its owner");
    }
    let selected: Option<HashSet<(ContainerType, String)>> = match (&request.operation, &request.old_object) {
        (Operation::Update, Some(Ok(Some(old)))) => Some(changed_containers(workload, old)),
        _ => None,
    };
    if selected.as_ref().is_some_and(HashSet::is_empty) {
        return skip("no image, pull policy, pull secret or scheduling constraint changed");
    }
    let select = |kind: ContainerType, name: &str| selected.as_ref().is_none_or(|s| s.contains(&(kind, name.into())));
    let nodes = state.cluster.node_inventory();
    let mut results = state
        .engine
        .check_containers(workload, state.cluster.as_ref(), nodes.as_deref(), Some(deadline), &select, mode)
        .await;
    if let Some(ask) = needs_confirmation(state.cluster.as_ref(), workload, &results) {
        let live = tokio::time::timeout_at(deadline, state.cluster.confirm(&ask)).await;
        match live {
            Ok(Ok(confirmed)) if confirmed.differs_from(state.cluster.as_ref(), &ask) => {
                let live_mode = confirmed.namespace_mode.as_ref().map(|m| mode_of(m.as_deref(), state.settings.mode));
                let mode = match live_mode {
                    Some(None) => return skip("namespace mode off"),
                    Some(Some(m)) => m,
                    None => mode,
                };
                info!(uid = %request.uid, %namespace, "a live read found what the watch stores had not seen yet");
                let view =
                    ConfirmedView { store: state.cluster.as_ref(), confirmed: &confirmed, namespace: &namespace };
                results = state
                    .engine
                    .check_containers(workload, &view, nodes.as_deref(), Some(deadline), &select, mode)
                    .await;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => unconfirmed(&mut results, &e.to_string()),
            Err(_) => unconfirmed(&mut results, "the review's deadline ran out before the API server answered"),
        }
    }
    count_verdicts(&state.metrics.containers, results.iter().map(|r| (r.verdict, r.reason)));
    respond(request, workload, results)
}

/// Adds each container's verdict and reason to the counter family, one increment per run of equal pairs: a
/// review's containers mostly share one, and each increment hashes its labels to find the counter.
fn count_verdicts(family: &Family<ReasonLabels, Counter>, verdicts: impl IntoIterator<Item = (Verdict, Reason)>) {
    let add = |(verdict, reason): (Verdict, Reason), n: u64| {
        family.get_or_create(&ReasonLabels { verdict: verdict.as_str(), reason: reason.as_str() }).inc_by(n);
    };
    let mut run: Option<((Verdict, Reason), u64)> = None;
    for pair in verdicts {
        match &mut run {
            Some((p, n)) if *p == pair => *n += 1,
            _ => {
                if let Some((p, n)) = run.replace((pair, 1)) {
                    add(p, n);
                }
            }
        }
    }
    if let Some((p, n)) = run {
        add(p, n);
    }
}

/// The mode a namespace label asks for; `None` for `off`.
fn mode_of(label: Option<&str>, default: Mode) -> Option<Mode> {
    match label {
        Some("off") => None,
        Some("warn") => Some(Mode::Warn),
        Some("enforce") => Some(Mode::Enforce),
        _ => Some(default),
    }
}

/// Reasons that rest on what the watch stores hold: a store that lags behind an object created an instant
/// before the workload gives them wrongly.
fn rests_on_stores(r: &ContainerResult) -> bool {
    r.verdict >= Verdict::Warn
        && matches!(
            r.reason,
            Reason::SecretNotFound
                | Reason::SecretInOtherNamespace
                | Reason::SecretInvalid
                | Reason::CredentialsMissing
        )
}

/// What to read live before a verdict that rests on the stores, or on a namespace they have not seen, is
/// given; `None` when no verdict does.
fn needs_confirmation(cluster: &dyn ClusterState, w: &Workload, results: &[ContainerResult]) -> Option<Confirm> {
    let namespace = &w.object.namespace;
    let read_namespace = !cluster.namespace_seen(namespace) && results.iter().any(|r| r.verdict >= Verdict::Warn);
    if !read_namespace && !results.iter().any(rests_on_stores) {
        return None;
    }
    let own: Vec<String> = w.spec.image_pull_secrets.iter().map(|s| s.name.clone()).collect();
    Some(Confirm {
        namespace: namespace.clone(),
        read_namespace,
        service_account: own.is_empty().then(|| w.spec.service_account().to_string()),
        secrets: own,
    })
}

/// The live read failed: a verdict that rests only on the stores is not given. Such a deny is admitted with
/// a warning that says why.
fn unconfirmed(results: &mut [ContainerResult], why: &str) {
    for r in results.iter_mut().filter(|r| rests_on_stores(r) && r.verdict == Verdict::Deny) {
        r.verdict = Verdict::Warn;
        // First in the message: a warning is cut at 256 characters, and this is why it is only a warning.
        r.message = format!("admitted unconfirmed, a live read failed ({why}): {}", r.message);
        r.notes.push(format!(
            "pullguard could not confirm this with the API server ({why}), so it is admitted; the object may have \
             been created an instant ago."
        ));
    }
}

// A function of its own even with LTO, so that `bench profile` can name what the response costs (one call
// per review).
#[inline(never)]
fn respond(request: &Request, w: &Workload, results: Vec<ContainerResult>) -> Reviewed {
    let mut response = request.response();
    let mut reasons = String::with_capacity(results.iter().map(|r| r.container.len() + 24).sum());
    for (i, r) in results.iter().enumerate() {
        if i > 0 {
            reasons.push(',');
        }
        reasons.push_str(&r.container);
        reasons.push('=');
        reasons.push_str(r.reason.as_str());
    }
    let denied: Vec<&ContainerResult> = results.iter().filter(|r| r.verdict == Verdict::Deny).collect();
    let warnings = fit_warnings(&results.iter().filter(|r| r.verdict == Verdict::Warn).collect::<Vec<_>>());
    let verdict = if !denied.is_empty() {
        "deny"
    } else if !warnings.is_empty() {
        "warn"
    } else {
        "allow"
    };
    if !denied.is_empty() {
        let items: Vec<String> =
            denied.iter().map(|r| format!("{} ({}): {}: {}", r.label(), r.image, r.reason, r.message)).collect();
        let n = items.len();
        let message = format!(
            "pullguard: {} {}/{} would fail to pull {n} image{}: {}",
            w.object.kind,
            w.object.namespace,
            w.object.name,
            if n == 1 { "" } else { "s" },
            items.join(" | ")
        );
        response = response.deny(message);
        response.result.code = 403;
        response.result.reason = "Forbidden".into();
    }
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    if !reasons.is_empty() {
        response.audit_annotations.insert("reasons".into(), reasons.clone());
    }
    response.audit_annotations.insert("verdict".into(), verdict.into());
    Reviewed { response, verdict, reasons }
}

/// The API server keeps about 4 KiB of warnings per response, from every source together, and drops the rest
/// (apiserver `endpoints/filters/warning.go`: `truncateAtTotalRunes = 4 * 1024`). pullguard keeps to this
/// much, leaving room for other webhooks' and deprecation warnings.
pub const MAX_WARNINGS_TOTAL: usize = 3 * 1024;

/// One warning per image while they fit in [`MAX_WARNINGS_TOTAL`]; otherwise one per reason, naming the
/// pulls, and a last line that says how many there were and, if some are not shown, where they are.
fn fit_warnings(warned: &[&ContainerResult]) -> Vec<String> {
    let each: Vec<String> = warned
        .iter()
        .map(|r| truncate(&format!("pullguard: {} ({}): {}: {}", r.label(), r.image, r.reason, r.message), MAX_WARNING))
        .collect();
    if each.iter().map(String::len).sum::<usize>() <= MAX_WARNINGS_TOTAL {
        return each;
    }
    let mut by_reason: Vec<(Reason, Vec<&ContainerResult>)> = Vec::new();
    for r in warned {
        match by_reason.iter_mut().find(|(reason, _)| *reason == r.reason) {
            Some((_, list)) => list.push(r),
            None => by_reason.push((r.reason, vec![r])),
        }
    }
    let mut out = Vec::new();
    let mut used = 0;
    let mut shown = 0;
    for (reason, list) in &by_reason {
        let names: Vec<String> = list.iter().map(|r| format!("{} ({})", r.container, r.image)).collect();
        let line = truncate(
            &format!(
                "pullguard: {reason} for {} of {}: {}. First: {}",
                list.len(),
                if list.len() == 1 { "pull" } else { "pulls" },
                names.join(", "),
                list[0].message
            ),
            MAX_WARNING,
        );
        // Room is kept for the last line.
        if used + line.len() + MAX_WARNING > MAX_WARNINGS_TOTAL {
            break;
        }
        used += line.len();
        shown += list.len();
        out.push(line);
    }
    let more = warned.len() - shown;
    let tail = if more > 0 {
        format!(
            "pullguard: {more} more warned image{} not shown here (the API server keeps only ~4 KiB of warnings); \
             all {} are in the audit annotation validate.pullguard.io/reasons and in pullguard's log.",
            if more == 1 { "" } else { "s" },
            warned.len()
        )
    } else {
        format!("pullguard: {} images warned, grouped by reason to fit the API server's warning limit.", warned.len())
    };
    out.push(truncate(&tail, MAX_WARNING));
    out
}

/// Cuts at a character boundary, marking the cut.
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max - '…'.len_utf8();
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// kube-controller-manager's controllers that create objects from a template that was checked when their owner
/// was admitted: (its ServiceAccount under `--use-service-account-credentials`, the kind it creates, the
/// owner's kind). Names from kubernetes `pkg/controlplane/.../bootstrappolicy/controller_policy.go`.
const TEMPLATE_CONTROLLERS: &[(&str, &str, &str)] = &[
    ("replicaset-controller", "Pod", "ReplicaSet"),
    ("replication-controller", "Pod", "ReplicationController"),
    ("job-controller", "Pod", "Job"),
    ("statefulset-controller", "Pod", "StatefulSet"),
    ("daemon-set-controller", "Pod", "DaemonSet"),
    ("deployment-controller", "ReplicaSet", "Deployment"),
    ("cronjob-controller", "Job", "CronJob"),
];

/// True when the object was made by the controller of its owner from the owner's template: who asks decides
/// (the review's `userInfo`), not only what the object says, since anyone can write an ownerReference.
fn created_by_controller(username: &str, w: &Workload) -> bool {
    let kind = w.object.kind.as_str();
    let Some(owner) = w.controller.as_deref() else { return false };
    let service_account = username.strip_prefix("system:serviceaccount:kube-system:");
    TEMPLATE_CONTROLLERS.iter().any(|(sa, creates, owned_by)| {
        *creates == kind
            && *owned_by == owner
            && (username == "system:kube-controller-manager" || service_account == Some(*sa))
    })
}

/// Containers and image volumes whose image or pull policy changed, or all of them when the pull secrets, the
/// ServiceAccount or where the pod may land changed. Unrelated edits select nothing.
pub fn changed_containers(new: &Workload, old: &Workload) -> HashSet<(ContainerType, String)> {
    let secrets = |w: &Workload| w.spec.image_pull_secrets.iter().map(|s| s.name.clone()).collect::<BTreeSet<_>>();
    let all = secrets(new) != secrets(old)
        || new.spec.service_account() != old.spec.service_account()
        || new.spec.scheduling_differs(&old.spec);
    let old_containers = old.containers();
    let old_by_name: HashMap<_, _> =
        old_containers.iter().map(|c| ((c.kind, c.name), (c.image, c.pull_policy))).collect();
    new.containers()
        .into_iter()
        .filter(|c| all || old_by_name.get(&(c.kind, c.name)) != Some(&(c.image, c.pull_policy)))
        .map(|c| (c.kind, c.name.to_string()))
        .collect()
}

/// Go's `time.Duration` strings as the API server writes them in `?timeout=`: `10s`, `30s`, `1m0s`, `500ms`.
/// The last value of `key` in a URL query, form-decoded (`+` is a space, `%XX` a byte). The API server sends
/// `?timeout=10s`; reading it by hand spares every review axum's `Query` map and its path-tracking decoder.
fn query_value<'q>(query: &'q str, key: &str) -> Option<std::borrow::Cow<'q, str>> {
    let raw = query.split('&').rev().find_map(|pair| pair.split_once('=').filter(|(k, _)| *k == key))?.1;
    if !raw.contains(['%', '+']) {
        return Some(raw.into());
    }
    let (mut out, bytes) = (Vec::with_capacity(raw.len()), raw.as_bytes());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned().into())
}

pub fn parse_go_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let num_end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (num, tail) = rest.split_at(num_end);
        let value: f64 = num.parse().ok()?;
        let unit_end = tail.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(tail.len());
        let (unit, next) = tail.split_at(unit_end);
        let secs = match unit {
            "h" => value * 3600.0,
            "m" => value * 60.0,
            "s" => value,
            "ms" => value / 1e3,
            "us" | "µs" => value / 1e6,
            "ns" => value / 1e9,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(secs).ok()?;
        rest = next;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// `/validate` over an offline engine, its request timeout `timeout`.
    fn offline_validate(timeout: Duration) -> Validate<crate::registry::RegistryClient> {
        let settings = crate::engine::EngineSettings {
            policy: crate::policy::PolicySettings::default(),
            platforms: vec![crate::platform::Platform::new("linux", "amd64", None)],
            deadline: Duration::from_secs(1),
            providers: Default::default(),
            node_authenticated: vec![],
            mirrors: Default::default(),
        };
        let engine = Arc::new(Engine::new(None, crate::credentials::Keyring::default(), settings));
        let state = AppState {
            engine,
            cluster: Arc::new(crate::cluster::Snapshot::default()),
            settings: Settings::default(),
            metrics: Arc::new(Metrics::new(Arc::default(), Arc::default())),
            slots: Arc::new(tokio::sync::Semaphore::new(4)),
        };
        Validate { state: Arc::new(state), timeout }
    }

    /// What the service answers at its edges, as the method router, body limit, timeout and error layers it
    /// replaced did: 405 with `Allow` for another method; 413 for a body over the limit, with `Connection:
    /// close` over HTTP/1.1 only (hyper drops such a connection); 408 for a body that never
    /// ends; 400 for a body that breaks off; and the review itself.
    #[tokio::test]
    async fn validate_answers_methods_limits_and_timeouts() {
        use axum::body::Body;
        use axum::http::{Method, Version, header};
        use tower::ServiceExt;
        let svc = offline_validate(Duration::from_millis(200));
        let request = |method: Method, version: Version, body: Body| {
            let mut req = axum::extract::Request::new(body);
            (*req.method_mut(), *req.version_mut()) = (method, version);
            *req.uri_mut() = "/validate?timeout=10s".parse().unwrap();
            req
        };
        let call = |req| svc.clone().oneshot(req);

        let r = call(request(Method::GET, Version::HTTP_11, Body::empty())).await.unwrap();
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[header::ALLOW], "POST");

        for (version, close) in [(Version::HTTP_11, true), (Version::HTTP_2, false)] {
            let chunks = (0..=MAX_BODY / (1 << 20)).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1 << 20]));
            let body = Body::from_stream(futures_util::stream::iter(chunks));
            let r = call(request(Method::POST, version, body)).await.unwrap();
            assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE, "{version:?}");
            assert_eq!(r.headers().get(header::CONNECTION).is_some_and(|v| v == "close"), close, "{version:?}");
        }

        let never = futures_util::stream::pending::<Result<Vec<u8>, std::io::Error>>();
        let r = call(request(Method::POST, Version::HTTP_2, Body::from_stream(never))).await.unwrap();
        assert_eq!(r.status(), StatusCode::REQUEST_TIMEOUT);

        let broken = futures_util::stream::iter([Ok(b"{".to_vec()), Err(std::io::Error::other("reset"))]);
        let r = call(request(Method::POST, Version::HTTP_2, Body::from_stream(broken))).await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);

        let review = json!({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
            "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "namespace": "prod",
            "operation": "CREATE", "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "a", "image": "nginx:1.25"}]}}}});
        let body = Body::from(serde_json::to_vec(&review).unwrap());
        let r = call(request(Method::POST, Version::HTTP_2, body)).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "application/json");
        let body = http_body_util::BodyExt::collect(r.into_body()).await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((v["response"]["uid"].as_str(), v["response"]["allowed"].as_bool()), (Some("u-1"), Some(true)));
    }

    /// Every container counts once under its own verdict and reason, runs of equal pairs or not; a verdict
    /// shared by two reasons is two series.
    #[test]
    fn container_verdicts_count_each_container() {
        let family = Family::<ReasonLabels, Counter>::default();
        let ok = (Verdict::Allow, Reason::Ok);
        let typo = (Verdict::Deny, Reason::TagNotFound);
        let gone = (Verdict::Deny, Reason::RepositoryNotFound);
        count_verdicts(&family, [ok, ok, typo, gone, gone, ok, gone]);
        count_verdicts(&family, []);
        count_verdicts(&family, [typo]);
        let get = |(v, r): (Verdict, Reason)| {
            family.get_or_create(&ReasonLabels { verdict: v.as_str(), reason: r.as_str() }).get()
        };
        assert_eq!((get(ok), get(typo), get(gone)), (3, 2, 3));
    }

    /// What axum's `Query` read before: form decoding, the last of repeated keys.
    #[test]
    fn query_values_read_like_a_form() {
        let cases = [
            ("timeout=10s", Some("10s")),
            ("a=1&timeout=5s&timeout=2s", Some("2s")),
            ("timeout=1%C2%B5s", Some("1µs")),
            ("timeout=1+s", Some("1 s")),
            ("timeout=%zz%4", Some("%zz%4")),
            ("timeouts=1s&xtimeout=2s", None),
            ("", None),
        ];
        for (query, want) in cases {
            assert_eq!(query_value(query, "timeout").as_deref(), want, "{query}");
        }
        assert_eq!(
            query_value("timeout=1%C2%B5s", "timeout").and_then(|t| parse_go_duration(&t)),
            Some(Duration::from_micros(1))
        );
    }

    #[test]
    fn go_durations() {
        for (s, ms) in [("10s", 10_000), ("30s", 30_000), ("1m0s", 60_000), ("500ms", 500), ("1.5s", 1500)] {
            assert_eq!(parse_go_duration(s), Some(Duration::from_millis(ms)), "{s}");
        }
        for bad in ["", "10", "x", "10q"] {
            assert_eq!(parse_go_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn warnings_are_cut_at_a_character_boundary() {
        let long = "é".repeat(300);
        let t = truncate(&long, MAX_WARNING);
        assert!(t.len() <= MAX_WARNING && t.ends_with('…'), "{}", t.len());
        assert_eq!(truncate("short", MAX_WARNING), "short");
    }

    fn deployment(images: &[(&str, &str)], secrets: &[&str], replicas: u32) -> Workload {
        let containers: Vec<Value> = images.iter().map(|(n, i)| json!({"name": n, "image": i})).collect();
        let secrets: Vec<Value> = secrets.iter().map(|s| json!({"name": s})).collect();
        let obj = json!({"kind": "Deployment", "metadata": {"name": "d"}, "spec": {"replicas": replicas,
            "template": {"spec": {"containers": containers, "imagePullSecrets": secrets}}}});
        Workload::from_object(&obj, "ns").unwrap().unwrap()
    }

    #[test]
    fn update_selects_only_what_changed() {
        let old = deployment(&[("a", "nginx:1"), ("b", "redis:7")], &["s"], 1);
        let set = |v: &[&str]| v.iter().map(|s| (ContainerType::Container, s.to_string())).collect::<HashSet<_>>();
        assert!(
            changed_containers(&deployment(&[("a", "nginx:1"), ("b", "redis:7")], &["s"], 5), &old).is_empty(),
            "replicas only"
        );
        assert_eq!(
            changed_containers(&deployment(&[("a", "nginx:2"), ("b", "redis:7")], &["s"], 1), &old),
            set(&["a"])
        );
        assert_eq!(
            changed_containers(&deployment(&[("a", "nginx:1"), ("b", "redis:7")], &["t"], 1), &old),
            set(&["a", "b"])
        );
        assert_eq!(
            changed_containers(&deployment(&[("a", "nginx:1"), ("b", "redis:7"), ("c", "x")], &["s"], 1), &old),
            set(&["c"])
        );
    }

    /// Where the pod may land decides which platforms its images must serve: moving a workload to arm64 nodes
    /// re-checks every image, as an image change does.
    #[test]
    fn update_rechecks_when_scheduling_changes() {
        let pod = |spec: Value| {
            let mut spec = spec;
            spec["containers"] = json!([{"name": "a", "image": "nginx:1"}]);
            let obj = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": spec});
            Workload::from_object(&obj, "ns").unwrap().unwrap()
        };
        let arm = json!({"nodeSelector": {"kubernetes.io/arch": "arm64"}});
        let affinity = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution":
            {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/arch", "operator": "In", "values": ["arm64"]}]}]}}}});
        let tolerate =
            json!({"tolerations": [{"key": "arch", "operator": "Equal", "value": "arm64", "effect": "NoSchedule"}]});
        let a = HashSet::from([(ContainerType::Container, "a".to_string())]);
        assert!(changed_containers(&pod(arm.clone()), &pod(arm.clone())).is_empty());
        assert_eq!(changed_containers(&pod(arm), &pod(json!({}))), a, "nodeSelector");
        assert_eq!(changed_containers(&pod(affinity), &pod(json!({}))), a, "required node affinity");
        assert_eq!(changed_containers(&pod(tolerate), &pod(json!({}))), a, "tolerations");
    }

    /// An image volume is a pull of its own: a changed reference selects the volume, not the container that
    /// happens to share its name.
    #[test]
    fn update_selects_changed_image_volumes() {
        let pod = |reference: &str| {
            let obj = json!({"kind": "Pod", "metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "data", "image": "nginx:1"}],
                "volumes": [{"name": "data", "image": {"reference": reference}}, {"name": "tmp", "emptyDir": {}}]}});
            Workload::from_object(&obj, "ns").unwrap().unwrap()
        };
        assert!(changed_containers(&pod("models:1"), &pod("models:1")).is_empty());
        assert_eq!(
            changed_containers(&pod("models:2"), &pod("models:1")),
            HashSet::from([(ContainerType::ImageVolume, "data".to_string())])
        );
    }

    /// A Deployment with 20 warned containers showed 17 warnings in kubectl: the API server dropped the rest.
    #[test]
    fn warnings_fit_the_api_servers_total() {
        let result = |i: usize, reason: Reason| ContainerResult {
            object: Default::default(),
            container: format!("sidecar-{i}"),
            container_type: ContainerType::Container,
            field: String::new(),
            image: format!("registry.example.com/team/sidecar-{i}:1.0"),
            reference: None,
            verdict: Verdict::Warn,
            reason,
            message: format!("registry.example.com/team/sidecar offers only linux/amd64; {}", "x".repeat(200)),
            problem: String::new(),
            fix: None,
            notes: vec![],
            suggestions: vec![],
            digest: None,
            platforms: Default::default(),
            credentials: vec![],
            credential_used: None,
            served_by: None,
        };
        let few: Vec<ContainerResult> = (0..3).map(|i| result(i, Reason::PlatformMismatch)).collect();
        assert_eq!(fit_warnings(&few.iter().collect::<Vec<_>>()).len(), 3, "what fits is one warning each");

        let many: Vec<ContainerResult> = (0..20)
            .map(|i| result(i, if i % 2 == 0 { Reason::PlatformMismatch } else { Reason::RateLimited }))
            .collect();
        let w = fit_warnings(&many.iter().collect::<Vec<_>>());
        let total: usize = w.iter().map(|s| s.chars().count()).sum();
        assert!(total <= MAX_WARNINGS_TOTAL, "{total}");
        assert!(w.iter().all(|s| s.len() <= MAX_WARNING), "{w:?}");
        assert!(w[0].starts_with("pullguard: PlatformMismatch for 10 of pulls: sidecar-0"), "{w:?}");
        assert!(w[1].starts_with("pullguard: RateLimited for 10 of pulls: sidecar-1"), "{w:?}");
        assert!(w.last().unwrap().contains("20 images warned"), "{w:?}");
    }

    #[test]
    fn created_by_controller_needs_the_controller_and_its_owner() {
        let obj = |kind: &str, owner: Value| json!({"kind": kind, "metadata": {"ownerReferences": [owner]}});
        let owned = |kind: &str| json!({"kind": kind, "controller": true});
        let sa = |name: &str| format!("system:serviceaccount:kube-system:{name}");
        let cases = [
            (sa("replicaset-controller"), obj("Pod", owned("ReplicaSet")), true),
            ("system:kube-controller-manager".into(), obj("Pod", owned("ReplicaSet")), true),
            (sa("replication-controller"), obj("Pod", owned("ReplicationController")), true),
            (sa("deployment-controller"), obj("ReplicaSet", owned("Deployment")), true),
            (sa("cronjob-controller"), obj("Job", owned("CronJob")), true),
            (sa("job-controller"), obj("Pod", owned("Job")), true),
            // A user who writes an ownerReference opts out of nothing.
            ("kubernetes-admin".into(), obj("Pod", owned("ReplicaSet")), false),
            // Another controller's identity, or its SA in another namespace.
            (sa("job-controller"), obj("Pod", owned("ReplicaSet")), false),
            ("system:serviceaccount:tenant:replicaset-controller".into(), obj("Pod", owned("ReplicaSet")), false),
            // Not the controller owner, or no owner.
            (sa("replicaset-controller"), obj("Pod", json!({"kind": "ReplicaSet"})), false),
            (sa("replicaset-controller"), json!({"kind": "Pod", "metadata": {}}), false),
            // A Deployment is never template-made.
            ("system:kube-controller-manager".into(), obj("Deployment", owned("Deployment")), false),
        ];
        for (user, o, want) in cases {
            let w = Workload::from_json(&o.to_string(), "ns").unwrap().unwrap();
            assert_eq!(created_by_controller(&user, &w), want, "{user} {o}");
        }
    }
}
