//! `examples/gateway` runs its whole story and says every step went as
//! described: transcoded calls, the shadow comparison catching the
//! replacement's bug and then agreeing once it is fixed, a reload moving
//! every call, and an aggregation with one upstream stopped.

mod common;

#[test]
fn the_gateway_example_tells_its_whole_story() {
    let output = std::process::Command::new(common::example_binary("gateway"))
        .env("OTEL_SDK_DISABLED", "true")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("every step went as described"), "{stdout}");
    assert!(
        stdout.contains("legacy answered 0 of the next 50 calls"),
        "{stdout}"
    );
    assert!(stdout.contains("\"code\":14"), "{stdout}");
}
