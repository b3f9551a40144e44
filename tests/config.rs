//! Configuration is checked at start: a bad value stops the server before
//! it serves, naming the key and where the value came from.

mod common;

use std::process::Command;

use common::example_binary;
use sinew::server::{ConfigError, ServerConfig, Settings};

#[test]
fn a_bad_environment_value_stops_the_server_naming_the_variable() {
    let output = Command::new(example_binary("greeter"))
        .args(["server", "--addr", "127.0.0.1:0"])
        .env("SINEW_MAX_CONCURRENT_STREAMS", "lots")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("SINEW_MAX_CONCURRENT_STREAMS"), "{stderr}");
    assert!(stderr.contains("lots"), "{stderr}");
}

#[test]
fn a_bad_settings_file_stops_the_server_naming_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("greeter.toml");
    std::fs::write(&file, "lame_duck = \"a while\"\n").unwrap();
    let output = Command::new(example_binary("greeter"))
        .args(["server", "--addr", "127.0.0.1:0"])
        .env("SINEW_CONFIG", &file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("lame_duck"), "{stderr}");
    assert!(stderr.contains("greeter.toml"), "{stderr}");
}

#[test]
fn settings_follow_the_documented_precedence() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(
        &file,
        "max_concurrent_streams = 50\nprobe_interval = \"9s\"\nreflection = false\n",
    )
    .unwrap();
    let env = |key: &str| match key {
        "SINEW_CONFIG" => Some(file.display().to_string()),
        "SINEW_PROBE_INTERVAL" => Some("3s".to_owned()),
        "SINEW_REFLECTION" => Some("true".to_owned()),
        _ => None,
    };
    let code = ServerConfig::new().reflection(false);
    let settings = Settings::load_with_env(&code, env).unwrap();
    assert_eq!(settings.max_concurrent_streams, 50, "file over default");
    assert_eq!(
        settings.probe_interval.as_secs(),
        3,
        "environment over file"
    );
    assert!(!settings.reflection, "code over environment");
    assert_eq!(settings.max_send_message_size, 4 * 1024 * 1024, "default");
}

#[test]
fn the_events_table_is_left_to_the_events_crate() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("service.toml");
    std::fs::write(
        &file,
        "max_concurrent_streams = 7\n[events]\nurl = \"nats://nats:4222\"\n",
    )
    .unwrap();
    let settings =
        Settings::load_with_env(&ServerConfig::new().config_file(&file), |_| None).unwrap();
    assert_eq!(settings.max_concurrent_streams, 7);
    let events = sinew::events::EventsConfig::from_toml(
        &std::fs::read_to_string(&file).unwrap(),
        "service.toml",
    )
    .unwrap();
    assert_eq!(events.jetstream.url, "nats://nats:4222");
    // A table under another name is still a mistake.
    std::fs::write(&file, "[evnets]\nurl = \"x\"\n").unwrap();
    let error =
        Settings::load_with_env(&ServerConfig::new().config_file(&file), |_| None).unwrap_err();
    assert_eq!(error.key(), Some("evnets"));
}

#[test]
fn an_unknown_key_in_the_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("server.toml");
    std::fs::write(&file, "max_streams = 5\n").unwrap();
    let error =
        Settings::load_with_env(&ServerConfig::new().config_file(&file), |_| None).unwrap_err();
    assert!(matches!(error, ConfigError::UnknownKey { .. }), "{error}");
    assert_eq!(error.key(), Some("max_streams"));
}
