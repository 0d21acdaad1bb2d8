//! The push's context: who pushes (from the git server's variables), to which repository
//! of the ecosystem, with which push options.

use crate::config::Config;

/// Who pushes, to which repository, with which options.
#[derive(Debug, Clone, Default)]
pub struct PushContext {
    pub repo: String,
    pub pusher: String,
    pub options: Vec<String>,
}

/// The pusher named by the first set variable of `[identity] env`.
pub fn pusher_from_env(config: &Config) -> String {
    config
        .identity
        .env
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_default()
}

/// `GIT_PUSH_OPTION_0..N`, as git hands them to hooks.
pub fn push_options_from_env() -> Vec<String> {
    let count: usize = std::env::var("GIT_PUSH_OPTION_COUNT")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (0..count.min(1000))
        .filter_map(|i| std::env::var(format!("GIT_PUSH_OPTION_{i}")).ok())
        .collect()
}

/// The ecosystem name of the repository a hook runs in: from the git server's variables,
/// else by matching its path with a `[[repo]] url`, else its folder name without `.git`.
pub fn repo_name(config: &Config, git_dir: &std::path::Path) -> String {
    for var in [
        "GL_REPO",
        "GL_PROJECT_PATH",
        "GITHUB_REPO_NAME",
        "GITEA_REPO_NAME",
    ] {
        if let Some(v) = std::env::var(var).ok().filter(|v| !v.is_empty()) {
            if let Some(r) = config
                .repos
                .iter()
                .find(|r| r.name == v || r.github.as_deref() == Some(&v))
            {
                return r.name.to_string();
            }
            let last = v.rsplit('/').next().unwrap_or(&v).trim_end_matches(".git");
            if let Some(r) = config.repos.iter().find(|r| r.name == last) {
                return r.name.to_string();
            }
            return v;
        }
    }
    let here = std::fs::canonicalize(git_dir).ok();
    if let Some(here) = &here {
        for r in &config.repos {
            let url = r.url.strip_prefix("file://").unwrap_or(&r.url);
            if std::fs::canonicalize(config.resolve(std::path::Path::new(url)))
                .ok()
                .as_ref()
                == Some(here)
            {
                return r.name.to_string();
            }
        }
    }
    let path = here.unwrap_or_else(|| git_dir.to_path_buf());
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name.strip_suffix(".git").unwrap_or(&name).to_string();
    if name == ".git" || name.is_empty() {
        path.parent()
            .and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    } else {
        name
    }
}
