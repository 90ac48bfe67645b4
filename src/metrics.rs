//! Prometheus metrics, served in text format on the plain-HTTP metrics port.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::cache::CacheStats;
use crate::registry::{RegistryStats, Share};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReviewLabels {
    pub kind: String,
    pub operation: &'static str,
    pub verdict: &'static str,
}

/// Codes, not text: the label values are the stable strings of `Verdict` and `Reason`, with nothing to
/// allocate per increment.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub verdict: &'static str,
    pub reason: &'static str,
}

/// One container of a running workload, as the continuous audit last judged it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkloadLabels {
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub container: String,
    pub verdict: String,
    pub reason: String,
}

/// Every metric the webhook exports.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub reviews: Family<ReviewLabels, Counter>,
    pub containers: Family<ReasonLabels, Counter>,
    pub latency: Histogram,
    /// `serve --audit-interval`: 1 for each running container's current verdict.
    pub workload_verdicts: Family<WorkloadLabels, Gauge>,
    /// `serve --audit-interval`: running containers by current verdict and reason.
    pub audit_containers: Family<ReasonLabels, Gauge>,
    /// `serve --audit-interval`: completed rounds.
    pub audit_rounds: Counter,
}

#[derive(Debug)]
struct Live {
    cache: Arc<CacheStats>,
    registry: Arc<RegistryStats>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BudgetLabels {
    registry: String,
    /// `anonymous`, or the username of the credential that asked.
    identity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    registry: String,
    outcome: String,
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let hits = ConstCounter::new(self.cache.hits.load(Ordering::Relaxed));
        hits.encode(encoder.encode_descriptor(
            "pullguard_cache_hits",
            "Lookups answered from the cache",
            None,
            hits.metric_type(),
        )?)?;
        let misses = ConstCounter::new(self.cache.misses.load(Ordering::Relaxed));
        misses.encode(encoder.encode_descriptor(
            "pullguard_cache_misses",
            "Lookups that went to the registry",
            None,
            misses.metric_type(),
        )?)?;
        let in_flight = ConstGauge::new(self.cache.in_flight.load(Ordering::Relaxed));
        in_flight.encode(encoder.encode_descriptor(
            "pullguard_lookups_in_flight",
            "Registry lookups running now",
            None,
            in_flight.metric_type(),
        )?)?;
        let mut refused = encoder.encode_descriptor(
            "pullguard_lookups_refused",
            "New images not looked up because places for lookups in flight ran out, by the limit that refused them",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for share in Share::ALL {
            let labels = RefusedLabels { limit: share.label() };
            ConstCounter::new(self.cache.refused(share)).encode(refused.encode_family(&labels)?)?;
        }
        let outcomes = self.registry.outcomes();
        let mut requests = encoder.encode_descriptor(
            "pullguard_registry_requests",
            "HTTP requests to registries and token services, by registry and outcome",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (registry, outcome, n) in outcomes {
            let labels = OutcomeLabels { registry, outcome: outcome.to_string() };
            ConstCounter::new(n).encode(requests.encode_family(&labels)?)?;
        }
        let budgets = self.registry.budgets();
        for (name, help, remaining) in [
            ("pullguard_registry_ratelimit_limit", "Pulls a registry allows per window, as it last announced", false),
            (
                "pullguard_registry_ratelimit_remaining",
                "Pulls left in the registry's window, as it last announced",
                true,
            ),
        ] {
            let mut family =
                encoder.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
            for (registry, identity, limit, left) in &budgets {
                let labels = BudgetLabels { registry: registry.clone(), identity: identity.clone() };
                let value = if remaining { *left } else { *limit };
                ConstGauge::new(value as i64).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    pub fn new(cache: Arc<CacheStats>, registry_stats: Arc<RegistryStats>) -> Self {
        let mut registry = Registry::default();
        let reviews = Family::<ReviewLabels, Counter>::default();
        let containers = Family::<ReasonLabels, Counter>::default();
        let latency =
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0]);
        registry.register("pullguard_reviews", "Admission reviews by kind, operation and verdict", reviews.clone());
        registry.register(
            "pullguard_container_verdicts",
            "Container verdicts by verdict and reason (denials and warnings by reason)",
            containers.clone(),
        );
        registry.register("pullguard_review_duration_seconds", "Time to answer an admission review", latency.clone());
        let workload_verdicts = Family::<WorkloadLabels, Gauge>::default();
        let audit_containers = Family::<ReasonLabels, Gauge>::default();
        let audit_rounds = Counter::default();
        registry.register(
            "pullguard_workload_image_verdict",
            "Running workloads' containers (serve --audit-interval): 1 for the current verdict and reason",
            workload_verdicts.clone(),
        );
        registry.register(
            "pullguard_audit_containers",
            "Running workloads' containers by current verdict and reason (serve --audit-interval)",
            audit_containers.clone(),
        );
        registry.register("pullguard_audit_rounds", "Completed re-verification rounds", audit_rounds.clone());
        registry.register_collector(Box::new(Live { cache, registry: registry_stats }));
        Self { registry, reviews, containers, latency, workload_verdicts, audit_containers, audit_rounds }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}
