//! sinew-build: the method table is exact, events carry what their contract
//! declares, contracts' comments become docs, bad contracts fail with file
//! and line, and the framework's checked-in generated code is fresh.

use std::{path::Path, time::Duration};

use sinew::{
    contract::{
        Access, CodeSet, Compensation, CompensationInput, Contract, Idempotency, MethodPolicy,
        Streaming,
    },
    event::Event,
};
use sinew_workspace::proto::{
    echo::v1::EchoContract,
    greeter::v1::GreeterContract,
    shop::{
        inventory::v1::InventoryContract,
        orders::v1::{CustomerCredited, OrderConfirmed, OrderPlaced, payment},
        payments::v1::PaymentsContract,
    },
};
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
    compile_in(source).1
}

/// Compiles `source` as `contracts/bad/v1/bad.proto`, returning the scratch
/// folder, whose `out` holds the generated code.
fn compile_in(source: &str) -> (tempfile::TempDir, Result<(), sinew_build::Error>) {
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("contracts");
    std::fs::create_dir_all(protos.join("bad/v1")).unwrap();
    std::fs::write(protos.join("bad/v1/bad.proto"), source).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let result = sinew_build::configure().out_dir(&out).compile_dir(&protos);
    (dir, result)
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

#[test]
fn access_is_in_the_method_table() {
    // The service's default, and a method's own, which replaces it.
    assert_eq!(
        PaymentsContract::CHARGE.policy.auth,
        Access::Scopes(&["payments.write"])
    );
    assert_eq!(
        PaymentsContract::REFUND.policy.auth,
        Access::Scopes(&["payments.refund"])
    );
    assert_eq!(
        InventoryContract::RESERVE.policy.auth,
        Access::Undeclared,
        "a contract that says nothing"
    );

    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  option (sinew.service) = {{ auth: {{ scopes: [\"s.read\"] }} }};\n  \
         rpc Get(M) returns (M);\n  \
         rpc Ping(M) returns (M) {{ option (sinew.method) = {{ auth: {{ public: true }} }}; }}\n  \
         rpc Who(M) returns (M) {{ option (sinew.method) = {{ auth: {{}} }}; }}\n  \
         rpc Put(M) returns (M) {{ option (sinew.method) = {{ timeout: \"1s\" }}; }}\n}}\n\
         service T {{\n  rpc Open(M) returns (M);\n}}\n"
    );
    let (dir, result) = compile_in(&source);
    result.unwrap();
    let code = std::fs::read_to_string(dir.path().join("out/bad.v1.rs")).unwrap();
    let auth_of = |method: &str| {
        let at = code
            .find(&format!("path: \"{method}\""))
            .unwrap_or_else(|| panic!("{method} in {code}"));
        let rest = &code[at..];
        let auth = rest.find("auth:").map(|i| &rest[i..]);
        let end = rest.find("};").unwrap_or(rest.len());
        match auth {
            Some(auth) if rest.len() - auth.len() < end => auth
                [..auth.find('\n').unwrap_or(auth.len())]
                .trim()
                .to_owned(),
            _ => "none".to_owned(),
        }
    };
    assert_eq!(
        auth_of("/bad.v1.S/Get"),
        "auth: ::sinew::contract::Access::Scopes(&[\"s.read\"]),",
        "the service's default"
    );
    assert_eq!(
        auth_of("/bad.v1.S/Put"),
        "auth: ::sinew::contract::Access::Scopes(&[\"s.read\"]),",
        "a method with a policy but no auth takes the default"
    );
    assert_eq!(
        auth_of("/bad.v1.S/Ping"),
        "auth: ::sinew::contract::Access::Public,"
    );
    assert_eq!(
        auth_of("/bad.v1.S/Who"),
        "auth: ::sinew::contract::Access::Scopes(&[]),",
        "any authenticated caller"
    );
    assert_eq!(auth_of("/bad.v1.T/Open"), "none", "no policy at all");
}

#[test]
fn bad_access_fails_at_its_line() {
    let method = |auth: &str| {
        format!(
            "{OPTIONS_HEADER}service S {{\n  rpc Get(M) returns (M) {{\n    \
             option (sinew.method) = {{ auth: {auth} }};\n  }}\n}}\n"
        )
    };
    for (auth, reason) in [
        (
            "{ public: true scopes: [\"a\"] }",
            "auth: a public method needs no scope",
        ),
        (
            "{ scopes: [\"orders write\"] }",
            "auth.scopes: \"orders write\" is not a scope",
        ),
        ("{ scopes: [\"\"] }", "auth.scopes: \"\" is not a scope"),
        (
            "{ scopes: [\"a\", \"a\"] }",
            "auth.scopes: \"a\" is listed twice",
        ),
    ] {
        let error = compile(&method(auth)).unwrap_err();
        assert_points_at(&error, 7, reason);
        assert!(error.to_string().contains("method bad.v1.S.Get"), "{error}");
    }
    // A service's default is checked the same, at its own line.
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Get(M) returns (M);\n  \
         option (sinew.service) = {{ auth: {{ public: true scopes: [\"a\"] }} }};\n}}\n"
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(
        &error,
        7,
        "service bad.v1.S: auth: a public method needs no scope",
    );
    // protox refuses a field that does not exist.
    let error = compile(&method("{ scope: [\"a\"] }")).unwrap_err();
    assert_points_at(&error, 7, "auth: { public scopes }");
}

#[test]
fn a_compensation_is_in_the_method_table() {
    assert_eq!(
        PaymentsContract::CHARGE.policy.compensated_by,
        Some(Compensation {
            path: "/shop.payments.v1.Payments/Refund",
            input: CompensationInput::Response,
        }),
        "Refund takes the Charge that Charge answers"
    );
    assert_eq!(PaymentsContract::REFUND.policy.compensated_by, None);
    assert_eq!(
        PaymentsContract::compensation_of(PaymentsContract::CHARGE.path),
        Some(&PaymentsContract::REFUND)
    );
    assert_eq!(
        PaymentsContract::compensation_of(PaymentsContract::REFUND.path),
        None,
        "Refund declares no compensation"
    );
    assert_eq!(
        InventoryContract::compensation_of("/shop.inventory.v1.Inventory/Reserve"),
        Some(&InventoryContract::RELEASE)
    );
    assert_eq!(
        InventoryContract::RELEASE.idempotency,
        Idempotency::Idempotent
    );
    assert_eq!(
        EchoContract::compensation_of("/echo.v1.Echo/Put"),
        None,
        "a method without compensated_by"
    );
}

/// A contract whose method `Act(Req) returns (Res)` names its compensation
/// with `compensated_by` on line 9, after `action_extra` on the same line;
/// `undo` is the signature of the second method, on line 11, with
/// `option idempotency_level = {undo_level}` on line 12.
fn compensation_contract(
    action: &str,
    action_extra: &str,
    compensated_by: &str,
    undo: &str,
    undo_level: &str,
) -> String {
    format!(
        "{OPTIONS_HEADER}message Req {{}}\nmessage Res {{}}\nservice S {{\n  \
         rpc {action} {{\n    \
         {action_extra}option (sinew.method) = {{ compensated_by: \"{compensated_by}\" }};\n  \
         }}\n  \
         rpc {undo} {{\n    \
         option idempotency_level = {undo_level};\n  \
         }}\n}}\n"
    )
}

/// The error of compiling a contract where `Act(Req) returns (Res)` is
/// undone by `compensated_by`.
fn compensation_error(compensated_by: &str, undo: &str, undo_level: &str) -> sinew_build::Error {
    let source = compensation_contract(
        "Act(Req) returns (Res)",
        "",
        compensated_by,
        undo,
        undo_level,
    );
    compile(&source).unwrap_err()
}

#[test]
fn a_compensation_that_is_not_in_the_service_is_an_error() {
    let error = compensation_error("Refnd", "Undo(Res) returns (M)", "IDEMPOTENT");
    assert_points_at(&error, 9, "service bad.v1.S has no method \"Refnd\"");
    assert!(
        error.to_string().contains("its methods: Act, Undo"),
        "{error}"
    );
    let error = compensation_error("bad.v1.S.Undo", "Undo(Res) returns (M)", "IDEMPOTENT");
    assert_points_at(&error, 9, "\"bad.v1.S.Undo\" is not a method name");
    assert!(
        error.to_string().contains("bad.proto:9:5: "),
        "column in {error}"
    );
}

#[test]
fn a_compensation_must_be_idempotent() {
    let error = compensation_error("Undo", "Undo(Res) returns (M)", "IDEMPOTENCY_UNKNOWN");
    assert_points_at(
        &error,
        9,
        "Undo is retried until it succeeds, so it must be marked `option idempotency_level = IDEMPOTENT`",
    );
    let error = compensation_error("Undo", "Undo(Res) returns (M)", "NO_SIDE_EFFECTS");
    assert_points_at(
        &error,
        9,
        "Undo is marked NO_SIDE_EFFECTS, so it would undo nothing",
    );
}

#[test]
fn a_compensation_must_take_the_actions_request_or_response() {
    let error = compensation_error("Undo", "Undo(M) returns (M)", "IDEMPOTENT");
    assert_points_at(&error, 9, "Undo takes bad.v1.M");
    let text = error.to_string();
    assert!(
        text.contains("request (bad.v1.Req) or response (bad.v1.Res)"),
        "{text}"
    );
}

#[test]
fn a_compensated_step_and_its_compensation_are_unary() {
    let source = compensation_contract(
        "Act(stream Req) returns (Res)",
        "",
        "Undo",
        "Undo(Res) returns (M)",
        "IDEMPOTENT",
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(
        &error,
        9,
        "a saga step is one unary call, but the method Act streams its requests",
    );
    let error = compensation_error("Undo", "Undo(Res) returns (stream M)", "IDEMPOTENT");
    assert_points_at(&error, 9, "its compensation Undo streams its responses");
}

#[test]
fn a_method_cannot_compensate_itself() {
    let error = compensation_error("Act", "Undo(Res) returns (M)", "IDEMPOTENT");
    assert_points_at(&error, 9, "a method cannot compensate itself");
}

#[test]
fn a_method_without_side_effects_has_nothing_to_compensate() {
    let source = compensation_contract(
        "Act(Req) returns (Res)",
        "option idempotency_level = NO_SIDE_EFFECTS; ",
        "Undo",
        "Undo(Res) returns (M)",
        "IDEMPOTENT",
    );
    let error = compile(&source).unwrap_err();
    assert_points_at(
        &error,
        9,
        "marked NO_SIDE_EFFECTS, so there is nothing to undo",
    );
}

#[test]
fn a_compensation_built_from_the_request_or_the_response_compiles() {
    for (undo, input) in [
        ("Undo(Req) returns (M)", "CompensationInput::Request"),
        ("Undo(Res) returns (M)", "CompensationInput::Response"),
    ] {
        let source =
            compensation_contract("Act(Req) returns (Res)", "", "Undo", undo, "IDEMPOTENT");
        let (dir, result) = compile_in(&source);
        result.unwrap_or_else(|e| panic!("{undo}: {e}"));
        let code = std::fs::read_to_string(dir.path().join("out/bad.v1.rs")).unwrap();
        assert!(code.contains("\"/bad.v1.S/Undo\""), "{undo}: {code}");
        assert!(code.contains(input), "{undo} is built from {input}: {code}");
    }
}

#[test]
fn a_compensation_may_itself_be_compensated() {
    // Symmetric pairs: each undoes the other, and a saga may run either as
    // a step.
    let source = format!(
        "{OPTIONS_HEADER}service S {{\n  rpc Enable(M) returns (M) {{\n    \
         option idempotency_level = IDEMPOTENT;\n    \
         option (sinew.method) = {{ compensated_by: \"Disable\" }};\n  }}\n  \
         rpc Disable(M) returns (M) {{\n    option idempotency_level = IDEMPOTENT;\n    \
         option (sinew.method) = {{ compensated_by: \"Enable\" }};\n  }}\n}}\n"
    );
    compile(&source).expect("a symmetric pair compiles");
}

#[test]
fn events_carry_what_the_contract_declares() {
    assert_eq!(OrderPlaced::TYPE, "shop.orders.v1.OrderPlaced");
    assert_eq!(OrderPlaced::SUBJECT, "shop.orders.placed");
    assert_eq!(OrderPlaced::SCHEMA_VERSION, 1, "unset version means 1");
    let placed = OrderPlaced {
        order_id: "o-42".into(),
        amount_cents: 1250,
    };
    assert_eq!(placed.aggregate_id(), "o-42");

    assert_eq!(OrderConfirmed::TYPE, "shop.orders.v1.OrderConfirmed");
    assert_eq!(OrderConfirmed::SUBJECT, "shop.orders.confirmed");
    assert_eq!(OrderConfirmed::SCHEMA_VERSION, 2);
    let confirmed = OrderConfirmed {
        order_id: "o-43".into(),
    };
    assert_eq!(confirmed.aggregate_id(), "o-43");

    assert_eq!(CustomerCredited::SUBJECT, "shop.customers.credited");
    let credited = CustomerCredited {
        customer_id: -7,
        amount_cents: 100,
    };
    assert_eq!(credited.aggregate_id(), "-7", "an int64 key in decimal");

    // Nested messages, keyed by bytes and by a field named after a Rust
    // keyword (`r#ref` in Rust).
    assert_eq!(payment::Captured::TYPE, "shop.orders.v1.Payment.Captured");
    assert_eq!(payment::Captured::SUBJECT, "shop.payments.captured");
    let captured = payment::Captured {
        payment_id: vec![0x00, 0xab, 0x7f, 0x10],
    };
    assert_eq!(
        captured.aggregate_id(),
        "00ab7f10",
        "bytes in lowercase hex"
    );
    assert_eq!(payment::Refunded::SUBJECT, "shop.payments.refunded");
    let refunded = payment::Refunded { r#ref: u64::MAX };
    assert_eq!(refunded.aggregate_id(), "18446744073709551615");
}

/// A contract whose message `M` (line 4) declares itself an event with
/// `option`, on line 5, and has a field of each kind.
fn event_contract(option: &str) -> String {
    format!(
        "syntax = \"proto3\";\npackage bad.v1;\nimport \"sinew/options.proto\";\nmessage M {{\n  \
         option (sinew.event) = {{ {option} }};\n  string id = 1;\n  repeated string tags = 2;\n  \
         M inner = 3;\n  double score = 4;\n  bool open = 5;\n  Kind kind = 6;\n  \
         map<string, string> labels = 7;\n  optional string maybe = 8;\n  \
         oneof owner {{ string user = 9; string team = 10; }}\n  int64 number = 11;\n}}\n\
         enum Kind {{ KIND_UNSPECIFIED = 0; }}\n"
    )
}

#[test]
fn an_event_subject_with_a_wildcard_is_an_error() {
    for (subject, wildcard) in [("shop.*.placed", "`*`"), ("shop.orders.>", "`>`")] {
        let error = compile(&event_contract(&format!(
            "subject: {subject:?} aggregate: \"id\""
        )))
        .unwrap_err();
        assert_points_at(
            &error,
            5,
            &format!("subject {subject:?} has the wildcard {wildcard}"),
        );
        assert!(error.to_string().contains("message bad.v1.M"), "{error}");
    }
}

#[test]
fn an_event_subject_with_an_empty_token_is_an_error() {
    for subject in ["shop..placed", ".shop.placed", "shop.placed."] {
        let error = compile(&event_contract(&format!(
            "subject: {subject:?} aggregate: \"id\""
        )))
        .unwrap_err();
        assert_points_at(
            &error,
            5,
            &format!("subject {subject:?} has an empty token"),
        );
    }
}

#[test]
fn an_event_subject_with_other_characters_is_an_error() {
    let error = compile(&event_contract(
        "subject: \"shop orders\" aggregate: \"id\"",
    ))
    .unwrap_err();
    assert_points_at(&error, 5, "subject \"shop orders\" has whitespace");
    let error = compile(&event_contract(
        "subject: \"shop/orders\" aggregate: \"id\"",
    ))
    .unwrap_err();
    assert_points_at(&error, 5, "subject \"shop/orders\" has `/`");
    let long = "a".repeat(256);
    let error = compile(&event_contract(&format!(
        "subject: \"{long}\" aggregate: \"id\""
    )))
    .unwrap_err();
    assert_points_at(&error, 5, "is 256 bytes long; the limit is 255");
}

#[test]
fn an_event_without_a_subject_is_an_error() {
    let error = compile(&event_contract("aggregate: \"id\"")).unwrap_err();
    assert_points_at(&error, 5, "(sinew.event) needs a `subject`");
}

#[test]
fn an_event_without_an_aggregate_is_an_error() {
    let error = compile(&event_contract("subject: \"shop.orders.placed\"")).unwrap_err();
    assert_points_at(&error, 5, "(sinew.event) needs an `aggregate`");
}

#[test]
fn an_aggregate_field_that_does_not_exist_is_an_error() {
    let error = compile(&event_contract(
        "subject: \"shop.orders.placed\" aggregate: \"idd\"",
    ))
    .unwrap_err();
    assert_points_at(
        &error,
        5,
        "aggregate field `idd` does not exist in bad.v1.M",
    );
}

#[test]
fn an_aggregate_field_unfit_as_a_key_is_an_error() {
    let cases = [
        ("tags", "is repeated"),
        ("inner", "is a message"),
        ("score", "is a floating-point number"),
        ("open", "is a bool"),
        ("kind", "is an enum"),
        ("labels", "is a map"),
        ("maybe", "is `optional`"),
        ("user", "is in oneof `owner`"),
    ];
    for (field, why) in cases {
        let error = compile(&event_contract(&format!(
            "subject: \"shop.orders.placed\" aggregate: {field:?}"
        )))
        .unwrap_err();
        assert_points_at(
            &error,
            5,
            &format!("aggregate field `{field}` of bad.v1.M {why}"),
        );
        assert!(
            error
                .to_string()
                .contains("must be a string, integer or bytes field"),
            "{error}"
        );
    }
}

#[test]
fn a_proto2_aggregate_must_be_required() {
    let source = |aggregate: &str| {
        format!(
            "syntax = \"proto2\";\npackage bad.v1;\nimport \"sinew/options.proto\";\n\
             message M {{\n  option (sinew.event) = {{ subject: \"a.b\" aggregate: {aggregate:?} }};\n  \
             required string id = 1;\n  optional string other = 2;\n}}\n"
        )
    };
    // prost makes a proto2 `optional` field an `Option`, a `required` one not.
    let error = compile(&source("other")).unwrap_err();
    assert_points_at(
        &error,
        5,
        "aggregate field `other` of bad.v1.M is `optional`",
    );
    let (dir, result) = compile_in(&source("id"));
    result.expect("a required field is always present");
    let code = std::fs::read_to_string(dir.path().join("out/bad.v1.rs")).unwrap();
    assert!(code.contains("self.id.clone()"), "{code}");
}

#[test]
fn a_nested_event_is_checked_at_its_own_option() {
    let source = "syntax = \"proto3\";\npackage bad.v1;\nimport \"sinew/options.proto\";\n\
                  message Outer {\n  string id = 1;\n  message Inner {\n    string id = 1;\n    \
                  option (sinew.event) = { subject: \"a.*\" aggregate: \"id\" };\n  }\n}\n";
    let error = compile(source).unwrap_err();
    assert_points_at(&error, 8, "message bad.v1.Outer.Inner: subject \"a.*\"");
}

#[test]
fn a_valid_event_compiles_into_an_impl() {
    let (dir, result) = compile_in(&event_contract(
        "subject: \"shop.orders.placed\" aggregate: \"number\" version: 3",
    ));
    result.expect("a valid event compiles");
    // The package has no service: the impl is there all the same.
    let code = std::fs::read_to_string(dir.path().join("out/bad.v1.rs")).unwrap();
    assert!(
        code.contains("impl ::sinew::event::Event for M {"),
        "{code}"
    );
    assert!(
        code.contains("const TYPE: &'static str = \"bad.v1.M\";"),
        "{code}"
    );
    assert!(code.contains("const SCHEMA_VERSION: u32 = 3;"), "{code}");
    assert!(code.contains("self.number.to_string()"), "{code}");
    for field in ["id", "number"] {
        let (_dir, result) = compile_in(&event_contract(&format!(
            "subject: \"shop.orders.placed\" aggregate: {field:?}"
        )));
        result.expect("a string or integer aggregate is fit");
    }
}

#[test]
fn sinews_own_files_get_no_code() {
    // A contracts folder that links sinew's `proto/sinew`, as this
    // workspace's does, and a contract that imports both of sinew's files.
    let dir = tempfile::tempdir().unwrap();
    let protos = dir.path().join("contracts");
    std::fs::create_dir_all(protos.join("sinew")).unwrap();
    std::fs::create_dir_all(protos.join("shop/v1")).unwrap();
    std::fs::write(
        protos.join("sinew/options.proto"),
        sinew_build::OPTIONS_PROTO,
    )
    .unwrap();
    std::fs::write(protos.join("sinew/events.proto"), sinew_build::EVENTS_PROTO).unwrap();
    std::fs::write(
        protos.join("shop/v1/shop.proto"),
        "syntax = \"proto3\";\npackage shop.v1;\nimport \"sinew/options.proto\";\n\
         import \"sinew/events.proto\";\nmessage Placed {\n  \
         option (sinew.event) = { subject: \"shop.placed\" aggregate: \"id\" };\n  \
         string id = 1;\n}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    sinew_build::configure()
        .out_dir(&out)
        .compile_dir(&protos)
        .expect("a contract importing sinew's files compiles");
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(
        files,
        ["shop.v1.rs", "sinew_contracts.rs", "sinew_descriptor.bin"],
        "no code for package sinew"
    );
    let contracts = std::fs::read_to_string(out.join("sinew_contracts.rs")).unwrap();
    assert!(!contracts.contains("pub mod sinew"), "{contracts}");

    // Without the files on disk, sinew-build serves them.
    std::fs::remove_dir_all(protos.join("sinew")).unwrap();
    sinew_build::configure()
        .out_dir(&out)
        .compile_dir(&protos)
        .expect("sinew's files are served without a copy on disk");
}

/// The code of sinew's own services (health in the scaffold, the saga
/// admin service) is generated by sinew-build and checked in. Run with
/// `SINEW_BLESS=1` to regenerate it after changing a proto or the
/// generator.
#[test]
fn the_checked_in_service_code_is_fresh() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let crates = [
        (
            "framework/sinew-server/proto",
            "grpc/health/v1/health.proto",
            "crate::codegen",
            "framework/sinew-server/src/health/generated",
            "grpc.health.v1",
        ),
        (
            "framework/sinew-build/proto",
            "sinew/saga/v1/admin.proto",
            "crate::admin::codegen",
            "framework/sinew-saga/src/admin/generated",
            "sinew.saga.v1",
        ),
    ];
    let bless = std::env::var("SINEW_BLESS").is_ok_and(|v| v == "1");
    for (proto, file, framework, checked_in, package) in crates {
        let out = tempfile::tempdir().unwrap();
        sinew_build::configure()
            .framework_path(framework)
            .include(root.join(proto))
            .out_dir(out.path())
            .compile(&[file])
            .unwrap();
        let checked_in = root.join(checked_in);
        let pairs = [
            (format!("{package}.rs"), format!("{package}.rs")),
            (
                sinew_build::DESCRIPTOR_FILE.to_owned(),
                format!("{package}.bin"),
            ),
        ];
        for (generated, stored) in pairs {
            let fresh = std::fs::read(out.path().join(&generated)).unwrap();
            let path = checked_in.join(stored);
            if bless {
                std::fs::create_dir_all(&checked_in).unwrap();
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
}
