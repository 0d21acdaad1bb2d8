//! The decision log as a hash chain: each line carries, as `prev`, the SHA-256 (hex) of the
//! bytes of the line before it (without its newline). The first line of a log chains to
//! [`GENESIS`]; the first line of a file begun by a rotation chains to the last line of the
//! file rotated to `.1`, so the files kept read as one chain, oldest first.
//!
//! What this proves: a line edited, deleted, inserted or moved breaks the link of the line
//! after it, and [`check`] names the first such link. What it does not: whoever can write the
//! log can rewrite it whole from the line they change on, every link recomputed, and can cut
//! its newest lines; only a hash of a line kept elsewhere (the head [`Chain::head`] at some
//! time) tells such a rewrite, as that hash is then no longer in the log.

use std::collections::HashMap;
use std::fmt;

use sha2::Digest as _;

/// What the first line of a log chains to: 64 zeros.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// A line's SHA-256.
pub type Hash = [u8; 32];

/// [`GENESIS`] as a hash.
const GENESIS_HASH: Hash = [0; 32];

/// The SHA-256 of a line's bytes, without its newline.
pub fn hash(line: &[u8]) -> Hash {
    let mut out = [0; 32];
    out.copy_from_slice(&sha2::Sha256::digest(line));
    out
}

/// A hash as lowercase hex, as lines carry it.
pub fn hex(hash: &Hash) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(64);
    for b in hash {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// The hash a link names, when it is 64 hex digits.
fn parse(link: &str) -> Option<Hash> {
    fn nibble(b: u8) -> Option<u8> {
        match b {
            b'0'..=b'9' => Some(b - b'0'),
            b'a'..=b'f' => Some(b - b'a' + 10),
            b'A'..=b'F' => Some(b - b'A' + 10),
            _ => None,
        }
    }
    let bytes = link.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        *o = (nibble(pair[0])? << 4) | nibble(pair[1])?;
    }
    Some(out)
}

/// Where a line is: its file in the state folder, and its number there (from 1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    pub file: String,
    pub line: usize,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` line {}", self.file, self.line)
    }
}

/// What a line says of the line before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// A decision with a `prev`.
    Prev(String),
    /// A decision without one: written before the log was chained.
    Legacy,
    /// Not a decision at all.
    Unreadable,
}

/// One line of the log, as [`check`] needs it.
#[derive(Debug, Clone)]
pub struct Line {
    pub place: Place,
    pub hash: Hash,
    pub link: Link,
}

/// The first link that does not hold: at which line, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Break {
    pub at: Place,
    /// What is wrong, said after the place: "does not chain to …".
    pub what: String,
}

impl fmt::Display for Break {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.at, self.what)
    }
}

/// What the chain says of the log.
#[derive(Debug, Clone, Default)]
pub struct Chain {
    /// Decisions before the first chained line, logged before the log was chained: they
    /// cannot be verified.
    pub legacy: usize,
    /// Lines the chain vouches for.
    pub verified: usize,
    /// The hash (hex) of the last line: what to keep elsewhere.
    pub head: Option<String>,
    /// The oldest line kept chains to a line rotated away, not to [`GENESIS`].
    pub rotated_away: bool,
    /// The first link that does not hold.
    pub broken: Option<Break>,
}

/// Walks the links of `lines`, oldest first; `rotated_start` says the first line is in a
/// rotated file, so it may chain to a line no longer kept. Returns what the chain says, and for
/// each line whether the chain vouches for it: a line is vouched for when its link and every
/// link before it hold and, but for the last line, the next line's link holds too (a line is
/// proved unchanged only by the hash the next one carries).
pub fn check(lines: &[Line], rotated_start: bool) -> (Chain, Vec<bool>) {
    let mut chain = Chain::default();
    let mut start = None;
    let mut broken_at = None;
    let mut seen: HashMap<Hash, usize> = HashMap::new();
    for (i, l) in lines.iter().enumerate() {
        seen.entry(l.hash).or_insert(i);
    }
    fn at(lines: &[Line], i: usize) -> &Place {
        &lines[i].place
    }
    let place = |i: usize| at(lines, i);
    for (i, line) in lines.iter().enumerate() {
        let what = match (&line.link, start) {
            (Link::Legacy, None) => {
                chain.legacy += 1;
                None
            }
            (Link::Unreadable, None) => None,
            (Link::Legacy, Some(_)) => Some(
                "carries no link although the lines before it do: it was inserted, or its \
                 link removed"
                    .to_string(),
            ),
            (Link::Unreadable, Some(_)) => {
                Some("is not a decision: it was edited or damaged".to_string())
            }
            (Link::Prev(prev), _) => {
                start.get_or_insert(i);
                let before = i.checked_sub(1);
                match (parse(prev), before) {
                    (None, _) => Some("carries a link that is not a hash: it was edited".into()),
                    (Some(p), Some(b)) if p == lines[b].hash => None,
                    (Some(p), None) if p == GENESIS_HASH => None,
                    (Some(_), None) if rotated_start => {
                        chain.rotated_away = true;
                        None
                    }
                    (Some(_), None) => Some(
                        "is the first line kept but does not begin the chain: lines before it, \
                         or a rotated file, were deleted"
                            .to_string(),
                    ),
                    (Some(p), Some(b)) => Some(match seen.get(&p) {
                        Some(&j) if j + 2 == i => format!(
                            "chains to {}, not to {}: {} was inserted",
                            place(j),
                            place(b),
                            place(b)
                        ),
                        Some(&j) if j < i => format!(
                            "chains to {}, not to {}: the lines between were inserted or moved",
                            place(j),
                            place(b)
                        ),
                        Some(&j) => {
                            format!("chains to {}, a later line: lines were reordered", place(j))
                        }
                        None if p == GENESIS_HASH => format!(
                            "begins a new chain after {}: it was inserted, or the lines before \
                             it replaced",
                            place(b)
                        ),
                        None => format!(
                            "does not chain to {}: that line was edited, or a line after it \
                             deleted",
                            place(b)
                        ),
                    }),
                }
            }
        };
        if let Some(what) = what {
            chain.broken = Some(Break {
                at: place(i).clone(),
                what,
            });
            broken_at = Some(i);
            break;
        }
    }
    let mut vouched = vec![false; lines.len()];
    if let Some(start) = start {
        // The line before a broken link is suspect too: that link is what proved it.
        let end = broken_at.map_or(lines.len(), |b| b.saturating_sub(1));
        for v in vouched.iter_mut().take(end).skip(start) {
            *v = true;
        }
        chain.verified = end.saturating_sub(start);
    }
    chain.head = lines.last().map(|l| hex(&l.hash));
    (chain, vouched)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chain of `n` lines in one file; line `i`'s text is "line i" with its link.
    fn chained(n: usize) -> Vec<(String, Link)> {
        let mut prev = GENESIS.to_string();
        let mut out = Vec::new();
        for i in 1..=n {
            let text = format!("line {i} {prev}");
            let h = hex(&hash(text.as_bytes()));
            out.push((text, Link::Prev(prev)));
            prev = h;
        }
        out
    }

    fn lines(texts: &[(String, Link)]) -> Vec<Line> {
        texts
            .iter()
            .enumerate()
            .map(|(i, (text, link))| Line {
                place: Place {
                    file: "decisions.jsonl".into(),
                    line: i + 1,
                },
                hash: hash(text.as_bytes()),
                link: link.clone(),
            })
            .collect()
    }

    fn broken(texts: &[(String, Link)]) -> String {
        let (chain, _) = check(&lines(texts), false);
        chain.broken.map(|b| b.to_string()).unwrap_or_default()
    }

    #[test]
    fn hex_round_trips_and_rejects_what_is_not_a_hash() {
        let h = hash(b"x");
        assert_eq!(parse(&hex(&h)), Some(h));
        assert_eq!(hex(&h).len(), 64);
        assert_eq!(parse(&hex(&h)[..63]), None);
        assert_eq!(parse(&format!("+{}", &hex(&h)[1..])), None);
        assert_eq!(parse("é".repeat(32).as_str()), None);
    }

    #[test]
    fn an_intact_chain_is_vouched_for_whole() {
        let (chain, vouched) = check(&lines(&chained(4)), false);
        assert_eq!(chain.broken, None);
        assert_eq!(chain.verified, 4);
        assert_eq!(vouched, [true; 4]);
        assert_eq!(chain.head.unwrap(), hex(&hash(chained(4)[3].0.as_bytes())));
    }

    #[test]
    fn each_kind_of_tampering_is_named_at_its_line() {
        let mut edited = chained(4);
        edited[1].0.push_str(" and more");
        assert_eq!(
            broken(&edited),
            "`decisions.jsonl` line 3 does not chain to `decisions.jsonl` line 2: that line was \
             edited, or a line after it deleted"
        );
        let mut deleted = chained(4);
        deleted.remove(1);
        assert_eq!(
            broken(&deleted),
            "`decisions.jsonl` line 2 does not chain to `decisions.jsonl` line 1: that line was \
             edited, or a line after it deleted"
        );
        let mut inserted = chained(4);
        let forged = format!("forged {}", hex(&hash(inserted[1].0.as_bytes())));
        let link = Link::Prev(hex(&hash(inserted[1].0.as_bytes())));
        inserted.insert(2, (forged, link));
        assert_eq!(
            broken(&inserted),
            "`decisions.jsonl` line 4 chains to `decisions.jsonl` line 2, not to \
             `decisions.jsonl` line 3: `decisions.jsonl` line 3 was inserted"
        );
        let mut reordered = chained(4);
        reordered.swap(1, 2);
        assert_eq!(
            broken(&reordered),
            "`decisions.jsonl` line 2 chains to `decisions.jsonl` line 3, a later line: lines \
             were reordered"
        );
        let mut unlinked = chained(3);
        unlinked.push(("{}".into(), Link::Legacy));
        assert!(broken(&unlinked).starts_with("`decisions.jsonl` line 4 carries no link"));
        let mut restarted = chained(3);
        restarted.push(("again".into(), Link::Prev(GENESIS.into())));
        assert!(broken(&restarted).contains("line 4 begins a new chain after"));
        let mut truncated = chained(3);
        truncated.remove(0);
        assert!(broken(&truncated).contains("line 1 is the first line kept but does not begin"));
    }

    #[test]
    fn the_lines_from_the_one_before_a_break_are_not_vouched_for() {
        let mut edited = chained(5);
        edited[2].0.push('!');
        let (chain, vouched) = check(&lines(&edited), false);
        assert_eq!(chain.broken.unwrap().at.line, 4);
        assert_eq!(vouched, [true, true, false, false, false]);
        assert_eq!(chain.verified, 2);
    }

    #[test]
    fn a_legacy_prefix_is_counted_apart_and_the_oldest_may_follow_lines_rotated_away() {
        let mut texts = vec![
            ("old 1".to_string(), Link::Legacy),
            ("old 2".to_string(), Link::Legacy),
        ];
        let after = hex(&hash(b"old 2"));
        texts.push((format!("new 1 {after}"), Link::Prev(after)));
        let (chain, vouched) = check(&lines(&texts), false);
        assert_eq!((chain.legacy, chain.verified), (2, 1));
        assert_eq!(chain.broken, None);
        assert_eq!(vouched, [false, false, true]);

        let mut rest = chained(3);
        rest.remove(0);
        let (chain, _) = check(&lines(&rest), true);
        assert_eq!(chain.broken, None);
        assert!(chain.rotated_away);
    }
}
