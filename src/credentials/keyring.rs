//! The kubelet's `BasicDockerKeyring`: which docker config entries match an image, most specific first.

use std::collections::BTreeMap;

use super::{Candidate, Credential, DockerConfig, Source};

/// A kubelet `BasicDockerKeyring`: entries grouped by normalized key, keys reverse-sorted.
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    entries: BTreeMap<String, Vec<Entry>>,
}

/// One dockerconfig entry under its normalized key.
#[derive(Clone, Debug)]
struct Entry {
    source: Source,
    /// The key as the secret writes it (`https://index.docker.io/v1/`), which is what users search for.
    written: String,
    credential: Credential,
}

impl Entry {
    fn candidate(&self) -> Candidate {
        Candidate { source: self.source.clone(), key: self.written.clone(), credential: self.credential.clone() }
    }
}

const DEFAULT_REGISTRY_HOST: &str = "index.docker.io";

impl Keyring {
    /// Adds every entry of a dockerconfig, keyed as the kubelet keys them.
    pub fn add(&mut self, source: &Source, config: &DockerConfig) {
        for (loc, cred) in &config.0 {
            if let Some(key) = normalize_key(loc) {
                let entry = Entry { source: source.clone(), written: loc.clone(), credential: cred.clone() };
                self.entries.entry(key).or_default().push(entry);
            }
        }
    }

    /// Every credential matching `repository` (`domain/path`), most specific key first.
    pub fn lookup(&self, repository: &str) -> Vec<Candidate> {
        let mut out = Vec::new();
        for (key, entries) in self.entries.iter().rev() {
            if urls_match(key, repository) {
                out.extend(entries.iter().map(Entry::candidate));
            }
        }
        // The index's entry first: without one (a pod with no Docker Hub secret) the image is not parsed.
        if out.is_empty()
            && let Some(entries) = self.entries.get(DEFAULT_REGISTRY_HOST)
            && is_default_registry_match(repository)
        {
            out.extend(entries.iter().map(Entry::candidate));
        }
        out
    }
}

/// Strips the scheme and a `/v1/` or `/v2/` path, as the kubelet's `BasicDockerKeyring.Add` does. The host keeps
/// its case, as Go's `url.Parse` keeps it.
fn normalize_key(loc: &str) -> Option<String> {
    let rest = loc.strip_prefix("https://").or_else(|| loc.strip_prefix("http://")).unwrap_or(loc);
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return None;
    }
    let path = if path.starts_with("/v2/") || path.starts_with("/v1/") { &path[3..] } else { path };
    Some(if path.is_empty() || path == "/" { host.to_string() } else { format!("{host}{path}") })
}

fn is_default_registry_match(image: &str) -> bool {
    let mut parts = image.splitn(2, '/');
    let first = parts.next().unwrap_or_default();
    if first.is_empty() {
        return false;
    }
    match parts.next() {
        None => true,
        Some(_) => first == "docker.io" || first == DEFAULT_REGISTRY_HOST || !first.contains(['.', ':']),
    }
}

/// The kubelet's `URLsMatch`: same port, same number of host labels, each label a glob match (case-sensitive,
/// as `filepath.Match` is), and the key's path a prefix of the image's path.
pub(super) fn urls_match(glob: &str, target: &str) -> bool {
    fn split(s: &str) -> (&str, &str) {
        s.find('/').map_or((s, ""), |i| s.split_at(i))
    }
    let (glob_host, glob_path) = split(glob);
    let (target_host, target_path) = split(target);
    let (gh, gp) = split_host_port(glob_host);
    let (th, tp) = split_host_port(target_host);
    if gp != tp || !target_path.starts_with(glob_path) {
        return false;
    }
    // Label by label, without collecting them: this runs for every key against every image of every review.
    gh.split('.').count() == th.split('.').count()
        && gh.split('.').zip(th.split('.')).all(|(g, t)| glob_match(g.as_bytes(), t.as_bytes()))
}

/// Go's `net.SplitHostPort`, with the kubelet's fallback (`SplitURL`): when it fails, the whole string is the
/// host and the port is empty. `[::1]:5000` is (`::1`, `5000`); `[::1]` has no port, so it stays whole.
fn split_host_port(hostport: &str) -> (&str, &str) {
    let whole = (hostport, "");
    let Some(i) = hostport.rfind(':') else { return whole };
    let (host, inner_from, outer_from) = if hostport.starts_with('[') {
        let Some(end) = hostport.find(']') else { return whole };
        if end + 1 != i {
            return whole;
        }
        (&hostport[1..end], 1, end + 1)
    } else {
        let host = &hostport[..i];
        if host.contains(':') {
            return whole;
        }
        (host, 0, 0)
    };
    if hostport[inner_from..].contains('[') || hostport[outer_from..].contains(']') {
        return whole;
    }
    (host, &hostport[i + 1..])
}

/// Go's `filepath.Match` for one host label, ported from path/filepath/match.go (Go 1.16+): `*`, `?`, `[...]`
/// classes with ranges and `^` negation, `\\` escapes; a malformed pattern (Go's `ErrBadPattern`) matches
/// nothing, as the kubelet treats that error.
///
/// Like Go, each `*` is followed by a fixed-length chunk that is matched at the leftmost position that fits, and
/// the matcher never backtracks into an earlier star: time is O(pattern × label), whatever the stars. (A
/// backtracking matcher took exponential time on `*a*a*a*a*a*a*a*a*a*a*a*a*b` against 60 `a`s.)
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    // Without `*`, `?`, `[` or `\\` every chunk is literal and no pattern is malformed: Match is equality.
    if !pattern.iter().any(|b| matches!(b, b'*' | b'?' | b'[' | b'\\')) {
        return pattern == name;
    }
    let (Ok(pattern), Ok(name)) = (std::str::from_utf8(pattern), std::str::from_utf8(name)) else {
        return false;
    };
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    go_match(&pattern, &name).unwrap_or(false)
}

/// `filepath.Match`; `Err` is `ErrBadPattern`.
fn go_match(mut pattern: &[char], mut name: &[char]) -> Result<bool, ()> {
    'chunks: while !pattern.is_empty() {
        let (star, chunk, rest) = scan_chunk(pattern);
        pattern = rest;
        if star && chunk.is_empty() {
            // A trailing star matches the rest (labels hold no path separator).
            return Ok(true);
        }
        // At the current position; the last chunk must also exhaust the name.
        if let Some(t) = match_chunk(chunk, name)? {
            if t.is_empty() || !pattern.is_empty() {
                name = t;
                continue;
            }
        }
        if star {
            // Skip one more character of the name each time: never back into an earlier chunk.
            for i in 0..name.len() {
                if let Some(t) = match_chunk(chunk, &name[i + 1..])? {
                    if pattern.is_empty() && !t.is_empty() {
                        continue;
                    }
                    name = t;
                    continue 'chunks;
                }
            }
        }
        // No match; Go still reports a malformed remainder of the pattern.
        while !pattern.is_empty() {
            let (_, chunk, rest) = scan_chunk(pattern);
            pattern = rest;
            match_chunk(chunk, &[])?;
        }
        return Ok(false);
    }
    Ok(name.is_empty())
}

/// Leading stars, then the chunk up to the next star outside a class.
fn scan_chunk(mut pattern: &[char]) -> (bool, &[char], &[char]) {
    let mut star = false;
    while pattern.first() == Some(&'*') {
        pattern = &pattern[1..];
        star = true;
    }
    let mut in_range = false;
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' if i + 1 < pattern.len() => i += 1,
            '[' => in_range = true,
            ']' => in_range = false,
            '*' if !in_range => break,
            _ => {}
        }
        i += 1;
    }
    (star, &pattern[..i], &pattern[i..])
}

/// Matches a star-free chunk at the start of `s`: the rest of `s` on a match. Like Go, the whole chunk is
/// parsed even after a mismatch, so a malformed chunk is an error wherever it is.
fn match_chunk<'a>(mut chunk: &[char], mut s: &'a [char]) -> Result<Option<&'a [char]>, ()> {
    let mut failed = false;
    while let Some(&c) = chunk.first() {
        if !failed && s.is_empty() {
            failed = true;
        }
        match c {
            '[' => {
                let r = if failed {
                    None
                } else {
                    let r = s[0];
                    s = &s[1..];
                    Some(r)
                };
                chunk = &chunk[1..];
                let negated = chunk.first() == Some(&'^');
                if negated {
                    chunk = &chunk[1..];
                }
                let mut matched = false;
                let mut ranges = 0;
                loop {
                    if chunk.first() == Some(&']') && ranges > 0 {
                        chunk = &chunk[1..];
                        break;
                    }
                    let (lo, rest) = get_escaped(chunk)?;
                    chunk = rest;
                    let mut hi = lo;
                    if chunk.first() == Some(&'-') {
                        let (h, rest) = get_escaped(&chunk[1..])?;
                        hi = h;
                        chunk = rest;
                    }
                    if r.is_some_and(|r| lo <= r && r <= hi) {
                        matched = true;
                    }
                    ranges += 1;
                }
                if matched == negated {
                    failed = true;
                }
            }
            '?' => {
                if !failed {
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
            _ => {
                let literal = if c == '\\' {
                    chunk = &chunk[1..];
                    *chunk.first().ok_or(())?
                } else {
                    c
                };
                if !failed {
                    if s[0] != literal {
                        failed = true;
                    }
                    s = &s[1..];
                }
                chunk = &chunk[1..];
            }
        }
    }
    Ok(if failed { None } else { Some(s) })
}

/// One possibly escaped character of a class; a class must not end inside it.
fn get_escaped(chunk: &[char]) -> Result<(char, &[char]), ()> {
    let mut chunk = chunk;
    match chunk.first() {
        None | Some('-') | Some(']') => return Err(()),
        Some('\\') => {
            chunk = &chunk[1..];
            if chunk.is_empty() {
                return Err(());
            }
        }
        _ => {}
    }
    let rest = &chunk[1..];
    if rest.is_empty() {
        return Err(());
    }
    Ok((chunk[0], rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[(&str, &str)]) -> DockerConfig {
        DockerConfig(entries.iter().map(|(k, u)| (k.to_string(), Credential::new(*u, "pw"))).collect())
    }

    fn users(k: &Keyring, image: &str) -> Vec<String> {
        k.lookup(image).into_iter().map(|c| c.credential.username().to_string()).collect()
    }

    /// Cases from the kubelet's credentialprovider keyring tests.
    #[test]
    fn keyring_matches_like_the_kubelet() {
        let mut k = Keyring::default();
        k.add(
            &Source::Node,
            &cfg(&[
                ("https://registry.example.com/v1/", "plain"),
                ("registry.example.com/team", "team"),
                ("*.example.com", "glob"),
                ("*.*.example.com", "glob2"),
                ("http://ports.example.com:5000", "port"),
                ("index.docker.io/v1/", "hub"),
                ("quay.io/coreos", "coreos"),
                ("q[a-z]ay.io", "class"),
            ]),
        );
        let cases: &[(&str, &[&str])] = &[
            ("registry.example.com/team/app", &["team", "plain", "glob"]),
            ("registry.example.com/teamster/app", &["team", "plain", "glob"]),
            ("registry.example.com/other/app", &["plain", "glob"]),
            ("foo.example.com/app", &["glob"]),
            ("a.b.example.com/app", &["glob2"]),
            ("example.com/app", &[]),
            ("ports.example.com:5000/app", &["port"]),
            ("ports.example.com/app", &["glob"]),
            ("ports.example.com:5001/app", &[]),
            ("docker.io/library/nginx", &["hub"]),
            ("docker.io/someone/app", &["hub"]),
            ("quay.io/coreos/etcd", &["coreos", "class"]),
            ("quay.io/other/etcd", &["class"]),
            ("gcr.io/x/y", &[]),
        ];
        for (image, want) in cases {
            assert_eq!(users(&k, image), *want, "image {image}");
        }
    }

    /// The kubelet keys entries by Go's `url.Parse(...).Host`, which keeps the case as written, and matches labels
    /// with `filepath.Match`, which is case-sensitive (credentialprovider/keyring.go `Add`, `URLsMatch`); it
    /// splits host and port with `net.SplitHostPort`, so bracketed IPv6 keys match only the same port.
    #[test]
    fn hosts_compare_case_sensitively_and_ipv6_keys_match() {
        let mut k = Keyring::default();
        k.add(
            &Source::Node,
            &cfg(&[
                ("Registry.Example.com", "upper"),
                ("registry.example.com", "lower"),
                ("[::1]:5000", "v6port"),
                ("https://[fd00::5]/v2/", "v6"),
            ]),
        );
        let cases: &[(&str, &[&str])] = &[
            ("registry.example.com/app", &["lower"]),
            ("Registry.Example.com/app", &["upper"]),
            ("[::1]:5000/app", &["v6port"]),
            ("[::1]:5001/app", &[]),
            ("[::1]/app", &[]),
            // Without a port, SplitHostPort fails and the host stays `[fd00::5]`, which filepath.Match reads as
            // a one-character class: the kubelet never matches a portless bracketed key, and neither do we.
            ("[fd00::5]/team/app", &[]),
            ("[fd00::5]:443/team/app", &[]),
        ];
        for (image, want) in cases {
            assert_eq!(users(&k, image), *want, "image {image}");
        }
    }

    /// Users look for the key as they wrote it in the secret; matching uses the normalized form.
    #[test]
    fn candidates_carry_the_key_as_written() {
        let mut k = Keyring::default();
        k.add(&Source::Node, &cfg(&[("https://index.docker.io/v1/", "hub"), ("http://r.example.com", "r")]));
        let keys = |image: &str| k.lookup(image).into_iter().map(|c| c.key).collect::<Vec<_>>();
        assert_eq!(keys("docker.io/library/nginx"), ["https://index.docker.io/v1/"]);
        assert_eq!(keys("r.example.com/app"), ["http://r.example.com"]);
    }

    #[test]
    fn docker_io_key_matches_directly() {
        let mut k = Keyring::default();
        k.add(&Source::Node, &cfg(&[("docker.io", "d"), ("https://index.docker.io/v1/", "i")]));
        assert_eq!(users(&k, "docker.io/library/nginx"), ["d"], "a direct match wins over the default fallback");
    }

    /// Go's `filepath.Match`, which the kubelet's `URLsMatch` applies per host label (credentialprovider/keyring.go:
    /// `matched, _ := filepath.Match(globComponent, targetComponent)`; path/filepath/match.go for the syntax).
    #[test]
    fn host_labels_match_like_go_filepath_match() {
        let cases: &[(&str, &str, bool)] = &[
            ("*", "anything", true),
            ("*", "", true),
            ("a*", "abc", true),
            ("a*c", "abc", true),
            ("a*c", "abd", false),
            ("*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[^a-c]x", "dx", true),
            ("[^a-c]x", "ax", false),
            ("[abc]", "b", true),
            ("app*", "app1", true),
            ("app*", "ap", false),
            // A malformed class is ErrBadPattern in Go: never a match.
            ("[a-", "a", false),
            ("[]", "a", false),
        ];
        for (pat, s, want) in cases {
            assert_eq!(glob_match(pat.as_bytes(), s.as_bytes()), *want, "{pat} vs {s}");
        }
    }

    /// A key like `*a*a*a*a*a*a*a*a*a*a*a*a*b.test` against a 60-character label froze the webhook: backtracking
    /// matching is exponential in the number of stars. The match must end, whatever the input.
    #[test]
    fn many_star_glob_against_a_long_label_finishes() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let key = format!("{}*b.test", "*a".repeat(12));
            let mut k = Keyring::default();
            k.add(&Source::Node, &cfg(&[(key.as_str(), "mallory")]));
            let host = format!("{}.test/team/app", "a".repeat(60));
            let _ = tx.send((users(&k, &host), users(&k, &format!("{}b.test/x", "a".repeat(60)))));
        });
        let (miss, hit) = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("keyring matching finished");
        assert!(miss.is_empty());
        assert_eq!(hit, ["mallory"]);
    }
}
