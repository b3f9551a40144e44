//! sinew-build: the method table is exact, contracts' comments become docs,
//! bad contracts fail with file and line, and the framework's checked-in
//! generated code is fresh.

use std::{path::Path, time::Duration};

use sinew::contract::{CodeSet, Contract, Idempotency, MethodPolicy, Streaming};
use sinew_workspace::proto::{echo::v1::EchoContract, greeter::v1::GreeterContract};
use tonic::Code;

#[test]
fn the_method_table_matches_the_contract() {
    assert_eq!(EchoContract::SERVICE, "echo.v1.Echo");
    let table: Vec<(&str, &str, Streaming, Idempotency)> = EchoContract::METHODS
        .iter()
        .map(|m| (m.name, m.path, m.streaming, m.idempotency))
        .collect();
    assert_eq!(
        table,
        [
            (
                "Get",
                "/echo.v1.Echo/Get",
                Streaming::Unary,
                Idempotency::NoSideEffects
            ),
            (
                "Put",
                "/echo.v1.Echo/Put",
                Streaming::Unary,
                Idempotency::Idempotent
            ),
            (
                "Post",
                "/echo.v1.Echo/Post",
                Streaming::Unary,
                Idempotency::Unknown
            ),
            (
                "Expand",
                "/echo.v1.Echo/Expand",
                Streaming::ServerStreaming,
                Idempotency::Unknown
            ),
            (
                "Collect",
                "/echo.v1.Echo/Collect",
                Streaming::ClientStreaming,
                Idempotency::Unknown
            ),
            (
                "Chat",
                "/echo.v1.Echo/Chat",
                Streaming::Bidirectional,
                Idempotency::Unknown
            ),
        ]
    );
}

#[test]
fn sinew_options_become_per_method_defaults() {
    let get = EchoContract::GET.policy;
    assert_eq!(get.timeout, Some(Duration::from_millis(250)));
    assert_eq!(get.retry, None);
    let hedging = get.hedging.expect("Get hedges");
    assert_eq!(hedging.max_attempts, 3);
    assert_eq!(hedging.hedging_delay, Duration::from_millis(20));
    assert_eq!(hedging.non_fatal_codes, CodeSet::of(&[Code::Unavailable]));

    let put = EchoContract::PUT.policy;
    assert_eq!(put.timeout, Some(Duration::from_secs(1)));
    assert_eq!(put.hedging, None);
    let retry = put.retry.expect("Put retries");
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(retry.initial_backoff, Duration::from_millis(10));
    assert_eq!(retry.max_backoff, Duration::from_secs(1));
    assert!((retry.backoff_multiplier - 2.0).abs() < f64::EPSILON);
    assert_eq!(
        retry.retryable_codes,
        CodeSet::of(&[Code::Unavailable, Code::ResourceExhausted])
    );

    assert_eq!(EchoContract::POST.policy, MethodPolicy::NONE);
    assert_eq!(
        GreeterContract::SAY_HELLO.policy.timeout,
        Some(Duration::from_secs(2))
    );
}

#[test]
fn methods_are_found_by_path() {
    let put = EchoContract::method("/echo.v1.Echo/Put").expect("Put is in the table");
    assert_eq!(put.name, "Put");
    assert!(put.idempotency.is_retry_safe());
    assert!(!EchoContract::POST.idempotency.is_retry_safe());
    assert!(EchoContract::method("/echo.v1.Echo/Nope").is_none());
}

#[test]
fn proto_comments_become_doc_comments() {
    let code = include_str!(concat!(env!("OUT_DIR"), "/greeter.v1.rs"));
    assert!(
        code.contains("/// Answers a greeting for the given name."),
        "method docs"
    );
    assert!(code.contains("/// The name to greet."), "field docs");
    assert!(code.contains("/// Greets people."), "service docs");
}

#[test]
fn well_known_types_resolve_to_prost_types_through_sinew() {
    // prost must see the well-known types to decide what a message holding
    // one can derive; it used to panic when they were left out of the set.
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("contracts");
    std::fs::create_dir_all(protos.join("shop/v1")).unwrap();
    std::fs::write(
        protos.join("shop/v1/order.proto"),
        "syntax = \"proto3\";\npackage shop.v1;\nimport \"google/protobuf/timestamp.proto\";\n\
         message Order {\n  google.protobuf.Timestamp placed_at = 1;\n}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    sinew_build::configure()
        .out_dir(&out)
        .compile_dir(&protos)
        .expect("a contract with a well-known type compiles");
    let code = std::fs::read_to_string(out.join("shop.v1.rs")).unwrap();
    assert!(code.contains("::sinew::prost_types::Timestamp"), "{code}");
    assert!(code.contains("::sinew::prost::Message"), "{code}");
    assert!(
        !out.join("google.protobuf.rs").exists(),
        "no code for the well-known types themselves"
    );
}

/// Compiles `source` as `contracts/bad/v1/bad.proto` into a scratch folder.
fn compile(source: &str) -> Result<(), sinew_build::Error> {
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("contracts");
    std::fs::create_dir_all(protos.join("bad/v1")).unwrap();
    std::fs::write(protos.join("bad/v1/bad.proto"), source).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    sinew_build::configure().out_dir(&out).compile_dir(&protos)
}

fn assert_points_at(error: &sinew_build::Error, line: usize, reason: &str) {
    let text = error.to_string();
    assert!(
        error
            .file()
            .is_some_and(|f| f.ends_with("contracts/bad/v1/bad.proto")),
        "file in {text}"
    );
    assert_eq!(error.line(), Some(line), "line in {text}");
    assert!(text.contains(&format!("bad.proto:{line}:")), "{text}");
    assert!(text.contains(reason), "expected {reason:?} in {text}");
}

#[test]
fn a_syntax_error_names_file_and_line() {
    let error = compile(
        "syntax = \"proto3\";\npackage bad.v1;\n\nmessage Broken {\n  string name = ;\n}\n",
    )
    .unwrap_err();
    assert_points_at(&error, 5, "expected");
}

#[test]
fn an_unknown_type_names_file_and_line() {
    let error = compile(
        "syntax = \"proto3\";\npackage bad.v1;\n\nservice S {\n  rpc Get(Missing) returns (Missing);\n}\n",
    )
    .unwrap_err();
    assert_points_at(&error, 5, "Missing");
}

const OPTIONS_HEADER: &str =
    "syntax = \"proto3\";\npackage bad.v1;\nimport \"sinew/options.proto\";\nmessage M {}\n";

#[test]
fn an_unknown_option_field_names_file_and_line() {
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Get(M) returns (M) {{\n    option (sinew.method) = {{ timout: \"1s\" }};\n  }}\n}}\n"
    );
    let error = compile(&source).unwrap_err();
    // protox does not name the bad field; the error says what is allowed.
    assert_points_at(&error, 7, "for option '(sinew.method)'");
    assert!(error.to_string().contains("takes { timeout"), "{error}");
}

#[test]
fn a_bad_duration_names_file_line_and_key() {
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Get(M) returns (M) {{\n    option (sinew.method) = {{ timeout: \"soon\" }};\n  }}\n}}\n"
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(&error, 7, "timeout: \"soon\" is not a duration");
}

#[test]
fn an_unknown_status_code_is_an_error() {
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Put(M) returns (M) {{\n    option idempotency_level = IDEMPOTENT;\n    option (sinew.method) = {{ retry: {{ max_attempts: 3 initial_backoff: \"10ms\" max_backoff: \"1s\" backoff_multiplier: 2 retryable_status_codes: [\"UNAVAILABLE\", \"FLAKY\"] }} }};\n  }}\n}}\n"
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(&error, 8, "\"FLAKY\" is not a gRPC status code");
}

#[test]
fn hedging_a_method_with_side_effects_is_an_error() {
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Put(M) returns (M) {{\n    option idempotency_level = IDEMPOTENT;\n    option (sinew.method) = {{ hedging: {{ max_attempts: 2 hedging_delay: \"10ms\" }} }};\n  }}\n}}\n"
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(&error, 8, "NO_SIDE_EFFECTS");
}

#[test]
fn a_retry_policy_missing_a_field_is_an_error() {
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Put(M) returns (M) {{\n    option (sinew.method) = {{ retry: {{ max_attempts: 3 max_backoff: \"1s\" backoff_multiplier: 2 retryable_status_codes: [\"UNAVAILABLE\"] }} }};\n  }}\n}}\n"
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(&error, 7, "retry.initial_backoff is required");
}

#[test]
fn a_valid_contract_compiles() {
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Get(M) returns (M) {{\n    option idempotency_level = NO_SIDE_EFFECTS;\n    option (sinew.method) = {{ timeout: \"1s\" }};\n  }}\n}}\n"
    );
    compile(&source).expect("a valid contract compiles");
}

/// The health service's code is generated by sinew-build and checked in.
/// Run with `SINEW_BLESS=1` to regenerate it after changing the proto or
/// the generator.
#[test]
fn the_checked_in_health_code_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let proto = root.join("framework/sinew-server/proto");
    let checked_in = root.join("framework/sinew-server/src/health/generated");
    let out = tempfile::tempdir().unwrap();
    sinew_build::configure()
        .framework_path("crate::codegen")
        .out_dir(out.path())
        .compile_dir(&proto)
        .unwrap();
    let pairs = [
        ("grpc.health.v1.rs", "grpc.health.v1.rs"),
        (sinew_build::DESCRIPTOR_FILE, "grpc.health.v1.bin"),
    ];
    let bless = std::env::var("SINEW_BLESS").is_ok_and(|v| v == "1");
    for (generated, stored) in pairs {
        let fresh = std::fs::read(out.path().join(generated)).unwrap();
        let path = checked_in.join(stored);
        if bless {
            std::fs::write(&path, &fresh).unwrap();
        }
        let current = std::fs::read(&path).unwrap_or_default();
        assert!(
            current == fresh,
            "{} is stale: run `SINEW_BLESS=1 cargo test --test codegen` and commit the result",
            path.display()
        );
    }
}
