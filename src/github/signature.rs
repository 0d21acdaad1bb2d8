//! Webhook signatures: GitHub signs each delivery's body with the shared secret
//! (`X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`); a body whose signature does not match
//! is not read.

use secrecy::{ExposeSecret as _, SecretString};

/// Why a webhook's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no `X-Hub-Signature-256` header")]
    Missing,
    #[error("`X-Hub-Signature-256` does not match the body: {0}")]
    Invalid(String),
}

/// Checks `X-Hub-Signature-256` (`sha256=<hex HMAC-SHA256 of the body>`) in constant time.
pub fn check_signature(
    secret: &SecretString,
    header: Option<&str>,
    body: &[u8],
) -> Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    octocrab::models::webhook_events::verify_signature(
        header,
        secret.expose_secret().as_bytes(),
        body,
    )
    .map_err(|e| SignatureError::Invalid(e.to_string()))
}

/// Signs a body the way GitHub does (for tests and the benchmark).
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::{KeyInit as _, Mac as _};
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let secret = SecretString::from("It's a Secret to Everybody".to_string());
        let body = b"Hello, World!";
        // GitHub's documented example.
        let good = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert_eq!(sign("It's a Secret to Everybody", body), good);
        assert_eq!(check_signature(&secret, Some(good), body), Ok(()));
        assert_eq!(
            check_signature(&secret, None, body),
            Err(SignatureError::Missing)
        );
        for bad in [
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e18",
            "sha1=2a6f81a7cf73cfb841e25eecb23e75e927595c55",
            "757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            "sha256=zz",
            "sha256=",
            "",
        ] {
            assert!(
                matches!(
                    check_signature(&secret, Some(bad), body),
                    Err(SignatureError::Invalid(_))
                ),
                "{bad}"
            );
        }
        assert!(check_signature(&secret, Some(good), b"Hello, World?").is_err());
    }
}
