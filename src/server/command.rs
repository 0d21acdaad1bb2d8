//! The bot's commands in pull request comments: `/deliver`, `/cancel`, `/retry`,
//! `/rollback`, `/status`, `/showroom`, `/help`.
//!
//! A command is a line of its own whose first word starts with `/`, anywhere in the comment,
//! except inside code (``` or ~~~ fences, lines indented four spaces or a tab), quotes (`>`)
//! and HTML comments, so that people can quote or document commands without running them.
//! [`parse`] is pure and total: any input gives a list, never a panic.

use std::fmt;

use crate::policy::did_you_mean;

/// A command the bot understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BotCommand {
    /// Check the delivery rules and queue the pull request's task.
    Deliver { priority: i64 },
    /// Cancel the task's queued or running delivery.
    Cancel,
    /// Deliver again after a failed or cancelled delivery.
    Retry,
    /// Run the rollback steps of the task's last delivery.
    Rollback,
    /// Tell where the task's delivery is.
    Status,
    /// Build and test the pull request's head on its own.
    Autotest,
    /// Bring up (or deploy again) the task's showroom; with `down`, tear it down.
    Showroom { down: bool },
    /// List the commands.
    Help,
}

/// One entry of the help: how it is written and what it does.
pub struct Usage {
    pub name: &'static str,
    pub usage: &'static str,
    pub what: &'static str,
}

/// Every command, in the order the help lists them.
pub const COMMANDS: &[Usage] = &[
    Usage {
        name: "deliver",
        usage: "/deliver [priority=N]",
        what: "check the delivery rules and queue this task's delivery \
               (higher priority runs sooner)",
    },
    Usage {
        name: "cancel",
        usage: "/cancel",
        what: "cancel this task's queued delivery, or stop the running one at its next step",
    },
    Usage {
        name: "retry",
        usage: "/retry",
        what: "deliver again after a failed or cancelled delivery \
               (moves the task back to For Delivery)",
    },
    Usage {
        name: "rollback",
        usage: "/rollback",
        what: "run the rollback steps of this task's last delivery and move the task back",
    },
    Usage {
        name: "status",
        usage: "/status",
        what: "say where this task's delivery is",
    },
    Usage {
        name: "autotest",
        usage: "/autotest",
        what: "build and test this pull request's head rebased on its upstream, \
               without delivering it",
    },
    Usage {
        name: "showroom",
        usage: "/showroom [down]",
        what: "deploy this task's showroom beside the delivery line (or tear it down)",
    },
    Usage {
        name: "help",
        usage: "/help",
        what: "list these commands",
    },
];

impl BotCommand {
    pub fn name(self) -> &'static str {
        match self {
            BotCommand::Deliver { .. } => "deliver",
            BotCommand::Cancel => "cancel",
            BotCommand::Retry => "retry",
            BotCommand::Rollback => "rollback",
            BotCommand::Status => "status",
            BotCommand::Autotest => "autotest",
            BotCommand::Showroom { .. } => "showroom",
            BotCommand::Help => "help",
        }
    }
}

/// Why a command line was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("unknown command `/{name}`{hint}")]
    Unknown { name: String, hint: String },
    #[error("`/{command}` takes no `{arg}`; write it as `{usage}`")]
    BadArgument {
        command: &'static str,
        arg: String,
        usage: &'static str,
    },
    #[error("`/deliver {arg}`: the priority must be a whole number, like `priority=10`")]
    BadPriority { arg: String },
}

/// The most commands read from one comment; the rest are ignored.
pub const MAX_COMMANDS: usize = 10;
/// A longer command line is not a command.
const MAX_LINE: usize = 200;

/// The commands of a comment, in order.
pub fn parse(comment: &str) -> Vec<Result<BotCommand, ParseError>> {
    let mut out = Vec::new();
    let mut fence: Option<(char, usize)> = None;
    let mut in_html_comment = false;
    for raw in comment.lines() {
        let line = raw.trim_end_matches('\r');
        let indent = line.len() - line.trim_start_matches(' ').len();
        let text = line.trim_start();
        if let Some((ch, len)) = fence {
            // A closing fence: the same character, at least as long, nothing after it.
            let run = text.chars().take_while(|c| *c == ch).count();
            if indent < 4 && run >= len && text[run * ch.len_utf8()..].trim().is_empty() {
                fence = None;
            }
            continue;
        }
        if in_html_comment {
            if text.contains("-->") {
                in_html_comment = false;
            }
            continue;
        }
        if line.starts_with('\t') || indent >= 4 {
            continue; // indented code
        }
        if let Some(ch) = text.chars().next().filter(|c| *c == '`' || *c == '~') {
            let run = text.chars().take_while(|c| *c == ch).count();
            if run >= 3 {
                fence = Some((ch, run));
                continue;
            }
        }
        if text.starts_with('>') {
            continue; // a quote
        }
        if text.starts_with("<!--") {
            if !text.contains("-->") {
                in_html_comment = true;
            }
            continue;
        }
        if let Some(parsed) = parse_line(text) {
            out.push(parsed);
            if out.len() == MAX_COMMANDS {
                break;
            }
        }
    }
    out
}

/// One line: `None` unless it looks like a command (`/word …`).
/// An argument as the reply quotes it, between single backticks: cut short, and with no
/// backtick that could close the span early and leave the rest live Markdown.
fn quotable(arg: &str) -> String {
    arg.chars()
        .take(40)
        .map(|c| if c == '`' { '\'' } else { c })
        .collect()
}

fn parse_line(text: &str) -> Option<Result<BotCommand, ParseError>> {
    let rest = text.strip_prefix('/')?;
    if text.len() > MAX_LINE {
        return None;
    }
    let mut words = rest.split_whitespace();
    let name = words.next()?;
    // `/usr/bin/env`, `/s`-style jokes and URLs are not commands: a name is letters and `-`.
    if !name.chars().all(|c| c.is_ascii_alphabetic() || c == '-') {
        return None;
    }
    let lower = name.to_ascii_lowercase();
    let args: Vec<&str> = words.collect();
    let usage = COMMANDS.iter().find(|u| u.name == lower);
    let Some(usage) = usage else {
        let names: Vec<&str> = COMMANDS.iter().map(|u| u.name).collect();
        return Some(Err(ParseError::Unknown {
            hint: did_you_mean(&lower, &names),
            name: name.chars().take(40).collect(),
        }));
    };
    let bad = |arg: &str| ParseError::BadArgument {
        command: usage.name,
        arg: quotable(arg),
        usage: usage.usage,
    };
    Some(match usage.name {
        "deliver" => {
            let mut priority = 0;
            for arg in args {
                let Some(value) = arg
                    .strip_prefix("priority=")
                    .or_else(|| arg.strip_prefix("p="))
                else {
                    return Some(Err(bad(arg)));
                };
                match value.parse::<i64>() {
                    Ok(p) => priority = p,
                    Err(_) => {
                        return Some(Err(ParseError::BadPriority { arg: quotable(arg) }));
                    }
                }
            }
            Ok(BotCommand::Deliver { priority })
        }
        "showroom" => match args.as_slice() {
            [] => Ok(BotCommand::Showroom { down: false }),
            ["down"] => Ok(BotCommand::Showroom { down: true }),
            [arg, ..] => Err(bad(arg)),
        },
        name => {
            if let Some(arg) = args.first() {
                return Some(Err(bad(arg)));
            }
            Ok(match name {
                "cancel" => BotCommand::Cancel,
                "retry" => BotCommand::Retry,
                "rollback" => BotCommand::Rollback,
                "status" => BotCommand::Status,
                "autotest" => BotCommand::Autotest,
                _ => BotCommand::Help,
            })
        }
    })
}

/// The help, as posted in a comment (Markdown).
pub fn help() -> String {
    let mut s = String::from("Commands, one per line in a pull request comment:\n\n");
    for u in COMMANDS {
        s.push_str(&format!("- `{}`: {}\n", u.usage, u.what));
    }
    s.push_str(
        "\nOnly people with write access to the repository (or the maintainers named in \
         `lockstep.toml`) can command the bot. Commands inside code blocks or quotes are ignored.",
    );
    s
}

impl fmt::Display for BotCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BotCommand::Deliver { priority } if *priority != 0 => {
                write!(f, "/deliver priority={priority}")
            }
            BotCommand::Showroom { down: true } => write!(f, "/showroom down"),
            other => write!(f, "/{}", other.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showroom_takes_down_and_nothing_else() {
        assert_eq!(ok("/showroom"), [BotCommand::Showroom { down: false }]);
        assert_eq!(ok("/showroom down"), [BotCommand::Showroom { down: true }]);
        assert_eq!(
            BotCommand::Showroom { down: true }.to_string(),
            "/showroom down"
        );
        let e = parse("/showroom up").remove(0).unwrap_err();
        assert_eq!(
            e.to_string(),
            "`/showroom` takes no `up`; write it as `/showroom [down]`"
        );
    }

    fn ok(comment: &str) -> Vec<BotCommand> {
        parse(comment).into_iter().map(|r| r.unwrap()).collect()
    }

    #[test]
    fn commands_anywhere_one_per_line() {
        assert_eq!(ok("/deliver"), [BotCommand::Deliver { priority: 0 }]);
        assert_eq!(
            ok("Looks good.\n\n  /deliver priority=5\r\nthanks\n/status"),
            [BotCommand::Deliver { priority: 5 }, BotCommand::Status]
        );
        assert_eq!(ok("/DELIVER p=-1"), [BotCommand::Deliver { priority: -1 }]);
        assert_eq!(ok("/autotest"), [BotCommand::Autotest]);
        assert!(parse("/autotest now")[0].is_err());
        assert_eq!(
            ok("/cancel\n/retry\n/rollback\n/help"),
            [
                BotCommand::Cancel,
                BotCommand::Retry,
                BotCommand::Rollback,
                BotCommand::Help
            ]
        );
    }

    #[test]
    fn not_in_code_quotes_or_prose() {
        let comment = "\
To deliver, write:
```
/deliver
```
~~~~
/cancel
~~~
still fenced
~~~~
    /retry
\t/rollback
> /deliver
>/status
<!-- /deliver
/cancel -->
I ran `/deliver` earlier; see /usr/bin/env and https://x/deliver
- /deliver
";
        assert!(parse(comment).is_empty(), "{:?}", parse(comment));
        // An unclosed fence swallows the rest, as on GitHub.
        assert!(parse("```rust\n/deliver").is_empty());
        assert_eq!(ok("```\n/cancel\n```\n/status"), [BotCommand::Status]);
    }

    #[test]
    fn mistakes_are_explained() {
        let r = parse("/delivr\n/deliver now\n/deliver priority=high\n/cancel 12\n/frobnicate");
        let msgs: Vec<String> = r
            .iter()
            .map(|r| r.clone().unwrap_err().to_string())
            .collect();
        assert_eq!(
            msgs,
            [
                "unknown command `/delivr` (did you mean `deliver`?)",
                "`/deliver` takes no `now`; write it as `/deliver [priority=N]`",
                "`/deliver priority=high`: the priority must be a whole number, like `priority=10`",
                "`/cancel` takes no `12`; write it as `/cancel`",
                "unknown command `/frobnicate`",
            ]
        );
    }

    #[test]
    fn every_command_parses_from_its_help_line() {
        for u in COMMANDS {
            let line = u
                .usage
                .replace("[priority=N]", "priority=3")
                .replace("[down]", "down");
            let cmd = ok(&line);
            assert_eq!(cmd.len(), 1, "{line}");
            assert_eq!(cmd[0].name(), u.name);
            assert!(help().contains(u.usage));
        }
    }

    #[test]
    fn never_panics_and_stays_bounded() {
        let nasty = [
            "",
            "/",
            "//",
            "/ deliver",
            "/é",
            "/deliver priority=",
            "```",
            "~~~\n~~",
            "\u{feff}/deliver",
            "/deliver priority=99999999999999999999",
            "\r\n\r\n",
            "> ",
            "<!--",
            "-->",
            "`/x`",
            "/ab\u{301}c",
            "/deliver\u{a0}priority=1",
        ];
        for n in nasty {
            let _ = parse(n);
        }
        let many = "/status\n".repeat(1000);
        assert_eq!(parse(&many).len(), MAX_COMMANDS);
        let long = format!("/deliver {}", "x".repeat(10_000));
        assert!(parse(&long).is_empty());
        // Every byte sequence that is valid UTF-8 made of these pieces parses.
        let pieces = [
            "/", "d", "`", "~", ">", " ", "\n", "\t", "=", "<!--", "-->", "é",
        ];
        let mut s = String::new();
        for i in 0..5000usize {
            s.push_str(pieces[(i * 7 + i / 3) % pieces.len()]);
            let _ = parse(&s);
        }
    }

    #[test]
    fn help_text() {
        insta::assert_snapshot!(help());
    }
}
