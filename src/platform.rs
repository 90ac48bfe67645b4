//! Platform matching, following containerd's `platforms` package.
//!
//! A node of platform P can pull an image entry E when E is in P's compatibility vector
//! (containerd `platforms.Only`): the platform itself, lower `arm` variants, `386` on `amd64`, and the
//! 32-bit `arm` line on `arm64`. Attestation entries (`unknown/unknown`) are never a platform.

use std::fmt;
use std::str::FromStr;

use serde::{Serialize, Serializer};

/// An OS/architecture/variant triple, normalized the way containerd normalizes it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// Builds a platform and normalizes it (`aarch64` → `arm64`, `arm64/v8` → `arm64`, `arm` → `arm/v7`…).
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Self {
        let os = os.to_ascii_lowercase();
        let os = if os == "macos" { "darwin".to_string() } else { os };
        let variant = variant.filter(|v| !v.is_empty()).map(str::to_ascii_lowercase);
        let (architecture, variant) = normalize_arch(&architecture.to_ascii_lowercase(), variant);
        Self { os, architecture, variant }
    }

    /// Attestation and other non-runnable index entries.
    pub fn is_unknown(&self) -> bool {
        self.os == "unknown" || self.architecture == "unknown"
    }

    /// The platforms a node of this platform can run, most preferred first (containerd `platformVector`).
    pub fn compatible(&self) -> Vec<Platform> {
        let mut out = vec![self.clone()];
        let same = |arch: &str, variant: Option<String>| Platform {
            os: self.os.clone(),
            architecture: arch.to_string(),
            variant,
        };
        let version = |v: &Option<String>| v.as_deref().and_then(|v| v.trim_start_matches('v').parse::<u32>().ok());
        match self.architecture.as_str() {
            "amd64" => {
                if let Some(n) = version(&self.variant) {
                    for lower in (1..n).rev() {
                        let v = if lower == 1 { None } else { Some(format!("v{lower}")) };
                        out.push(same("amd64", v));
                    }
                }
                out.push(same("386", None));
            }
            "arm" => {
                if let Some(n) = version(&self.variant) {
                    for lower in (5..n).rev() {
                        out.push(same("arm", Some(format!("v{lower}"))));
                    }
                }
            }
            "arm64" => {
                out.extend(self.arm64_vector());
            }
            _ => {}
        }
        out
    }

    /// containerd's arm64 vector after the platform itself: `v8.x` runs `v8.{x-1..1}` and `v8`; `v9.x` runs
    /// `v9.{x-1..1}`, `v9`, then `v8.{x+5}` down to `v8` (v9.0 diverged from v8.5); then the 32-bit arm line
    /// (`v8` for any `v8.x`/`v9.x`). As in containerd, only a one-digit minor is read (`v8.10` counts as 0).
    fn arm64_vector(&self) -> Vec<Platform> {
        let arm64 = |v: String| {
            // containerd normalizes its vector entries: `v8` is written without a variant.
            Platform::new(&self.os, "arm64", Some(&v))
        };
        let variant = self.variant.clone().unwrap_or_else(|| "v8".to_string());
        let mut out = vec![];
        let (major, minor) = variant.split_once('.').map_or((variant.as_str(), None), |(a, b)| (a, Some(b)));
        if let Ok(mut major) = major.trim_start_matches('v').parse::<u32>()
            && major >= 8
        {
            let mut minor = match minor {
                Some(m) if variant.len() == 4 => m.parse::<u32>().unwrap_or(0),
                _ => 0,
            };
            let down = |major: u32, from: u32, out: &mut Vec<Platform>| {
                for m in (0..from).rev() {
                    out.push(arm64(if m == 0 { format!("v{major}") } else { format!("v{major}.{m}") }));
                }
            };
            if major == 9 {
                down(9, minor, &mut out);
                minor += 5;
                major = 8;
                out.push(arm64(format!("v8.{minor}")));
            }
            down(major, minor, &mut out);
        }
        let arm = if variant.starts_with("v8.") || variant.starts_with("v9.") { "v8".to_string() } else { variant };
        out.extend(Platform::new(&self.os, "arm", Some(&arm)).compatible());
        out
    }

    /// Whether a node of platform `self` can pull an image entry of platform `entry`.
    ///
    /// A node platform read from node labels carries no variant, but containerd on an amd64 node matches by
    /// the CPU's x86-64 level (`cpuinfo.go` `getAmd64MicroArchLevel`): such a node is taken to run
    /// `amd64/v2`…`v4` entries too, and [`Platform::cpu_level_needed`] says when that assumption decided.
    pub fn can_run(&self, entry: &Platform) -> bool {
        self.can_run_any(std::slice::from_ref(entry))
    }

    /// Whether a node of platform `self` can pull any of `entries` (its compatibility vector built once,
    /// and only when no entry is the node's own platform: the common case, answered without it).
    pub fn can_run_any(&self, entries: &[Platform]) -> bool {
        if self.listed_in(entries) {
            return true;
        }
        let vector = self.compatible();
        entries.iter().any(|e| !e.is_unknown() && (vector.iter().any(|p| p == e) || self.amd64_level_of(e).is_some()))
    }

    /// Whether `entries` name this very platform, the first of its compatibility vector.
    fn listed_in(&self, entries: &[Platform]) -> bool {
        !self.is_unknown() && entries.contains(self)
    }

    fn amd64_level_of(&self, entry: &Platform) -> Option<u32> {
        let same = self.architecture == "amd64" && self.variant.is_none() && entry.os == self.os;
        let level = entry.variant.as_deref().and_then(|v| v.strip_prefix('v')?.parse::<u32>().ok());
        (same && entry.architecture == "amd64").then_some(level).flatten().filter(|l| (2..=4).contains(l))
    }

    /// For an amd64 node of unknown CPU level: the lowest x86-64 level among `image`'s entries when no entry
    /// runs on every amd64 CPU (`None` when one does, or when the node is not such a node).
    pub fn cpu_level_needed(&self, image: &[Platform]) -> Option<u32> {
        if self.listed_in(image) {
            return None;
        }
        let vector = self.compatible();
        let baseline = image.iter().any(|e| !e.is_unknown() && vector.contains(e));
        if baseline {
            return None;
        }
        image.iter().filter_map(|e| self.amd64_level_of(e)).min()
    }

    /// `os/architecture[/variant]`, as `Display` writes it, in pieces: messages append them without going
    /// through the formatter (this runs for every allowed container).
    fn pieces(&self) -> [&str; 5] {
        let v = self.variant.as_deref();
        [&self.os, "/", &self.architecture, if v.is_some() { "/" } else { "" }, v.unwrap_or("")]
    }

    /// Appends `os/architecture[/variant]` to `out`.
    pub fn push_to(&self, out: &mut String) {
        self.pieces().into_iter().for_each(|p| out.push_str(p));
    }
}

fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    match arch {
        "i386" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => {
            let v = variant.filter(|v| v != "v1");
            ("amd64".into(), v)
        }
        "aarch64" | "arm64" => {
            let v = match variant.as_deref() {
                Some("8") | Some("v8") | Some("v8.0") => None,
                Some("9") | Some("9.0") | Some("v9.0") => Some("v9".into()),
                _ => variant,
            };
            ("arm64".into(), v)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let v = match variant.as_deref() {
                None | Some("7") => Some("v7".into()),
                Some(n @ ("5" | "6" | "8")) => Some(format!("v{n}")),
                _ => variant,
            };
            ("arm".into(), v)
        }
        other => (other.to_string(), variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces().into_iter().try_for_each(|p| f.write_str(p))
    }
}

impl Serialize for Platform {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, thiserror::Error)]
#[error("invalid platform {0:?}: expected OS/ARCH[/VARIANT], e.g. linux/amd64 or linux/arm/v7")]
pub struct PlatformParse(String);

impl FromStr for Platform {
    type Err = PlatformParse;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.');
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, v] if valid(os) && valid(arch) && valid(v) => Ok(Platform::new(os, arch, Some(v))),
            _ => Err(PlatformParse(s.to_string())),
        }
    }
}

impl<'de> serde::Deserialize<'de> for Platform {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What the image offers against what the pod may run on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PlatformFit {
    /// Every allowed node platform can pull the image.
    All,
    /// Some of the allowed node platforms can; these cannot.
    Some { unsupported: Vec<Platform> },
    /// None can.
    None,
}

/// Compares the image's platforms with the node platforms the pod may land on.
pub fn fit(image: &[Platform], nodes: &[Platform]) -> PlatformFit {
    let mut supported = false;
    let mut unsupported = vec![];
    for node in nodes {
        if node.can_run_any(image) {
            supported = true;
        } else {
            unsupported.push(node.clone());
        }
    }
    match (supported, unsupported.is_empty()) {
        (_, true) => PlatformFit::All,
        (false, false) => PlatformFit::None,
        (true, false) => PlatformFit::Some { unsupported },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        s.parse().unwrap()
    }

    /// Cases from containerd's platforms tests (normalize and `Only` matching).
    #[test]
    fn normalizes_like_containerd() {
        let cases = [
            ("linux/x86_64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/aarch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/arm64/8", "linux/arm64"),
            ("linux/arm64/9.0", "linux/arm64/v9"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("Windows/AMD64", "windows/amd64"),
            ("macos/arm64", "darwin/arm64"),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        assert!("linux".parse::<Platform>().is_err());
        assert!("linux/amd64/v2/x".parse::<Platform>().is_err());
        assert!("linux//v7".parse::<Platform>().is_err());
    }

    #[test]
    fn matches_like_containerd_only() {
        // (node, image entry, can run)
        let cases = [
            ("linux/amd64", "linux/amd64", true),
            ("linux/amd64", "linux/386", true),
            ("linux/amd64", "linux/arm64", false),
            ("linux/amd64/v3", "linux/amd64/v2", true),
            ("linux/amd64/v3", "linux/amd64", true),
            // containerd's Only(linux/amd64) says false, but a node read from its labels has an unknown
            // level: see amd64_levels_are_assumed_and_reported.
            ("linux/amd64", "linux/amd64/v3", true),
            ("linux/arm64", "linux/arm64/v8", true),
            ("linux/arm64/v8", "linux/arm64", true),
            ("linux/arm64", "linux/arm/v7", true),
            ("linux/arm64", "linux/arm/v8", true),
            ("linux/arm64", "linux/amd64", false),
            ("linux/arm/v7", "linux/arm/v6", true),
            ("linux/arm/v7", "linux/arm/v5", true),
            ("linux/arm/v6", "linux/arm/v7", false),
            ("linux/arm/v7", "linux/arm64", false),
            ("linux/amd64", "windows/amd64", false),
            ("windows/amd64", "linux/amd64", false),
            ("linux/amd64", "unknown/unknown", false),
        ];
        for (node, entry, want) in cases {
            assert_eq!(p(node).can_run(&p(entry)), want, "node {node} entry {entry}");
            // What answers an entry equal to the node without the vector: the node heads its own vector.
            assert_eq!(p(node).compatible()[0], p(node), "{node}");
        }
        let unknown = p("unknown/unknown");
        assert!(!unknown.can_run(&unknown) && unknown.cpu_level_needed(std::slice::from_ref(&unknown)).is_none());
    }

    /// containerd platforms compare_test.go `TestOnly`, the arm64 rows (v9, v8.1, plain arm64).
    #[test]
    fn arm64_variants_match_like_containerd_only() {
        let table: &[(&str, &[&str], &[&str])] = &[
            (
                "linux/arm64/v9",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "linux/arm64/v8",
                    "linux/arm64/v8.1",
                    "linux/arm64/v8.2",
                    "linux/arm64/v8.3",
                    "linux/arm64/v8.4",
                    "linux/arm64/v8.5",
                    "linux/arm64/v9",
                    "linux/arm64/v9.0",
                ],
                &["linux/amd64", "linux/arm/v4", "windows/amd64", "windows/arm", "linux/arm64/v8.6"],
            ),
            (
                "linux/arm64/v8.1",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "linux/arm64/v8",
                    "linux/arm64/v8.1",
                ],
                &["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "windows/amd64", "windows/arm"],
            ),
            (
                "linux/arm64",
                &[
                    "linux/arm",
                    "linux/arm/v5",
                    "linux/arm/v6",
                    "linux/arm/v7",
                    "linux/arm/v8",
                    "linux/arm64",
                    "linux/arm64/v8",
                ],
                &["linux/amd64", "linux/arm/v4", "linux/arm/v9", "linux/arm64/v9", "linux/arm64/v8.1", "windows/arm"],
            ),
        ];
        for (node, yes, no) in table {
            for e in *yes {
                assert!(p(node).can_run(&p(e)), "{node} runs {e}");
            }
            for e in *no {
                assert!(!p(node).can_run(&p(e)), "{node} does not run {e}");
            }
        }
    }

    /// An amd64 node's x86-64 level is not in its labels: containerd reads it from /proc/cpuinfo.
    #[test]
    fn amd64_levels_are_assumed_and_reported() {
        let node = p("linux/amd64");
        assert!(node.can_run(&p("linux/amd64/v3")));
        assert_eq!(node.cpu_level_needed(&[p("linux/amd64/v3"), p("linux/amd64/v2")]), Some(2));
        assert_eq!(node.cpu_level_needed(&[p("linux/amd64/v3"), p("linux/amd64")]), None);
        assert_eq!(node.cpu_level_needed(&[p("linux/arm64")]), None);
        assert!(!p("linux/amd64/v2").can_run(&p("linux/amd64/v3")), "a known level is exact");
        assert!(!p("windows/amd64").can_run(&p("linux/amd64/v3")));
    }

    #[test]
    fn variants_normalize_like_containerd() {
        let cases = [
            ("linux/arm64/v8.0", "linux/arm64"),
            ("linux/arm64/8.1", "linux/arm64/8.1"),
            ("linux/arm64/v8.2", "linux/arm64/v8.2"),
        ];
        for (input, want) in cases {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
    }

    #[test]
    fn fit_classifies_all_some_none() {
        let image = [p("linux/amd64"), p("unknown/unknown")];
        assert_eq!(fit(&image, &[p("linux/amd64")]), PlatformFit::All);
        assert_eq!(fit(&image, &[p("linux/arm64")]), PlatformFit::None);
        assert_eq!(
            fit(&image, &[p("linux/amd64"), p("linux/arm64")]),
            PlatformFit::Some { unsupported: vec![p("linux/arm64")] }
        );
    }
}
