use std::time::Duration;

use tonic::Code;

use super::*;
use crate::{CodeSet, HedgingPolicy, RetryPolicy};

const EXAMPLE: &str = r#"{
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [{
        "name": [{"service": "echo.v1.Echo", "method": "Get"}, {"service": "echo.v1.Echo"}, {}],
        "timeout": "1.5s",
        "retryPolicy": {
            "maxAttempts": 4,
            "initialBackoff": "0.1s",
            "maxBackoff": "1s",
            "backoffMultiplier": 2,
            "retryableStatusCodes": ["UNAVAILABLE"]
        }
    }, {
        "name": [{"service": "echo.v1.Hedged"}],
        "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]}
    }],
    "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}
}"#;

fn error(json: &str) -> ServiceConfigError {
    ServiceConfig::from_json(json).expect_err("should be rejected")
}

/// The error for a config of one entry named `{}` with these fields.
fn entry_error(fields: &str) -> ServiceConfigError {
    error(&format!(
        r#"{{"methodConfig": [{{"name": [{{}}], {fields}}}]}}"#
    ))
}

const RETRY_FIELDS: [(&str, &str); 5] = [
    ("maxAttempts", "3"),
    ("initialBackoff", r#""0.1s""#),
    ("maxBackoff", r#""1s""#),
    ("backoffMultiplier", "2"),
    ("retryableStatusCodes", r#"["UNAVAILABLE"]"#),
];

/// A valid `"retryPolicy"` field, with `key` set to `to` (or left out).
fn retry(key: &str, to: Option<&str>) -> String {
    let fields: Vec<String> = RETRY_FIELDS
        .iter()
        .filter_map(|(k, v)| match *k == key {
            true => to.map(|to| format!("{k:?}: {to}")),
            false => Some(format!("{k:?}: {v}")),
        })
        .collect();
    format!(r#""retryPolicy": {{{}}}"#, fields.join(", "))
}

#[test]
fn the_example_parses_to_exact_values() {
    let config = ServiceConfig::from_json(EXAMPLE).unwrap();
    let want = MethodConfig {
        timeout: Some(Duration::from_millis(1500)),
        retry: Some(RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            backoff_multiplier: 2.0,
            retryable_codes: CodeSet::of(&[Code::Unavailable]),
        }),
        hedging: None,
    };
    assert_eq!(config.method("/echo.v1.Echo/Get"), Some(&want));
    assert_eq!(
        config.method("/echo.v1.Hedged/Get"),
        Some(&MethodConfig {
            timeout: None,
            retry: None,
            hedging: Some(HedgingPolicy {
                max_attempts: 3,
                hedging_delay: Duration::from_millis(50),
                non_fatal_codes: CodeSet::of(&[Code::Unavailable]),
            }),
        })
    );
    assert_eq!(
        config.retry_throttling(),
        Some(RetryThrottling {
            max_tokens: 10,
            token_ratio: 0.1
        })
    );
    assert!(!config.is_empty());
}

#[test]
fn retry_and_hedging_in_one_entry_are_rejected() {
    // One entry with both policies, as A6 forbids ("Only one of
    // retryPolicy or hedgingPolicy may be set").
    let err = error(
        r#"{"methodConfig": [{"name": [{"service": "echo.v1.Echo", "method": "Get"}, {"service": "echo.v1.Echo"}, {}],
                             "timeout": "1.5s",
                             "retryPolicy": {"maxAttempts": 4, "initialBackoff": "0.1s", "maxBackoff": "1s", "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
                             "hedgingPolicy": {"maxAttempts": 3, "hedgingDelay": "0.05s", "nonFatalStatusCodes": ["UNAVAILABLE"]}}],
            "retryThrottling": {"maxTokens": 10, "tokenRatio": 0.1}}"#,
    );
    assert_eq!(err.field(), "methodConfig[0].hedgingPolicy");
    assert_eq!(
        err.to_string(),
        "methodConfig[0].hedgingPolicy: cannot be set together with retryPolicy; an entry has one or the other"
    );
}

#[test]
fn resolution_is_method_then_service_then_default() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [
            {"name": [{}], "timeout": "3s"},
            {"name": [{"service": "a.S"}], "timeout": "2s"},
            {"name": [{"service": "a.S", "method": "M"}], "timeout": "1s"},
            {"name": [{"service": "b.T", "method": "M"}], "timeout": "4s"}
        ]}"#,
    )
    .unwrap();
    let timeout = |path| config.method(path).and_then(|m| m.timeout);
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(timeout("/a.S/M"), secs(1));
    assert_eq!(timeout("/a.S/Other"), secs(2));
    assert_eq!(timeout("/c.U/M"), secs(3));
    assert_eq!(timeout("/b.T/M"), secs(4));
    // b.T has a method entry but no service entry: the default applies.
    assert_eq!(timeout("/b.T/Other"), secs(3));
    assert_eq!(timeout("not a path"), secs(3));
}

#[test]
fn without_a_default_unnamed_methods_get_nothing() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": "a.S", "method": ""}], "timeout": "1s"}]}"#,
    )
    .unwrap();
    assert!(config.method("/a.S/M").is_some());
    assert_eq!(config.method("/b.T/M"), None);
}

#[test]
fn an_empty_service_name_is_the_default() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{"service": ""}], "timeout": "1s"}]}"#,
    )
    .unwrap();
    assert!(config.method("/any.S/M").is_some());
}

#[test]
fn empty_and_unknown_fields_are_fine() {
    let config = ServiceConfig::from_json("{}").unwrap();
    assert!(config.is_empty());
    assert_eq!(config.method("/a.S/M"), None);
    assert_eq!(config.retry_throttling(), None);

    let config = ServiceConfig::from_json(
        r#"{"loadBalancingPolicy": "round_robin", "methodConfig": [{"name": [{}], "waitForReady": true, "timeout": null, "maxRequestMessageBytes": 1024}]}"#,
    )
    .unwrap();
    assert_eq!(config.method("/a.S/M"), Some(&MethodConfig::default()));
}

#[test]
fn hedging_defaults() {
    let config = ServiceConfig::from_json(
        r#"{"methodConfig": [{"name": [{}], "hedgingPolicy": {"maxAttempts": 2}}]}"#,
    )
    .unwrap();
    let hedging = config.method("/a.S/M").and_then(|m| m.hedging).unwrap();
    assert_eq!(hedging.hedging_delay, Duration::ZERO);
    assert!(hedging.non_fatal_codes.is_empty());
}

#[test]
fn max_attempts_above_the_cap_is_kept() {
    let config = ServiceConfig::from_json(&format!(
        r#"{{"methodConfig": [{{"name": [{{}}], {}}}]}}"#,
        retry("maxAttempts", Some("7.0"))
    ))
    .unwrap();
    let retry = config.method("/a.S/M").and_then(|m| m.retry).unwrap();
    assert_eq!(retry.max_attempts, 7);
}

#[test]
fn codes_by_name_and_number() {
    let config = ServiceConfig::from_json(&format!(
        r#"{{"methodConfig": [{{"name": [{{}}], {}}}]}}"#,
        retry(
            "retryableStatusCodes",
            Some(r#"["unavailable", 4, "Resource_Exhausted", 16]"#)
        )
    ))
    .unwrap();
    let retry = config.method("/a.S/M").and_then(|m| m.retry).unwrap();
    assert_eq!(
        retry.retryable_codes,
        CodeSet::of(&[
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::ResourceExhausted,
            Code::Unauthenticated,
        ])
    );
}

#[test]
fn token_ratio_keeps_three_decimal_places() {
    let ratio = |r: &str| {
        ServiceConfig::from_json(&format!(
            r#"{{"retryThrottling": {{"maxTokens": 1000, "tokenRatio": {r}}}}}"#
        ))
        .map(|c| c.retry_throttling().unwrap().token_ratio)
    };
    assert_eq!(ratio("0.1239"), Ok(0.123));
    assert_eq!(ratio("0.007"), Ok(0.007));
    assert_eq!(ratio("2"), Ok(2.0));
    let err = ratio("0.0004").unwrap_err();
    assert_eq!(err.field(), "retryThrottling.tokenRatio");
    assert!(err.reason().contains("0.001"), "{err}");
}

#[test]
fn each_validation_error_names_its_field() {
    let p = "methodConfig[0]";
    let cases: Vec<(String, String, &str)> = vec![
        // retryPolicy
        (
            retry("maxAttempts", Some("1")),
            format!("{p}.retryPolicy.maxAttempts"),
            "must be at least 2, got 1",
        ),
        (
            retry("maxAttempts", Some("-3")),
            format!("{p}.retryPolicy.maxAttempts"),
            "must be at least 2, got -3",
        ),
        (
            retry("maxAttempts", Some("2.5")),
            format!("{p}.retryPolicy.maxAttempts"),
            "expected a whole number, got 2.5",
        ),
        (
            retry("maxAttempts", Some(r#""3""#)),
            format!("{p}.retryPolicy.maxAttempts"),
            "expected a whole number, got \"3\"",
        ),
        (
            retry("maxAttempts", None),
            format!("{p}.retryPolicy.maxAttempts"),
            "required, but missing",
        ),
        (
            retry("initialBackoff", None),
            format!("{p}.retryPolicy.initialBackoff"),
            "required, but missing",
        ),
        (
            retry("maxBackoff", None),
            format!("{p}.retryPolicy.maxBackoff"),
            "required, but missing",
        ),
        (
            retry("backoffMultiplier", None),
            format!("{p}.retryPolicy.backoffMultiplier"),
            "required, but missing",
        ),
        (
            retry("retryableStatusCodes", None),
            format!("{p}.retryPolicy.retryableStatusCodes"),
            "required, but missing",
        ),
        (
            retry("initialBackoff", Some(r#""0s""#)),
            format!("{p}.retryPolicy.initialBackoff"),
            "must be above zero",
        ),
        (
            retry("maxBackoff", Some(r#""0.0s""#)),
            format!("{p}.retryPolicy.maxBackoff"),
            "must be above zero",
        ),
        (
            retry("maxBackoff", Some(r#""1""#)),
            format!("{p}.retryPolicy.maxBackoff"),
            "invalid duration \"1\"",
        ),
        (
            retry("maxBackoff", Some("1")),
            format!("{p}.retryPolicy.maxBackoff"),
            "expected a duration string",
        ),
        (
            retry("backoffMultiplier", Some("0")),
            format!("{p}.retryPolicy.backoffMultiplier"),
            "must be above zero, got 0",
        ),
        (
            retry("backoffMultiplier", Some("-1.5")),
            format!("{p}.retryPolicy.backoffMultiplier"),
            "must be above zero, got -1.5",
        ),
        (
            retry("retryableStatusCodes", Some("[]")),
            format!("{p}.retryPolicy.retryableStatusCodes"),
            "must not be empty",
        ),
        (
            retry("retryableStatusCodes", Some(r#""UNAVAILABLE""#)),
            format!("{p}.retryPolicy.retryableStatusCodes"),
            "expected an array",
        ),
        (
            retry(
                "retryableStatusCodes",
                Some(r#"["UNAVAILABLE", "UNAVAIL"]"#),
            ),
            format!("{p}.retryPolicy.retryableStatusCodes[1]"),
            "unknown status code \"UNAVAIL\"",
        ),
        (
            retry("retryableStatusCodes", Some("[17]")),
            format!("{p}.retryPolicy.retryableStatusCodes[0]"),
            "0 to 16, got 17",
        ),
        (
            retry("retryableStatusCodes", Some(r#"["OK"]"#)),
            format!("{p}.retryPolicy.retryableStatusCodes[0]"),
            "OK is not a failure",
        ),
        (
            retry("retryableStatusCodes", Some("[true]")),
            format!("{p}.retryPolicy.retryableStatusCodes[0]"),
            "expected a status code name or number, got true",
        ),
        // hedgingPolicy
        (
            r#""hedgingPolicy": {"maxAttempts": 1}"#.to_owned(),
            format!("{p}.hedgingPolicy.maxAttempts"),
            "must be at least 2, got 1",
        ),
        (
            r#""hedgingPolicy": {}"#.to_owned(),
            format!("{p}.hedgingPolicy.maxAttempts"),
            "required, but missing",
        ),
        (
            r#""hedgingPolicy": {"maxAttempts": 2, "hedgingDelay": "-1s"}"#.to_owned(),
            format!("{p}.hedgingPolicy.hedgingDelay"),
            "must not be negative",
        ),
        (
            r#""hedgingPolicy": {"maxAttempts": 2, "nonFatalStatusCodes": [0]}"#.to_owned(),
            format!("{p}.hedgingPolicy.nonFatalStatusCodes[0]"),
            "OK is not a failure",
        ),
        (
            r#""hedgingPolicy": []"#.to_owned(),
            format!("{p}.hedgingPolicy"),
            "expected an object, got an array",
        ),
        // timeout
        (
            r#""timeout": "1.5ms""#.to_owned(),
            format!("{p}.timeout"),
            "invalid duration \"1.5ms\"",
        ),
        (
            r#""timeout": 1.5"#.to_owned(),
            format!("{p}.timeout"),
            "got 1.5",
        ),
    ];
    for (fields, field, reason) in cases {
        let err = entry_error(&fields);
        assert_eq!(err.field(), field, "{fields}: {err}");
        assert!(err.reason().contains(reason), "{fields}: {err}");
        assert_eq!(err.to_string(), format!("{field}: {}", err.reason()));
    }
}

#[test]
fn names_and_document_errors_name_their_field() {
    let cases = [
        (r#"[]"#, "", "expected a JSON object, got an array"),
        (r#"{"methodConfig": "#, "", "not valid JSON"),
        (
            r#"{"methodConfig": {}}"#,
            "methodConfig",
            "expected an array, got an object",
        ),
        (
            r#"{"methodConfig": [1]}"#,
            "methodConfig[0]",
            "expected an object, got 1",
        ),
        (
            r#"{"methodConfig": [{"name": {}}]}"#,
            "methodConfig[0].name",
            "expected an array",
        ),
        (
            r#"{"methodConfig": [{"name": ["a.S"]}]}"#,
            "methodConfig[0].name[0]",
            "expected an object, got \"a.S\"",
        ),
        (
            r#"{"methodConfig": [{"name": [{"service": 5}]}]}"#,
            "methodConfig[0].name[0].service",
            "expected a string, got 5",
        ),
        (
            r#"{"methodConfig": [{"name": [{"method": "M"}]}]}"#,
            "methodConfig[0].name[0].method",
            "no service",
        ),
        (
            r#"{"methodConfig": [{"name": [{"service": "a.S", "method": "M"}]}, {"name": [{}, {"service": "a.S", "method": "M"}]}]}"#,
            "methodConfig[1].name[1]",
            "duplicate name: method \"a.S\"/\"M\" is already named at methodConfig[0].name[0]",
        ),
        (
            r#"{"methodConfig": [{"name": [{"service": "a.S"}, {"service": "a.S", "method": ""}]}]}"#,
            "methodConfig[0].name[1]",
            "duplicate name: service \"a.S\" (all methods) is already named at methodConfig[0].name[0]",
        ),
        (
            r#"{"methodConfig": [{"name": [{}]}, {"name": [{"service": ""}]}]}"#,
            "methodConfig[1].name[0]",
            "duplicate name: the default name",
        ),
        (
            r#"{"retryThrottling": 1}"#,
            "retryThrottling",
            "expected an object, got 1",
        ),
        (
            r#"{"retryThrottling": {"tokenRatio": 0.1}}"#,
            "retryThrottling.maxTokens",
            "required, but missing",
        ),
        (
            r#"{"retryThrottling": {"maxTokens": 10}}"#,
            "retryThrottling.tokenRatio",
            "required, but missing",
        ),
        (
            r#"{"retryThrottling": {"maxTokens": 0, "tokenRatio": 0.1}}"#,
            "retryThrottling.maxTokens",
            "must be 1 to 1000, got 0",
        ),
        (
            r#"{"retryThrottling": {"maxTokens": 1001, "tokenRatio": 0.1}}"#,
            "retryThrottling.maxTokens",
            "must be 1 to 1000, got 1001",
        ),
        (
            r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": 0}}"#,
            "retryThrottling.tokenRatio",
            "must be above zero, got 0",
        ),
        (
            r#"{"retryThrottling": {"maxTokens": 10, "tokenRatio": "0.1"}}"#,
            "retryThrottling.tokenRatio",
            "expected a number",
        ),
    ];
    for (json, field, reason) in cases {
        let err = error(json);
        assert_eq!(err.field(), field, "{json}: {err}");
        assert!(err.reason().contains(reason), "{json}: {err}");
    }
    assert!(error("[]").to_string().starts_with("service config: "));
}
