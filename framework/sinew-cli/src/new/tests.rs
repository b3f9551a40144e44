//! Unit tests of `sinew new`. The generated crates' real builds and tests
//! are run by hand (see the report): these check names, refusals and the
//! text produced.

use std::{fs, path::Path};

use super::{NewError, NewOptions, Staging, create, name, toml_string, validate_name};

fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// The entries of `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn reason_for(name: &str) -> String {
    match validate_name(name) {
        Err(NewError::InvalidName { reason, .. }) => reason,
        other => panic!("{name:?}: expected a refusal, got {other:?}"),
    }
}

/// A folder that looks like a sinew checkout.
fn fake_checkout(root: &Path) {
    for krate in ["sinew", "sinew-build"] {
        let dir = root.join("framework").join(krate);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("Cargo.toml"), "[package]\n").unwrap();
    }
}

#[test]
fn good_names_pass() {
    for name in ["orders", "my-service", "svc_2", "a", "x-1-y_z"] {
        assert!(validate_name(name).is_ok(), "{name}");
    }
}

#[test]
fn bad_names_are_refused_with_their_reason() {
    assert!(reason_for("").contains("needs a name"));
    assert!(reason_for("2fast").contains("starts with a digit"));
    assert!(reason_for("my service").contains("' ' is not allowed"));
    assert!(reason_for("café").contains("'é' is not allowed"));
    assert!(reason_for("a.b").contains("'.' is not allowed"));
    assert!(reason_for("-x").contains("starts with '-'"));
    assert!(reason_for("_x").contains("starts with '_'"));
    assert!(reason_for("Orders").contains("try `orders`"));
    for keyword in ["type", "fn", "async", "gen", "crate"] {
        assert!(reason_for(keyword).contains("Rust keyword"), "{keyword}");
    }
    for reserved in ["test", "std", "core", "sinew", "sinew-build", "build"] {
        assert!(reason_for(reserved).contains("cargo"), "{reserved}");
    }
    assert!(reason_for("sinew-core").contains("sinew's own crates"));
    assert!(reason_for("nul").contains("Windows"));
    assert!(reason_for(&"a".repeat(65)).contains("64"));
}

#[test]
fn the_error_names_the_name() {
    let error = validate_name("2fast").unwrap_err().to_string();
    assert!(
        error.starts_with("`2fast` cannot name a crate: "),
        "{error}"
    );
}

#[test]
fn rust_names_follow_prost_and_tonic() {
    assert_eq!(name::snake("GetItem"), "get_item");
    assert_eq!(name::snake("Type"), "r#type");
    assert_eq!(name::snake("Self"), "self_");
    assert_eq!(name::upper_camel("key_value"), "KeyValue");
    assert_eq!(name::upper_camel("HTTPThing"), "HttpThing");
    assert_eq!(name::server_module("KeyValue"), "key_value_server");
    assert_eq!(name::server_module("Echo"), "echo_server");
    assert_eq!(name::package_module("type"), "r#type");
    assert_eq!(name::package_module("v1"), "v1");
    assert_eq!(name::crate_ident("my-service"), "my_service");
}

#[test]
fn toml_strings_are_escaped() {
    assert_eq!(toml_string(r#"/a "b"\c"#), r#""/a \"b\"\\c""#);
    assert_eq!(toml_string("x\ty"), "\"x\\u0009y\"");
}

#[test]
fn an_existing_folder_is_refused_and_nothing_is_written() {
    let parent = tempfile::tempdir().unwrap();
    let taken = parent.path().join("orders");
    fs::create_dir(&taken).unwrap();
    fs::write(taken.join("mine.txt"), "keep me").unwrap();

    let error = create(&NewOptions::new("orders", parent.path())).unwrap_err();
    assert!(
        matches!(&error, NewError::Exists(path) if *path == taken),
        "{error:?}"
    );
    assert!(error.to_string().contains("already exists"), "{error}");
    assert_eq!(entries(parent.path()), ["orders"]);
    assert_eq!(entries(&taken), ["mine.txt"]);
    assert_eq!(read(&taken, "mine.txt"), "keep me");
}

#[test]
fn an_existing_file_is_refused_too() {
    let parent = tempfile::tempdir().unwrap();
    fs::write(parent.path().join("orders"), "").unwrap();
    let error = create(&NewOptions::new("orders", parent.path())).unwrap_err();
    assert!(matches!(error, NewError::Exists(_)), "{error:?}");
}

#[test]
fn a_missing_parent_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let missing = parent.path().join("nowhere");
    let error = create(&NewOptions::new("orders", &missing)).unwrap_err();
    assert!(matches!(error, NewError::NoParent(path) if path == missing));
    assert!(!missing.exists());
}

#[test]
fn an_invalid_name_writes_nothing() {
    let parent = tempfile::tempdir().unwrap();
    let error = create(&NewOptions::new("std", parent.path())).unwrap_err();
    assert!(matches!(error, NewError::InvalidName { .. }), "{error:?}");
    assert!(entries(parent.path()).is_empty());
}

#[test]
fn the_starter_crate_depends_on_the_published_sinew() {
    let parent = tempfile::tempdir().unwrap();
    let dir = create(&NewOptions::new("my-service", parent.path())).unwrap();
    assert_eq!(dir, parent.path().join("my-service"));
    // Only the crate: the staging folder is gone.
    assert_eq!(entries(parent.path()), ["my-service"]);
    assert_eq!(
        entries(&dir),
        [
            ".gitignore",
            "Cargo.toml",
            "README.md",
            "build.rs",
            "proto",
            "src",
            "tests"
        ]
    );

    let manifest = read(&dir, "Cargo.toml");
    assert!(manifest.contains("name = \"my-service\""), "{manifest}");
    assert!(manifest.contains("edition = \"2024\""));
    assert!(manifest.contains("\n[workspace]\n"));
    assert!(manifest.contains("\nsinew = \"0.1\"\n"), "{manifest}");
    assert!(manifest.contains("\nsinew-build = \"0.1\"\n"), "{manifest}");
    assert!(!manifest.contains("path ="));
    // Nothing gRPC-related but sinew: no dependency line names tonic or prost.
    assert!(
        manifest
            .lines()
            .all(|line| !line.starts_with("tonic") && !line.starts_with("prost")),
        "{manifest}"
    );
    // And it tells whoever adds tower to leave out its `log` feature.
    assert!(
        manifest.contains("tower = { version = \"0.5\", default-features = false"),
        "{manifest}"
    );

    let contract = read(&dir, "proto/my_service/v1/my_service.proto");
    assert!(contract.contains("package my_service.v1;"));
    assert!(contract.contains("import \"sinew/options.proto\";"));
    assert!(contract.contains("option idempotency_level = NO_SIDE_EFFECTS;"));
    assert!(contract.contains("option idempotency_level = IDEMPOTENT;"));
    assert_eq!(
        contract
            .matches("option (sinew.method) = { timeout:")
            .count(),
        2
    );

    assert!(read(&dir, "build.rs").contains("sinew_build::compile_protos(\"proto\")"));
    let lib = read(&dir, "src/lib.rs");
    assert!(lib.contains("use proto::my_service::v1::{"), "{lib}");
    assert!(lib.contains(".readiness(Probe::new("));
    assert!(lib.contains("pub const NAME: &str = \"my-service\";"));
    let main = read(&dir, "src/main.rs");
    assert!(
        main.contains("sinew::telemetry::init(my_service::NAME)"),
        "{main}"
    );
    assert!(main.contains("my_service::server().run().await"));
    let test = read(&dir, "tests/my-service.rs");
    assert!(test.contains("StoreClient::connect(server.config())"));
    assert!(test.contains("my_service::server().config("));
    assert!(test.contains("\"my_service.v1.Store\""));
    let readme = read(&dir, "README.md");
    assert!(readme.contains("sinew call 127.0.0.1:50051 my_service.v1.Store/Get"));
    assert!(readme.contains("cargo test"));
    assert_eq!(read(&dir, ".gitignore"), "/target\n");

    for file in [
        "Cargo.toml",
        "README.md",
        "src/lib.rs",
        "src/main.rs",
        "tests/my-service.rs",
        "proto/my_service/v1/my_service.proto",
    ] {
        assert!(
            !read(&dir, file).contains("{{"),
            "{file} has a placeholder left"
        );
    }
}

#[test]
fn with_a_checkout_the_crate_depends_on_it_by_absolute_path() {
    let checkout = tempfile::tempdir().unwrap();
    fake_checkout(checkout.path());
    let root = fs::canonicalize(checkout.path()).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("orders", parent.path());
    options.sinew_path = Some(checkout.path().to_path_buf());
    let dir = create(&options).unwrap();

    let manifest = read(&dir, "Cargo.toml");
    let sinew = format!(
        "\nsinew = {{ path = \"{}\" }}\n",
        root.join("framework/sinew").display()
    );
    let build = format!(
        "\nsinew-build = {{ path = \"{}\" }}\n",
        root.join("framework/sinew-build").display()
    );
    assert!(manifest.contains(&sinew), "{manifest}");
    assert!(manifest.contains(&build), "{manifest}");
    assert!(!manifest.contains("\"0.1\""));
}

#[test]
fn a_folder_that_is_no_checkout_is_refused() {
    let checkout = tempfile::tempdir().unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("orders", parent.path());
    options.sinew_path = Some(checkout.path().to_path_buf());
    let error = create(&options).unwrap_err();
    assert!(matches!(error, NewError::NotACheckout(_)), "{error:?}");
    assert!(error.to_string().contains("framework/sinew/Cargo.toml"));
    assert!(entries(parent.path()).is_empty());
}

#[test]
fn a_contract_that_does_not_compile_is_refused_at_its_line() {
    let contracts = tempfile::tempdir().unwrap();
    let bad = contracts.path().join("bad.proto");
    fs::write(
        &bad,
        "syntax = \"proto3\";\npackage bad.v1;\nmessage Broken { string id = ; }\n",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("bad", parent.path());
    options.proto = Some(bad);
    let error = create(&options).unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, NewError::Contract(_)), "{error:?}");
    assert!(message.contains("bad.proto:3:"), "{message}");
    assert!(entries(parent.path()).is_empty());
}

#[test]
fn a_bad_sinew_option_is_refused_at_its_line() {
    let contracts = tempfile::tempdir().unwrap();
    let bad = contracts.path().join("hedged.proto");
    fs::write(
        &bad,
        "syntax = \"proto3\";\npackage hedged.v1;\nimport \"sinew/options.proto\";\n\
         message M {}\nservice S {\n  rpc Write(M) returns (M) {\n    \
         option (sinew.method) = { hedging: { max_attempts: 2 } };\n  }\n}\n",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("hedged", parent.path());
    options.proto = Some(bad);
    let message = create(&options).unwrap_err().to_string();
    assert!(message.contains("hedged.proto:7:"), "{message}");
    assert!(message.contains("hedging"), "{message}");
}

#[test]
fn a_missing_contract_is_refused() {
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("orders", parent.path());
    options.proto = Some(parent.path().join("absent.proto"));
    let error = create(&options).unwrap_err();
    assert!(matches!(error, NewError::ReadContract { .. }), "{error:?}");
    assert!(error.to_string().contains("absent.proto"));
}

#[test]
fn a_contract_without_a_service_is_refused() {
    let contracts = tempfile::tempdir().unwrap();
    let file = contracts.path().join("plain.proto");
    fs::write(
        &file,
        "syntax = \"proto3\";\npackage plain.v1;\nmessage M {}\n",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("plain", parent.path());
    options.proto = Some(file);
    let error = create(&options).unwrap_err();
    assert!(matches!(error, NewError::NoService(_)), "{error:?}");
    assert!(entries(parent.path()).is_empty());
}

const KINDS: &str = r#"syntax = "proto3";
package kinds.v1;
import "google/protobuf/empty.proto";
import "google/protobuf/timestamp.proto";
import "google/protobuf/wrappers.proto";
import "common.proto";

message Req { string id = 1; }
message Reply { string id = 1; }
message Outer { message Inner { int32 n = 1; } }

service Kinds {
  rpc Ping(google.protobuf.Empty) returns (google.protobuf.Timestamp);
  rpc List(Req) returns (stream Reply);
  rpc Collect(stream Req) returns (Reply);
  rpc Chat(stream Req) returns (stream Outer.Inner);
  rpc Name(google.protobuf.StringValue) returns (common.v1.Shared);
}

service Second {
  rpc Type(Req) returns (Reply);
}
"#;

const COMMON: &str = "syntax = \"proto3\";\npackage common.v1;\nmessage Shared {}\n";

#[test]
fn stubs_cover_every_streaming_kind_with_the_generated_names() {
    let contracts = tempfile::tempdir().unwrap();
    fs::write(contracts.path().join("kinds.proto"), KINDS).unwrap();
    fs::write(contracts.path().join("common.proto"), COMMON).unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("kinds", parent.path());
    options.proto = Some(contracts.path().join("kinds.proto"));
    let dir = create(&options).unwrap();

    // The contract and the file beside it that it imports.
    assert_eq!(read(&dir, "proto/kinds.proto"), KINDS);
    assert_eq!(read(&dir, "proto/common.proto"), COMMON);
    assert_eq!(entries(&dir.join("proto")), ["common.proto", "kinds.proto"]);

    let lib = read(&dir, "src/lib.rs");
    let expected = [
        // Unary, with well-known types.
        "impl proto::kinds::v1::kinds_server::Kinds for KindsService {",
        "    async fn ping(\n        &self,\n        _request: tonic::Request<()>,\n    ) \
         -> Result<tonic::Response<sinew::prost_types::Timestamp>, tonic::Status> {",
        // Server streaming: the stream type, then the method.
        "    type ListStream = ResponseStream<proto::kinds::v1::Reply>;\n\n    \
         async fn list(\n        &self,\n        \
         _request: tonic::Request<proto::kinds::v1::Req>,\n    ) \
         -> Result<tonic::Response<Self::ListStream>, tonic::Status> {",
        // Client streaming.
        "    async fn collect(\n        &self,\n        \
         _request: tonic::Request<tonic::Streaming<proto::kinds::v1::Req>>,\n    ) \
         -> Result<tonic::Response<proto::kinds::v1::Reply>, tonic::Status> {",
        // Both, with a nested message.
        "    type ChatStream = ResponseStream<proto::kinds::v1::outer::Inner>;",
        "        _request: tonic::Request<tonic::Streaming<proto::kinds::v1::Req>>,\n    ) \
         -> Result<tonic::Response<Self::ChatStream>, tonic::Status> {",
        // A wrapper, and a message of another package.
        "        _request: tonic::Request<String>,\n    ) \
         -> Result<tonic::Response<proto::common::v1::Shared>, tonic::Status> {",
        // A method named after a keyword.
        "    async fn r#type(",
        "impl proto::kinds::v1::second_server::Second for SecondService {",
        "        .add_service(proto::kinds::v1::kinds_server::KindsServer::new(KindsService))",
        "        .add_service(proto::kinds::v1::second_server::SecondServer::new(SecondService))",
        "Err(tonic::Status::unimplemented(\n            \"kinds.v1.Kinds/Chat is not written yet\",",
        "pub type ResponseStream<T> = std::pin::Pin<",
    ];
    for text in expected {
        assert!(lib.contains(text), "src/lib.rs lacks:\n{text}\n---\n{lib}");
    }
    assert_eq!(lib.matches("is not written yet").count(), 6);

    let test = read(&dir, "tests/kinds.rs");
    assert!(
        test.contains("const SERVICES: &[&str] = &[\"kinds.v1.Kinds\", \"kinds.v1.Second\"];"),
        "{test}"
    );
    // The first unary method, called with its default request.
    assert!(test.contains("kinds::proto::kinds::v1::KindsClient::connect(server.config())"));
    assert!(test.contains(".ping(())"), "{test}");
    assert!(test.contains("Code::Unimplemented"));
    assert!(read(&dir, "README.md").contains("sinew call 127.0.0.1:50051 kinds.v1.Kinds/Ping"));
}

#[test]
fn a_contract_without_a_unary_method_gets_no_unimplemented_test() {
    let contracts = tempfile::tempdir().unwrap();
    let file = contracts.path().join("feed.proto");
    fs::write(
        &file,
        "syntax = \"proto3\";\npackage feed.v1;\nmessage M {}\n\
         service Feed { rpc Follow(M) returns (stream M); }\n",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("feed", parent.path());
    options.proto = Some(file);
    let dir = create(&options).unwrap();
    let test = read(&dir, "tests/feed.rs");
    assert!(test.contains("fn every_service_is_serving"));
    assert!(!test.contains("Code"), "{test}");
    assert!(
        read(&dir, "src/lib.rs")
            .contains("type FollowStream = ResponseStream<proto::feed::v1::M>;")
    );
}

#[test]
fn a_message_of_sinews_own_files_is_refused() {
    let contracts = tempfile::tempdir().unwrap();
    let file = contracts.path().join("odd.proto");
    fs::write(
        &file,
        "syntax = \"proto3\";\npackage odd.v1;\nimport \"sinew/options.proto\";\n\
         service Odd { rpc Get(sinew.MethodPolicy) returns (sinew.MethodPolicy); }\n",
    )
    .unwrap();
    let parent = tempfile::tempdir().unwrap();
    let mut options = NewOptions::new("odd", parent.path());
    options.proto = Some(file);
    let error = create(&options).unwrap_err();
    assert!(
        matches!(&error, NewError::UnsupportedMessage { method, .. } if method == "odd.v1.Odd/Get"),
        "{error:?}"
    );
    assert!(entries(parent.path()).is_empty());
}

#[test]
fn an_unfinished_staging_folder_is_removed() {
    let parent = tempfile::tempdir().unwrap();
    let staging = Staging::create(parent.path(), "orders").unwrap();
    fs::write(staging.dir.join("half.txt"), "").unwrap();
    assert_eq!(entries(parent.path()).len(), 1);
    drop(staging);
    assert!(entries(parent.path()).is_empty());

    // A target taken meanwhile is not replaced, and the staging folder goes.
    let staging = Staging::create(parent.path(), "orders").unwrap();
    let target = parent.path().join("orders");
    fs::create_dir(&target).unwrap();
    let error = staging.finish(&target).unwrap_err();
    assert!(matches!(error, NewError::Exists(_)), "{error:?}");
    assert_eq!(entries(parent.path()), ["orders"]);
    assert!(entries(&target).is_empty());
}
