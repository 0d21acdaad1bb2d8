//! The origin of a delivery requested from a pull request: `owner/name#number`, as the
//! store keeps it, written when the bot queues the delivery and read when it reports back.

use crate::github::GitHubRepo;

/// `repo#number`, the origin recorded with a delivery requested from a pull request.
pub fn origin(repo: &GitHubRepo, number: u64) -> String {
    format!("{repo}#{number}")
}

/// The pull request a delivery was requested from, if any.
pub fn parse_origin(origin: &str) -> Option<(GitHubRepo, u64)> {
    let (repo, number) = origin.rsplit_once('#')?;
    Some((GitHubRepo::parse(repo)?, number.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_round_trip() {
        let r = GitHubRepo::parse("acme/api").unwrap();
        assert_eq!(origin(&r, 12), "acme/api#12");
        assert_eq!(parse_origin("acme/api#12"), Some((r, 12)));
        assert_eq!(parse_origin("tracker"), None);
        assert_eq!(parse_origin("acme/api#x"), None);
        assert_eq!(parse_origin(""), None);
    }
}
