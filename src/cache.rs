//! Lookup caches around a [`Registry`].
//!
//! - reference → digest, keyed by (registry, repository, tag-or-digest, credential fingerprint): positive
//!   answers for `ttl`, negative ones for a short per-class TTL (a `Retry-After` is honoured);
//! - digest → platforms, keyed by (registry, repository, digest): content-addressed and immutable, so it never
//!   expires (bounded by size). It is consulted only after a credential-scoped resolve succeeded, so it
//!   cannot answer for a credential that has no access.
//!
//! Concurrent misses for one key coalesce into one lookup (moka's `entry().or_insert_with`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::credentials::Credential;
use crate::platform::Platform;
use crate::reference::Reference;
use crate::registry::{Failure, Registry, Resolved};

/// What a successful lookup established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Facts {
    pub digest: String,
    pub media_type: String,
    pub platforms: Vec<Platform>,
}

#[derive(Clone, Hash, PartialEq, Eq)]
/// (registry, repository, tag-or-digest, credential fingerprint), hashed to 128 bits: a 100,000-entry cache
/// holds 16 bytes of key per entry instead of four heap strings, and a collision is as likely as a SHA-256
/// prefix collision.
struct ResolveKey(u128);

impl ResolveKey {
    fn new(r: &Reference, credential: Option<&Credential>) -> Self {
        let fingerprint = credential.map_or_else(|| "anonymous".into(), Credential::fingerprint);
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in [r.domain.as_str(), r.path.as_str(), r.manifest_reference(), fingerprint.as_str()] {
            ctx.update(part.as_bytes());
            ctx.update(&[0]);
        }
        let d = ctx.finish();
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

type ResolveValue = Result<Resolved, Failure>;

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

/// Cache settings.
#[derive(Clone, Copy, Debug)]
pub struct CacheSettings {
    pub ttl: Duration,
    pub negative_ttl: Duration,
    pub max_entries: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self { ttl: Duration::from_secs(300), negative_ttl: Duration::from_secs(30), max_entries: 100_000 }
    }
}

/// Hit and miss counters.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Registry lookups running now.
    pub in_flight: std::sync::atomic::AtomicI64,
}

/// Counts a lookup as in flight while it lives.
struct InFlight<'a>(&'a std::sync::atomic::AtomicI64);

impl<'a> InFlight<'a> {
    fn new(c: &'a std::sync::atomic::AtomicI64) -> Self {
        c.fetch_add(1, Ordering::Relaxed);
        Self(c)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A [`Registry`] behind caches.
pub struct CachedRegistry<R> {
    inner: Arc<R>,
    resolved: moka::future::Cache<ResolveKey, ResolveValue>,
    contents: moka::future::Cache<ContentKey, Arc<Vec<Platform>>>,
    stats: Arc<CacheStats>,
}

impl<R: Registry> CachedRegistry<R> {
    pub fn new(inner: Arc<R>, settings: CacheSettings) -> Self {
        let CacheSettings { ttl, negative_ttl, max_entries } = settings;
        Self {
            inner,
            resolved: moka::future::Cache::builder()
                .max_capacity(max_entries)
                .expire_after(ResolveExpiry { ttl, negative_ttl })
                .build(),
            contents: moka::future::Cache::builder().max_capacity(max_entries).build(),
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

    /// Resolves a reference for one credential (`None`: anonymous) and the platforms of what it resolves to.
    pub async fn lookup(&self, reference: &Reference, credential: Option<&Credential>) -> Result<Facts, Failure> {
        let key = ResolveKey::new(reference, credential);
        let entry = self
            .resolved
            .entry(key)
            .or_insert_with(async {
                let _busy = InFlight::new(&self.stats.in_flight);
                self.inner.resolve(reference, credential).await
            })
            .await;
        self.count(entry.is_fresh());
        let resolved = entry.into_value()?;
        let ckey = ContentKey {
            registry: reference.domain.clone(),
            repository: reference.path.clone(),
            digest: resolved.digest.clone(),
        };
        let entry = self
            .contents
            .entry(ckey)
            .or_try_insert_with(async {
                let _busy = InFlight::new(&self.stats.in_flight);
                self.inner.platforms(reference, &resolved.digest, credential).await.map(Arc::new)
            })
            .await
            .map_err(|e| (*e).clone())?;
        self.count(entry.is_fresh());
        Ok(Facts { digest: resolved.digest, media_type: resolved.media_type, platforms: entry.into_value().to_vec() })
    }
}
