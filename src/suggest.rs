//! Nearest existing tags for a tag that does not exist: neighbouring versions and likely typos.

/// Up to five suggestions: the versions just below and above (`v2.3.1` → `v2.3.0`, `v2.3.2`), then tags a
/// small edit away (`lates` → `latest`).
pub fn suggest_tags(wanted: &str, tags: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    if let Some(v) = Version::parse(wanted) {
        let mut same_shape: Vec<(Version, &String)> =
            tags.iter().filter_map(|t| Version::parse(t).filter(|x| x.shape() == v.shape()).map(|x| (x, t))).collect();
        same_shape.sort_by(|a, b| a.0.numbers.cmp(&b.0.numbers));
        if let Some((_, below)) = same_shape.iter().rev().find(|(x, _)| x.numbers < v.numbers) {
            out.push((*below).clone());
        }
        if let Some((_, above)) = same_shape.iter().find(|(x, _)| x.numbers > v.numbers) {
            out.push((*above).clone());
        }
    }
    let limit = (wanted.chars().count() / 3).clamp(1, 3);
    let mut near: Vec<(usize, &String)> = tags
        .iter()
        .filter(|t| *t != wanted)
        .filter_map(|t| levenshtein_within(wanted, t, limit).map(|d| (d, t)))
        .collect();
    near.sort();
    for (_, t) in near {
        if !out.contains(t) {
            out.push(t.clone());
        }
    }
    out.truncate(5);
    out
}

#[derive(Debug, PartialEq, Eq)]
struct Version {
    prefix: String,
    numbers: Vec<u64>,
    suffix: String,
}

impl Version {
    /// `v2.3.1`, `1.25`, `3.19-alpine` → prefix, numeric components, suffix.
    fn parse(s: &str) -> Option<Self> {
        let start = s.find(|c: char| c.is_ascii_digit())?;
        let prefix = &s[..start];
        if prefix.len() > 1 || prefix.chars().any(|c| c != 'v' && c != 'V') {
            return None;
        }
        let rest = &s[start..];
        let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (nums, suffix) = rest.split_at(end);
        let nums = nums.trim_end_matches('.');
        let numbers: Option<Vec<u64>> = nums.split('.').map(|n| n.parse().ok()).collect();
        Some(Self { prefix: prefix.into(), numbers: numbers?, suffix: suffix.into() })
    }

    fn shape(&self) -> (&str, usize, &str) {
        (&self.prefix, self.numbers.len(), &self.suffix)
    }
}

/// The edit distance of `a` and `b` if it is at most `limit`, else `None`, in O(len × limit): only the diagonal
/// band of width 2·limit+1 can hold a distance ≤ limit, and a row whose band is all over the limit ends it. A
/// registry chooses the tags (31,000 of 128 characters fit the tags-list cap); the full O(len²) table per tag cost
/// seconds of CPU per lookup.
fn levenshtein_within(a: &str, b: &str, limit: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return None;
    }
    let over = limit + 1;
    // prev[j] = distance(a[..i], b[..j]); cells outside the band are "over".
    let mut prev: Vec<usize> = (0..=b.len()).map(|j| j.min(over)).collect();
    let mut cur = vec![over; b.len() + 1];
    for i in 1..=a.len() {
        let (lo, hi) = (i.saturating_sub(limit).max(1), (i + limit).min(b.len()));
        // Only the cells just outside the band are read from this row later; resetting the whole row would
        // make the band pointless.
        cur[0] = i.min(over);
        cur[lo - 1] = if lo == 1 { cur[0] } else { over };
        if hi < b.len() {
            cur[hi + 1] = over;
        }
        let mut best = cur[0];
        for j in lo..=hi {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            cur[j] = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1).min(over);
            best = best.min(cur[j]);
        }
        if best > limit {
            return None;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    Some(prev[b.len()]).filter(|d| *d <= limit)
}

#[cfg(test)]
fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn suggestion_cases() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            ("lates", &["latest", "1.25", "stable"], &["latest"]),
            ("v2.3.1", &["v2.3.0", "v2.3.2", "v2.4.0", "latest"], &["v2.3.0", "v2.3.2", "v2.4.0"]),
            ("v2.3.1", &["v2.3.2"], &["v2.3.2"]),
            ("1.25.10", &["1.25.9", "1.25.11", "1.26.0", "1.25.9-alpine"], &["1.25.9", "1.25.11", "1.26.0"]),
            ("3.19-alpine", &["3.18-alpine", "3.19", "3.20-alpine"], &["3.18-alpine", "3.20-alpine"]),
            ("stabel", &["stable", "latest"], &["stable"]),
            ("prod", &["v1", "v2"], &[]),
            ("x", &[], &[]),
        ];
        for (wanted, have, want) in cases {
            assert_eq!(suggest_tags(wanted, &tags(have)), tags(want), "wanted {wanted}");
        }
    }

    /// The banded distance agrees with the full one wherever the full one is within the limit, and says "farther"
    /// everywhere else: on a table, then on every pair drawn from a small alphabet.
    #[test]
    fn bounded_distance_agrees_with_the_full_one() {
        let words = ["", "a", "ab", "ba", "abc", "acb", "lates", "latest", "stable", "stabel", "v2.3.1", "v2.3.10"];
        let mut pairs: Vec<(String, String)> = Vec::new();
        for a in words {
            for b in words {
                pairs.push((a.into(), b.into()));
            }
        }
        let alphabet = ['a', 'b', 'é'];
        let all = |n: usize| -> Vec<String> {
            let mut out = vec![String::new()];
            for _ in 0..n {
                out = out.iter().flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}"))).collect();
            }
            out
        };
        for a in all(4) {
            for b in (1..=5).flat_map(all) {
                pairs.push((a.clone(), b));
            }
        }
        for (a, b) in &pairs {
            let full = levenshtein(a, b);
            for limit in 0..=3 {
                let want = (full <= limit).then_some(full);
                assert_eq!(levenshtein_within(a, b, limit), want, "{a:?} vs {b:?} within {limit}");
            }
        }
    }

    #[test]
    fn levenshtein_basics() {
        assert_eq!(levenshtein("lates", "latest"), 1);
        assert_eq!(levenshtein("", "abc"), 3);
        assert_eq!(levenshtein("kitten", "sitting"), 3);
    }
}
