//! Lookup caches around a [`Registry`].
//!
//! - reference → digest, keyed by (registry, repository, tag-or-digest, credential fingerprint): positive
//!   answers for `ttl`, negative ones for a short per-class TTL (a `Retry-After` is honoured);
//! - digest → platforms, keyed by (registry, repository, digest): content-addressed and immutable, so it never
//!   expires (bounded by size). It is consulted only after a credential-scoped resolve succeeded, so it
//!   cannot answer for a credential that has no access.
//!
//! A resolve entry also keeps the platforms once they are known, so that a warm lookup reads one entry, not
//! two.
//!
//! Concurrent misses for one key coalesce into one lookup. A lookup runs as its own task, bounded by
//! `lookupTimeout` rather than by the review that started it: when a review's deadline ends its wait, the
//! lookup goes on and fills the cache, and the next review joins it instead of starting over. (Filled inside the
//! first caller's future, a slow registry never filled the cache for callers with short deadlines.)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::FutureExt as _;
use futures_util::future::{BoxFuture, Shared};

use crate::credentials::Credential;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{Failure, Registry, Resolved, Share};

/// What a successful lookup established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub digest: String,
    /// Shared with the cache: a warm lookup hands out the list without copying it.
    pub platforms: Arc<Vec<Platform>>,
}

#[derive(Clone, Copy, Hash, PartialEq, Eq)]
/// (registry, repository, tag-or-digest, credential fingerprint), hashed to 128 bits: a 100,000-entry cache
/// holds 16 bytes of key per entry instead of four heap strings, and a collision is as likely as a SHA-256
/// prefix collision.
struct ResolveKey(u128);

impl ResolveKey {
    /// One SHA-256 over the reference's parts, each ended by a NUL (a reference holds none), then a marker
    /// byte and, for a credential, the first 16 bytes of its own SHA-256 ([`Credential::id`], worked out once
    /// per credential; as many bits as the key keeps). A usual reference and a credential fit one SHA-256 block
    /// (55 bytes), whatever the token's size.
    fn new(r: &Reference, credential: Option<&Credential>) -> Self {
        let parts = [r.domain.as_str(), r.path.as_str(), r.manifest_reference()];
        let mut input = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 17);
        for part in parts {
            input.extend_from_slice(part.as_bytes());
            input.push(0);
        }
        match credential {
            None => input.push(b'a'),
            Some(c) => {
                input.push(b'c');
                input.extend_from_slice(&c.id()[..16]);
            }
        }
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &input);
        let mut b = [0u8; 16];
        b.copy_from_slice(&d.as_ref()[..16]);
        Self(u128::from_le_bytes(b))
    }
}

#[derive(Clone, Hash, PartialEq, Eq)]
struct ContentKey {
    registry: String,
    repository: String,
    digest: String,
}

/// A resolve answer, and the platforms of what it resolved to once the content cache gave them (only what that
/// cache keeps). The entry is credential-scoped like the answer, so the platforms it holds were reached the
/// same way as through the content cache.
#[derive(Clone)]
struct ResolvedEntry {
    resolved: Resolved,
    platforms: Arc<OnceLock<ContentValue>>,
}

type ResolveValue = Result<ResolvedEntry, Failure>;

struct ResolveExpiry {
    ttl: Duration,
    negative_ttl: Duration,
}

impl ResolveExpiry {
    fn ttl_of(&self, v: &ResolveValue) -> Option<Duration> {
        Some(match v {
            Ok(_) => self.ttl,
            Err(f) => f.negative_ttl(self.negative_ttl),
        })
    }
}

impl moka::Expiry<ResolveKey, ResolveValue> for ResolveExpiry {
    fn expire_after_create(&self, _: &ResolveKey, v: &ResolveValue, _: Instant) -> Option<Duration> {
        self.ttl_of(v)
    }
    // moka's default keeps the old TTL on update; a negative entry turning positive must get the positive TTL.
    fn expire_after_update(
        &self,
        _: &ResolveKey,
        v: &ResolveValue,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        self.ttl_of(v)
    }
}

/// Lookups in flight by default: each holds ~33 KiB while its registry has not answered (`bench memory`), so
/// 2,048 hold ~66 MiB — inside the 256 MiB limit of the manifests with a full cache — and at the default 4 s
/// `lookupTimeout` a registry that never answers still takes 500 new images a second.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 2048;

/// Lookups in flight one namespace's reviews may start, by default: an eighth of the pool, so that one tenant's
/// registry that never answers leaves the rest to the others.
pub const DEFAULT_MAX_IN_FLIGHT_PER_NAMESPACE: usize = 256;

/// Lookups in flight one registry host may hold, by default: a quarter of the pool, so that one registry that
/// stops answering leaves the rest to the others.
pub const DEFAULT_MAX_IN_FLIGHT_PER_REGISTRY: usize = 512;

/// Cache settings.
#[derive(Clone, Copy, Debug)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: u64,
    /// How long one registry lookup may run, whoever waits for it (`lookupTimeout`).
    pub fill_timeout: Duration,
    /// Lookups running at once (`cache.maxLookupsInFlight`); a miss beyond them is answered
    /// [`Failure::Busy`] at once.
    pub max_in_flight: usize,
    /// Of them, those one namespace's reviews may start (`cache.maxLookupsInFlightPerNamespace`).
    pub max_in_flight_per_namespace: usize,
    /// Of them, those one registry host may hold (`cache.maxLookupsInFlightPerRegistry`).
    pub max_in_flight_per_registry: usize,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            negative_ttl: Duration::from_secs(30),
            max_entries: 100_000,
            fill_timeout: Duration::from_secs(4),
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_in_flight_per_namespace: DEFAULT_MAX_IN_FLIGHT_PER_NAMESPACE,
            max_in_flight_per_registry: DEFAULT_MAX_IN_FLIGHT_PER_REGISTRY,
        }
    }
}

/// Hit and miss counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Registry lookups running now.
    pub in_flight: std::sync::atomic::AtomicI64,
    /// New lookups not started, by the limit that refused them ([`Share::ALL`]'s order).
    pub refused: [AtomicU64; 3],
}

impl CacheStats {
    /// New lookups `share`'s limit refused.
    pub fn refused(&self, share: Share) -> u64 {
        self.refused[share as usize].load(Ordering::Relaxed)
    }
}

/// Counts a lookup as in flight while it lives.
struct InFlight(Arc<CacheStats>);

impl InFlight {
    fn new(stats: &Arc<CacheStats>) -> Self {
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(stats.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

type Fill<V> = Shared<BoxFuture<'static, V>>;

/// Places for lookups in flight: a pool, and of it a share per namespace (of the reviews that start them) and
/// per registry host. A lookup takes a place and gives it back when it ends. The shares bite only once half
/// the pool is taken: a burst of new images from one namespace, to one registry that answers, is not refused
/// for being one namespace's; a namespace or registry that holds places without its lookups ending is stopped
/// at half the pool, and the other half is shared out.
struct Places {
    limits: [usize; 3],
    taken: Mutex<Taken>,
}

#[derive(Default)]
struct Taken {
    all: usize,
    namespaces: HashMap<Box<str>, usize>,
    registries: HashMap<Box<str>, usize>,
}

/// A lookup's place, given back when dropped.
struct Place {
    places: Arc<Places>,
    namespace: Box<str>,
    registry: Box<str>,
}

impl Places {
    fn new(settings: &CacheSettings) -> Self {
        let at_least_one = |n: usize| n.max(1);
        let limits = [
            at_least_one(settings.max_in_flight),
            at_least_one(settings.max_in_flight_per_namespace),
            at_least_one(settings.max_in_flight_per_registry),
        ];
        Self { limits, taken: Mutex::default() }
    }

    /// A place for a lookup started for `namespace` on `registry`, or the limit that has none free: the
    /// narrowest first, which says best what to fix.
    fn take(self: &Arc<Self>, namespace: &str, registry: &str) -> Result<Place, Failure> {
        let mut taken = self.taken.lock().expect("places lock poisoned");
        let contended = taken.all >= self.limits[Share::All as usize] / 2;
        let of = |m: &HashMap<Box<str>, usize>, k: &str| m.get(k).copied().unwrap_or(0);
        let full = [
            (Share::Namespace, if contended { of(&taken.namespaces, namespace) } else { 0 }),
            (Share::Registry, if contended { of(&taken.registries, registry) } else { 0 }),
            (Share::All, taken.all),
        ]
        .into_iter()
        .find(|&(share, n)| n >= self.limits[share as usize]);
        if let Some((share, _)) = full {
            return Err(Failure::Busy { limit: self.limits[share as usize], share });
        }
        taken.all += 1;
        *taken.namespaces.entry(namespace.into()).or_default() += 1;
        *taken.registries.entry(registry.into()).or_default() += 1;
        Ok(Place { places: self.clone(), namespace: namespace.into(), registry: registry.into() })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut guard = self.places.taken.lock().expect("places lock poisoned");
        let taken = &mut *guard;
        taken.all -= 1;
        // Emptied entries go: the maps hold only the namespaces and hosts with lookups in flight.
        for (map, key) in [(&mut taken.namespaces, &self.namespace), (&mut taken.registries, &self.registry)] {
            if let Some(n) = map.get_mut(key) {
                *n -= 1;
                if *n == 0 {
                    map.remove(key);
                }
            }
        }
    }
}

/// The lookups running now, by key: a caller that finds its key here joins that lookup.
struct Fills<K, V> {
    running: Arc<Mutex<HashMap<K, Fill<V>>>>,
}

impl<K: Hash + Eq + Clone + Send + 'static, V: Clone + Send + Sync + 'static> Fills<K, V> {
    fn new() -> Self {
        Self { running: Arc::default() }
    }

    fn running(&self, key: &K) -> Option<Fill<V>> {
        self.running.lock().expect("fills lock poisoned").get(key).cloned()
    }

    /// Joins the lookup running for `key`, or spawns `fill` as its own task holding the place `take` gives
    /// until it ends; `take`'s refusal when it has none. `fill` stores its answer in the cache before it leaves
    /// the running set, so a caller that finds neither may start a new one.
    fn join_or_spawn(
        &self,
        key: K,
        take: impl FnOnce() -> Result<Place, Failure>,
        fill: impl Future<Output = V> + Send + 'static,
        lost: impl FnOnce() -> V + Send + 'static,
    ) -> Result<Fill<V>, Failure> {
        let mut running = self.running.lock().expect("fills lock poisoned");
        if let Some(f) = running.get(&key) {
            return Ok(f.clone());
        }
        let place = take()?;
        let registry = self.running.clone();
        let k = key.clone();
        // `map`, not an async block, which would lay `fill` out twice (captured, and awaited).
        let task = fill.map(move |v| {
            registry.lock().expect("fills lock poisoned").remove(&k);
            drop(place);
            v
        });
        #[cfg(test)]
        tests::SPAWNED_BYTES.set(tests::SPAWNED_BYTES.get().max(std::mem::size_of_val(&task)));
        let task = tokio::spawn(task);
        // A task that panicked answers with `lost()` rather than failing every waiter.
        let shared = async move { task.await.unwrap_or_else(|_| lost()) }.boxed().shared();
        running.insert(key, shared.clone());
        Ok(shared)
    }
}

type ContentValue = Result<Arc<Vec<Platform>>, Failure>;

/// A [`Registry`] behind caches.
pub struct CachedRegistry<R> {
    inner: Arc<R>,
    resolved: moka::future::Cache<ResolveKey, ResolveValue>,
    /// Platforms, or the fact that an index has none runnable: both are facts about immutable content.
    contents: moka::future::Cache<ContentKey, ContentValue>,
    resolving: Fills<ResolveKey, ResolveValue>,
    fetching: Fills<ContentKey, ContentValue>,
    fill_timeout: Duration,
    /// One per lookup running, held by its task.
    places: Arc<Places>,
    stats: Arc<CacheStats>,
}

fn lost_fill<T>() -> Result<T, Failure> {
    Err(Failure::ServerError { status: 0, detail: "the lookup task failed".into() })
}

impl<R: Registry> CachedRegistry<R> {
    pub fn new(inner: Arc<R>, settings: CacheSettings) -> Self {
        let CacheSettings { ttl, negative_ttl, max_entries, fill_timeout, .. } = settings;
        Self {
            inner,
            resolved: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(ResolveExpiry { ttl, negative_ttl })
                .build(),
            contents: moka::future::Cache::builder().max_capacity(max_entries).build(),
            resolving: Fills::new(),
            fetching: Fills::new(),
            fill_timeout,
            places: Arc::new(Places::new(&settings)),
            stats: Arc::default(),
        }
    }

    pub fn stats(&self) -> Arc<CacheStats> {
        self.stats.clone()
    }

    pub fn inner(&self) -> &Arc<R> {
        &self.inner
    }

    fn count(&self, fresh: bool) {
        let counter = if fresh { &self.stats.misses } else { &self.stats.hits };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Resolves a reference for one credential (`None`: anonymous) and the platforms of what it resolves to,
    /// for a review in `namespace` (whose share of lookups in flight a new one takes). Dropping the returned
    /// future (a review's deadline) leaves the lookup running to fill the cache.
    pub async fn lookup(
        &self,
        reference: &Reference,
        credential: Option<&Credential>,
        namespace: &str,
    ) -> Result<Facts, Failure> {
        let place_for = (namespace, reference.domain.as_str());
        let key = ResolveKey::new(reference, credential);
        let entry = self
            .fill_through(
                &self.resolved,
                &self.resolving,
                key,
                place_for,
                |_| true,
                || {
                    let (inner, r, c) = (self.inner.clone(), reference.clone(), credential.cloned());
                    self.bounded(async move {
                        let resolved = inner.resolve(&r, c.as_ref()).await?;
                        Ok(ResolvedEntry { resolved, platforms: Arc::default() })
                    })
                },
            )
            .await?;
        let digest = entry.resolved.digest;
        if let Some(known) = entry.platforms.get() {
            // A content-cache hit, without reading that cache again.
            self.count(false);
            return known.clone().map(|platforms| Facts { digest, platforms });
        }
        let ckey = ContentKey {
            registry: reference.domain.clone(),
            repository: reference.path.clone(),
            digest: digest.clone(),
        };
        // Facts about immutable content are kept; failures to fetch it are not.
        let keep = |v: &ContentValue| matches!(v, Ok(_) | Err(Failure::NoRunnablePlatform));
        let platforms = self
            .fill_through(&self.contents, &self.fetching, ckey, place_for, keep, || {
                let (inner, r, c, digest) =
                    (self.inner.clone(), reference.clone(), credential.cloned(), digest.clone());
                self.bounded(async move { inner.platforms(&r, &digest, c.as_ref()).await.map(Arc::new) })
            })
            .await;
        if keep(&platforms) {
            let _ = entry.platforms.set(platforms.clone());
        }
        Ok(Facts { digest, platforms: platforms? })
    }

    /// The cached value for `key`; else the lookup running for it, joined; else a new lookup (`make` builds it,
    /// only on a miss) spawned as its own task, which stores its answer when `keep` says so and holds a place
    /// for `place_for` (namespace, registry host) while it runs. The cache is read again after the running set,
    /// because a finishing lookup stores its value before it leaves that set.
    async fn fill_through<K, T, F>(
        &self,
        cache: &moka::future::Cache<K, Result<T, Failure>>,
        fills: &Fills<K, Result<T, Failure>>,
        key: K,
        (namespace, registry): (&str, &str),
        keep: fn(&Result<T, Failure>) -> bool,
        make: impl FnOnce() -> F,
    ) -> Result<T, Failure>
    where
        K: Hash + Eq + Clone + Send + Sync + 'static,
        T: Clone + Send + Sync + 'static,
        F: Future<Output = Result<T, Failure>> + Send + 'static,
    {
        if let Some(v) = cache.get(&key).await {
            self.count(false);
            return v;
        }
        if let Some(running) = fills.running(&key) {
            self.count(true);
            return running.await;
        }
        if let Some(v) = cache.get(&key).await {
            self.count(false);
            return v;
        }
        let (op, cache, k) = (make(), cache.clone(), key.clone());
        let fill = async move {
            let v = op.await;
            if keep(&v) {
                cache.insert(k, v.clone()).await;
            }
            v
        };
        // A new lookup takes a place until it ends; with none free it is not started (and nothing is cached).
        match fills.join_or_spawn(key, || self.places.take(namespace, registry), fill, lost_fill) {
            Ok(lookup) => {
                self.count(true);
                lookup.await
            }
            Err(refused) => {
                if let Failure::Busy { share, .. } = refused {
                    self.stats.refused[share as usize].fetch_add(1, Ordering::Relaxed);
                }
                Err(refused)
            }
        }
    }

    /// One registry operation as its own unit of work: counted as in flight, bounded by `lookupTimeout`.
    fn bounded<T: Send + 'static>(
        &self,
        op: impl Future<Output = Result<T, Failure>> + Send + 'static,
    ) -> impl Future<Output = Result<T, Failure>> + Send + 'static {
        let (stats, limit) = (self.stats.clone(), self.fill_timeout);
        // Boxed once, here. Held inline, the operation (an HTTP exchange, ~5 KB of state) was laid out twice in
        // each layer around it — as the captured value and as the future awaited — in this block, the cache fill
        // and the spawned task: a 43 KB task per lookup in flight, and 72 KiB of memory each against a registry
        // that never answers, 33 KiB since (`bench memory`).
        let op = Box::pin(op);
        async move {
            let _busy = InFlight::new(&stats);
            match tokio::time::timeout(limit, op).await {
                Ok(v) => v,
                Err(_) => Err(Failure::TimedOut { waited: limit, limit: crate::registry::TimeLimit::LookupTimeout }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(username: &str, password: &str) -> Credential {
        Credential::new(username, password)
    }

    /// Counts its calls; the first platforms fetch fails as a registry error would.
    #[derive(Default)]
    struct Counting {
        resolves: AtomicU64,
        fetches: AtomicU64,
    }

    impl Registry for Counting {
        async fn resolve(&self, _: &Reference, _: Option<&Credential>) -> Result<Resolved, Failure> {
            self.resolves.fetch_add(1, Ordering::SeqCst);
            Ok(Resolved { digest: format!("sha256:{}", "a".repeat(64)) })
        }
        async fn platforms(&self, _: &Reference, _: &str, _: Option<&Credential>) -> Result<Vec<Platform>, Failure> {
            match self.fetches.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Failure::ServerError { status: 503, detail: String::new() }),
                _ => Ok(vec![Platform::new("linux", "amd64", None)]),
            }
        }
    }

    thread_local! {
        /// The largest future [`Fills::join_or_spawn`] spawned on this thread.
        pub(super) static SPAWNED_BYTES: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    /// A registry whose operations hold `N` bytes across a wait, as an HTTP exchange holds its buffers.
    struct Bulky<const N: usize>;

    impl<const N: usize> Registry for Bulky<N> {
        async fn resolve(&self, _: &Reference, _: Option<&Credential>) -> Result<Resolved, Failure> {
            let held = std::hint::black_box([7u8; N]);
            tokio::task::yield_now().await;
            std::hint::black_box(&held);
            Ok(Resolved { digest: format!("sha256:{}", "a".repeat(64)) })
        }
        async fn platforms(&self, _: &Reference, _: &str, _: Option<&Credential>) -> Result<Vec<Platform>, Failure> {
            let held = std::hint::black_box([7u8; N]);
            tokio::task::yield_now().await;
            std::hint::black_box(&held);
            Ok(vec![Platform::new("linux", "amd64", None)])
        }
    }

    /// A lookup in flight is a task per cache miss that lives until the registry answers or `lookupTimeout`
    /// ends it (a hanging registry: every miss of every review meanwhile). Its size must not grow with the
    /// registry operation's: held inline, the operation was copied into each layer around it (the bound, the
    /// cache fill, the spawned task), twice in each, and a lookup against the real client took 43 KB.
    #[tokio::test]
    async fn a_lookup_task_does_not_grow_with_the_registry_operation() {
        async fn spawned_bytes<R: Registry>(registry: R) -> usize {
            SPAWNED_BYTES.set(0);
            let cache = CachedRegistry::new(Arc::new(registry), CacheSettings::default());
            let r = Reference::parse("registry.example.com/team/app:v1").unwrap();
            cache.lookup(&r, None, "ns").await.unwrap();
            SPAWNED_BYTES.get()
        }
        let (small, large) = (spawned_bytes(Bulky::<16>).await, spawned_bytes(Bulky::<16384>).await);
        assert!(small > 0, "the lookups ran as tasks");
        assert_eq!(small, large, "a 16 KB registry operation made the lookup task {large} bytes, not {small}");
    }

    /// A registry that accepts and never answers.
    struct Silent;

    impl Registry for Silent {
        async fn resolve(&self, _: &Reference, _: Option<&Credential>) -> Result<Resolved, Failure> {
            std::future::pending().await
        }
        async fn platforms(&self, _: &Reference, _: &str, _: Option<&Credential>) -> Result<Vec<Platform>, Failure> {
            std::future::pending().await
        }
    }

    /// Against a registry that never answers, every new image of every review leaves a lookup waiting until
    /// `lookupTimeout` (33 KiB each, `bench memory`): a stream of new images — whose registry host the tenant
    /// chooses — grew them past the pod's memory limit. At `maxLookupsInFlight` a new miss is answered at once
    /// instead of started; a caller that joins a running lookup is not one more, and a finished one frees its
    /// place.
    #[tokio::test(start_paused = true)]
    async fn lookups_in_flight_stop_at_their_cap() {
        let settings = CacheSettings { max_in_flight: 2, fill_timeout: Duration::from_secs(10), ..Default::default() };
        let cache = CachedRegistry::new(Arc::new(Silent), settings);
        let image = |n: u32| Reference::parse(&format!("registry.example.com/team/app:v{n}")).unwrap();
        let (one, two, three) = (image(1), image(2), image(3));
        let mut first = Box::pin(cache.lookup(&one, None, "ns"));
        let mut second = Box::pin(cache.lookup(&two, None, "ns"));
        assert!((&mut first).now_or_never().is_none() && (&mut second).now_or_never().is_none(), "both wait");
        let third = cache.lookup(&three, None, "ns").now_or_never();
        assert!(
            matches!(third, Some(Err(Failure::Busy { limit: 2, share: Share::All }))),
            "answered at once: {third:?}"
        );
        let mut joined = Box::pin(cache.lookup(&one, None, "ns"));
        assert!((&mut joined).now_or_never().is_none(), "joins the first lookup instead of being refused");
        tokio::time::advance(Duration::from_secs(11)).await;
        for waited in [first.await, second.await, joined.await] {
            assert!(matches!(waited, Err(Failure::TimedOut { .. })), "{waited:?}");
        }
        let mut again = Box::pin(cache.lookup(&three, None, "ns"));
        assert!((&mut again).now_or_never().is_none(), "started: the refusal was not cached, and places are free");
    }

    /// The registry host in an image is the tenant's to choose, so one tenant running a registry that never
    /// answers, with a stream of new image names, filled the one pool of places: then no other namespace's
    /// new image was looked up (admitted unchecked, or denied under failClosed) until `lookupTimeout`. Once
    /// half the pool is taken, a namespace's reviews and a registry host each get only a share of it; below
    /// that, one namespace may burst past its share; a joined lookup takes no place.
    #[tokio::test(start_paused = true)]
    async fn a_namespace_or_a_registry_takes_only_its_share_of_places() {
        let settings = CacheSettings {
            max_in_flight: 8,
            max_in_flight_per_namespace: 2,
            max_in_flight_per_registry: 3,
            fill_timeout: Duration::from_secs(10),
            ..Default::default()
        };
        let cache = CachedRegistry::new(Arc::new(Silent), settings);
        let image = |host: &str, n: u32| Reference::parse(&format!("{host}.example.com/team/app:v{n}")).unwrap();
        let hung: Vec<Reference> = (0..6).map(|n| image("hung", n)).collect();
        let other: Vec<Reference> = (0..3).map(|n| image("other", n)).collect();
        let third: Vec<Reference> = (0..3).map(|n| image("third", n)).collect();
        type Lookup<'a> = std::pin::Pin<Box<dyn Future<Output = Result<Facts, Failure>> + 'a>>;
        let mut waiting: Vec<Lookup> = vec![];
        let mut start = |r, namespace| {
            let mut lookup: Lookup = Box::pin(cache.lookup(r, None, namespace));
            match lookup.as_mut().now_or_never() {
                None => {
                    waiting.push(lookup);
                    None
                }
                Some(Err(Failure::Busy { limit, share })) => Some((limit, share)),
                Some(other) => panic!("{other:?}"),
            }
        };
        // Below half the pool, tenant-a's lookups on its registry pass its share (2) and the registry's (3).
        for r in &hung[..4] {
            assert_eq!(start(r, "tenant-a"), None, "started");
        }
        // Half the pool is taken: now the shares count.
        assert_eq!(start(&hung[4], "tenant-a"), Some((2, Share::Namespace)), "tenant-a is past its share");
        assert_eq!(start(&hung[5], "tenant-b"), Some((3, Share::Registry)), "hung.example.com is past its share");
        assert_eq!(start(&other[0], "tenant-b"), None, "another registry, another namespace");
        assert_eq!(start(&other[1], "tenant-b"), None);
        assert_eq!(start(&other[2], "tenant-b"), Some((2, Share::Namespace)));
        assert_eq!(start(&third[0], "tenant-c"), None);
        assert_eq!(start(&hung[0], "tenant-d"), None, "joins tenant-a's lookup: no place of its own");
        assert_eq!(start(&third[1], "tenant-d"), None);
        assert_eq!(start(&third[2], "tenant-e"), Some((8, Share::All)), "the pool is taken");
        let stats = cache.stats();
        assert_eq!(Share::ALL.map(|s| stats.refused(s)), [1, 2, 1], "each refusal counted under its limit");
        tokio::task::yield_now().await;
        assert_eq!(stats.in_flight.load(Ordering::Relaxed), 8, "the lookups started");
        tokio::time::advance(Duration::from_secs(11)).await;
        assert_eq!(waiting.len(), 9, "eight lookups started, one joined");
        for lookup in waiting {
            assert!(matches!(lookup.await, Err(Failure::TimedOut { .. })));
        }
        {
            let taken = cache.places.taken.lock().unwrap();
            let left = (taken.all, taken.namespaces.len(), taken.registries.len());
            assert_eq!(left, (0, 0, 0), "every place given back, and no namespace or host kept");
        }
        let mut again = Box::pin(cache.lookup(&hung[4], None, "tenant-a"));
        assert!(again.as_mut().now_or_never().is_none(), "the places are free again; refusals were not cached");
    }

    /// A resolve entry keeps the platforms once fetched — a warm lookup reads one cache entry — but never a
    /// failure to fetch them: the next lookup fetches again.
    #[tokio::test]
    async fn resolve_entries_keep_platforms_but_not_fetch_failures() {
        let registry = Arc::new(Counting::default());
        let cache = CachedRegistry::new(registry.clone(), CacheSettings::default());
        let r = Reference::parse("registry.example.com/team/app:v1").unwrap();
        let calls = || (registry.resolves.load(Ordering::SeqCst), registry.fetches.load(Ordering::SeqCst));
        assert!(matches!(cache.lookup(&r, None, "ns").await, Err(Failure::ServerError { status: 503, .. })));
        assert_eq!(calls(), (1, 1));
        let facts = cache.lookup(&r, None, "ns").await.unwrap();
        assert_eq!((facts.platforms.len(), calls()), (1, (1, 2)), "the failure was not kept");
        // With the content cache emptied, the resolve entry still answers: no second cache read, no fetch.
        cache.contents.invalidate_all();
        cache.contents.run_pending_tasks().await;
        assert_eq!(cache.lookup(&r, None, "ns").await.unwrap(), facts);
        assert_eq!(calls(), (1, 2));
        // Another credential is another entry: it does not see the first one's platforms through it.
        let other = Credential::new("u", "p");
        assert_eq!(cache.lookup(&r, Some(&other), "ns").await.unwrap(), facts);
        assert_eq!(calls(), (2, 3), "resolved again for the credential, and the emptied content cache fetched again");
    }

    #[test]
    fn resolve_keys_never_cross_credentials_or_references() {
        let r = Reference::parse("registry.example.com/team/app:v1").unwrap();
        let other = Reference::parse("registry.example.com/team/app:v2").unwrap();
        let key = |r: &Reference, c: Option<&Credential>| ResolveKey::new(r, c).0;
        assert_eq!(key(&r, Some(&cred("u", "p"))), key(&r, Some(&cred("u", "p"))));
        assert_ne!(key(&r, None), key(&other, None));
        assert_ne!(key(&r, None), key(&r, Some(&cred("u", "p"))));
        assert_ne!(key(&r, Some(&cred("u", "p"))), key(&r, Some(&cred("u", "q"))));
        // The same bytes split differently between username and password are another credential.
        assert_ne!(key(&r, Some(&cred("a\0b", "c"))), key(&r, Some(&cred("a", "b\0c"))));
        assert_ne!(key(&r, Some(&cred("ab", "c"))), key(&r, Some(&cred("a", "bc"))));
        // Nor does a credential named like the anonymous marker stand for anonymous.
        assert_ne!(key(&r, None), key(&r, Some(&cred("anonymous", ""))));
    }
}
