//! The fuzz targets in CI: every corpus seed and every saved regression, then a bounded, deterministic
//! mutation run per target (a few thousand inputs each). Longer runs use cargo-fuzz (`bash .ci/fuzz`).

use std::path::{Path, PathBuf};

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("reference", pullguard::fuzzing::reference),
    ("dockerconfig", pullguard::fuzzing::dockerconfig),
    ("manifest", pullguard::fuzzing::manifest),
    ("config", pullguard::fuzzing::config),
    ("manifests", pullguard::fuzzing::manifests),
    ("admission", pullguard::fuzzing::admission),
    ("keyring", pullguard::fuzzing::keyring),
];

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> =
        std::fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
    v.sort();
    v
}

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz")
}

/// xorshift64*: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\"", b"{", b"}", b"[", b":", b"/", b"@", b"sha256:", b"---\n", b"\n", b"\xff", b"\x00", b"null", b"-1", b"1e999",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let i = rng.below(v.len() + 1);
                let ins = INTERESTING[rng.below(INTERESTING.len())];
                v.splice(i..i, ins.iter().copied());
            }
            2 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below((v.len() - i).min(16) + 1);
                v.drain(i..i + n);
            }
            3 if !v.is_empty() => {
                let i = rng.below(v.len());
                let n = rng.below((v.len() - i).min(64) + 1);
                let chunk = v[i..i + n].to_vec();
                let at = rng.below(v.len() + 1);
                v.splice(at..at, chunk);
            }
            4 if !other.is_empty() => {
                let cut = rng.below(v.len() + 1);
                let from = rng.below(other.len());
                v.truncate(cut);
                v.extend_from_slice(&other[from..]);
            }
            _ => {
                let i = rng.below(v.len() + 1);
                v.insert(i, rng.next() as u8);
            }
        }
    }
    v
}

#[test]
fn corpus_and_regressions_never_panic() {
    for (name, target) in TARGETS {
        let mut n = 0;
        for dir in [fuzz_dir().join("corpus").join(name), fuzz_dir().join("regressions").join(name)] {
            for f in files(&dir) {
                let data = std::fs::read(&f).unwrap();
                target(&data);
                n += 1;
            }
        }
        assert!(n > 0, "target {name} has seeds");
    }
}

#[test]
fn mutated_inputs_never_panic() {
    let iterations: usize =
        std::env::var("PULLGUARD_FUZZ_ITERATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000);
    for (name, target) in TARGETS {
        let seeds: Vec<Vec<u8>> =
            files(&fuzz_dir().join("corpus").join(name)).iter().map(|f| std::fs::read(f).unwrap()).collect();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ name.len() as u64);
        let iterations = if *name == "admission" { iterations / 3 } else { iterations };
        for i in 0..iterations {
            let a = &seeds[rng.below(seeds.len())];
            let b = &seeds[rng.below(seeds.len())];
            let input = mutate(&mut rng, a, b);
            let outcome = std::panic::catch_unwind(|| target(&input));
            if outcome.is_err() {
                let dir = std::env::temp_dir().join("pullguard-fuzz-failures");
                std::fs::create_dir_all(&dir).unwrap();
                let path = dir.join(format!("{name}-{i}"));
                std::fs::write(&path, &input).unwrap();
                panic!(
                    "target {name} panicked on input {i}, saved to {}; add it to tests/fuzz/regressions/{name}/",
                    path.display()
                );
            }
        }
    }
}
