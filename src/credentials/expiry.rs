//! Credentials that carry their own end: an Amazon ECR authorization token (the docker password is base64 of
//! a JSON document with `expiration`, Unix seconds; ECR tokens last 12 hours) and a JWT (`exp` in its claims,
//! as registry tokens from GitLab, Harbor robot accounts or a cloud's federation are). A pull secret holding
//! one works today and fails after that instant, with every pod that pulls afterwards (a reschedule, a
//! scale-up, a new node) in ImagePullBackOff.
//!
//! Only the expiry is read; the token is never kept, logged or shown.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::Value;

/// Longer passwords are not looked into: an attacker-written pull secret costs bounded work.
const MAX_TOKEN: usize = 16 * 1024;

/// When a credential stops working, and what kind of credential says so.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Expiry {
    /// Unix seconds.
    pub at: i64,
    pub what: &'static str,
}

/// The expiry a credential's password carries, if it carries one ([`Credential::expiry`](super::Credential::expiry) keeps it).
pub fn of_token(password: &str) -> Option<Expiry> {
    let token = password.trim();
    if token.is_empty() || token.len() > MAX_TOKEN {
        return None;
    }
    jwt_exp(token)
        .map(|at| Expiry { at, what: "token (a JWT)" })
        .or_else(|| ecr_expiration(token).map(|at| Expiry { at, what: "ECR authorization token" }))
}

/// `header.claims.signature`, base64url without padding: the claims' `exp`.
fn jwt_exp(token: &str) -> Option<i64> {
    let mut parts = token.split('.');
    let (_header, claims, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let claims = URL_SAFE_NO_PAD.decode(claims.trim_end_matches('=')).ok()?;
    seconds(serde_json::from_slice::<Value>(&claims).ok()?.get("exp")?)
}

/// The ECR password: standard base64 of `{"payload":…,"datakey":…,"version":"2","type":"DATA_KEY","expiration":…}`.
fn ecr_expiration(token: &str) -> Option<i64> {
    let json = STANDARD.decode(token).ok()?;
    let v: Value = serde_json::from_slice(&json).ok()?;
    v.get("payload")?;
    seconds(v.get("expiration")?)
}

fn seconds(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_f64().filter(|f| f.is_finite() && f.abs() < 1e15).map(|f| f as i64))
}

/// `2026-11-23T14:05:00Z`.
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::super::Credential;
    use super::*;

    fn cred(password: &str) -> Credential {
        Credential::new("AWS", password)
    }

    #[test]
    fn ecr_tokens_and_jwts_say_when_they_end() {
        let ecr =
            STANDARD.encode(r#"{"payload":"p","datakey":"d","version":"2","type":"DATA_KEY","expiration":1795000000}"#);
        assert_eq!(cred(&ecr).expiry(), Some(Expiry { at: 1_795_000_000, what: "ECR authorization token" }));
        let claims = URL_SAFE_NO_PAD.encode(r#"{"sub":"robot$ci","exp":1795000000.0}"#);
        let jwt = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln");
        assert_eq!(cred(&jwt).expiry().map(|e| e.at), Some(1_795_000_000));
        for plain in ["alice-password", "a.b.c", "", "e30.e30.e30", &STANDARD.encode(r#"{"expiration":1}"#)] {
            assert_eq!(cred(plain).expiry(), None, "{plain}");
        }
        assert_eq!(cred(&"a".repeat(MAX_TOKEN + 1)).expiry(), None);
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
    }
}
