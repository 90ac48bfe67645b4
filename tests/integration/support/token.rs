//! A token issuer for the registry's `auth.token` mode: RS256 JWTs whose `x5c` carries the signer
//! certificate listed in the registry's `rootcertbundle`.
//!
//! Users: alice (pull on everything), bob (pull on `team/*` only), AWS with an unexpired ECR-shaped token
//! (as alice). Anonymous: pull on `library/*` and
//! `public/*`, like Docker Hub's public images. Wrong passwords get 401 from the issuer itself; a user without
//! access gets a token with empty `access`, and the registry then answers 401.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::json;

use super::http::{Action, Request, Response, Server};

pub const SERVICE: &str = "pullguard-test-registry";
pub const ISSUER: &str = "pullguard-test-issuer";

pub fn users() -> Vec<(&'static str, &'static str)> {
    vec![("alice", "alice-password"), ("bob", "bob-password")]
}

/// Like ECR, user `AWS` with an authorization token as password: base64 of a JSON document whose
/// `expiration` (Unix seconds) has not passed. Ours carry `"payload": "pullguard-test"`; see [`ecr_token`].
fn ecr_token_valid(password: &str) -> bool {
    let Ok(json) = STANDARD.decode(password) else { return false };
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&json) else { return false };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    v["payload"] == "pullguard-test" && v["expiration"].as_i64().is_some_and(|at| at > now)
}

/// An ECR-shaped authorization token that expires `in_secs` from now (negative: already expired).
pub fn ecr_token(in_secs: i64) -> String {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let doc = json!({"payload": "pullguard-test", "datakey": "k", "version": "2", "type": "DATA_KEY",
        "expiration": now + in_secs});
    STANDARD.encode(doc.to_string())
}

fn allowed(user: Option<&str>, repo: &str) -> bool {
    match user {
        Some("alice") | Some("AWS") => true,
        Some("bob") => repo.starts_with("team/") || repo.starts_with("library/") || repo.starts_with("public/"),
        _ => repo.starts_with("library/") || repo.starts_with("public/"),
    }
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).expect("fixture PEM")
}

pub async fn start_issuer() -> Server {
    let fixtures = super::fixtures();
    let key_pem = std::fs::read_to_string(fixtures.join("pki/token-signer-key.pem")).unwrap();
    let cert_pem = std::fs::read_to_string(fixtures.join("pki/token-signer.pem")).unwrap();
    let key = aws_lc_rs::signature::RsaKeyPair::from_pkcs8(&pem_der(&key_pem)).expect("signer key");
    let x5c = STANDARD.encode(pem_der(&cert_pem));
    let counter = AtomicU64::new(0);
    Server::start("127.0.0.1", move |req: &Request| {
        let user = match req.header("authorization").and_then(|h| h.strip_prefix("Basic ")) {
            None => None,
            Some(b64) => {
                let decoded = String::from_utf8(STANDARD.decode(b64).unwrap_or_default()).unwrap_or_default();
                let (u, p) = decoded.split_once(':').unwrap_or_default();
                let known = users().iter().any(|(uu, pp)| *uu == u && *pp == p);
                let ecr = u == "AWS" && ecr_token_valid(p);
                if !known && !ecr {
                    return Action::Respond(
                        Response::new(401).json(&json!({"details": "incorrect username or password"})),
                    );
                }
                Some(u.to_string())
            }
        };
        let scope = req.query("scope").unwrap_or_default();
        let mut access = vec![];
        let parts: Vec<&str> = scope.split(':').collect();
        if parts.len() == 3 && parts[0] == "repository" && allowed(user.as_deref(), parts[1]) {
            access.push(json!({"type": "repository", "name": parts[1], "actions": ["pull"]}));
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "x5c": [x5c]});
        let claims = json!({
            "iss": ISSUER, "sub": user.clone().unwrap_or_default(), "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now,
            "jti": format!("jti-{}", counter.fetch_add(1, Ordering::Relaxed)), "access": access,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header).unwrap()),
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap())
        );
        let mut sig = vec![0u8; key.public_modulus_len()];
        key.sign(
            &aws_lc_rs::signature::RSA_PKCS1_SHA256,
            &aws_lc_rs::rand::SystemRandom::new(),
            signing_input.as_bytes(),
            &mut sig,
        )
        .expect("sign");
        let jwt = format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig));
        Action::Respond(Response::new(200).json(&json!({"token": jwt, "access_token": jwt, "expires_in": 300})))
    })
    .await
}
