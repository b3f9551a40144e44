//! `sinew breaking`, run as a user runs it, on every case under
//! `tests/breaking/<case>/{old,new}`: exit code 1 and one line per
//! expected finding where `expect.txt` lists any, 0 and nothing where it
//! lists none. (The module's own tests check each finding's rule and
//! place; these check the command around them.)

use std::{path::Path, process::Command};

fn cases() -> Vec<std::path::PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/breaking");
    let mut cases: Vec<_> = std::fs::read_dir(root)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("expect.txt").is_file())
        .collect();
    cases.sort();
    cases
}

/// The findings `expect.txt` lists: its lines that are not comments.
fn expected(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.join("expect.txt"))
        .unwrap()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_case_exits_as_its_findings_say() {
    let cases = cases();
    assert!(cases.len() >= 18, "a case per rule: {cases:?}");
    for case in cases {
        let expected = expected(&case);
        let output = Command::new(env!("CARGO_BIN_EXE_sinew"))
            .arg("breaking")
            .arg(case.join("new"))
            .arg("--against")
            .arg(case.join("old"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        let want = if expected.is_empty() { 0 } else { 1 };
        assert_eq!(
            output.status.code(),
            Some(want),
            "{}: {stdout}{stderr}",
            case.display()
        );
        assert_eq!(
            stdout.lines().count(),
            expected.len(),
            "{}: {stdout}",
            case.display()
        );
        for (line, expect) in stdout.lines().zip(&expected) {
            // `RULE file:line` in expect.txt; `file:line:col: RULE: ...` printed.
            let rule = expect.split_whitespace().next().unwrap();
            assert!(
                line.contains(&format!(": {rule}: ")),
                "{}: {line} vs {expect}",
                case.display()
            );
        }
    }
}

#[test]
fn json_output_carries_file_line_and_rule() {
    let case = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/breaking/field_removed");
    let output = Command::new(env!("CARGO_BIN_EXE_sinew"))
        .arg("breaking")
        .arg(case.join("new"))
        .arg("--against")
        .arg(case.join("old"))
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let findings: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let first = &findings[0];
    assert_eq!(first["rule"], "FIELD_REMOVED");
    assert_eq!(first["file"], "shop.proto");
    assert_eq!(first["line"], 4);
}

#[test]
fn a_contract_that_does_not_compile_is_bad_input_with_its_place() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.proto"),
        "syntax = \"proto3\";\nmessage A {\n  strin x = 1;\n}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sinew"))
        .arg("breaking")
        .arg(dir.path())
        .arg("--against")
        .arg(dir.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(65), "{stderr}");
    assert!(stderr.contains("bad.proto:3:"), "{stderr}");
    // Neither a folder nor, outside any repository, a git ref.
    let good = tempfile::tempdir().unwrap();
    std::fs::write(
        good.path().join("good.proto"),
        "syntax = \"proto3\";\nmessage A {}\n",
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_sinew"))
        .arg("breaking")
        .arg(good.path())
        .arg("--against")
        .arg("no-such-ref-or-dir")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
}
