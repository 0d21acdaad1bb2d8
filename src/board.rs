//! The board `lockstep deliver` draws on a terminal: one row per repository, one column per
//! phase, redrawn in place under the delivery's story as it moves. When a pipeline has several
//! deliveries in flight, each has its rows, named by its number (`#12 api`); a delivery that
//! has ended stays on screen above the board as it ended. Off a terminal (a pipe, a file,
//! `TERM=dumb`) the story alone is printed, line by line, as before.

use std::io::{IsTerminal as _, Write};
use std::sync::{Arc, Mutex};

use crate::delivery::{Progress, Watcher};
use crate::domain::{DeliveryId, Phase, RepoName, StepState};
use crate::text::escape;

/// The columns are the phases, in the order a delivery goes through them. `rollback` shows
/// only when used.
const COLUMNS: usize = Phase::ALL.len();
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
        Arc::new(print_line)
    }
}

/// Prints a line of a delivery's story, its control characters escaped (the story quotes
/// step output). A reader that has gone away (`| head`) is not the delivery's problem: the
/// error is ignored and the delivery goes on.
pub fn print_line(line: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{}", escape(line));
}

/// Where each repository of the deliveries in flight stands: one delivery on the serial line,
/// the head and its candidates in a pipeline (`[delivery] window` > 1).
#[derive(Debug, Default)]
struct Grid {
    rows: Vec<Row>,
}

#[derive(Debug)]
struct Row {
    delivery: DeliveryId,
    repo: RepoName,
    cells: [Option<StepState>; COLUMNS],
}

impl Grid {
    fn set(&mut self, delivery: DeliveryId, repo: &RepoName, phase: Phase, state: StepState) {
        let col = phase as usize;
        let row = match self
            .rows
            .iter()
            .position(|r| r.delivery == delivery && r.repo == *repo)
        {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    delivery,
                    repo: repo.clone(),
                    cells: Default::default(),
                });
                self.rows.len() - 1
            }
        };
        self.rows[row].cells[col] = Some(state);
    }

    fn holds(&self, delivery: DeliveryId) -> bool {
        self.rows.iter().any(|r| r.delivery == delivery)
    }

    /// Takes out the deliveries that have ended (merged everywhere, or stopped by a failure
    /// with nothing left running), as a grid of their own.
    fn take_ended(&mut self) -> Grid {
        let ended: Vec<DeliveryId> = self
            .deliveries()
            .into_iter()
            .filter(|d| {
                let rows = || self.rows.iter().filter(|r| r.delivery == *d);
                let merged =
                    rows().all(|r| r.cells[Phase::Merge as usize] == Some(StepState::Passed));
                let stopped = rows().any(|r| {
                    r.cells.iter().any(|c| {
                        matches!(
                            c,
                            Some(
                                StepState::Failed
                                    | StepState::TimedOut
                                    | StepState::NotStarted
                                    | StepState::Stopped
                            )
                        )
                    })
                });
                let running = rows().any(|r| r.cells.contains(&Some(StepState::Running)));
                merged || (stopped && !running)
            })
            .collect();
        let (gone, live) = std::mem::take(&mut self.rows)
            .into_iter()
            .partition(|r| ended.contains(&r.delivery));
        self.rows = live;
        Grid { rows: gone }
    }

    fn deliveries(&self) -> Vec<DeliveryId> {
        let mut ids: Vec<DeliveryId> = self.rows.iter().map(|r| r.delivery).collect();
        ids.dedup();
        ids
    }

    /// The board's lines, each shorter than 80 columns, without a final newline.
    fn render(&self, color: bool) -> Vec<String> {
        if self.rows.is_empty() {
            return Vec::new();
        }
        let rollback = self
            .rows
            .iter()
            .any(|r| r.cells[Phase::Rollback as usize].is_some());
        // Several deliveries in flight: each row says whose it is.
        let several = self.deliveries().len() > 1;
        let columns = if rollback { 7 } else { 6 };
        let mut header = format!("  {:<NAME$}  ", "");
        for phase in &Phase::ALL[..columns] {
            header.push_str(&format!("{phase:<CELL$}"));
        }
        let mut lines = vec![header.trim_end().to_string()];
        for Row {
            delivery,
            repo,
            cells,
        } in &self.rows
        {
            let label = if several {
                format!("#{delivery} {repo}")
            } else {
                repo.to_string()
            };
            let name: String = label.chars().take(NAME).collect();
            let mut line = format!("  {name:<NAME$}  ");
            for cell in &cells[..columns] {
                let (word, paint) = look(*cell);
                let padded = format!("{word:<CELL$}");
                if color && !paint.is_empty() {
                    line.push_str(&format!("\x1b[{paint}m{padded}\x1b[0m"));
                } else {
                    line.push_str(&padded);
                }
            }
            lines.push(line.trim_end().to_string());
        }
        lines
    }
}

/// A state as a short word, and its color (an SGR code; none for plain).
fn look(state: Option<StepState>) -> (&'static str, &'static str) {
    match state {
        None => ("·", ""),
        Some(StepState::Running) => ("running", "33"),
        Some(StepState::Passed) => ("ok", "32"),
        Some(StepState::Failed) => ("FAILED", "31;1"),
        Some(StepState::TimedOut) => ("TIMEOUT", "31;1"),
        Some(StepState::Stopped) => ("stopped", "2"),
        Some(StepState::NotStarted) => ("NOSTART", "31;1"),
        Some(StepState::Interrupted) => ("?", ""),
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
            let _ = writeln!(d.out, "{}", escape(line));
        });
    }

    fn step(&self, delivery: DeliveryId, repo: &RepoName, phase: Phase, state: StepState) {
        self.redraw(|d| {
            if !d.grid.holds(delivery) && d.height > 0 {
                // Another delivery: those that have ended stay on screen as they ended.
                let ended = d.grid.take_ended();
                let lines = ended.render(self.color);
                for line in &lines {
                    let _ = writeln!(d.out, "{line}");
                }
                if !lines.is_empty() {
                    let _ = writeln!(d.out);
                }
            }
            d.grid.set(delivery, repo, phase, state);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(name: &str) -> Phase {
        Phase::parse(name).unwrap()
    }

    fn state(name: &str) -> StepState {
        StepState::parse(name).unwrap()
    }

    impl Grid {
        fn put(&mut self, delivery: i64, repo: &str, phase_name: &str, state_name: &str) {
            self.set(
                DeliveryId(delivery),
                &repo.into(),
                phase(phase_name),
                state(state_name),
            );
        }
    }

    impl<W: Write + Send> Board<W> {
        fn put(&self, delivery: i64, repo: &str, phase_name: &str, state_name: &str) {
            self.step(
                DeliveryId(delivery),
                &repo.into(),
                phase(phase_name),
                state(state_name),
            );
        }
    }

    #[test]
    fn the_grid_has_a_row_per_repository_and_a_column_per_phase() {
        let mut g = Grid::default();
        g.put(1, "api", "rebase", "passed");
        g.put(1, "web", "rebase", "passed");
        g.put(1, "api", "build", "passed");
        g.put(1, "web", "build", "running");
        assert_eq!(
            g.render(false),
            [
                "                rebase   build    test     deploy   verify   merge",
                "  api           ok       ok       ·        ·        ·        ·",
                "  web           ok       running  ·        ·        ·        ·",
            ]
        );
        g.put(1, "web", "build", "failed");
        g.put(1, "a-very-long-repository-name", "rollback", "passed");
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
    fn the_board_is_redrawn_in_place_under_the_story() {
        let board = Board::new(Vec::new(), false);
        board.say("#1 T-1: delivery started");
        board.put(1, "api", "rebase", "passed");
        board.say("#1 T-1: rebase api");
        board.put(1, "api", "build", "running");
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
        board.put(1, "api", "merge", "passed");
        board.put(2, "web", "rebase", "failed");
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

    #[test]
    fn a_pipeline_shows_every_delivery_in_flight_by_its_number() {
        let board = Board::new(Vec::new(), false);
        board.put(1, "api", "deploy", "running");
        board.put(2, "api", "build", "running");
        board.put(2, "web", "build", "passed");
        let text = String::from_utf8(board.into_inner()).unwrap();
        let after_erase = text.rsplit("\x1b[J").next().unwrap();
        assert_eq!(
            after_erase,
            "                rebase   build    test     deploy   verify   merge\n\
             \x20 #1 api        ·        ·        ·        running  ·        ·\n\
             \x20 #2 api        ·        running  ·        ·        ·        ·\n\
             \x20 #2 web        ·        ok       ·        ·        ·        ·\n"
        );
    }

    #[test]
    fn a_delivery_leaves_the_live_board_only_once_it_has_ended() {
        let mut g = Grid::default();
        // Between two phases, nothing running: still in flight.
        g.put(1, "api", "build", "passed");
        g.put(2, "api", "rebase", "failed");
        g.put(3, "api", "merge", "passed");
        let ended = g.take_ended();
        assert_eq!(ended.deliveries(), [DeliveryId(2), DeliveryId(3)]);
        assert_eq!(g.deliveries(), [DeliveryId(1)]);
        // One delivery left: its rows need no number.
        assert_eq!(
            g.render(false)[1],
            "  api           ·        ok       ·        ·        ·        ·"
        );
    }
}
