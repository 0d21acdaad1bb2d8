//! Markdown for what lockstep posts to GitHub (pull request comments, and the notes of the
//! GitHub Issues tracker): untrusted text (task keys, branch names, commit subjects, step
//! output, failure reasons, alert names and summaries) set in code spans and fenced blocks
//! that nothing inside can close. Outside them, `@org/team` notifies a team, `![x](url)`
//! loads a remote image and `<img>` is HTML; inside, each is shown as written.

/// Text in backticks, whatever backticks it contains: control characters escaped
/// ([`super::escape`]) and line endings made spaces (a line of its own could start a heading
/// or a list and end the span), in a fence of one backtick more than the longest run inside.
pub fn code(s: &str) -> String {
    let s = s.replace("\r\n", " ").replace(['\n', '\r'], " ");
    let s = super::escape(&s);
    let longest = longest_run(&s, '`');
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// [`code`] for a cell of a table, where a `|` ends the cell even inside a code span unless
/// it is escaped; the backslash is escaped too, so that no `\` of the text can take the
/// escape away from a `|`.
pub fn cell(s: &str) -> String {
    code(&s.replace('\\', "\\\\").replace('|', "\\|"))
}

/// A fenced block that no line of `text` can close early; control characters escaped.
pub fn fenced(text: &str) -> String {
    let text = super::escape(text);
    let fence = "`".repeat(longest_run(&text, '`').max(2) + 1);
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

/// What of a Markdown text GitHub would read as Markdown: everything outside fenced blocks
/// and code spans (table cells split first, as GitHub splits them). A span is looked for
/// within one line, stricter than Markdown, which lets one run across a paragraph. The tests
/// hold every comment the bot writes to it (`lockstep::markdown_live_text`).
pub fn live_text(md: &str) -> String {
    let mut live = String::new();
    let mut fence: Option<(char, usize)> = None;
    for line in md.split(['\n', '\r']) {
        let text = line.trim_start_matches(' ');
        let indent = line.len() - text.len();
        let first = text.chars().next();
        let run = first.map_or(0, |ch| text.chars().take_while(|c| *c == ch).count());
        if let Some((ch, len)) = fence {
            if indent < 4 && first == Some(ch) && run >= len && text[run..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if indent < 4 && matches!(first, Some('`' | '~')) && run >= 3 {
            fence = first.map(|ch| (ch, run));
            continue;
        }
        if text.starts_with('|') {
            for c in cells(text) {
                live.push_str(&outside_spans(&c.replace("\\|", "|")));
                live.push('\n');
            }
        } else {
            live.push_str(&outside_spans(line));
            live.push('\n');
        }
    }
    live
}

/// The cells of a table row: split at each `|` no backslash escapes.
fn cells(row: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = row.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                let last = out.last_mut().expect("never empty");
                last.push(c);
                if let Some(next) = chars.next() {
                    last.push(next);
                }
            }
            '|' => out.push(String::new()),
            _ => out.last_mut().expect("never empty").push(c),
        }
    }
    out
}

/// A line without its code spans: a run of backticks opens one only where a run of the same
/// length closes it; a backslash escapes the punctuation after it.
fn outside_spans(line: &str) -> String {
    let chars: Vec<char> = line.chars().collect();
    let mut live = String::new();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' if chars.get(i + 1).is_some_and(char::is_ascii_punctuation) => {
                live.push(chars[i + 1]);
                i += 2;
            }
            '`' => {
                let n = chars[i..].iter().take_while(|c| **c == '`').count();
                let mut j = i + n;
                let mut closed = None;
                while j < chars.len() {
                    let m = chars[j..].iter().take_while(|c| **c == '`').count();
                    if m == n {
                        closed = Some(j + m);
                        break;
                    }
                    j += m.max(1);
                }
                match closed {
                    Some(end) => i = end,
                    None => {
                        live.extend(&chars[i..i + n]);
                        i += n;
                    }
                }
            }
            c => {
                live.push(c);
                i += 1;
            }
        }
    }
    live
}

/// Untrusted text that would act if it were read as Markdown, as the tests post it.
#[cfg(test)]
pub const PAYLOADS: [&str; 5] = [
    "@org/team",
    "![x](http://127.0.0.1/x)",
    "[l](http://127.0.0.1/l)",
    "<img src=x>",
    "`` `a` ``` @org/team ``",
];

/// Panics unless every payload of [`PAYLOADS`] is in `md` and none of their parts is live.
#[cfg(test)]
pub fn assert_inert(md: &str) {
    let live = live_text(md);
    for bad in ["@org", "![x]", "[l](", "<img", "127.0.0.1/x", "127.0.0.1/l"] {
        assert!(
            !live.contains(bad),
            "`{bad}` is live in:\n{md}\n--- live:\n{live}"
        );
    }
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

    /// Issue 22: no payload gets out of a span, a cell or a fence, with whatever backticks,
    /// pipes, backslashes and line breaks around it.
    #[test]
    fn issue22_payloads_stay_inside_spans_cells_and_fences() {
        let all = PAYLOADS.join(" ");
        for text in [
            all.clone(),
            format!("`{all}`"),
            format!("```\n{all}\n```"),
            format!("x\n# {all}\n\n- {all}"),
            format!("a\r\n> {all}\rb"),
            format!("\\`{all}|{all}\\|{all}\\"),
        ] {
            for md in [
                format!("said {} here", code(&text)),
                format!("| {} | {} |", cell(&text), cell("b")),
                format!("text\n\n{}\n\nafter", fenced(&text)),
            ] {
                assert_inert(&md);
                for p in PAYLOADS {
                    assert!(!live_text(&md).contains(p), "{md}");
                }
            }
        }
        assert_eq!(code("a\nb\r\nc"), "`a b c`");
        assert_eq!(code("\x1b[2J"), "`\\x1b[2J`");
        assert_eq!(cell("a|b\\"), "`a\\|b\\\\`");
    }

    /// The checker itself sees a payload that is left live.
    #[test]
    fn live_text_sees_what_is_left_outside() {
        assert!(live_text("> @org/team").contains("@org"));
        assert!(live_text("`a` ![x](u) `b`").contains("!["));
        assert!(live_text("``a` @org").contains("@org"));
        assert!(live_text("| `a|@org` |").contains("@org"));
        assert!(!live_text("| `a\\|@org` |").contains("@org"));
        assert!(live_text("```\nx\n```\n@org").contains("@org"));
        assert!(!live_text("````\n```\n@org\n````").contains("@org"));
    }
}
