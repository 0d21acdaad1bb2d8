//! Untrusted text made fit to show: control characters escaped before they reach a terminal
//! or a note, and long logs cut to an excerpt of bounded size.
//!
//! Step output, commit messages, branch names and comments come from people and programs
//! lockstep does not trust. Written raw to a terminal, an escape sequence in them can clear
//! the screen, set the window title or draw a fake status line; pasted whole into a tracker
//! note or a pull request comment, a step that printed 50 MB makes a 50 MB note. Every place
//! that shows such text passes it through [`escape`], and every log excerpt through
//! [`Tail`]. Text bound for GitHub, where comments are Markdown, goes through [`markdown`]:
//! a mention, an image or a link in it would otherwise be obeyed, not shown.

pub mod markdown;

use std::borrow::Cow;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{self, Read, Write};

/// At most this many lines of a log go into a note, a comment or an error line.
pub const EXCERPT_LINES: usize = 20;
/// At most this many bytes of a log go into a note, a comment or an error line.
pub const EXCERPT_BYTES: usize = 4000;
/// A longer line of an excerpt keeps its last this many bytes.
pub const EXCERPT_LINE_BYTES: usize = 400;

/// Whether a character would be read as a command rather than shown: the C0 controls but
/// newline and tab, DEL, the C1 controls (`U+0080`–`U+009F`, which some terminals read as ESC
/// sequences), and the bidirectional embeddings, overrides and isolates (`U+202A`–`U+202E`,
/// `U+2066`–`U+2069`), which reorder what is shown so that a branch name or a log line reads
/// otherwise than it is.
fn is_control(c: char) -> bool {
    (c.is_control() && c != '\n' && c != '\t')
        || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with its control characters (all but newline and tab) written out visibly: ESC as
/// `\x1b`, a C1 control as `\u{9b}`, a right-to-left override as `\u{202e}`. A text
/// without any is returned as it is.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if !is_control(c) {
            out.push(c);
        } else if (c as u32) < 0x80 {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
    }
    Cow::Owned(out)
}

/// Bytes as text to show: invalid UTF-8 replaced, control characters escaped.
pub fn escape_bytes(b: &[u8]) -> String {
    escape(&String::from_utf8_lossy(b)).into_owned()
}

/// Copies a log to `out` with its control characters escaped, a block at a time (a log may
/// be far larger than memory should hold); a character split between two blocks is kept whole.
pub fn copy_escaped(mut from: impl Read, out: &mut impl Write) -> io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut carried = 0;
    loop {
        let n = match from.read(&mut buf[carried..]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let filled = carried + n;
        // Up to the last complete character; an incomplete one at the end waits for the rest.
        let end = match std::str::from_utf8(&buf[..filled]) {
            Ok(_) => filled,
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => filled,
        };
        out.write_all(escape_bytes(&buf[..end]).as_bytes())?;
        buf.copy_within(end..filled, 0);
        carried = filled - end;
    }
    out.write_all(escape_bytes(&buf[..carried]).as_bytes())?;
    out.flush()
}

/// The end of a log, as a note or a comment quotes it, gathered a block at a time so that a
/// log of any size costs a few kilobytes of memory: its last [`EXCERPT_LINES`] lines, each
/// cut to its last [`EXCERPT_LINE_BYTES`], at most [`EXCERPT_BYTES`] in all, control
/// characters escaped, and what was left out said.
#[derive(Debug, Default)]
pub struct Tail {
    /// The last complete lines: the end of each, and how many bytes before it were dropped.
    lines: VecDeque<(Vec<u8>, u64)>,
    /// The line being read.
    current: Vec<u8>,
    current_dropped: u64,
    /// Bytes of whole lines before the ones kept.
    before: u64,
}

impl Tail {
    /// Reads the next block of the log.
    pub fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let (part, rest, ended) = match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &bytes[..0], false),
            };
            self.current.extend_from_slice(part);
            if self.current.len() > 2 * EXCERPT_LINE_BYTES {
                let drop = self.current.len() - EXCERPT_LINE_BYTES;
                self.current.drain(..drop);
                self.current_dropped += drop as u64;
            }
            if ended {
                self.end_line();
            }
            bytes = rest;
        }
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.current);
        let mut dropped = std::mem::take(&mut self.current_dropped);
        if line.len() > EXCERPT_LINE_BYTES {
            let cut = line.len() - EXCERPT_LINE_BYTES;
            line.drain(..cut);
            dropped += cut as u64;
        }
        // Never start in the middle of a character.
        if dropped > 0 {
            let partial = line.iter().take_while(|b| (**b & 0xc0) == 0x80).count();
            line.drain(..partial);
            dropped += partial as u64;
        }
        self.lines.push_back((line, dropped));
        if self.lines.len() > EXCERPT_LINES
            && let Some((gone, gone_dropped)) = self.lines.pop_front()
        {
            self.before += gone.len() as u64 + gone_dropped + 1;
        }
    }

    /// The excerpt.
    pub fn finish(mut self) -> String {
        if !self.current.is_empty() || self.current_dropped > 0 {
            self.end_line();
        }
        let mut shown: Vec<String> = Vec::new();
        let mut size = 0;
        while let Some((line, dropped)) = self.lines.pop_back() {
            let text = escape_bytes(&line);
            let text = if dropped > 0 {
                format!("[… {dropped} bytes cut] {text}")
            } else {
                text
            };
            if size + text.len() + 1 > EXCERPT_BYTES && !shown.is_empty() {
                self.before += line.len() as u64 + dropped + 1;
                for (l, d) in self.lines.drain(..) {
                    self.before += l.len() as u64 + d + 1;
                }
                break;
            }
            size += text.len() + 1;
            shown.push(text);
        }
        shown.reverse();
        let mut out = String::new();
        if self.before > 0 {
            let _ = writeln!(out, "[… cut: {} earlier bytes of the log]", self.before);
        }
        out.push_str(&shown.join("\n"));
        out
    }
}

/// [`Tail`] of a whole text.
#[cfg(test)]
fn excerpt(text: &str) -> String {
    let mut tail = Tail::default();
    tail.push(text.as_bytes());
    tail.finish()
}

/// The longest note lockstep leaves on a task, in bytes (trackers refuse large bodies; a
/// GitHub comment holds 65,536 characters).
pub const NOTE_BYTES: usize = 16_000;

/// A note for a task's tracker: control characters escaped, at most [`NOTE_BYTES`].
pub fn note(text: &str) -> String {
    clip(&escape(text), NOTE_BYTES).into_owned()
}

/// `s` as one word of a command a person may copy into a shell: as it is when it is made of
/// letters, digits and `-_.,:/@%+=`, else single-quoted (a `'` as `'\''`); then escaped for a
/// terminal. For untrusted values (task keys, paths) in the commands a message suggests.
pub fn shell_word(s: &str) -> Cow<'_, str> {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.,:/@%+=".contains(c));
    if plain {
        return Cow::Borrowed(s);
    }
    Cow::Owned(escape(&format!("'{}'", s.replace('\'', "'\\''"))).into_owned())
}

/// `s` cut to at most `max` bytes (on a character boundary), `…` marking the cut.
pub fn clip(s: &str, max: usize) -> Cow<'_, str> {
    if s.len() <= max {
        return Cow::Borrowed(s);
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &s[..end]))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_shell_word_is_quoted_only_when_a_shell_would_read_more_into_it() {
        assert_eq!(super::shell_word("TASK-1"), "TASK-1");
        assert_eq!(super::shell_word("/srv/git/api.git"), "/srv/git/api.git");
        assert_eq!(super::shell_word("TASK-1;rm -rf"), "'TASK-1;rm -rf'");
        assert_eq!(super::shell_word("it's $(x)"), "'it'\\''s $(x)'");
        assert_eq!(super::shell_word(""), "''");
        // Quoted, and still escaped for the terminal.
        assert_eq!(super::shell_word("a\x1b[2Jb"), "'a\\x1b[2Jb'");
    }

    use super::*;

    #[test]
    fn controls_are_shown_not_obeyed() {
        assert!(matches!(escape("plain\ttext\n"), Cow::Borrowed(_)));
        assert_eq!(
            escape("\x1b[2J\x1b]0;owned\x07 ok\r\n"),
            "\\x1b[2J\\x1b]0;owned\\x07 ok\\x0d\n"
        );
        assert_eq!(escape("a\u{9b}31mb\u{7f}"), "a\\u{9b}31mb\\x7f");
        assert_eq!(escape("ünïcode ✅"), "ünïcode ✅");
        assert_eq!(escape_bytes(b"\xff\x1b"), "\u{fffd}\\x1b");
    }

    #[test]
    fn an_excerpt_is_bounded_and_says_what_it_left_out() {
        assert_eq!(excerpt("one\ntwo\n"), "one\ntwo");
        assert_eq!(excerpt("one\ntwo"), "one\ntwo");
        let many: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let e = excerpt(&many);
        assert!(
            e.starts_with("[… cut: 71 earlier bytes of the log]\nline 11\n"),
            "{e}"
        );
        assert!(e.ends_with("line 30"), "{e}");
        // A huge last line keeps its end, and the lines before it.
        let huge = format!("{many}{}", "é".repeat(500_000));
        let mut tail = Tail::default();
        for block in huge.as_bytes().chunks(4096) {
            tail.push(block);
        }
        let e = tail.finish();
        assert!(e.len() < EXCERPT_BYTES, "{}", e.len());
        assert!(
            e.starts_with("[… cut: 79 earlier bytes of the log]\nline 12\n"),
            "{}",
            &e[..80]
        );
        assert!(e.contains("line 30\n[… 999600 bytes cut] éé"), "{e}");
        // Wide lines: as many as fit.
        let wide: String = (0..20).map(|_| format!("{}\n", "y".repeat(399))).collect();
        let e = excerpt(&wide);
        assert!(e.len() <= EXCERPT_BYTES + 60, "{}", e.len());
        assert!(
            e.starts_with("[… cut: 4000 earlier bytes of the log]"),
            "{}",
            &e[..60]
        );
        assert_eq!(excerpt("\x1b[2Jfake\n"), "\\x1b[2Jfake");
    }

    #[test]
    fn a_copied_log_is_escaped_whole() {
        let mut text = "é".repeat(40_000).into_bytes();
        text.extend_from_slice(b"\x1b[2J\n");
        let mut out = Vec::new();
        copy_escaped(&text[..], &mut out).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert_eq!(out, format!("{}\\x1b[2J\n", "é".repeat(40_000)));
    }

    #[test]
    fn clip_marks_the_cut_on_a_character_boundary() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééé", 3), "é…");
    }

    #[test]
    fn bidirectional_overrides_are_shown_not_obeyed() {
        // "feature/TASK-1-\u{202e}txt.exe" would show as "feature/TASK-1-exe.txt".
        assert_eq!(
            escape("feature/TASK-1-\u{202e}txt.exe"),
            "feature/TASK-1-\\u{202e}txt.exe"
        );
        assert_eq!(escape("a\u{2066}b\u{2069}c"), "a\\u{2066}b\\u{2069}c");
        // Right-to-left text itself is shown as it is.
        assert_eq!(escape("שלום"), "שלום");
    }
}
