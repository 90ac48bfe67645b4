//! A list/watch-faithful stand-in for the Kubernetes API, enough for kube-rs watchers: `GET /api/v1/<resource>`
//! (and `/apis/<group>/<version>/<resource>` for the workload kinds) lists with a `resourceVersion`; `?watch=true&resourceVersion=N` streams ADDED/MODIFIED/DELETED events after
//! N as chunked JSON lines, and keeps streaming new ones. Lists may be namespaced
//! (`/api/v1/namespaces/<ns>/<resource>`), and `fieldSelector` filters on `type`, `metadata.name` and
//! `metadata.namespace` (comma-separated, ANDed), as the real API server does for Secrets.
//!
//! [`ApiServer::hold_watches`] reproduces watch lag: while held, objects are stored and visible to lists (a
//! consistent read, as from etcd) but no watch event is delivered; releasing delivers them in order.
//! A `POST …/serviceaccounts/<name>/token` (TokenRequest) is answered with a token naming the ServiceAccount
//! and recorded in [`ApiServer::token_requests`]. A `POST /apis/events.k8s.io/v1/namespaces/<ns>/events` is
//! recorded in [`ApiServer::events_created`] and echoed back.
//! [`ApiServer::hold_typed_watches`] holds only watches selected by `type=` (pullguard's typed Secret
//! watches), so the name-only Secret watch runs ahead of them; [`ApiServer::delivered`] waits until an event
//! was written to such a watch.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

#[derive(Clone, Debug)]
struct Event {
    rv: u64,
    resource: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(String, String, String), Value>,
    log: Vec<Event>,
}

pub struct ApiServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    pub requests: Arc<Mutex<Vec<String>>>,
    /// While true, list requests wait: the cluster looks slow to sync.
    pub hold_lists: Arc<std::sync::atomic::AtomicBool>,
    /// Which watch events wait (lists do not): see the module docs.
    held: tokio::sync::watch::Sender<Hold>,
    /// Resource versions written to watches that select no `type=`.
    untyped_delivered: tokio::sync::watch::Sender<u64>,
    /// TokenRequests received: namespace, ServiceAccount and the spec asked for.
    pub token_requests: Arc<Mutex<Vec<Value>>>,
    /// Events (events.k8s.io/v1) created, in order.
    pub events_created: Arc<Mutex<Vec<Value>>>,
    events_posted: tokio::sync::watch::Sender<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn resource_of(kind: &str) -> &'static str {
    match kind {
        "Secret" => "secrets",
        "ServiceAccount" => "serviceaccounts",
        "Node" => "nodes",
        "Namespace" => "namespaces",
        "Pod" => "pods",
        "ReplicationController" => "replicationcontrollers",
        "Deployment" => "deployments",
        "StatefulSet" => "statefulsets",
        "DaemonSet" => "daemonsets",
        "ReplicaSet" => "replicasets",
        "Job" => "jobs",
        "CronJob" => "cronjobs",
        other => panic!("the API stand-in does not serve {other}"),
    }
}

/// The workload resources, served under /apis/<group>/<version>/ (pods and replicationcontrollers under /api/v1).
const WORKLOADS: &[&str] =
    &["pods", "replicationcontrollers", "deployments", "statefulsets", "daemonsets", "replicasets", "jobs", "cronjobs"];

fn matches(selector: Option<&str>, obj: &Value) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_empty()) else { return true };
    selector.split(',').all(|term| {
        let (field, want) = term.split_once('=').unwrap_or_else(|| panic!("unsupported field selector {term}"));
        let got = match field {
            "type" => obj.get("type"),
            "metadata.name" => obj["metadata"].get("name"),
            "metadata.namespace" => obj["metadata"].get("namespace"),
            other => panic!("the API stand-in does not select on {other}"),
        };
        got.and_then(Value::as_str).unwrap_or_default() == want
    })
}

impl ApiServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state: Arc<Mutex<State>> = Arc::default();
        let (events, _) = broadcast::channel(1024);
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let hold_lists: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let (held, _) = tokio::sync::watch::channel(Hold::None);
        let (untyped_delivered, _) = tokio::sync::watch::channel(0);
        let (st, ev, rq, hold, h) = (state.clone(), events.clone(), requests.clone(), hold_lists.clone(), held.clone());
        let delivered = untyped_delivered.clone();
        let token_requests: Arc<Mutex<Vec<Value>>> = Arc::default();
        let tokens = token_requests.clone();
        let events_created: Arc<Mutex<Vec<Value>>> = Arc::default();
        let (events_posted, _) = tokio::sync::watch::channel(0usize);
        let (posted, posted_count) = (events_created.clone(), events_posted.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                let c = Conn {
                    state: st.clone(),
                    events: ev.clone(),
                    requests: rq.clone(),
                    hold: hold.clone(),
                    held: h.subscribe(),
                    delivered: delivered.clone(),
                    tokens: tokens.clone(),
                    posted: posted.clone(),
                    events_posted: posted_count.clone(),
                };
                tokio::spawn(serve_connection(sock, c));
            }
        });
        Self {
            addr,
            state,
            events,
            requests,
            hold_lists,
            held,
            untyped_delivered,
            token_requests,
            events_created,
            events_posted,
            task,
        }
    }

    /// Waits until at least `n` Events were created (no polling: the connection handler signals each).
    pub async fn events_created_at_least(&self, n: usize) {
        let mut rx = self.events_posted.subscribe();
        let _ = rx.wait_for(|c| *c >= n).await;
    }

    /// Holds back every watch event from now on (watch lag, as behind a lagging API server of an HA pair).
    pub fn hold_watches(&self) {
        self.held.send_replace(Hold::All);
    }

    /// Holds back the events of watches selected by `type=` only: the name-only Secret watch sees a new Secret
    /// before the typed one does, as the issue measured through real API servers.
    pub fn hold_typed_watches(&self) {
        self.held.send_replace(Hold::Typed);
    }

    /// Delivers the held events, in order, and stops holding.
    pub fn release_watches(&self) {
        self.held.send_replace(Hold::None);
    }

    /// Waits until the event of resource version `rv` (or a later one) was written to a watch without a `type=`
    /// selector.
    pub async fn delivered(&self, rv: u64) {
        let mut rx = self.untyped_delivered.subscribe();
        let _ = rx.wait_for(|d| *d >= rv).await;
    }

    /// The resource version of the last change.
    pub fn resource_version(&self) -> u64 {
        self.state.lock().unwrap().rv
    }

    /// Creates or replaces an object (it must carry apiVersion, kind and metadata.name).
    pub fn apply(&self, mut obj: Value) {
        let kind = obj["kind"].as_str().unwrap().to_string();
        let resource = resource_of(&kind).to_string();
        let ns = obj["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = obj["metadata"]["name"].as_str().unwrap().to_string();
        let mut st = self.state.lock().unwrap();
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        obj["metadata"]["uid"] = json!(format!("uid-{resource}-{ns}-{name}"));
        let key = (resource.clone(), ns, name);
        let kind = if st.objects.insert(key, obj.clone()).is_some() { "MODIFIED" } else { "ADDED" };
        let e = Event { rv, resource, kind, object: obj };
        st.log.push(e.clone());
        let _ = self.events.send(e);
    }

    pub fn delete(&self, kind: &str, namespace: &str, name: &str) {
        let resource = resource_of(kind).to_string();
        let mut st = self.state.lock().unwrap();
        let Some(mut obj) = st.objects.remove(&(resource.clone(), namespace.into(), name.into())) else {
            return;
        };
        st.rv += 1;
        let rv = st.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let e = Event { rv, resource, kind: "DELETED", object: obj };
        st.log.push(e.clone());
        let _ = self.events.send(e);
    }

    /// A kubeconfig pointing here.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let path = dir.join("kubeconfig");
        std::fs::write(
            &path,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: stand-in\n  cluster:\n    server: http://{}\n\
                 users:\n- name: webhook\n  user:\n    token: stand-in-token\ncontexts:\n- name: stand-in\n  context:\n    \
                 cluster: stand-in\n    user: webhook\ncurrent-context: stand-in\n",
                self.addr
            ),
        )
        .unwrap();
        path
    }
}

/// What one connection shares with the server.
struct Conn {
    state: Arc<Mutex<State>>,
    events: broadcast::Sender<Event>,
    requests: Arc<Mutex<Vec<String>>>,
    hold: Arc<std::sync::atomic::AtomicBool>,
    held: tokio::sync::watch::Receiver<Hold>,
    delivered: tokio::sync::watch::Sender<u64>,
    tokens: Arc<Mutex<Vec<Value>>>,
    posted: Arc<Mutex<Vec<Value>>>,
    events_posted: tokio::sync::watch::Sender<usize>,
}

/// Which watches hold their events back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hold {
    None,
    All,
    /// Only watches whose field selector names a `type=`.
    Typed,
}

async fn serve_connection(sock: tokio::net::TcpStream, c: Conn) {
    let Conn { state, events, requests, hold, mut held, delivered, tokens, posted, events_posted } = c;
    let (read, mut write) = sock.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let method = line.split(' ').next().unwrap_or_default().to_string();
        let target = line.split(' ').nth(1).unwrap_or_default().to_string();
        // Headers. A metadata-only client asks for PartialObjectMetadata in Accept.
        let mut metadata_only = false;
        let mut length = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            if h.to_ascii_lowercase().starts_with("accept:") && h.contains("as=PartialObjectMetadata") {
                metadata_only = true;
            }
            if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
        }
        if method == "POST" {
            // TokenRequest: POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token.
            let mut body = vec![0u8; length];
            if tokio::io::AsyncReadExt::read_exact(&mut reader, &mut body).await.is_err() {
                return;
            }
            let request: Value = serde_json::from_slice(&body).unwrap_or_default();
            let path = target.split('?').next().unwrap_or_default();
            let parts: Vec<&str> = path.trim_start_matches("/api/v1/namespaces/").split('/').collect();
            let event = path.strip_prefix("/apis/events.k8s.io/v1/namespaces/").and_then(|p| p.strip_suffix("/events"));
            let answer = match parts.as_slice() {
                _ if event.is_some() => {
                    let mut stored = request.clone();
                    stored["metadata"]["namespace"] = json!(event.unwrap());
                    posted.lock().unwrap().push(stored);
                    events_posted.send_modify(|n| *n += 1);
                    request.clone()
                }
                [ns, "serviceaccounts", name, "token"] => {
                    tokens.lock().unwrap().push(json!({"namespace": ns, "name": name, "spec": request["spec"]}));
                    let mut r = request.clone();
                    r["status"] = json!({"token": format!("minted-for-{ns}-{name}"), "expirationTimestamp": "2026-11-22T23:59:59Z"});
                    r
                }
                _ => json!({"kind": "Status", "code": 404}),
            };
            let body = answer.to_string();
            let resp = format!(
                "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if write.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
            continue;
        }
        let shape = move |o: &Value| -> Value {
            if metadata_only {
                json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]})
            } else {
                o.clone()
            }
        };
        requests.lock().unwrap().push(target.clone());
        let url = url::Url::parse(&format!("http://x{target}")).unwrap();
        let q: BTreeMap<String, String> = url.query_pairs().into_owned().collect();
        // Core resources under /api/v1/, the workload kinds under /apis/<group>/<version>/: every resource name
        // served here is unique across groups.
        let rest = match url.path().strip_prefix("/apis/") {
            Some(grouped) => grouped.splitn(3, '/').nth(2).unwrap_or_default(),
            None => url.path().trim_start_matches("/api/v1/"),
        };
        let path: Vec<&str> = rest.split('/').collect();
        let (resource, namespace) = match path.as_slice() {
            ["namespaces", ns, resource] => (resource.to_string(), Some(ns.to_string())),
            _ => (path.join("/"), None),
        };
        let selector = match (q.get("fieldSelector"), &namespace) {
            (Some(f), Some(ns)) => Some(format!("{f},metadata.namespace={ns}")),
            (None, Some(ns)) => Some(format!("metadata.namespace={ns}")),
            (f, None) => f.cloned(),
        };
        if q.get("watch").map(String::as_str) == Some("true") || q.get("watch").map(String::as_str) == Some("1") {
            let since: u64 = q.get("resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
            let timeout = q.get("timeoutSeconds").and_then(|v| v.parse().ok()).unwrap_or(290u64);
            let mut rx = events.subscribe();
            let backlog: Vec<Event> =
                state.lock().unwrap().log.iter().filter(|e| e.rv > since && e.resource == resource).cloned().collect();
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";
            if write.write_all(head.as_bytes()).await.is_err() {
                return;
            }
            let mut last = since;
            let send = |e: &Event| {
                let line = format!("{}\n", json!({"type": e.kind, "object": shape(&e.object)}));
                format!("{:x}\r\n{line}\r\n", line.len())
            };
            let typed = selector.as_deref().is_some_and(|s| s.contains("type="));
            let free = move |h: &Hold| *h == Hold::None || (*h == Hold::Typed && !typed);
            let backlog: Vec<&Event> = backlog.iter().filter(|e| matches(selector.as_deref(), &e.object)).collect();
            if !backlog.is_empty() && held.wait_for(free).await.is_err() {
                return;
            }
            for e in backlog {
                last = last.max(e.rv);
                if write.write_all(send(e).as_bytes()).await.is_err() {
                    return;
                }
                if !typed {
                    delivered.send_modify(|d| *d = (*d).max(e.rv));
                }
            }
            let deadline = tokio::time::sleep(Duration::from_secs(timeout));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    e = rx.recv() => match e {
                        Ok(e) if e.rv > last && e.resource == resource && matches(selector.as_deref(), &e.object) => {
                            if held.wait_for(free).await.is_err() { return; }
                            last = e.rv;
                            if write.write_all(send(&e).as_bytes()).await.is_err() { return; }
                            if !typed {
                                delivered.send_modify(|d| *d = (*d).max(e.rv));
                            }
                        }
                        Ok(_) => {}
                        Err(broadcast::error::RecvError::Lagged(_)) => {}
                        Err(_) => return,
                    }
                }
            }
            let _ = write.write_all(b"0\r\n\r\n").await;
            continue;
        }
        while hold.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (rv, items): (u64, Vec<Value>) = {
            let st = state.lock().unwrap();
            let items = st
                .objects
                .iter()
                .filter(|((r, _, _), o)| *r == resource && matches(selector.as_deref(), o))
                .map(|(_, o)| shape(o))
                .map(|mut o| {
                    // As the API server lists them: items carry no apiVersion or kind (checked for the
                    // workload kinds; the core kinds' readers are typed and never looked).
                    if WORKLOADS.contains(&resource.as_str()) {
                        if let Some(m) = o.as_object_mut() {
                            m.remove("apiVersion");
                            m.remove("kind");
                        }
                    }
                    o
                })
                .collect();
            (st.rv, items)
        };
        let kind = match resource.as_str() {
            "secrets" => "SecretList",
            "serviceaccounts" => "ServiceAccountList",
            "nodes" => "NodeList",
            "namespaces" => "NamespaceList",
            "pods" => "PodList",
            "deployments" => "DeploymentList",
            "replicasets" => "ReplicaSetList",
            "jobs" => "JobList",
            "cronjobs" => "CronJobList",
            _ => "List",
        };
        let (kind, api_version) =
            if metadata_only { ("PartialObjectMetadataList", "meta.k8s.io/v1") } else { (kind, "v1") };
        let body = json!({"kind": kind, "apiVersion": api_version, "metadata": {"resourceVersion": rv.to_string()}, "items": items}).to_string();
        let resp = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        if write.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}
