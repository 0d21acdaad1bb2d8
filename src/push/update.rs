//! Ref updates: the `<old> <new> <ref>` lines of `pre-receive` and `post-receive`, and the
//! arguments of `update`, read into checked values.

use crate::git;

/// One line of `pre-receive`'s stdin, or the arguments of `update`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

impl RefUpdate {
    pub fn created(&self) -> bool {
        git::is_zero(&self.old)
    }
    pub fn deleted(&self) -> bool {
        git::is_zero(&self.new)
    }
    /// The branch's short name, or "" when the ref is not a branch.
    pub fn branch(&self) -> &str {
        self.name.strip_prefix("refs/heads/").unwrap_or("")
    }
    /// The tag's short name, or "".
    pub fn tag(&self) -> &str {
        self.name.strip_prefix("refs/tags/").unwrap_or("")
    }
}

/// Why a ref update line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("line {line}: expected `<old-oid> <new-oid> <ref>`, got {got} field(s)")]
    FieldCount { line: usize, got: usize },
    #[error("line {line}: `{value}` is not an object id")]
    BadOid { line: usize, value: String },
    #[error("line {line}: ref name is not UTF-8; name refs in UTF-8")]
    NotUtf8 { line: usize },
    #[error("line {line}: ref `{name}` is not under `refs/`")]
    BadRef { line: usize, name: String },
}

/// Parses the whole stdin of `pre-receive` / `post-receive`.
pub fn parse_updates(input: &[u8]) -> Result<Vec<RefUpdate>, ParseError> {
    input
        .split(|b| *b == b'\n')
        .enumerate()
        .filter(|(_, l)| !l.is_empty())
        .map(|(i, l)| parse_update(i + 1, l))
        .collect()
}

fn parse_update(line: usize, bytes: &[u8]) -> Result<RefUpdate, ParseError> {
    let text = std::str::from_utf8(bytes).map_err(|_| ParseError::NotUtf8 { line })?;
    let fields: Vec<&str> = text.trim_end_matches('\r').split(' ').collect();
    let [old, new, name] = fields[..] else {
        return Err(ParseError::FieldCount {
            line,
            got: fields.len(),
        });
    };
    update_from_parts(line, old, new, name)
}

/// Checks the three parts of a ref update (also used for `update`'s arguments).
pub fn update_from_parts(
    line: usize,
    old: &str,
    new: &str,
    name: &str,
) -> Result<RefUpdate, ParseError> {
    for oid in [old, new] {
        if !git::is_oid(oid) {
            return Err(ParseError::BadOid {
                line,
                value: oid.chars().take(80).collect(),
            });
        }
    }
    if !name.starts_with("refs/") || name.len() <= 5 {
        return Err(ParseError::BadRef {
            line,
            name: name.chars().take(200).collect(),
        });
    }
    Ok(RefUpdate {
        old: old.into(),
        new: new.into(),
        name: name.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn parses_lines() {
        let input = format!("{Z} {A} refs/heads/feature/T-1\n{A} {Z} refs/tags/v1\n");
        let u = parse_updates(input.as_bytes()).unwrap();
        assert_eq!(u.len(), 2);
        assert!(u[0].created() && u[0].branch() == "feature/T-1");
        assert!(u[1].deleted() && u[1].tag() == "v1" && u[1].branch().is_empty());
    }

    #[test]
    fn malformed_lines_are_errors_not_panics() {
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"garbage".to_vec(), "got 1 field"),
            (format!("{Z} {A}").into_bytes(), "got 2 field"),
            (
                format!("{Z} nothex refs/heads/x").into_bytes(),
                "`nothex` is not an object id",
            ),
            (format!("{Z} {A} HEAD").into_bytes(), "not under `refs/`"),
            (
                [
                    format!("{Z} {A} refs/heads/").into_bytes(),
                    vec![0xff, 0xfe],
                ]
                .concat(),
                "not UTF-8",
            ),
            (
                format!("{Z} {A} refs/heads/a b").into_bytes(),
                "got 4 field",
            ),
        ];
        for (input, want) in cases {
            let e = parse_updates(&input).unwrap_err().to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert_eq!(parse_updates(b"").unwrap(), vec![]);
    }
}
