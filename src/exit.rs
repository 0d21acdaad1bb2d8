//! How a command ends: the one list of lockstep's exit codes, which every command returns and
//! `main` hands to the operating system. The README's table of exit codes is written from it (the
//! test `help::the_exit_code_tables_are_the_exit_enum` holds the two together).

/// A command's outcome, as its exit code tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// 0: done as asked: the push accepted, the delivery landed or queued, the policies
    /// valid, nothing a replay would decide otherwise.
    Success = 0,
    /// 1: refused or failed: a push rejected by a policy (a rule that errs, the tracker not
    /// answering included), a delivery failed, refused or cancelled, policies that do not
    /// check, a push a replay would decide otherwise, a decision log whose hash chain is
    /// broken, a demo act that went otherwise, a `doctor` that finds something to fix.
    Failed = 1,
    /// 2: lockstep could not do what was asked: a usage, config or internal error. A hook
    /// that cannot decide, or cannot log its decision (`[audit] on_error`), rejects the push
    /// with it: it fails closed. A replay that could not read a logged push.
    Error = 2,
    /// 141 (128 + SIGPIPE): the reader of the output went away (`lockstep logs 1 | head`);
    /// quiet, as `git log | head` is.
    BrokenPipe = 141,
}

impl Exit {
    /// Every exit code, in the order of the table.
    pub const ALL: [Exit; 4] = [Exit::Success, Exit::Failed, Exit::Error, Exit::BrokenPipe];

    /// The number the process exits with.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// [`Exit::Success`] when `ok`, else [`Exit::Failed`].
    pub fn success_if(ok: bool) -> Exit {
        if ok { Exit::Success } else { Exit::Failed }
    }
}

/// Whether an error is a write to a pipe whose reader has gone: not a failure to report.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ALL` is what the README's table is checked against: it lists every variant, which
    /// this match (no wildcard) makes a new variant's author look at.
    #[test]
    fn all_lists_every_exit_with_its_number() {
        for e in Exit::ALL {
            match e {
                Exit::Success | Exit::Failed | Exit::Error | Exit::BrokenPipe => {}
            }
        }
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 141]);
    }
}
