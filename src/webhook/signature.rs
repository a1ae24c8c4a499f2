//! `X-Mailchimp-Signature: t=<unix seconds>,v1=<hex>`: HMAC-SHA256 with the webhook's
//! signing secret over `"{t}.{raw body}"`. Several `v1` values may be present (a secret being
//! rotated); one valid value is enough. The timestamp must be within five minutes of now,
//! either way, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How far the signature's timestamp may be from now, in seconds.
pub const WINDOW_SECONDS: i64 = 300;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the X-Mailchimp-Signature header is missing")]
    Missing,
    #[error("the X-Mailchimp-Signature header is malformed")]
    Malformed,
    #[error("the signature's timestamp is more than five minutes from now")]
    OutsideWindow,
    #[error("the signature does not match the body")]
    Mismatch,
}

/// Checks the header against the raw body; `now` is Unix seconds.
pub fn verify(
    secret: &str,
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let (timestamp, signatures) = parse(header)?;
    if (now - timestamp).abs() > WINDOW_SECONDS {
        return Err(SignatureError::OutsideWindow);
    }
    let mac = signed(secret, timestamp, body);
    let valid = signatures
        .iter()
        .any(|candidate| mac.clone().verify_slice(candidate).is_ok());
    if valid {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// The header value for a body, as Mailchimp computes it; for tests and the fake.
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let digest = signed(secret, timestamp, body).finalize().into_bytes();
    format!("t={timestamp},v1={}", hex::encode(digest))
}

fn signed(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

fn parse(header: &str) -> Result<(i64, Vec<Vec<u8>>), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            // Digits only, so that the number signed is the text sent (no sign, no padding
            // a parser would accept).
            Some(("t", value)) => {
                let canonical = !value.is_empty()
                    && value.bytes().all(|b| b.is_ascii_digit())
                    && (value == "0" || !value.starts_with('0'));
                let parsed = value.parse().ok().filter(|_| canonical);
                timestamp = Some(parsed.ok_or(SignatureError::Malformed)?);
            }
            Some(("v1", value)) => {
                signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?)
            }
            _ => {}
        }
    }
    match (timestamp, signatures.is_empty()) {
        (Some(timestamp), false) => Ok((timestamp, signatures)),
        _ => Err(SignatureError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = b"type=subscribe&fired_at=2026-03-02+09%3A15%3A01";

    #[test]
    fn a_timestamp_is_digits_exactly_as_signed() {
        let header = sign("s3cret", 1_000_000, BODY);
        let signature = header.split_once(',').expect("two parts").1;
        for t in ["+1000000", "01000000", " 1000000x", "-1000000", "1e6"] {
            let odd = format!("t={t},{signature}");
            let refused = verify("s3cret", Some(&odd), BODY, 1_000_000);
            assert_eq!(refused, Err(SignatureError::Malformed), "{odd}");
        }
        assert_eq!(verify("s3cret", Some(&header), BODY, 1_000_000), Ok(()));
    }

    #[test]
    fn a_signature_made_with_the_secret_verifies() {
        let header = sign("s3cret", 1_000_000, BODY);
        assert_eq!(verify("s3cret", Some(&header), BODY, 1_000_000), Ok(()));
        assert_eq!(
            verify("s3cret", Some(&header), BODY, 1_000_000 + WINDOW_SECONDS),
            Ok(())
        );
        assert_eq!(
            verify("s3cret", Some(&header), BODY, 1_000_000 - WINDOW_SECONDS),
            Ok(())
        );
    }

    #[test]
    fn a_wrong_secret_body_or_time_fails() {
        let header = sign("s3cret", 1_000_000, BODY);
        assert_eq!(
            verify("other", Some(&header), BODY, 1_000_000),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify("s3cret", Some(&header), b"type=x", 1_000_000),
            Err(SignatureError::Mismatch)
        );
        let late = 1_000_000 + WINDOW_SECONDS + 1;
        assert_eq!(
            verify("s3cret", Some(&header), BODY, late),
            Err(SignatureError::OutsideWindow)
        );
        let early = 1_000_000 - WINDOW_SECONDS - 1;
        assert_eq!(
            verify("s3cret", Some(&header), BODY, early),
            Err(SignatureError::OutsideWindow)
        );
    }

    #[test]
    fn any_of_several_v1_values_may_match() {
        let good = sign("s3cret", 5, BODY);
        let v1 = good.split("v1=").nth(1).unwrap();
        let header = format!("t=5,v1={},v1={v1}", "00".repeat(32));
        assert_eq!(verify("s3cret", Some(&header), BODY, 5), Ok(()));
    }

    #[test]
    fn malformed_or_missing_headers_are_refused() {
        assert_eq!(verify("s", None, BODY, 0), Err(SignatureError::Missing));
        for header in ["", "t=5", "v1=00", "t=x,v1=00", "t=5,v1=zz", "garbage"] {
            assert_eq!(
                verify("s", Some(header), BODY, 5),
                Err(SignatureError::Malformed),
                "{header}"
            );
        }
    }
}
