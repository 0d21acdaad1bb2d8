//! The system's accounts, as error messages and `lockstep doctor` name them: who this process
//! runs as, an account's groups, and whether an account may write a path by its mode bits and
//! ownership. Read from `/proc/self` and the files `/etc/passwd` and `/etc/group` (accounts
//! from a directory service that are not in them are shown by number).

use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

/// An account: its name when `/etc/passwd` has it, its uid and its groups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: Option<String>,
    pub uid: u32,
    /// The primary group first, then the groups `/etc/group` lists it in.
    pub gids: Vec<u32>,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "`{name}` (uid {})", self.uid),
            None => write!(f, "uid {}", self.uid),
        }
    }
}

/// One line of `/etc/passwd`: name, uid and primary gid.
fn passwd() -> Vec<(String, u32, u32)> {
    let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            let uid = f.next()?.parse().ok()?;
            let gid = f.next()?.parse().ok()?;
            Some((name.to_string(), uid, gid))
        })
        .collect()
}

/// The groups `/etc/group` lists `name` in, by gid.
fn member_of(name: &str) -> Vec<u32> {
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let _group = f.next()?;
            let _password = f.next()?;
            let gid: u32 = f.next()?.parse().ok()?;
            let members = f.next()?;
            members.split(',').any(|m| m == name).then_some(gid)
        })
        .collect()
}

fn with_groups(name: Option<String>, uid: u32, primary: Option<u32>) -> Account {
    let mut gids: Vec<u32> = primary.into_iter().collect();
    if let Some(n) = &name {
        for g in member_of(n) {
            if !gids.contains(&g) {
                gids.push(g);
            }
        }
    }
    Account { name, uid, gids }
}

/// The account this process runs as (its effective uid, the owner of `/proc/self`).
pub fn current() -> Option<Account> {
    let meta = std::fs::metadata("/proc/self").ok()?;
    let uid = meta.uid();
    let found = passwd().into_iter().find(|(_, u, _)| *u == uid);
    Some(match found {
        Some((name, _, gid)) => with_groups(Some(name), uid, Some(gid)),
        None => with_groups(None, uid, Some(meta.gid())),
    })
}

/// The account named `name` (or numbered, `1001`), as `/etc/passwd` has it.
pub fn by_name(name: &str) -> Option<Account> {
    let all = passwd();
    if let Some((n, uid, gid)) = all.iter().find(|(n, _, _)| n == name) {
        return Some(with_groups(Some(n.clone()), *uid, Some(*gid)));
    }
    let uid: u32 = name.parse().ok()?;
    Some(match all.into_iter().find(|(_, u, _)| *u == uid) {
        Some((n, _, gid)) => with_groups(Some(n), uid, Some(gid)),
        None => with_groups(None, uid, None),
    })
}

/// The name of the account numbered `uid`, else the number.
pub fn user_name(uid: u32) -> String {
    passwd()
        .into_iter()
        .find(|(_, u, _)| *u == uid)
        .map_or_else(|| uid.to_string(), |(n, _, _)| n)
}

/// The name of the group numbered `gid`, else the number.
pub fn group_name(gid: u32) -> String {
    let text = std::fs::read_to_string("/etc/group").unwrap_or_default();
    text.lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let _password = f.next()?;
            (f.next()?.parse::<u32>().ok()? == gid).then(|| name.to_string())
        })
        .unwrap_or_else(|| gid.to_string())
}

/// Which of a file's permission triplets applies to `account`: `0o700`'s place for the owner,
/// the group's when one of its groups owns the file, the others' otherwise. Root is allowed
/// everything (as the kernel allows it, access lists aside).
pub fn may(account: &Account, meta: &std::fs::Metadata, want: u32) -> bool {
    if account.uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let bits = if meta.uid() == account.uid {
        (mode >> 6) & 0o7
    } else if account.gids.contains(&meta.gid()) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    bits & want == want
}

/// Whether `account` may create and replace files in the folder `dir` (write and search on
/// it, and search on every folder above it), by mode bits and ownership: `Err` names the first
/// path in the way and why.
pub fn may_write_in(account: &Account, dir: &Path) -> Result<(), String> {
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut above: Vec<&Path> = dir.ancestors().skip(1).collect();
    above.reverse();
    for a in above {
        let Ok(meta) = std::fs::metadata(a) else {
            continue;
        };
        if !may(account, &meta, 0o1) {
            return Err(format!("cannot enter `{}` ({})", a.display(), owned(&meta)));
        }
    }
    let meta =
        std::fs::metadata(&dir).map_err(|e| format!("`{}` cannot be read: {e}", dir.display()))?;
    if !may(account, &meta, 0o3) {
        return Err(format!(
            "cannot create files in `{}` ({})",
            dir.display(),
            owned(&meta)
        ));
    }
    Ok(())
}

/// `owner:group mode`, as `ls -l` would show who may do what.
pub fn owned(meta: &std::fs::Metadata) -> String {
    format!(
        "{}:{} {:04o}",
        user_name(meta.uid()),
        group_name(meta.gid()),
        meta.mode() & 0o7777
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn mode_bits_are_read_for_owner_group_and_others() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640)).unwrap();
        let meta = std::fs::metadata(&f).unwrap();
        let owner = Account {
            name: None,
            uid: meta.uid() + 1000,
            gids: vec![],
        };
        let (mut as_owner, mut in_group) = (owner.clone(), owner.clone());
        as_owner.uid = if meta.uid() == 0 { 0 } else { meta.uid() };
        in_group.gids = vec![meta.gid()];
        assert!(may(&as_owner, &meta, 0o6));
        assert!(may(&in_group, &meta, 0o4));
        assert!(!may(&in_group, &meta, 0o2));
        assert!(!may(&owner, &meta, 0o4));
    }

    #[test]
    fn the_current_account_is_known() {
        let me = current().unwrap();
        assert!(!me.gids.is_empty());
        assert!(me.to_string().contains(&format!("uid {}", me.uid)));
    }
}
