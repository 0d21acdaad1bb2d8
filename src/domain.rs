//! The domain's vocabulary: the small value types every layer speaks in.
//!
//! A type lives here when the core (policy, delivery, store, config) and the edges (hooks,
//! server, the GitHub and tracker clients) both name it, so that no module has to import
//! another's room to say what it means. Each is plain data with its parsing and formatting:
//! no I/O, no dependency on any other module of the crate.
//!
//! Today: [`RepoName`], GitHub's `owner/name`. Delivery ids, task keys and the phases of a
//! delivery belong here too as they become types of their own.

use std::fmt;

/// `owner/name` of a GitHub repository.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepoName {
    pub owner: String,
    pub name: String,
}

impl RepoName {
    /// Parses `owner/name`; `None` unless both parts are GitHub-style names.
    pub fn parse(full: &str) -> Option<RepoName> {
        let (owner, name) = full.split_once('/')?;
        let ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 100
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && s != "."
                && s != ".."
        };
        (ok(owner) && ok(name)).then(|| RepoName {
            owner: owner.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_names() {
        assert_eq!(RepoName::parse("acme/api").unwrap().to_string(), "acme/api");
        for bad in [
            "acme",
            "acme/",
            "/api",
            "a/b/c",
            "acme/a pi",
            "../x",
            "a/..",
        ] {
            assert!(RepoName::parse(bad).is_none(), "{bad}");
        }
    }
}
