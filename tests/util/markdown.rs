//! What of a comment GitHub would read as Markdown, to check that untrusted text in it is
//! only ever inside a code span or a fenced block (the same model as the crate's own unit
//! tests use: fences, table cells split at unescaped pipes, code spans within a line).

/// Untrusted text that would act if it were read as Markdown: a team mention, a remote
/// image, a link, HTML, and backticks.
pub const PAYLOAD: &str = "@org/team ![x](http://127.0.0.1/x) [l](http://127.0.0.1/l) <img src=x> `` `a` ``` @org/team ``";

/// Everything outside fenced blocks and code spans.
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
        let mut cells = vec![String::new()];
        if text.starts_with('|') {
            let mut chars = text.chars();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        cells.last_mut().unwrap().push(c);
                        cells.last_mut().unwrap().extend(chars.next());
                    }
                    '|' => cells.push(String::new()),
                    _ => cells.last_mut().unwrap().push(c),
                }
            }
            cells = cells.iter().map(|c| c.replace("\\|", "|")).collect();
        } else {
            cells = vec![line.to_string()];
        }
        for c in cells {
            live.push_str(&outside_spans(&c));
            live.push('\n');
        }
    }
    live
}

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

/// Panics if any part of [`PAYLOAD`] is live in `md`.
pub fn assert_inert(md: &str) {
    let live = live_text(md);
    for bad in ["@org", "![x]", "[l](", "<img", "127.0.0.1/x", "127.0.0.1/l"] {
        assert!(
            !live.contains(bad),
            "`{bad}` is live in:\n{md}\n--- live:\n{live}"
        );
    }
}
