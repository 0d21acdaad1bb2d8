//! The board `lockstep deliver` draws on a terminal: one row per repository, one column per
//! phase, redrawn in place under the delivery's story as it moves. Off a terminal (a pipe, a
//! file, `TERM=dumb`) the story alone is printed, line by line, as before.

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};

use crate::delivery::line::{Progress, Watcher};

/// The columns, in the order a delivery goes through them. `rollback` shows only when used.
const PHASES: [&str; 7] = [
    "rebase", "build", "test", "deploy", "verify", "merge", "rollback",
];
/// Repository names are cut to this, so that a row never wraps on an 80-column terminal.
const NAME: usize = 12;
/// Each phase column is this wide.
const CELL: usize = 9;

/// The progress for `lockstep deliver`'s standard output: a board on a terminal, lines
/// otherwise.
pub fn for_stdout() -> Progress {
    let stdout = std::io::stdout();
    let terminal = stdout.is_terminal()
        && std::env::var_os("TERM").is_some_and(|t| !t.is_empty() && t != "dumb");
    if terminal {
        let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        Arc::new(Board::new(stdout, color))
    } else {
        Arc::new(|line: &str| println!("{line}"))
    }
}

/// Where each repository of the deliveries on the board stands: one delivery, or the head
/// and the candidates of the pipeline (their rows then named `#id repo`).
#[derive(Debug, Default)]
struct Grid {
    parts: Vec<Part>,
}

/// One delivery's rows.
#[derive(Debug, Default)]
struct Part {
    delivery: i64,
    rows: Vec<(String, [Option<String>; PHASES.len()])>,
}

impl Part {
    /// Every repository merged, or a step that stopped the line: the delivery is over on
    /// the board (a candidate prepared again comes back with new rows).
    fn ended(&self) -> bool {
        let merged = PHASES.iter().position(|p| *p == "merge");
        let all_merged = !self.rows.is_empty()
            && self
                .rows
                .iter()
                .all(|(_, cells)| merged.is_some_and(|m| cells[m].as_deref() == Some("passed")));
        let stopped = self.rows.iter().any(|(_, cells)| {
            cells
                .iter()
                .flatten()
                .any(|c| matches!(c.as_str(), "failed" | "timed out" | "not started"))
        });
        all_merged || stopped
    }
}

impl Grid {
    /// Records a step. A delivery new to the board takes the place of those that ended,
    /// which are returned (to be left on screen as they ended).
    fn set(&mut self, delivery: i64, repo: &str, phase: &str, state: &str) -> Vec<Part> {
        let Some(col) = PHASES.iter().position(|p| *p == phase) else {
            return Vec::new();
        };
        let mut ended = Vec::new();
        if !self.parts.iter().any(|p| p.delivery == delivery) {
            let (gone, kept): (Vec<Part>, Vec<Part>) = std::mem::take(&mut self.parts)
                .into_iter()
                .partition(Part::ended);
            ended = gone;
            self.parts = kept;
            self.parts.push(Part {
                delivery,
                rows: Vec::new(),
            });
        }
        let Some(part) = self.parts.iter_mut().find(|p| p.delivery == delivery) else {
            return ended;
        };
        let row = match part.rows.iter().position(|(r, _)| r == repo) {
            Some(i) => i,
            None => {
                part.rows.push((repo.to_string(), Default::default()));
                part.rows.len() - 1
            }
        };
        part.rows[row].1[col] = Some(state.to_string());
        ended
    }

    /// The board's lines, each shorter than 80 columns, without a final newline.
    fn render(&self, color: bool) -> Vec<String> {
        render(&self.parts, color)
    }
}

/// The lines of a board of `parts`: a header, then a row per repository of each delivery.
fn render(parts: &[Part], color: bool) -> Vec<String> {
    if parts.iter().all(|p| p.rows.is_empty()) {
        return Vec::new();
    }
    let several = parts.len() > 1;
    let rollback = parts
        .iter()
        .flat_map(|p| &p.rows)
        .any(|(_, cells)| cells[6].is_some());
    let columns = if rollback { 7 } else { 6 };
    let mut header = format!("  {:<NAME$}  ", "");
    for phase in &PHASES[..columns] {
        header.push_str(&format!("{phase:<CELL$}"));
    }
    let mut lines = vec![header.trim_end().to_string()];
    for part in parts {
        for (repo, cells) in &part.rows {
            let label = if several {
                format!("#{} {repo}", part.delivery)
            } else {
                repo.clone()
            };
            let name: String = label.chars().take(NAME).collect();
            let mut line = format!("  {name:<NAME$}  ");
            for cell in &cells[..columns] {
                let (word, paint) = look(cell.as_deref());
                let padded = format!("{word:<CELL$}");
                if color && !paint.is_empty() {
                    line.push_str(&format!("\x1b[{paint}m{padded}\x1b[0m"));
                } else {
                    line.push_str(&padded);
                }
            }
            lines.push(line.trim_end().to_string());
        }
    }
    lines
}

/// A state as a short word, and its color (an SGR code; none for plain).
fn look(state: Option<&str>) -> (&'static str, &'static str) {
    match state {
        None => ("·", ""),
        Some("running") => ("running", "33"),
        Some("passed") => ("ok", "32"),
        Some("failed") => ("FAILED", "31;1"),
        Some("timed out") => ("TIMEOUT", "31;1"),
        Some("stopped") => ("stopped", "2"),
        Some("not started") => ("NOSTART", "31;1"),
        Some(_) => ("?", ""),
    }
}

/// The story above, the board below, redrawn in place on every change.
pub struct Board<W: Write + Send> {
    inner: Mutex<Drawn<W>>,
    color: bool,
}

struct Drawn<W> {
    out: W,
    grid: Grid,
    /// How many lines the board took when last drawn (to move back over them).
    height: usize,
}

impl<W: Write + Send> Board<W> {
    pub fn new(out: W, color: bool) -> Board<W> {
        Board {
            inner: Mutex::new(Drawn {
                out,
                grid: Grid::default(),
                height: 0,
            }),
            color,
        }
    }

    /// Erases the board, lets `between` write, draws the board again. A terminal that has
    /// gone away is not the delivery's problem: write errors are ignored.
    fn redraw(&self, between: impl FnOnce(&mut Drawn<W>)) {
        let mut d = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if d.height > 0 {
            let up = d.height;
            let _ = write!(d.out, "\r\x1b[{up}A\x1b[J");
        }
        between(&mut d);
        let lines = d.grid.render(self.color);
        for line in &lines {
            let _ = writeln!(d.out, "{line}");
        }
        d.height = lines.len();
        let _ = d.out.flush();
    }

    #[cfg(test)]
    fn into_inner(self) -> W {
        self.inner.into_inner().unwrap().out
    }
}

impl<W: Write + Send> Watcher for Board<W> {
    fn say(&self, line: &str) {
        self.redraw(|d| {
            let _ = writeln!(d.out, "{line}");
        });
    }

    fn step(&self, delivery: i64, repo: &str, phase: &str, state: &str) {
        self.redraw(|d| {
            let ended = d.grid.set(delivery, repo, phase, state);
            if !ended.is_empty() {
                // The deliveries that ended stay on screen as they ended.
                for line in render(&ended, self.color) {
                    let _ = writeln!(d.out, "{line}");
                }
                let _ = writeln!(d.out);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_grid_has_a_row_per_repository_and_a_column_per_phase() {
        let mut g = Grid::default();
        g.set(1, "api", "rebase", "passed");
        g.set(1, "web", "rebase", "passed");
        g.set(1, "api", "build", "passed");
        g.set(1, "web", "build", "running");
        g.set(1, "api", "nonsense", "passed");
        assert_eq!(
            g.render(false),
            [
                "                rebase   build    test     deploy   verify   merge",
                "  api           ok       ok       ·        ·        ·        ·",
                "  web           ok       running  ·        ·        ·        ·",
            ]
        );
        g.set(1, "web", "build", "failed");
        g.set(1, "a-very-long-repository-name", "rollback", "passed");
        let lines = g.render(false);
        assert_eq!(lines.len(), 4);
        assert!(lines[0].ends_with("merge    rollback"), "{}", lines[0]);
        assert!(lines[2].contains("FAILED"), "{}", lines[2]);
        assert!(lines[3].starts_with("  a-very-long-  ·"), "{}", lines[3]);
        assert!(lines.iter().all(|l| l.chars().count() < 80), "{lines:#?}");
        // Colors only when asked.
        assert!(g.render(true)[2].contains("\x1b[31;1mFAILED"));
        assert!(!g.render(false).concat().contains('\x1b'));
    }

    #[test]
    fn deliveries_of_the_pipeline_share_the_board_until_they_end() {
        let mut g = Grid::default();
        g.set(1, "api", "deploy", "running");
        g.set(2, "api", "build", "running");
        assert_eq!(
            g.render(false),
            [
                "                rebase   build    test     deploy   verify   merge",
                "  #1 api        ·        ·        ·        running  ·        ·",
                "  #2 api        ·        running  ·        ·        ·        ·",
            ]
        );
        g.set(1, "api", "merge", "passed");
        // #1 landed: a third delivery takes its place, and #1 is handed back to stay on
        // screen as it ended.
        let ended = g.set(3, "web", "rebase", "passed");
        assert_eq!(ended.iter().map(|p| p.delivery).collect::<Vec<_>>(), [1]);
        let lines = g.render(false);
        assert_eq!(lines.len(), 3);
        assert!(lines[1].starts_with("  #2 api "), "{lines:#?}");
        assert!(lines[2].starts_with("  #3 web "), "{lines:#?}");
    }

    #[test]
    fn the_board_is_redrawn_in_place_under_the_story() {
        let board = Board::new(Vec::new(), false);
        board.say("#1 T-1: delivery started");
        board.step(1, "api", "rebase", "passed");
        board.say("#1 T-1: rebase api");
        board.step(1, "api", "build", "running");
        let text = String::from_utf8(board.into_inner()).unwrap();
        // No board before the first step; then every change moves up over the board (two
        // lines: header and api), clears, writes, and draws it again.
        assert_eq!(
            text,
            "#1 T-1: delivery started\n\
             \x20               rebase   build    test     deploy   verify   merge\n\
             \x20 api           ok       ·        ·        ·        ·        ·\n\
             \r\x1b[2A\x1b[J#1 T-1: rebase api\n\
             \x20               rebase   build    test     deploy   verify   merge\n\
             \x20 api           ok       ·        ·        ·        ·        ·\n\
             \r\x1b[2A\x1b[J\
             \x20               rebase   build    test     deploy   verify   merge\n\
             \x20 api           ok       running  ·        ·        ·        ·\n"
        );
    }

    #[test]
    fn a_second_delivery_leaves_the_first_board_on_screen() {
        let board = Board::new(Vec::new(), false);
        board.step(1, "api", "merge", "passed");
        board.step(2, "web", "rebase", "failed");
        let text = String::from_utf8(board.into_inner()).unwrap();
        let after_erase = text.rsplit("\x1b[J").next().unwrap();
        assert!(
            after_erase
                .contains("  api           ·        ·        ·        ·        ·        ok\n\n"),
            "{after_erase:?}"
        );
        assert!(
            after_erase
                .ends_with("  web           FAILED   ·        ·        ·        ·        ·\n"),
            "{after_erase:?}"
        );
    }
}
