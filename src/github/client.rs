//! The GitHub API client: reads pull requests, reviews and permissions, writes comments and
//! commit statuses, as a token or as a GitHub App installation.

use std::fmt;

use anyhow::Context as _;
use octocrab::Octocrab;
use secrecy::SecretString;
use serde::Deserialize;

use super::app::App;
use super::endpoint::{Endpoint, describe};
use super::{GitHubRepo, Permission, Pull, ReviewEntry, STATUS_CONTEXT, StatusState};
use crate::config::{Config, GitHubConfig};
use crate::domain::PrState;

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
    App(Box<App>),
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
    state: PrState,
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
        let endpoint = Endpoint {
            api_url: gh.api_url.clone(),
            timeout: gh.timeout,
        };
        let auth = match (gh.app_id, &gh.private_key_path) {
            (Some(app_id), Some(key_path)) => {
                let path = config.resolve(key_path);
                let pem = std::fs::read(&path).with_context(|| {
                    format!("cannot read the GitHub App key `{}`", path.display())
                })?;
                let app = App::new(app_id, &pem, endpoint)
                    .with_context(|| format!("`{}` is not an RSA PEM key", path.display()))?;
                Auth::App(Box::new(app))
            }
            _ => {
                let var = gh.token_env.as_deref().unwrap_or("GITHUB_TOKEN");
                let token = secret_from_env(var)
                    .context("the GitHub token is missing (`github.token_env`)")?;
                let crab = endpoint
                    .builder()?
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
    pub fn remember_installation(&self, repo: &GitHubRepo, id: u64) {
        if let Auth::App(app) = &self.auth {
            app.remember(repo, id);
        }
    }

    /// The client to act on a repository with.
    pub(super) async fn client(&self, repo: &GitHubRepo) -> anyhow::Result<Octocrab> {
        match &self.auth {
            Auth::Token(crab) => Ok(crab.clone()),
            Auth::App(app) => app.client(repo).await,
        }
    }

    /// `GET /repos/{o}/{r}/pulls/{n}`.
    pub async fn pull(&self, repo: &GitHubRepo, number: u64) -> anyhow::Result<Pull> {
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
    pub async fn open_pulls(&self, repo: &GitHubRepo) -> anyhow::Result<Vec<Pull>> {
        let route = format!("/repos/{}/{}/pulls?state=open", repo.owner, repo.name);
        let pulls: Vec<PullJson> = self
            .all_pages(repo, &route, || {
                format!("cannot list the pull requests of {repo}")
            })
            .await?;
        Ok(pulls.into_iter().map(Pull::from).collect())
    }

    /// Every review of a pull request, oldest first (all pages).
    pub async fn reviews(
        &self,
        repo: &GitHubRepo,
        number: u64,
    ) -> anyhow::Result<Vec<ReviewEntry>> {
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
        repo: &GitHubRepo,
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
    pub async fn permission(&self, repo: &GitHubRepo, user: &str) -> anyhow::Result<Permission> {
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
    pub async fn comment(&self, repo: &GitHubRepo, number: u64, body: &str) -> anyhow::Result<()> {
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
        repo: &GitHubRepo,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The test App key of the integration tests: a real RSA key, known to no GitHub.
    fn app_key() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/github-app-test-key.pem")
    }

    /// The client's `Debug` (what a `{:?}` in a log would print) says how it authenticates,
    /// never with what: no line of the App's key, no webhook secret.
    #[tokio::test]
    async fn the_client_debug_shows_no_secret() {
        let config = Config::parse_str(&format!(
            "[github]\napp_id = 77\nprivate_key_path = {}\n",
            toml::Value::from(app_key().to_string_lossy().as_ref())
        ))
        .unwrap();
        let mut client = GitHub::api_only(&config, config.github.as_ref().unwrap()).unwrap();
        client.webhook_secret = Some(SecretString::from("whsec-hunter2".to_string()));
        let debug = format!("{client:?}");
        assert!(debug.contains(r#"auth: "app""#), "{debug}");
        assert!(debug.contains("https://api.github.com"), "{debug}");
        assert!(!debug.contains("whsec-hunter2"), "{debug}");
        let pem = std::fs::read_to_string(app_key()).unwrap();
        for line in pem.lines().filter(|l| !l.starts_with("-----")) {
            assert!(!debug.contains(line), "{debug}");
        }
    }

    #[test]
    fn logins_are_escaped_in_paths() {
        assert_eq!(segment("bot[bot]"), "bot%5Bbot%5D");
    }
}
