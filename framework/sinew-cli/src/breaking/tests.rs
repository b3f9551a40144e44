//! Tests of `sinew breaking`: the cases under `testdata/`, the git path,
//! errors, and the pieces the rules are built from.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// One folder per case, each with `old/`, `new/` and `expect.txt`.
const TESTDATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/breaking");

/// A finding as `expect.txt` writes it: `RULE file:line`, the file with
/// `old:` in front when the location is in the old version.
fn render(finding: &Finding) -> String {
    let old = if finding.version == Version::Old {
        "old:"
    } else {
        ""
    };
    format!("{} {old}{}:{}", finding.rule, finding.file, finding.line)
}

/// The findings `expect.txt` lists, sorted; `#` starts a comment line.
fn expected(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut lines: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect();
    lines.sort();
    lines
}

fn write(root: &Path, name: &str, text: &str) {
    let path = root.join(name);
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("create folders");
    std::fs::write(path, text).expect("write a contract");
}

fn run_git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=sinew",
            "-c",
            "user.email=sinew@example.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_testdata_case_finds_what_its_expect_file_lists() {
    let mut cases: Vec<PathBuf> = std::fs::read_dir(TESTDATA)
        .expect("testdata exists")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    assert!(cases.len() >= 20, "only {} cases", cases.len());

    let mut failures = Vec::new();
    let mut covered = BTreeSet::new();
    for case in &cases {
        let name = case.file_name().expect("a name").to_string_lossy();
        let old = load_dir(&case.join("old")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let new = load_dir(&case.join("new")).unwrap_or_else(|e| panic!("{name}: {e}"));
        let findings = compare(&old, &new);
        let mut found: Vec<String> = findings.iter().map(render).collect();
        found.sort();
        let want = expected(&case.join("expect.txt"));
        for line in &want {
            let id = line.split_whitespace().next().unwrap_or_default();
            assert!(Rule::from_id(id).is_some(), "{name}: unknown rule {id}");
            covered.insert(id.to_owned());
        }
        if found != want {
            let shown: Vec<String> = findings.iter().map(ToString::to_string).collect();
            failures.push(format!(
                "{name}:\n  expected {want:?}\n  found    {found:?}\n  {}",
                shown.join("\n  ")
            ));
        }
        // A version never breaks itself.
        assert_eq!(compare(&old, &old), Vec::new(), "{name}: old against old");
        assert_eq!(compare(&new, &new), Vec::new(), "{name}: new against new");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    for rule in Rule::ALL {
        assert!(
            covered.contains(rule.id()),
            "no testdata case shows {rule} firing"
        );
    }
}

#[test]
fn the_allowed_case_has_no_findings_and_an_empty_expect_file() {
    let case = Path::new(TESTDATA).join("allowed");
    assert!(expected(&case.join("expect.txt")).is_empty());
    let old = load_dir(&case.join("old")).expect("old compiles");
    let new = load_dir(&case.join("new")).expect("new compiles");
    assert_eq!(compare(&old, &new), Vec::new());
    // The moved message's new file is a contract of the new version.
    assert!(new.files().any(|f| f == "moved.proto"));
}

#[test]
fn messages_name_the_field_and_the_message() {
    let case = Path::new(TESTDATA).join("field_removed");
    let old = load_dir(&case.join("old")).expect("old compiles");
    let new = load_dir(&case.join("new")).expect("new compiles");
    let findings = compare(&old, &new);
    assert_eq!(findings.len(), 1);
    assert_eq!(
        findings[0].to_string(),
        "shop.proto:4:1: FIELD_REMOVED: field 2 `total` of shop.v1.Order removed without being \
         reserved (add `reserved 2;`)"
    );
}

#[test]
fn saga_findings_name_the_saga_and_the_state() {
    let case = Path::new(TESTDATA).join("saga_state_fields");
    let old = load_dir(&case.join("old")).expect("old compiles");
    let new = load_dir(&case.join("new")).expect("new compiles");
    let findings = compare(&old, &new);
    let money = findings
        .iter()
        .find(|f| f.line == 7)
        .expect("the Money finding");
    assert_eq!(money.rule, Rule::SagaStateChanged);
    assert!(
        money
            .message
            .contains("saga `checkout` stores shop.v1.CheckoutState (which holds shop.v1.Money)"),
        "{}",
        money.message
    );
    assert!(
        money.message.contains("from int64 to string"),
        "{}",
        money.message
    );
    let attempts = findings
        .iter()
        .find(|f| f.line == 19)
        .expect("the attempts finding");
    assert!(
        attempts.message.ends_with(
            "saga `checkout` stores shop.v1.CheckoutState: running sagas could not be resumed"
        ),
        "{}",
        attempts.message
    );
}

#[test]
fn finding_display_and_json() {
    let finding = Finding {
        file: "orders/v1/orders.proto".to_owned(),
        line: 12,
        column: 3,
        version: Version::New,
        rule: Rule::FieldRemoved,
        message: "field 3 `total` of orders.v1.Order removed".to_owned(),
    };
    assert_eq!(
        finding.to_string(),
        "orders/v1/orders.proto:12:3: FIELD_REMOVED: field 3 `total` of orders.v1.Order removed"
    );
    let json = serde_json::to_value(&finding).expect("serializes");
    assert_eq!(json["rule"], "FIELD_REMOVED");
    assert_eq!(json["version"], "new");
    assert_eq!(json["line"], 12);
    assert_eq!(json["file"], "orders/v1/orders.proto");

    let old = Finding {
        version: Version::Old,
        ..finding
    };
    assert!(
        old.to_string()
            .ends_with("removed (location in the old version)"),
        "{old}"
    );
    assert_eq!(
        serde_json::to_value(&old).expect("serializes")["version"],
        "old"
    );
}

#[test]
fn rule_ids_are_unique_screaming_snake_and_match_serde() {
    let mut seen = BTreeSet::new();
    for rule in Rule::ALL {
        let id = rule.id();
        assert!(seen.insert(id), "{id} twice");
        assert!(
            id.chars().all(|c| c.is_ascii_uppercase() || c == '_'),
            "{id}"
        );
        assert_eq!(Rule::from_id(id), Some(rule));
        assert_eq!(
            serde_json::to_value(rule).expect("serializes"),
            serde_json::Value::String(id.to_owned())
        );
    }
    assert_eq!(Rule::from_id("NOT_A_RULE"), None);
}

#[test]
fn wire_families() {
    let ok = [
        (Kind::Int32, Kind::Uint64),
        (Kind::Bool, Kind::Int64),
        (Kind::Sint32, Kind::Sint64),
        (Kind::Fixed32, Kind::Sfixed32),
        (Kind::Fixed64, Kind::Sfixed64),
        (Kind::String, Kind::Bytes),
    ];
    for (a, b) in ok {
        assert!(kinds_compatible(&a, &b), "{a:?} -> {b:?}");
        assert!(kinds_compatible(&b, &a), "{b:?} -> {a:?}");
    }
    let broken = [
        (Kind::Int32, Kind::Sint32),
        (Kind::Int32, Kind::String),
        (Kind::Fixed32, Kind::Fixed64),
        (Kind::Float, Kind::Fixed32),
        (Kind::Float, Kind::Double),
        (Kind::Sfixed64, Kind::Double),
    ];
    for (a, b) in broken {
        assert!(!kinds_compatible(&a, &b), "{a:?} -> {b:?}");
    }
}

#[test]
fn idempotency_order_is_unknown_idempotent_no_side_effects() {
    // 0 IDEMPOTENCY_UNKNOWN, 1 NO_SIDE_EFFECTS, 2 IDEMPOTENT.
    assert!(idempotency_rank(0) < idempotency_rank(2));
    assert!(idempotency_rank(2) < idempotency_rank(1));
    assert_eq!(idempotency_name(2), "IDEMPOTENT");
}

#[test]
fn a_malformed_contract_gives_its_file_and_line() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write(
        dir.path(),
        "shop/bad.proto",
        "syntax = \"proto3\";\npackage shop;\nmessage Order {\n  string id = ;\n}\n",
    );
    let error = load_dir(dir.path()).expect_err("does not compile");
    assert!(matches!(error, BreakingError::Compile { .. }), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("shop/bad.proto:4:"), "{text}");
    assert!(text.contains("do not compile"), "{text}");
}

#[test]
fn a_missing_import_is_named() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write(
        dir.path(),
        "a.proto",
        "syntax = \"proto3\";\npackage a;\nimport \"missing/b.proto\";\n",
    );
    let text = load_dir(dir.path())
        .expect_err("import missing")
        .to_string();
    assert!(text.contains("missing/b.proto"), "{text}");
    assert!(text.contains("a.proto:3:"), "{text}");
}

#[test]
fn sinew_and_google_files_are_not_contracts() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write(
        dir.path(),
        "shop/v1/shop.proto",
        "syntax = \"proto3\";\npackage shop.v1;\nimport \"sinew/options.proto\";\nmessage A {}\n",
    );
    // A copy of sinew's file (as a contracts folder may link it) and a
    // vendored Google file.
    write(dir.path(), "sinew/options.proto", "this is not compiled");
    write(dir.path(), "google/type/money.proto", "nor is this");
    write(dir.path(), ".hidden/x.proto", "nor this");
    let contracts = load_dir(dir.path()).expect("compiles");
    assert_eq!(
        contracts.files().collect::<Vec<_>>(),
        ["shop/v1/shop.proto"]
    );
    assert!(
        contracts
            .pool()
            .get_extension_by_name("sinew.event")
            .is_some()
    );
}

#[test]
fn an_empty_folder_or_a_file_is_an_error() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let error = load_dir(dir.path()).expect_err("no contracts");
    assert!(matches!(error, BreakingError::NoContracts(_)), "{error:?}");
    write(dir.path(), "x.txt", "");
    let error = load_dir(&dir.path().join("x.txt")).expect_err("not a folder");
    assert!(error.to_string().ends_with("is not a directory"), "{error}");
}

const V1: &str = "syntax = \"proto3\";\npackage shop.v1;\n\nmessage Order {\n  string id = 1;\n  int64 total = 2;\n}\n";
const V2: &str = "syntax = \"proto3\";\npackage shop.v1;\n\nmessage Order {\n  string id = 1;\n}\n";

/// A repository with `proto/shop.proto` at V1 committed, V2 in the work
/// tree, and contracts outside `proto/`, one importing a vendored Google
/// file.
fn repository() -> tempfile::TempDir {
    let repo = tempfile::tempdir().expect("a temp dir");
    run_git(repo.path(), &["init", "-q"]);
    write(repo.path(), "proto/shop.proto", V1);
    write(
        repo.path(),
        "other/other.proto",
        "syntax = \"proto3\";\npackage other;\nmessage X {}\n",
    );
    // A vendored Google file, imported: written out with the old
    // version, though it is not a contract.
    write(
        repo.path(),
        "google/type/money.proto",
        "syntax = \"proto3\";\npackage google.type;\nmessage Money { int64 units = 1; }\n",
    );
    write(
        repo.path(),
        "wallet.proto",
        "syntax = \"proto3\";\npackage shop.v1;\nimport \"google/type/money.proto\";\n\
         message Wallet { google.type.Money balance = 1; }\n",
    );
    run_git(repo.path(), &["add", "."]);
    run_git(repo.path(), &["commit", "-q", "-m", "v1"]);
    write(repo.path(), "proto/shop.proto", V2);
    repo
}

#[test]
fn the_old_version_can_come_from_a_git_ref() {
    let repo = repository();
    let dir = repo.path().join("proto");
    let old = load_against(&dir, "HEAD").expect("HEAD loads");
    assert_eq!(old.files().collect::<Vec<_>>(), ["shop.proto"]);
    assert!(old.origin().ends_with("proto at HEAD"), "{}", old.origin());
    let new = load_dir(&dir).expect("the work tree loads");
    let findings = compare(&old, &new);
    let rendered: Vec<String> = findings.iter().map(render).collect();
    assert_eq!(rendered, ["FIELD_REMOVED shop.proto:4"]);

    // The repository root as the contracts folder: every contract, by its
    // path from the root, and the vendored Google file there to import.
    let whole = load_git(repo.path(), "HEAD").expect("HEAD loads");
    assert_eq!(
        whole.files().collect::<Vec<_>>(),
        ["other/other.proto", "proto/shop.proto", "wallet.proto"]
    );
}

#[test]
fn a_folder_is_preferred_to_a_ref() {
    let repo = repository();
    let dir = repo.path().join("proto");
    let old_dir = tempfile::tempdir().expect("a temp dir");
    write(old_dir.path(), "shop.proto", V2);
    let old = load_against(&dir, &old_dir.path().display().to_string()).expect("loads");
    let new = load_dir(&dir).expect("loads");
    assert_eq!(compare(&old, &new), Vec::new());
}

#[test]
fn a_bad_ref_is_named() {
    let repo = repository();
    let error = load_against(&repo.path().join("proto"), "no-such-branch").expect_err("bad ref");
    assert!(
        matches!(error, BreakingError::UnknownRef { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("`no-such-branch`"), "{error}");
}

#[test]
fn a_ref_outside_a_repository_says_so() {
    let dir = tempfile::tempdir().expect("a temp dir");
    write(dir.path(), "a.proto", "syntax = \"proto3\";\npackage a;\n");
    let error = load_against(dir.path(), "main").expect_err("no repository");
    assert!(
        matches!(error, BreakingError::NotARepository { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains("`main`"), "{error}");
}
