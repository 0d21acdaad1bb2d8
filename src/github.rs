//! GitHub: the API client `lockstep serve` talks through, and the pure parts of GitHub's
//! semantics (webhook signatures, who approved a pull request).
//!
//! One concrete client (octocrab) with a configurable base URL; tests point it at a fake
//! GitHub over HTTP. Responses are read into the few fields lockstep uses, so a field GitHub
//! adds or drops elsewhere in a payload cannot break a delivery.
//!
//! Secrets (the token, the App's key, the webhook secret) live in [`SecretString`]s: they are
//! redacted in `Debug` and never logged.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use anyhow::Context as _;
use octocrab::Octocrab;
use secrecy::{ExposeSecret as _, SecretString};
use serde::Deserialize;

use crate::config::{Config, GitHubConfig};
pub use crate::domain::RepoName;

/// A pull request, as lockstep reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pull {
    pub number: u64,
    pub author: String,
    pub head_ref: String,
    pub head_sha: String,
    /// The repository the head branch is in (`owner/name`; a fork's differs), "" if unknown.
    pub head_repo: String,
    /// `open` or `closed`.
    pub state: String,
}

/// One review as GitHub lists it (oldest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReviewEntry {
    pub user: String,
    /// `APPROVED`, `CHANGES_REQUESTED`, `COMMENTED`, `DISMISSED`, `PENDING`.
    pub state: String,
}

/// The latest review that counts per reviewer, in the order reviewers first appear.
///
/// As on GitHub's own page: a `COMMENTED` (or `PENDING`) review neither grants nor revokes
/// an approval, so it is skipped; a dismissed review stays `DISMISSED` and does not count.
pub fn latest_reviews(reviews: &[ReviewEntry]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for r in reviews {
        if !matches!(
            r.state.as_str(),
            "APPROVED" | "CHANGES_REQUESTED" | "DISMISSED"
        ) {
            continue;
        }
        match out
            .iter_mut()
            .find(|(u, _)| u.eq_ignore_ascii_case(&r.user))
        {
            Some(slot) => slot.1 = r.state.clone(),
            None => out.push((r.user.clone(), r.state.clone())),
        }
    }
    out
}

/// What a user may do on a repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Admin,
    Maintain,
    Write,
    Triage,
    Read,
    None,
}

impl Permission {
    /// From GitHub's `permission` and `role_name` fields (`role_name` is the finer one).
    pub fn from_api(permission: &str, role_name: &str) -> Permission {
        let p = |s: &str| match s {
            "admin" => Some(Permission::Admin),
            "maintain" => Some(Permission::Maintain),
            "write" | "push" => Some(Permission::Write),
            "triage" => Some(Permission::Triage),
            "read" | "pull" => Some(Permission::Read),
            _ => None,
        };
        p(role_name)
            .or_else(|| p(permission))
            .unwrap_or(Permission::None)
    }

    /// Whether this lets someone command the bot (admin, maintain or write).
    pub fn can_write(self) -> bool {
        matches!(
            self,
            Permission::Admin | Permission::Maintain | Permission::Write
        )
    }
}

/// A commit status state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

impl StatusState {
    pub fn as_str(self) -> &'static str {
        match self {
            StatusState::Pending => "pending",
            StatusState::Success => "success",
            StatusState::Failure => "failure",
            StatusState::Error => "error",
        }
    }
}

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

/// Reads a secret from the environment variable `var`.
pub fn secret_from_env(var: &str) -> anyhow::Result<SecretString> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => Ok(SecretString::from(v.trim().to_string())),
        _ => anyhow::bail!("`{var}` is not set; put the secret in that variable"),
    }
}

/// How the client authenticates.
enum Auth {
    Token(Octocrab),
    App {
        app: Octocrab,
        /// Installation clients by repository; each caches and refreshes its own token.
        installations: Mutex<HashMap<RepoName, Octocrab>>,
    },
}

/// The GitHub API client of `lockstep serve`, and of the commands that read pull requests.
pub struct GitHub {
    auth: Auth,
    /// The webhook secret (only `serve` reads webhooks).
    pub webhook_secret: Option<SecretString>,
    pub api_url: String,
}

impl fmt::Debug for GitHub {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.api_url)
            .field(
                "auth",
                &match self.auth {
                    Auth::Token(_) => "token",
                    Auth::App { .. } => "app",
                },
            )
            .field("webhook_secret", &self.webhook_secret)
            .finish()
    }
}

#[derive(Deserialize)]
struct UserJson {
    login: String,
}

#[derive(Deserialize)]
struct HeadJson {
    #[serde(rename = "ref")]
    ref_: String,
    sha: String,
    /// Null when the fork it came from was deleted.
    repo: Option<HeadRepoJson>,
}

#[derive(Deserialize)]
struct HeadRepoJson {
    full_name: String,
}

impl From<PullJson> for Pull {
    fn from(p: PullJson) -> Pull {
        Pull {
            number: p.number,
            author: p.user.map(|u| u.login).unwrap_or_default(),
            head_ref: p.head.ref_,
            head_sha: p.head.sha,
            head_repo: p.head.repo.map(|r| r.full_name).unwrap_or_default(),
            state: p.state,
        }
    }
}

#[derive(Deserialize)]
struct PullJson {
    number: u64,
    state: String,
    user: Option<UserJson>,
    head: HeadJson,
}

#[derive(Deserialize)]
struct ReviewJson {
    user: Option<UserJson>,
    state: String,
}

#[derive(Deserialize)]
struct PermissionJson {
    #[serde(default)]
    permission: String,
    #[serde(default)]
    role_name: String,
}

#[derive(Deserialize)]
struct InstallationJson {
    id: u64,
}

/// A GitHub error in one line: the status and GitHub's message, never a backtrace.
pub fn describe(e: &octocrab::Error) -> String {
    match e {
        octocrab::Error::GitHub { source, .. } => {
            format!("GitHub answered {}: {}", source.status_code, source.message)
        }
        other => {
            let text = other.to_string();
            text.lines()
                .next()
                .unwrap_or("GitHub call failed")
                .to_string()
        }
    }
}

fn status_of(e: &octocrab::Error) -> Option<u16> {
    match e {
        octocrab::Error::GitHub { source, .. } => Some(source.status_code.as_u16()),
        _ => None,
    }
}

/// Percent-encodes one path segment (a login from a webhook is not trusted to be URL-safe).
fn segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

impl GitHub {
    /// Builds the client from `[github]`, reading the secrets it names.
    pub fn from_config(config: &Config, gh: &GitHubConfig) -> anyhow::Result<GitHub> {
        let webhook_secret = secret_from_env(&gh.webhook_secret_env)
            .context("the GitHub webhook secret is missing (`github.webhook_secret_env`)")?;
        let mut client = GitHub::api_only(config, gh)?;
        client.webhook_secret = Some(webhook_secret);
        Ok(client)
    }

    /// Builds a client for the API alone (no webhooks), e.g. for `lockstep deliver` to read
    /// pull requests: it needs the token or App key of `[github]`, not the webhook secret.
    pub fn api_only(config: &Config, gh: &GitHubConfig) -> anyhow::Result<GitHub> {
        let builder = || -> anyhow::Result<octocrab::OctocrabBuilder<_, _, _, _>> {
            Ok(Octocrab::builder()
                .base_uri(gh.api_url.as_str())
                .with_context(|| format!("bad `github.api_url` `{}`", gh.api_url))?
                .set_connect_timeout(Some(gh.timeout))
                .set_read_timeout(Some(gh.timeout))
                .set_write_timeout(Some(gh.timeout)))
        };
        let auth = match (gh.app_id, &gh.private_key_path) {
            (Some(app_id), Some(key_path)) => {
                let path = config.resolve(key_path);
                let pem = std::fs::read(&path).with_context(|| {
                    format!("cannot read the GitHub App key `{}`", path.display())
                })?;
                let key = octocrab::jsonwebtoken::EncodingKey::from_rsa_pem(&pem)
                    .with_context(|| format!("`{}` is not an RSA PEM key", path.display()))?;
                let app = builder()?
                    .app(app_id.into(), key)
                    .build()
                    .context("cannot build the GitHub client")?;
                Auth::App {
                    app,
                    installations: Mutex::new(HashMap::new()),
                }
            }
            _ => {
                let var = gh.token_env.as_deref().unwrap_or("GITHUB_TOKEN");
                let token = secret_from_env(var)
                    .context("the GitHub token is missing (`github.token_env`)")?;
                let crab = builder()?
                    .personal_token(token)
                    .build()
                    .context("cannot build the GitHub client")?;
                Auth::Token(crab)
            }
        };
        Ok(GitHub {
            auth,
            webhook_secret: None,
            api_url: gh.api_url.clone(),
        })
    }

    /// Records the App installation a webhook came from, sparing a lookup.
    pub fn remember_installation(&self, repo: &RepoName, id: u64) {
        if let Auth::App { app, installations } = &self.auth
            && let Ok(crab) = app.installation(id.into())
        {
            let mut map = installations.lock().unwrap_or_else(|e| e.into_inner());
            map.entry(repo.clone()).or_insert(crab);
        }
    }

    /// The client to act on a repository with.
    async fn client(&self, repo: &RepoName) -> anyhow::Result<Octocrab> {
        match &self.auth {
            Auth::Token(crab) => Ok(crab.clone()),
            Auth::App { app, installations } => {
                if let Some(c) = installations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get(repo)
                {
                    return Ok(c.clone());
                }
                let route = format!("/repos/{}/{}/installation", repo.owner, repo.name);
                let inst: InstallationJson = app.get(route, None::<&()>).await.map_err(|e| {
                    anyhow::anyhow!(
                        "the GitHub App is not installed on `{repo}`: {}",
                        describe(&e)
                    )
                })?;
                let crab = app
                    .installation(inst.id.into())
                    .map_err(|e| anyhow::anyhow!("{}", describe(&e)))?;
                installations
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(repo.clone(), crab.clone());
                Ok(crab)
            }
        }
    }

    /// `GET /repos/{o}/{r}/pulls/{n}`.
    pub async fn pull(&self, repo: &RepoName, number: u64) -> anyhow::Result<Pull> {
        let crab = self.client(repo).await?;
        let route = format!("/repos/{}/{}/pulls/{number}", repo.owner, repo.name);
        let p: PullJson = crab
            .get(route, None::<&()>)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {repo}#{number}: {}", describe(&e)))?;
        Ok(Pull::from(p))
    }

    /// The open pull requests of a repository (`GET /repos/{o}/{r}/pulls?state=open`, every
    /// page up to 3,000).
    pub async fn open_pulls(&self, repo: &RepoName) -> anyhow::Result<Vec<Pull>> {
        let route = format!("/repos/{}/{}/pulls?state=open", repo.owner, repo.name);
        let pulls: Vec<PullJson> = self
            .all_pages(repo, &route, || {
                format!("cannot list the pull requests of {repo}")
            })
            .await?;
        Ok(pulls.into_iter().map(Pull::from).collect())
    }

    /// Every review of a pull request, oldest first (all pages).
    pub async fn reviews(&self, repo: &RepoName, number: u64) -> anyhow::Result<Vec<ReviewEntry>> {
        let route = format!("/repos/{}/{}/pulls/{number}/reviews", repo.owner, repo.name);
        let reviews: Vec<ReviewJson> = self
            .all_pages(repo, &route, || {
                format!("cannot read the reviews of {repo}#{number}")
            })
            .await?;
        Ok(reviews
            .into_iter()
            .map(|r| ReviewEntry {
                user: r.user.map(|u| u.login).unwrap_or_default(),
                state: r.state,
            })
            .collect())
    }

    /// Every item of a listing, 100 a page, up to 30 pages (3,000 items).
    async fn all_pages<T: serde::de::DeserializeOwned>(
        &self,
        repo: &RepoName,
        route: &str,
        what: impl Fn() -> String,
    ) -> anyhow::Result<Vec<T>> {
        let crab = self.client(repo).await?;
        let join = if route.contains('?') { '&' } else { '?' };
        let mut out = Vec::new();
        for page in 1..=30u32 {
            let batch: Vec<T> = crab
                .get(
                    format!("{route}{join}per_page=100&page={page}"),
                    None::<&()>,
                )
                .await
                .map_err(|e| anyhow::anyhow!("{}: {}", what(), describe(&e)))?;
            let n = batch.len();
            out.extend(batch);
            if n < 100 {
                break;
            }
        }
        Ok(out)
    }

    /// `GET /repos/{o}/{r}/collaborators/{user}/permission` (a non-collaborator has none).
    pub async fn permission(&self, repo: &RepoName, user: &str) -> anyhow::Result<Permission> {
        let crab = self.client(repo).await?;
        let route = format!(
            "/repos/{}/{}/collaborators/{}/permission",
            repo.owner,
            repo.name,
            segment(user)
        );
        match crab.get::<PermissionJson, _, _>(route, None::<&()>).await {
            Ok(p) => Ok(Permission::from_api(&p.permission, &p.role_name)),
            Err(e) if status_of(&e) == Some(404) => Ok(Permission::None),
            Err(e) => Err(anyhow::anyhow!(
                "cannot read `{user}`'s permission on {repo}: {}",
                describe(&e)
            )),
        }
    }

    /// Posts a comment on an issue or pull request.
    pub async fn comment(&self, repo: &RepoName, number: u64, body: &str) -> anyhow::Result<()> {
        let crab = self.client(repo).await?;
        let route = format!(
            "/repos/{}/{}/issues/{number}/comments",
            repo.owner, repo.name
        );
        crab.post::<_, serde_json::Value>(route, Some(&serde_json::json!({ "body": body })))
            .await
            .map_err(|e| anyhow::anyhow!("cannot comment on {repo}#{number}: {}", describe(&e)))?;
        Ok(())
    }

    /// Sets the `lockstep` commit status on a commit.
    pub async fn status(
        &self,
        repo: &RepoName,
        sha: &str,
        state: StatusState,
        description: &str,
        target_url: &str,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            crate::git::is_oid(sha),
            "`{sha}` is not a commit id; no status set"
        );
        let crab = self.client(repo).await?;
        let route = format!("/repos/{}/{}/statuses/{sha}", repo.owner, repo.name);
        // GitHub caps the description at 140 characters.
        let description: String = description.chars().take(140).collect();
        let body = serde_json::json!({
            "state": state.as_str(),
            "context": STATUS_CONTEXT,
            "description": description,
            "target_url": target_url,
        });
        crab.post::<_, serde_json::Value>(route, Some(&body))
            .await
            .map_err(|e| {
                anyhow::anyhow!("cannot set the status of {repo}@{sha}: {}", describe(&e))
            })?;
        Ok(())
    }
}

/// The context of lockstep's commit status.
pub const STATUS_CONTEXT: &str = "lockstep";

#[cfg(test)]
mod tests {
    use super::*;

    fn r(user: &str, state: &str) -> ReviewEntry {
        ReviewEntry {
            user: user.into(),
            state: state.into(),
        }
    }

    #[test]
    fn latest_review_per_person_counts() {
        let reviews = [
            r("bob", "APPROVED"),
            r("carol", "CHANGES_REQUESTED"),
            r("bob", "COMMENTED"),
            r("carol", "APPROVED"),
            r("dave", "APPROVED"),
            r("dave", "DISMISSED"),
            r("erin", "COMMENTED"),
            r("Bob", "PENDING"),
        ];
        assert_eq!(
            latest_reviews(&reviews),
            [
                ("bob".to_string(), "APPROVED".to_string()),
                ("carol".into(), "APPROVED".into()),
                ("dave".into(), "DISMISSED".into()),
            ]
        );
        let pr = crate::delivery::PrFacts {
            author: "carol".into(),
            reviews: latest_reviews(&reviews),
            ..Default::default()
        };
        // carol approving her own pull request does not count; dave's was dismissed.
        assert_eq!(pr.approvals(), 1);
        let later = [r("bob", "APPROVED"), r("bob", "CHANGES_REQUESTED")];
        assert_eq!(
            latest_reviews(&later),
            [("bob".to_string(), "CHANGES_REQUESTED".to_string())]
        );
    }

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

    #[test]
    fn secrets_stay_out_of_debug() {
        let secret = SecretString::from("hunter2".to_string());
        assert!(!format!("{secret:?}").contains("hunter2"));
    }

    #[test]
    fn permissions() {
        assert!(Permission::from_api("write", "maintain").can_write());
        assert!(Permission::from_api("admin", "").can_write());
        assert!(!Permission::from_api("read", "triage").can_write());
        assert!(!Permission::from_api("none", "").can_write());
        assert_eq!(segment("bot[bot]"), "bot%5Bbot%5D");
    }
}
