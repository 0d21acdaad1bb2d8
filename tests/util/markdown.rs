//! Untrusted text in a comment is only ever inside a code span or a fenced block: checked with
//! the crate's own model of what GitHub reads as Markdown (`lockstep::markdown_live_text`).

/// Untrusted text that would act if it were read as Markdown: a team mention, a remote
/// image, a link, HTML, and backticks.
pub const PAYLOAD: &str = "@org/team ![x](http://127.0.0.1/x) [l](http://127.0.0.1/l) <img src=x> `` `a` ``` @org/team ``";

/// Panics if any part of [`PAYLOAD`] is live in `md`.
pub fn assert_inert(md: &str) {
    let live = lockstep::markdown_live_text(md);
    for bad in ["@org", "![x]", "[l](", "<img", "127.0.0.1/x", "127.0.0.1/l"] {
        assert!(
            !live.contains(bad),
            "`{bad}` is live in:\n{md}\n--- live:\n{live}"
        );
    }
}
