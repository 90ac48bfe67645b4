//! pullguard: ends ImagePullBackOff at the door.
//!
//! One engine, two faces: `pullguard check` (a CI gate over manifest files) and, built on the same engine,
//! the admission webhook. The engine resolves every container image against its registry with the
//! credentials the kubelet would use, and turns the facts into a verdict with a message that says what to fix.
#![forbid(unsafe_code)]

pub mod admission;
pub mod cache;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod contract;
pub mod credentials;
pub mod engine;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod input;
pub mod metrics;
pub mod platform;
pub mod policy;
pub mod reference;
pub mod registry;
pub mod report;
pub mod scheduling;
pub mod server;
pub mod suggest;
pub mod workload;
