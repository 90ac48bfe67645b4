//! Image reference parsing and normalization, as the kubelet does it.
//!
//! The kubelet calls distribution/reference `ParseNormalizedNamed` and then adds `:latest` only when the
//! reference has neither tag nor digest. This module reproduces that grammar by hand (no regex engine) so a
//! string the kubelet would reject is rejected here, with no network involved.

use std::fmt;

/// Docker Hub's canonical registry name in normalized references.
pub const DOCKER_HUB: &str = "docker.io";
const NAME_TOTAL_LENGTH_MAX: usize = 255;

/// A normalized image reference: `domain/path[:tag][@digest]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io`, `registry.example.com:5000`.
    pub domain: String,
    /// Repository path, e.g. `library/nginx`.
    pub path: String,
    /// Tag; `latest` when the original string had neither tag nor digest.
    pub tag: Option<String>,
    /// Digest, e.g. `sha256:…`.
    pub digest: Option<String>,
}

/// Why an image string is not a valid reference.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("the image is empty")]
    Empty,
    #[error("the image contains whitespace")]
    Whitespace,
    #[error("repository name must be lowercase")]
    Uppercase,
    #[error("invalid repository name: cannot be a 64-character hexadecimal string (that looks like an image ID)")]
    HexIdentifier,
    #[error("repository path is longer than {NAME_TOTAL_LENGTH_MAX} characters")]
    NameTooLong,
    #[error("invalid registry host {0:?}")]
    Domain(String),
    #[error(
        "invalid repository path component {0:?} (allowed: lowercase letters, digits, and single '.', '_', '__' or '-' between them)"
    )]
    PathComponent(String),
    #[error(
        "invalid tag {0:?} (allowed: letters, digits, '_', '.', '-', at most 128 characters, not starting with '.' or '-')"
    )]
    Tag(String),
    #[error(
        "invalid digest {0:?} (expected sha256:, sha384: or sha512: followed by 64, 96 or 128 lowercase hex digits)"
    )]
    Digest(String),
}

impl Reference {
    /// Parses and normalizes like the kubelet: `nginx` → `docker.io/library/nginx:latest`.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        // Any Unicode whitespace; an ASCII string (nearly every image) is checked byte by byte.
        let ascii_space = |b: u8| matches!(b, b'\t' | b'\n' | b'\x0B' | b'\x0C' | b'\r' | b' ');
        if s.bytes().any(ascii_space) || (!s.is_ascii() && s.chars().any(char::is_whitespace)) {
            return Err(ReferenceError::Whitespace);
        }
        if is_hex_identifier(s) {
            return Err(ReferenceError::HexIdentifier);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((rest, digest)) => {
                validate_digest(digest)?;
                (rest, Some(digest.to_string()))
            }
            None => (s, None),
        };
        // A tag is the part after the last ':' that follows the last '/'; a ':' before a '/' is a port.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let tag = &rest[last_slash + i + 1..];
                validate_tag(tag)?;
                (&rest[..last_slash + i], Some(tag.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (domain, path) = split_docker_domain(name);
        if path.chars().any(|c| c.is_ascii_uppercase()) {
            return Err(ReferenceError::Uppercase);
        }
        validate_domain(domain)?;
        for component in path.split('/') {
            validate_path_component(component)?;
        }
        // distribution/reference v0.6 counts the path only (PR #9, "Exclude domain from name length check").
        if path.len() > NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Ok(Self { domain: domain.to_string(), path, tag, digest })
    }

    /// `domain/path`, the repository name the kubelet's keyring matches against.
    pub fn repository(&self) -> String {
        let mut s = String::with_capacity(self.domain.len() + 1 + self.path.len());
        s.push_str(&self.domain);
        s.push('/');
        s.push_str(&self.path);
        s
    }

    /// What `Display` writes, into a buffer of the right size (`to_string` grows its buffer from empty as it
    /// goes; this runs for every container of every review).
    pub fn canonical(&self) -> String {
        let mut s = String::with_capacity(self.pieces().iter().map(|p| p.len()).sum());
        self.push_to(&mut s);
        s
    }

    /// Appends the canonical form to `out`.
    pub fn push_to(&self, out: &mut String) {
        self.pieces().into_iter().for_each(|p| out.push_str(p));
    }

    /// `domain/path[:tag][@digest]` in pieces, for `Display` and for messages that append it without going
    /// through the formatter.
    fn pieces(&self) -> [&str; 7] {
        let (tag, digest) = (self.tag.as_deref(), self.digest.as_deref());
        [
            &self.domain,
            "/",
            &self.path,
            if tag.is_some() { ":" } else { "" },
            tag.unwrap_or(""),
            if digest.is_some() { "@" } else { "" },
            digest.unwrap_or(""),
        ]
    }

    /// What the registry is asked for: the digest when there is one (it wins over a tag), else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest.as_deref().or(self.tag.as_deref()).unwrap_or("latest")
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.pieces().into_iter().try_for_each(|p| f.write_str(p))
    }
}

fn is_hex_identifier(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// distribution's `splitDockerDomain`: the first component is a registry only if it looks like a host. The
/// path comes back owned, written once (it runs for every container of every review).
fn split_docker_domain(name: &str) -> (&str, String) {
    let (domain, path) = match name.split_once('/') {
        Some((first, rest))
            if first.contains('.')
                || first.contains(':')
                || first == "localhost"
                || first.chars().any(|c| c.is_ascii_uppercase()) =>
        {
            (first, rest)
        }
        _ => (DOCKER_HUB, name),
    };
    let domain = if domain == "index.docker.io" { DOCKER_HUB } else { domain };
    let path = if domain == DOCKER_HUB && !path.contains('/') {
        let mut p = String::with_capacity("library/".len() + path.len());
        p.push_str("library/");
        p.push_str(path);
        p
    } else {
        path.to_string()
    };
    (domain, path)
}

fn validate_domain(domain: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Domain(domain.to_string());
    let (host, port) = if let Some(rest) = domain.strip_prefix('[') {
        let (v6, after) = rest.split_once(']').ok_or_else(bad)?;
        // The grammar's ipv6address: hex digits and colons, nothing else (no dotted IPv4, no zone).
        if v6.is_empty() || !v6.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(bad());
        }
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(bad)?),
        };
        ("", port)
    } else {
        match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        }
    };
    if let Some(port) = port {
        if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
    }
    if !domain.starts_with('[') {
        if host.is_empty() {
            return Err(bad());
        }
        for label in host.split('.') {
            let ok = !label.is_empty()
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-');
            if !ok {
                return Err(bad());
            }
        }
    }
    Ok(())
}

/// path-component := alpha-numeric (separator alpha-numeric)*, separator := `[_.]|__|[-]+`.
fn validate_path_component(c: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::PathComponent(c.to_string());
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(bad());
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return Err(bad());
        }
    }
    Ok(())
}

fn validate_tag(tag: &str) -> Result<(), ReferenceError> {
    let b = tag.as_bytes();
    let word = |x: u8| x.is_ascii_alphanumeric() || x == b'_';
    let ok = !b.is_empty() && b.len() <= 128 && word(b[0]) && b.iter().all(|&x| word(x) || x == b'.' || x == b'-');
    if ok { Ok(()) } else { Err(ReferenceError::Tag(tag.to_string())) }
}

/// A digest as go-digest's `Parse` accepts it (distribution/reference calls it, and so the kubelet): an
/// algorithm it implements — sha256, sha384 or sha512 — and that many lowercase hex digits. Anything else, `md5:`
/// included, is refused there (`ErrDigestUnsupported`, `ErrDigestInvalidLength`), so it is refused here.
pub fn validate_digest(d: &str) -> Result<(), ReferenceError> {
    let bad = || ReferenceError::Digest(d.chars().take(150).collect());
    let (alg, hex) = d.split_once(':').ok_or_else(bad)?;
    let want = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => return Err(bad()),
    };
    if hex.len() != want || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    /// go-digest's `Parse` (used by distribution/reference) accepts only the algorithms it has: sha256 (64 hex),
    /// sha384 (96) and sha512 (128), lowercase; anything else is `ErrDigestUnsupported` or `ErrDigestInvalidLength`.
    #[test]
    fn digest_algorithms_are_those_the_kubelet_accepts() {
        let ok = [
            format!("sha256:{}", "a".repeat(64)),
            format!("sha384:{}", "b".repeat(96)),
            format!("sha512:{}", "c".repeat(128)),
        ];
        for d in ok {
            assert!(Reference::parse(&format!("app@{d}")).is_ok(), "{d}");
        }
        let bad = [
            format!("md5:{}", "0".repeat(32)),
            format!("sha1:{}", "0".repeat(40)),
            format!("sha384:{}", "b".repeat(64)),
            format!("sha512:{}", "c".repeat(64)),
            format!("sha256:{}", "A".repeat(64)),
            format!("blake3:{}", "0".repeat(64)),
        ];
        for d in bad {
            assert!(matches!(Reference::parse(&format!("app@{d}")), Err(ReferenceError::Digest(_))), "{d}");
        }
    }

    /// Cases from distribution/reference's normalize and reference tests, plus the kubelet's `:latest` rule.
    #[test]
    fn normalizes_like_distribution_reference() {
        let digest_ref = format!("docker.io/library/ubuntu@{D}");
        let tag_digest_in = format!("ubuntu:20.04@{D}");
        let tag_digest = format!("docker.io/library/ubuntu:20.04@{D}");
        let cases: &[(&str, &str)] = &[
            ("nginx", "docker.io/library/nginx:latest"),
            ("nginx:1.25", "docker.io/library/nginx:1.25"),
            ("library/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/nginx", "docker.io/library/nginx:latest"),
            ("index.docker.io/nginx", "docker.io/library/nginx:latest"),
            ("docker.io/library/nginx", "docker.io/library/nginx:latest"),
            ("dmcgowan/myapp", "docker.io/dmcgowan/myapp:latest"),
            ("dmcgowan/myapp/sub", "docker.io/dmcgowan/myapp/sub:latest"),
            ("localhost/foo", "localhost/foo:latest"),
            ("localhost:5000/foo/bar:v1", "localhost:5000/foo/bar:v1"),
            ("registry.example.com/team/app:v2.3.1", "registry.example.com/team/app:v2.3.1"),
            ("ghcr.io/org/tool:1.0", "ghcr.io/org/tool:1.0"),
            ("Docker.io/foo", "Docker.io/foo:latest"),
            ("127.0.0.1:5000/a_b/c__d/e-f/g--h/i.j", "127.0.0.1:5000/a_b/c__d/e-f/g--h/i.j:latest"),
            ("[::1]:5000/foo", "[::1]:5000/foo:latest"),
            ("foo:_tag", "docker.io/library/foo:_tag"),
            (&tag_digest_in, &tag_digest),
        ];
        for (input, want) in cases {
            let got = Reference::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(got.to_string(), *want, "input {input}");
        }
        let by_digest = Reference::parse(&format!("ubuntu@{D}")).unwrap();
        assert_eq!(by_digest.to_string(), digest_ref);
        assert_eq!(by_digest.tag, None, "no :latest is added when a digest is given");
        assert_eq!(by_digest.manifest_reference(), D);
    }

    /// distribution/reference v0.6 (PR #9, "Exclude domain from name length check"): the 255-character limit
    /// counts the repository path, not the domain. Its `ipv6address` is `\[(?:[a-fA-F0-9:]+)\]`: hex digits and
    /// colons only, so an embedded dotted IPv4 is no host, while a bracketed string the grammar allows is one
    /// even if it is no real address (the pull then fails, not the parse).
    #[test]
    fn length_and_ipv6_hosts_follow_the_grammar() {
        let domain = format!("{}.example.com", "r".repeat(60));
        let path_255 = format!("{domain}/{}", "a".repeat(255));
        assert!(Reference::parse(&path_255).is_ok(), "a 255-character path under a long domain");
        let path_256 = format!("{domain}/{}", "a".repeat(256));
        assert_eq!(Reference::parse(&path_256), Err(ReferenceError::NameTooLong));
        // ParseNormalizedNamed counts `library/` too: 247 + 8 = 255.
        assert!(Reference::parse(&"a".repeat(247)).is_ok());
        assert_eq!(Reference::parse(&"a".repeat(248)), Err(ReferenceError::NameTooLong));

        assert!(Reference::parse("[fd00::1]/app").is_ok());
        assert!(Reference::parse("[FD00:0:0:0:0:0:0:1]:5000/app").is_ok());
        assert!(Reference::parse("[1:2:3]/app").is_ok(), "the grammar, not Ipv6Addr, decides");
        assert_eq!(Reference::parse("[::ffff:10.0.0.1]/app"), Err(ReferenceError::Domain("[::ffff:10.0.0.1]".into())));
        assert_eq!(Reference::parse("[fe80::1%eth0]/app"), Err(ReferenceError::Domain("[fe80::1%eth0]".into())));
    }

    #[test]
    fn rejects_what_distribution_rejects() {
        let hex = "a".repeat(64);
        let long = format!("r.io/{}", "a".repeat(260));
        let cases: &[(&str, ReferenceError)] = &[
            ("", ReferenceError::Empty),
            (":tag", ReferenceError::Empty),
            ("nginx:", ReferenceError::Tag(String::new())),
            ("Nginx", ReferenceError::Uppercase),
            ("docker.io/Foo/bar", ReferenceError::Uppercase),
            ("nginx latest", ReferenceError::Whitespace),
            ("nginx\x0B", ReferenceError::Whitespace),
            ("nginx:1\u{a0}", ReferenceError::Whitespace),
            ("nginx\u{2003}x", ReferenceError::Whitespace),
            (&hex, ReferenceError::HexIdentifier),
            ("foo/../bar", ReferenceError::PathComponent("..".into())),
            ("foo/-bar", ReferenceError::PathComponent("-bar".into())),
            ("foo/bar_", ReferenceError::PathComponent("bar_".into())),
            ("foo/a___b", ReferenceError::PathComponent("a___b".into())),
            ("foo//bar", ReferenceError::PathComponent(String::new())),
            ("nginx:.bad", ReferenceError::Tag(".bad".into())),
            ("nginx:-bad", ReferenceError::Tag("-bad".into())),
            ("nginx:a/b", ReferenceError::Domain("nginx:a".into())),
            ("nginx@sha256:abc", ReferenceError::Digest("sha256:abc".into())),
            ("nginx@sha256:ZZ", ReferenceError::Digest("sha256:ZZ".into())),
            ("exa_mple.com/foo", ReferenceError::Domain("exa_mple.com".into())),
            ("-example.com/foo", ReferenceError::Domain("-example.com".into())),
            ("example.com:port/foo", ReferenceError::Domain("example.com:port".into())),
            ("[::1/foo", ReferenceError::Domain("[::1".into())),
            (&long, ReferenceError::NameTooLong),
        ];
        for (input, want) in cases {
            assert_eq!(Reference::parse(input).as_ref(), Err(want), "input {input:?}");
        }
        let tag_129 = format!("nginx:{}", "a".repeat(129));
        assert!(Reference::parse(&tag_129).is_err());
        let tag_128 = format!("nginx:{}", "a".repeat(128));
        assert!(Reference::parse(&tag_128).is_ok());
    }
}
