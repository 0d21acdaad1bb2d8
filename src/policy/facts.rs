//! Facts: the named values rules read, and the CEL values a task, a commit or a map of
//! fields becomes. What each stage sets is the caller's business (`push`, `delivery`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::Value;
use cel::common::value::Val;

/// The facts known at every stage, for checking that rules name only known ones.
pub const FACTS: &[&str] = &[
    "repo",
    "ref",
    "branch",
    "tag",
    "old",
    "new",
    "created",
    "deleted",
    "fast_forward",
    "rewind",
    "pusher",
    "bot",
    "maintainers",
    "protected",
    "candidate_prefix",
    "task",
    "commits",
    "push_options",
    "now",
    "tracker",
    "in_progress",
    "for_delivery",
    "commit",
    "requester",
    "approvals",
    "reviews",
    "pr",
    "repos",
    "branches",
    "teams",
    "delivery",
];

/// The named values a rule is evaluated against.
///
/// The new commits are kept as plain data: a push can bring a hundred thousand of them, and
/// an `each = "commit"` rule sees them one at a time, borrowed ([`commit_val_of`]). The CEL list
/// `commits` is built only if something reads it.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub vars: BTreeMap<String, Value>,
    commits: Option<Arc<Vec<crate::git::CommitInfo>>>,
    commits_value: std::sync::OnceLock<Value>,
}

impl Facts {
    pub fn set(&mut self, name: &str, value: impl Into<Value>) -> &mut Self {
        self.vars.insert(name.to_string(), value.into());
        self
    }

    /// The facts every stage reads about the ecosystem: the bot and its maintainers, the
    /// protected branches, the candidate branches' prefix, the tracker (by a name fit for messages) and its statuses.
    pub fn set_ecosystem(&mut self, config: &crate::config::Config, tracker: &str) -> &mut Self {
        let tracker = if tracker == "file" {
            "the tasks file"
        } else {
            tracker
        };
        self.set("bot", config.bot.user.as_str())
            .set("maintainers", config.bot.maintainers.clone())
            .set("protected", config.policies.protected.clone())
            .set("candidate_prefix", config.candidate_prefix())
            .set("tracker", tracker)
            .set("in_progress", config.tasks.in_progress.clone())
            .set("for_delivery", config.tasks.for_delivery.clone())
    }

    /// Sets the new commits: the `commits` fact, and what `each = "commit"` rules iterate
    /// (which a `commits` set with [`Facts::set`] is not).
    pub fn set_commits(&mut self, commits: Vec<crate::git::CommitInfo>) -> &mut Self {
        self.commits = Some(Arc::new(commits));
        self.commits_value = std::sync::OnceLock::new();
        self.vars.remove("commits");
        self
    }

    pub fn get(&self, name: &str) -> Option<&Value> {
        if name == "commits"
            && let Some(commits) = &self.commits
        {
            return Some(self.commits_value.get_or_init(|| {
                Value::List(Arc::new(commits.iter().map(commit_value).collect()))
            }));
        }
        self.vars.get(name)
    }

    /// The names of the facts set.
    pub(super) fn names(&self) -> impl Iterator<Item = &str> {
        self.vars
            .keys()
            .map(String::as_str)
            .chain(self.commits.is_some().then_some("commits"))
    }

    /// Drops the facts on a thread of their own when they hold many commits: freeing a
    /// hundred thousand commits takes a push's hook about twenty milliseconds it need not
    /// wait for (the hook's process exits without waiting for that thread).
    pub fn drop_in_background(self) {
        if self.commits().len() >= Facts::MANY_COMMITS {
            std::thread::spawn(move || drop(self));
        }
    }

    /// How many commits [`Facts::drop_in_background`] leaves to a thread.
    const MANY_COMMITS: usize = 10_000;

    /// The new commits, if gathered.
    pub fn commits(&self) -> &[crate::git::CommitInfo] {
        self.commits.as_deref().map_or(&[], Vec::as_slice)
    }
}

/// Builds a CEL map from string keys.
pub fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let m: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::from(m)
}

/// The `task` fact.
pub fn task_value(
    key: &str,
    exists: bool,
    status: &str,
    title: &str,
    assignee: &str,
    url: &str,
) -> Value {
    map([
        ("key", key.into()),
        ("exists", exists.into()),
        ("status", status.into()),
        ("title", title.into()),
        ("assignee", assignee.into()),
        ("url", url.into()),
    ])
}

/// One element of the `commits` fact.
pub fn commit_value(c: &crate::git::CommitInfo) -> Value {
    map([
        ("id", c.id.as_str().into()),
        ("short_id", c.id.get(..10).unwrap_or(&c.id).into()),
        ("summary", c.summary().into()),
        ("message", c.message.as_str().into()),
        ("author_name", c.author_name.as_str().into()),
        ("author_email", c.author_email.as_str().into()),
        ("committer_email", c.committer_email.as_str().into()),
        ("parents", Value::from(c.parents.clone())),
        ("signed", c.signed.into()),
    ])
}

/// One element of the `commits` fact, bound straight to CEL for an `each = "commit"` rule:
/// the same map as [`commit_value`], its strings borrowed rather than copied twice over.
/// With `fields`, only those (the ones the rule reads, see `fields`): what a rule does not
/// read it cannot tell from the whole map.
pub fn commit_val_of<'c>(
    c: &'c crate::git::CommitInfo,
    fields: Option<&'c [String]>,
) -> Box<dyn Val + 'c> {
    use cel::common::types::{CelBool, CelList, CelMap, CelMapKey, CelString};
    fn s(v: &str) -> Box<dyn Val + '_> {
        Box::new(CelString::from(v))
    }
    let field = |name: &str| -> Option<Box<dyn Val + 'c>> {
        Some(match name {
            "id" => s(&c.id),
            "short_id" => s(c.id.get(..10).unwrap_or(&c.id)),
            "summary" => s(c.summary()),
            "message" => s(&c.message),
            "author_name" => s(&c.author_name),
            "author_email" => s(&c.author_email),
            "committer_email" => s(&c.committer_email),
            "parents" => {
                let parents: Vec<Box<dyn Val + 'c>> = c.parents.iter().map(|p| s(p)).collect();
                Box::new(CelList::from(parents))
            }
            "signed" => Box::new(CelBool::from(c.signed)),
            _ => return None,
        })
    };
    let entries: HashMap<CelMapKey<'_>, Box<dyn Val + 'c>> = match fields {
        Some(names) => names
            .iter()
            .filter_map(|n| Some((CelMapKey::from(n.as_str()), field(n)?)))
            .collect(),
        None => COMMIT_FIELDS
            .iter()
            .filter_map(|n| Some((CelMapKey::from(*n), field(n)?)))
            .collect(),
    };
    Box::new(CelMap::from(entries))
}

/// The fields of a commit, as [`commit_value`] has them.
const COMMIT_FIELDS: [&str; 9] = [
    "id",
    "short_id",
    "summary",
    "message",
    "author_name",
    "author_email",
    "committer_email",
    "parents",
    "signed",
];

#[cfg(test)]
mod tests {
    use cel::Context;

    use super::*;
    use crate::policy::Stage;
    use crate::policy::load::{parse, policy_env};
    use crate::policy::testing::{facts, set};

    #[test]
    fn borrowed_commit_reads_like_the_commit_map() {
        let c = crate::git::CommitInfo {
            id: "739d79046b22d9c9218776cab6d5a72bc584bb35".into(),
            parents: vec!["a".into(), "b".into()],
            author_name: "A B".into(),
            author_email: "a@x".into(),
            committer_email: "c@x".into(),
            message: "T-1 first line\n\nbody".into(),
            signed: true,
        };
        let env = Arc::new(policy_env());
        for src in [
            "commit.message.contains('T-1')",
            "commit.summary",
            "commit.short_id",
            "commit.parents.size() > 1",
            "commit.parents[1]",
            "commit.signed",
            "has(commit.id) && !has(commit.nope)",
            "'author_email' in commit",
            "size(commit)",
            "commit.all(k, k != '')",
            "commit.author_email.endsWith('@x') && commit.committer_email == 'c@x'",
            "commit.author_name + ' <' + commit.author_email + '>'",
            "commit.nope",
        ] {
            let ast = parse(src).unwrap();
            let mut a = Context::with_env(env.clone());
            a.add_variable_from_value("commit", commit_value(&c));
            let mut b = Context::with_env(env.clone());
            b.add_variable_as_val("commit", commit_val_of(&c, None));
            let (a, b) = (Value::resolve(&ast, &a), Value::resolve(&ast, &b));
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{src}");
        }
    }

    #[test]
    fn commits_fact_is_built_only_when_read() {
        let mut f = facts("b");
        f.set_commits(vec![crate::git::CommitInfo {
            id: "c1".into(),
            ..Default::default()
        }]);
        assert!(!f.vars.contains_key("commits"));
        let p = set("[[rule]]\nname='r'\non=['push']\n\
             require='commits.size() == 1 && commits[0].id == \"c1\"'\nmessage='{commits}'\n")
        .unwrap();
        assert!(p.evaluate(Stage::Push, &f).accepted());
        assert!(matches!(f.get("commits"), Some(Value::List(l)) if l.len() == 1));
    }
}
