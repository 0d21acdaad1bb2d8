//! Markdown for the bot's comments: untrusted text (task keys, branch names, log lines,
//! error chains) set in code spans and fenced blocks that no backtick inside can close.

/// Text in backticks, whatever backticks it contains.
pub fn code(s: &str) -> String {
    let longest = longest_run(s, '`');
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// A fenced block that no line of `text` can close early.
pub fn fenced(text: &str) -> String {
    let fence = "`".repeat(longest_run(text, '`').max(2) + 1);
    format!("{fence}text\n{}\n{fence}", text.trim_end())
}

fn longest_run(s: &str, ch: char) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in s.chars() {
        if c == ch {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_spans_and_fences_hold_any_text() {
        assert_eq!(code("feature/x"), "`feature/x`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`x"), "`` `x ``");
        let f = fenced("ok\n```\nrm -rf\n");
        assert!(f.starts_with("````text\n"), "{f}");
        assert!(f.ends_with("\n````"), "{f}");
    }
}
