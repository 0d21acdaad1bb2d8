//! The README's first command: the narrated demo runs every act as told.

use crate::util::*;

#[test]
fn demo_runs_every_act_as_told() {
    let out = lockstep_cmd().arg("demo").output().unwrap();
    let text = stdout(&out);
    assert_eq!(code(&out), 0, "{text}{}", stderr(&out));
    // Every act the demo declares ran, in order, and the closing line counts them.
    let acts = lockstep::sandbox::ACTS;
    let headings: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.split_once(". ")
                .is_some_and(|(n, _)| n.parse::<usize>().is_ok())
        })
        .collect();
    let declared: Vec<String> = acts
        .iter()
        .enumerate()
        .map(|(i, act)| format!("{}. {}", i + 1, act.title))
        .collect();
    assert_eq!(headings, declared, "{text}");
    assert!(
        text.contains(&format!("all {} acts went as told", acts.len())),
        "{text}"
    );
    // The second act really delivered, then really undid a failed delivery.
    assert!(
        text.contains("delivered: both masters advanced, TASK-1 is Closed"),
        "{text}"
    );
    assert!(
        text.contains("smoke test failed: the login page renders blank"),
        "{text}"
    );
    assert!(!text.contains("NOT"), "{text}");
}

#[test]
fn demo_keeps_its_sandbox_only_in_a_new_folder() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("precious"), "x").unwrap();
    let out = lockstep_cmd()
        .args(["demo", "--keep"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("is not empty; name a new folder for `--keep`"));
    assert!(dir.path().join("precious").exists());
}
