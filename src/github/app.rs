//! The GitHub App: its JWT, signed with ring, and its installations' tokens.
//!
//! An App authenticates as itself with a JWT (RS256, signed with its private key, good for at
//! most ten minutes), and acts on a repository with an installation token minted for that JWT
//! (`POST /app/installations/{id}/access_tokens`, good for an hour). This module does both by
//! hand with ring, the crypto library rustls already uses: octocrab's own App support needs a
//! second one (aws-lc-rs or RustCrypto's RSA) for the one signature lockstep makes.
//!
//! Installation clients are kept by repository and minted again five minutes before their
//! token expires.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use octocrab::Octocrab;
use ring::signature::RsaKeyPair;
use serde::Deserialize;

use super::GitHubRepo;
use super::endpoint::{Endpoint, describe};

/// How long before its expiry an installation token is minted again.
const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A GitHub App: its id, its key, and the installation clients made so far.
pub struct App {
    id: u64,
    endpoint: Endpoint,
    key: RsaKeyPair,
    /// Installation ids already known (from a webhook), sparing a lookup.
    ids: Mutex<HashMap<GitHubRepo, u64>>,
    clients: Mutex<HashMap<GitHubRepo, Installation>>,
}

#[derive(Clone)]
struct Installation {
    crab: Octocrab,
    expires: DateTime<Utc>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("App")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct InstallationJson {
    id: u64,
}

#[derive(Deserialize)]
struct TokenJson {
    token: String,
    expires_at: DateTime<Utc>,
}

impl App {
    /// The App `id` with its private key, PEM as GitHub hands it out (PKCS#1) or PKCS#8.
    pub fn new(id: u64, pem: &[u8], endpoint: Endpoint) -> anyhow::Result<App> {
        Ok(App {
            id,
            endpoint,
            key: key_from_pem(pem)?,
            ids: Mutex::new(HashMap::new()),
            clients: Mutex::new(HashMap::new()),
        })
    }

    /// Records the installation a webhook came from.
    pub fn remember(&self, repo: &GitHubRepo, installation: u64) {
        lock(&self.ids).insert(repo.clone(), installation);
    }

    /// The client to act on `repo` with: its installation's, minted when missing or about to
    /// expire.
    pub async fn client(&self, repo: &GitHubRepo) -> anyhow::Result<Octocrab> {
        let now = Utc::now();
        if let Some(i) = lock(&self.clients).get(repo)
            && i.expires - now > chrono::Duration::from_std(REFRESH_MARGIN).unwrap_or_default()
        {
            return Ok(i.crab.clone());
        }
        let app = self
            .endpoint
            .builder()?
            .personal_token(self.jwt(now.timestamp())?)
            .build()
            .context("cannot build the GitHub client")?;
        let known = lock(&self.ids).get(repo).copied();
        let id = match known {
            Some(id) => id,
            None => {
                let route = format!("/repos/{}/{}/installation", repo.owner, repo.name);
                let inst: InstallationJson = app.get(route, None::<&()>).await.map_err(|e| {
                    anyhow::anyhow!(
                        "the GitHub App is not installed on `{repo}`: {}",
                        describe(&e)
                    )
                })?;
                lock(&self.ids).insert(repo.clone(), inst.id);
                inst.id
            }
        };
        let route = format!("/app/installations/{id}/access_tokens");
        let minted: TokenJson = app.post(route, None::<&()>).await.map_err(|e| {
            anyhow::anyhow!(
                "cannot get a token for the GitHub App's installation {id} (`{repo}`): {}",
                describe(&e)
            )
        })?;
        let crab = self
            .endpoint
            .builder()?
            .personal_token(minted.token)
            .build()
            .context("cannot build the GitHub client")?;
        lock(&self.clients).insert(
            repo.clone(),
            Installation {
                crab: crab.clone(),
                expires: minted.expires_at,
            },
        );
        Ok(crab)
    }

    /// The App's JWT at `now` (seconds since the epoch): issued a minute back (clocks drift),
    /// expiring nine minutes on, under GitHub's ten.
    fn jwt(&self, now: i64) -> anyhow::Result<String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"RS256","typ":"JWT"}"#);
        let claims =
            serde_json::json!({ "iat": now - 60, "exp": now + 540, "iss": self.id.to_string() });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let message = format!("{header}.{claims}");
        let mut signature = vec![0; self.key.public().modulus_len()];
        self.key
            .sign(
                &ring::signature::RSA_PKCS1_SHA256,
                &ring::rand::SystemRandom::new(),
                message.as_bytes(),
                &mut signature,
            )
            .map_err(|_| anyhow::anyhow!("cannot sign the GitHub App's JWT"))?;
        Ok(format!("{message}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The RSA key of a PEM file: `RSA PRIVATE KEY` (PKCS#1, what GitHub hands out) or
/// `PRIVATE KEY` (PKCS#8).
fn key_from_pem(pem: &[u8]) -> anyhow::Result<RsaKeyPair> {
    let text = std::str::from_utf8(pem).context("not a PEM file")?;
    let block = |label: &str| {
        let begin = format!("-----BEGIN {label}-----");
        let end = format!("-----END {label}-----");
        let start = text.find(&begin)? + begin.len();
        let stop = start + text[start..].find(&end)?;
        Some(text[start..stop].split_whitespace().collect::<String>())
    };
    let (body, pkcs8) = match (block("RSA PRIVATE KEY"), block("PRIVATE KEY")) {
        (Some(b), _) => (b, false),
        (None, Some(b)) => (b, true),
        (None, None) => anyhow::bail!("no `BEGIN RSA PRIVATE KEY` or `BEGIN PRIVATE KEY` block"),
    };
    let der = STANDARD
        .decode(body)
        .context("the PEM block is not base64")?;
    let key = if pkcs8 {
        RsaKeyPair::from_pkcs8(&der)
    } else {
        RsaKeyPair::from_der(&der)
    };
    key.map_err(|e| anyhow::anyhow!("not a usable RSA private key: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &[u8] = include_bytes!("../../tests/data/github-app-test-key.pem");

    fn part(token: &str, i: usize) -> Vec<u8> {
        URL_SAFE_NO_PAD
            .decode(token.split('.').nth(i).unwrap())
            .unwrap()
    }

    #[test]
    fn the_jwt_is_rs256_over_its_claims_and_checks_against_the_public_key() {
        let app = App::new(77, PEM, Endpoint::for_tests()).unwrap();
        let token = app.jwt(1_700_000_000).unwrap();
        assert_eq!(token.split('.').count(), 3);
        let header: serde_json::Value = serde_json::from_slice(&part(&token, 0)).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "RS256", "typ": "JWT"}));
        let claims: serde_json::Value = serde_json::from_slice(&part(&token, 1)).unwrap();
        assert_eq!(
            claims,
            serde_json::json!({"iat": 1_699_999_940, "exp": 1_700_000_540, "iss": "77"})
        );

        let public = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            app.key.public().as_ref(),
        );
        let (message, _) = token.rsplit_once('.').unwrap();
        public.verify(message.as_bytes(), &part(&token, 2)).unwrap();
        // The signature covers the claims: another App id's claims do not check.
        let other = App::new(78, PEM, Endpoint::for_tests())
            .unwrap()
            .jwt(1_700_000_000)
            .unwrap();
        let (other_message, _) = other.rsplit_once('.').unwrap();
        assert!(
            public
                .verify(other_message.as_bytes(), &part(&token, 2))
                .is_err()
        );
    }

    #[test]
    fn keys_are_read_from_pkcs1_and_refused_with_a_reason() {
        assert!(key_from_pem(PEM).is_ok());
        let err = key_from_pem(b"hello").unwrap_err().to_string();
        assert!(err.contains("BEGIN RSA PRIVATE KEY"), "{err}");
        let err =
            key_from_pem(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("not a usable RSA private key"), "{err}");
    }
}
