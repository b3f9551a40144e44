//! Tests against `proto/test/library.proto`, compiled with protox.

use std::path::Path;

use http::{Method, StatusCode};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DynamicMessage, Value};
use protox::file::{
    ChainFileResolver, File, FileResolver, GoogleFileResolver, IncludeFileResolver,
};
use serde_json::{Value as Json, json};
use tonic::Code;

use super::*;

const PROTO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/proto");
/// `google/api/*.proto`, as sinew-build provides them to every contract.
const GOOGLE_API: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../sinew-build/proto");
const LIBRARY: &str = "library.v1.Library";

fn library_pool() -> DescriptorPool {
    protox::Compiler::new([PROTO, GOOGLE_API])
        .unwrap()
        .include_imports(true)
        .open_file("test/library.proto")
        .unwrap()
        .descriptor_pool()
}

fn routes() -> (DescriptorPool, HttpRoutes) {
    let pool = library_pool();
    let routes = HttpRoutes::new(&pool, &[LIBRARY]).unwrap();
    (pool, routes)
}

/// Finds the binding for `verb target` (a path with an optional query) and
/// builds the request, as JSON (proto names kept apart by the mapping).
fn call(
    routes: &HttpRoutes,
    verb: &Method,
    target: &str,
    body: &str,
) -> Result<(String, Json), TranscodeError> {
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (target, None),
    };
    let (binding, captures) = routes
        .find(verb, path)
        .unwrap_or_else(|| panic!("no route for {verb} {path}"));
    let message = binding.request(&captures, query, body.as_bytes())?;
    Ok((
        binding.method().name().to_owned(),
        serde_json::to_value(&message).unwrap(),
    ))
}

fn error(routes: &HttpRoutes, verb: &Method, target: &str, body: &str) -> TranscodeError {
    let err = call(routes, verb, target, body).unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    err
}

/// A pool from one proto file given as text; it may import the contracts
/// under `proto/`.
fn inline_pool(source: &str) -> DescriptorPool {
    struct Inline(String);
    impl FileResolver for Inline {
        fn open_file(&self, name: &str) -> Result<File, protox::Error> {
            match name {
                "inline.proto" => File::from_source(name, &self.0),
                _ => Err(protox::Error::file_not_found(name)),
            }
        }
    }
    let mut resolver = ChainFileResolver::new();
    resolver.add(Inline(source.to_owned()));
    resolver.add(IncludeFileResolver::new(PROTO.into()));
    resolver.add(IncludeFileResolver::new(GOOGLE_API.into()));
    resolver.add(GoogleFileResolver::new());
    protox::Compiler::with_file_resolver(resolver)
        .include_imports(true)
        .open_file("inline.proto")
        .unwrap()
        .descriptor_pool()
}

/// A one-method service `t.S` whose method `M` has these options.
fn route_error(options: &str) -> String {
    let source = format!(
        r#"syntax = "proto3"; package t; import "google/api/annotations.proto";
        message Req {{ string id = 1; repeated string tags = 2; Sub sub = 3; }}
        message Sub {{ string id = 1; }}
        service S {{ {options} }}"#
    );
    let pool = inline_pool(&source);
    HttpRoutes::new(&pool, &["t.S"]).unwrap_err().to_string()
}

#[test]
fn method_without_annotation_gets_the_default_route() {
    let (_, routes) = routes();
    let (binding, captures) = routes
        .find(&Method::POST, "/library.v1.Library/Ping")
        .unwrap();
    assert_eq!(binding.grpc_path(), "/library.v1.Library/Ping");
    assert_eq!(
        (binding.body(), binding.template()),
        (Some("*"), "/library.v1.Library/Ping")
    );
    assert!(captures.is_empty());
    let (_, request) = call(
        &routes,
        &Method::POST,
        "/library.v1.Library/Ping",
        r#"{"message":"hi"}"#,
    )
    .unwrap();
    assert_eq!(request, json!({ "message": "hi" }));
    assert!(
        routes
            .find(&Method::GET, "/library.v1.Library/Ping")
            .is_none()
    );

    // A pool without google/api/annotations.proto at all.
    let pool = inline_pool(
        r#"syntax = "proto3"; package t; message Req { int32 n = 1; }
        service S { rpc M(Req) returns (Req); rpc N(Req) returns (Req); }"#,
    );
    let routes = HttpRoutes::new(&pool, &["t.S"]).unwrap();
    let paths: Vec<_> = routes
        .bindings()
        .map(|b| (b.verb().as_str(), b.template()))
        .collect();
    assert_eq!(paths, [("POST", "/t.S/M"), ("POST", "/t.S/N")]);
    let (_, request) = call(&routes, &Method::POST, "/t.S/N", r#"{"n": 3}"#).unwrap();
    assert_eq!(request, json!({ "n": 3 }));
}

#[test]
fn routes_can_be_shared_across_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<HttpRoutes>();
    send_sync::<Binding>();
    send_sync::<Captures>();
    let routes = std::sync::Arc::new(routes().1);
    let shared = std::sync::Arc::clone(&routes);
    let found = std::thread::spawn(move || {
        let (binding, _) = shared.find(&Method::GET, "/v1/books")?;
        Some(binding.method().name().to_owned())
    });
    assert_eq!(found.join().unwrap().as_deref(), Some("ListBooks"));
    // Eleven methods, one with two additional bindings.
    assert_eq!(routes.bindings().count(), 13);
}

#[test]
fn path_variables() {
    let (_, routes) = routes();
    let (binding, captures) = routes
        .find(&Method::GET, "/v1/shelves/my%20shelf/books/42")
        .unwrap();
    assert_eq!(binding.method().name(), "GetBook");
    assert_eq!(
        captures.iter().collect::<Vec<_>>(),
        [("shelf", "my shelf"), ("book", "42")]
    );
    let (_, request) = call(&routes, &Method::GET, "/v1/shelves/my%20shelf/books/42", "").unwrap();
    assert_eq!(request, json!({ "shelf": "my shelf", "book": "42" }));

    let err = error(&routes, &Method::GET, "/v1/shelves/s/books/forty-two", "");
    assert!(
        matches!(&err, TranscodeError::Path(m) if m.contains("`book`") && m.contains("int64")),
        "{err}"
    );
    assert!(routes.find(&Method::GET, "/v1/shelves/s/books/").is_none());
    assert!(
        routes
            .find(&Method::GET, "/v1/shelves/s/books/1/x")
            .is_none()
    );
}

#[test]
fn sub_pattern_variables() {
    let (_, routes) = routes();
    let (_, captures) = routes
        .find(&Method::DELETE, "/v1/shelves/a/books/b")
        .unwrap();
    assert_eq!(captures.get("name"), Some("shelves/a/books/b"));
    let (method, request) = call(
        &routes,
        &Method::DELETE,
        "/v1/shelves/a/books/b?force=true",
        "",
    )
    .unwrap();
    assert_eq!(
        (method.as_str(), request),
        (
            "DeleteBook",
            json!({ "name": "shelves/a/books/b", "force": true })
        )
    );
    assert!(routes.find(&Method::DELETE, "/v1/shelves/a").is_none());
    assert!(
        routes
            .find(&Method::DELETE, "/v1/racks/a/books/b")
            .is_none()
    );

    // `**` takes the rest of the path; `%2F` stays encoded there.
    let (_, request) = call(
        &routes,
        &Method::GET,
        "/v1/files/docs/a%2Fb/r%C3%A9sum%C3%A9.txt",
        "",
    )
    .unwrap();
    assert_eq!(request, json!({ "path": "docs/a%2Fb/résumé.txt" }));
}

#[test]
fn query_parameters() {
    let (_, routes) = routes();
    let query = [
        "page_size=10",
        "tags=a&tags=b+c&tags=d%26e",
        "filter.author=Ann",
        "filter.pages.min=5",
        "filter.minIsbn=123",
        "filter.next.next.author=deep",
        "ids=1&ids=-2",
        "includeDrafts=true",
        "genre=HISTORY&genres=1&genres=POETRY",
        "published_after=2024-01-02T03:04:05Z",
        "max_read_time=90.5s",
        "min_rating=4.5",
        "cursor=aGk%3D",
        "min_weight=-1e3",
        "min_copies=18446744073709551615",
        "",
    ]
    .join("&");
    let (method, request) = call(
        &routes,
        &Method::GET,
        &format!("/v1/shelves/s/books?{query}"),
        "",
    )
    .unwrap();
    assert_eq!(method, "ListBooks");
    assert_eq!(
        request,
        json!({
            "shelf": "s",
            "pageSize": 10,
            "tags": ["a", "b c", "d&e"],
            "filter": { "author": "Ann", "pages": { "min": 5 }, "minIsbn": "123", "next": { "next": { "author": "deep" } } },
            "ids": ["1", "-2"],
            "includeDrafts": true,
            "genre": "HISTORY",
            "genres": ["FICTION", "POETRY"],
            "publishedAfter": "2024-01-02T03:04:05Z",
            "maxReadTime": "90.500s",
            "minRating": 4.5,
            "cursor": "aGk=",
            "minWeight": -1000.0,
            "minCopies": "18446744073709551615",
        })
    );
}

#[test]
fn query_parameter_errors_name_the_parameter() {
    let (_, routes) = routes();
    let books = "/v1/shelves/s/books";
    for (query, expected) in [
        (
            "nope=1",
            ["unknown query parameter `nope`", "ListBooksRequest"],
        ),
        (
            "filter.nope=1",
            [
                "unknown query parameter `filter.nope`",
                "Filter has no field `nope`",
            ],
        ),
        ("page_size=ten", ["`page_size`", "expected int32"]),
        ("min_copies=-1", ["`min_copies`", "expected uint64"]),
        ("genre=MYSTERY", ["`genre`", "enum library.v1.Genre"]),
        ("include_drafts=yes", ["`include_drafts`", "expected bool"]),
        (
            "published_after=yesterday",
            ["`published_after`", "google.protobuf.Timestamp"],
        ),
        ("cursor=***", ["`cursor`", "bytes (base64)"]),
        ("shelf=t", ["`shelf`", "bound by the path"]),
        ("page_size=1&pageSize=2", ["`pageSize`", "given twice"]),
        (
            "filter=x",
            ["`filter`", "set its fields as `filter.<field>`"],
        ),
        (
            "published_after.seconds=1",
            ["`published_after.seconds`", "no fields to set"],
        ),
    ] {
        let err = error(&routes, &Method::GET, &format!("{books}?{query}"), "");
        let TranscodeError::Query(message) = &err else {
            panic!("{query}: {err:?}")
        };
        for part in expected {
            assert!(
                message.contains(part),
                "{query}: {message:?} lacks {part:?}"
            );
        }
    }
}

#[test]
fn whole_body() {
    let (_, routes) = routes();
    let body = r#"{"name": "fiction", "id": "7", "created": "2024-01-01T00:00:00Z"}"#;
    let (method, request) = call(&routes, &Method::POST, "/v1/shelves", body).unwrap();
    assert_eq!(method, "CreateShelf");
    assert_eq!(
        request,
        json!({ "name": "fiction", "id": "7", "created": "2024-01-01T00:00:00Z" })
    );
    // An empty body is an empty message; a query has nothing left to set.
    assert_eq!(
        call(&routes, &Method::POST, "/v1/shelves", " \n")
            .unwrap()
            .1,
        json!({})
    );
    let err = error(&routes, &Method::POST, "/v1/shelves?theme=x", "{}");
    assert!(
        matches!(&err, TranscodeError::Query(m) if m.contains("`theme`")),
        "{err}"
    );
    // A GET binding takes no body.
    let err = error(&routes, &Method::GET, "/v1/shelves/s/books/1", "{}");
    assert!(
        matches!(&err, TranscodeError::Body(m) if m.contains("takes no request body")),
        "{err}"
    );
}

#[test]
fn body_field() {
    let (_, routes) = routes();
    let body = r#"{"title": "Dune", "genre": "FICTION", "author": {"displayName": "Frank"}}"#;
    let (method, request) = call(
        &routes,
        &Method::POST,
        "/v1/shelves/s/books?requestId=r1",
        body,
    )
    .unwrap();
    assert_eq!(method, "CreateBook");
    assert_eq!(
        request,
        json!({
            "shelf": "s",
            "requestId": "r1",
            "book": { "title": "Dune", "genre": "FICTION", "author": { "displayName": "Frank" } },
        })
    );
    let err = error(
        &routes,
        &Method::POST,
        "/v1/shelves/s/books?book.title=x",
        "{}",
    );
    assert!(
        matches!(&err, TranscodeError::Query(m) if m.contains("`book` is the request body")),
        "{err}"
    );

    // A path variable inside the body field wins over the body; the rest of
    // the request comes from the query.
    let body = r#"{"name": "ignored", "title": "Dune Messiah"}"#;
    let target = "/v1/shelves/s/books/b?update_mask=title,author.displayName&allow_missing=1";
    let (method, request) = call(&routes, &Method::PATCH, target, body).unwrap();
    assert_eq!(method, "UpdateBook");
    assert_eq!(
        request,
        json!({
            "book": { "name": "shelves/s/books/b", "title": "Dune Messiah" },
            "updateMask": "title,author.displayName",
            "allowMissing": true,
        })
    );

    // A body field that is not a message: an additional binding's `filter`
    // is one, so check a scalar through the inline contract instead.
    let pool = inline_pool(
        r#"syntax = "proto3"; package t; import "google/api/annotations.proto";
        message Req { string id = 1; repeated int32 values = 2; }
        service S { rpc M(Req) returns (Req) { option (google.api.http) = { put: "/v1/{id}" body: "values" }; } }"#,
    );
    let routes = HttpRoutes::new(&pool, &["t.S"]).unwrap();
    assert_eq!(
        call(&routes, &Method::PUT, "/v1/x", "[1, 2]").unwrap().1,
        json!({ "id": "x", "values": [1, 2] })
    );
    let err = error(&routes, &Method::PUT, "/v1/x", r#"[1, "two"]"#);
    assert!(
        matches!(&err, TranscodeError::Body(m) if m.contains("`values`") && m.contains("a list of int32")),
        "{err}"
    );
}

#[test]
fn body_errors_name_the_field_and_type() {
    let (_, routes) = routes();
    let books = "/v1/shelves/s/books";
    for (body, expected) in [
        (
            r#"{"title": "x", "subtitle": "y"}"#,
            ["unknown field `book.subtitle`", "library.v1.Book"],
        ),
        (
            r#"{"author": {"displayName": "a", "nick": "b"}}"#,
            ["unknown field `book.author.nick`", "Author"],
        ),
        (
            r#"{"pageCount": "many"}"#,
            ["`book.pageCount`", "expected int32"],
        ),
        (
            r#"{"published": "yesterday"}"#,
            ["`book.published`", "google.protobuf.Timestamp"],
        ),
        (r#"{"tags": ["a", 1]}"#, ["`book.tags`", "a list of string"]),
        (
            r#"{"stock": {"a": "x"}}"#,
            ["`book.stock`", "an object of int32"],
        ),
        (
            r#"{"genre": "MYSTERY"}"#,
            ["`book.genre`", "enum library.v1.Genre"],
        ),
        (
            r#"{"author": {"notableBooks": [{}, {"isbn": true}]}}"#,
            ["`book.author.notableBooks[1].isbn`", "int64"],
        ),
        (
            r#"{"author": "Frank"}"#,
            ["`book.author`", "expected a JSON object"],
        ),
        (r#"{"title": "x""#, ["not valid JSON", "EOF"]),
        (
            r#"{"shelfPosition": "1", "lentTo": "ann"}"#,
            ["oneof", "location"],
        ),
    ] {
        let err = error(&routes, &Method::POST, books, body);
        let TranscodeError::Body(message) = &err else {
            panic!("{body}: {err:?}")
        };
        for part in expected {
            assert!(message.contains(part), "{body}: {message:?} lacks {part:?}");
        }
    }
    let err = error(
        &routes,
        &Method::POST,
        "/v1/shelves",
        r#"{"name": "a", "colour": "red"}"#,
    );
    assert!(err.to_string().contains("unknown field `colour`"), "{err}");
}

#[test]
fn additional_bindings_and_verbs() {
    let (_, routes) = routes();
    let list: Vec<_> = routes
        .bindings()
        .filter(|b| b.method().name() == "ListBooks")
        .collect();
    let shapes: Vec<_> = list
        .iter()
        .map(|b| (b.verb().as_str(), b.template(), b.body()))
        .collect();
    assert_eq!(
        shapes,
        [
            ("GET", "/v1/shelves/{shelf}/books", None),
            ("GET", "/v1/books", None),
            ("POST", "/v1/shelves/{shelf}/books:search", Some("filter")),
        ]
    );
    let (method, request) = call(&routes, &Method::GET, "/v1/books?page_size=3", "").unwrap();
    assert_eq!(
        (method.as_str(), request),
        ("ListBooks", json!({ "pageSize": 3 }))
    );
    let (method, request) = call(
        &routes,
        &Method::POST,
        "/v1/shelves/s/books:search",
        r#"{"author": "Ann"}"#,
    )
    .unwrap();
    assert_eq!(
        (method.as_str(), request),
        (
            "ListBooks",
            json!({ "shelf": "s", "filter": { "author": "Ann" } })
        )
    );
    // The verb suffix picks its own method.
    let (binding, _) = routes
        .find(&Method::GET, "/v1/shelves/s/books:titles")
        .unwrap();
    assert_eq!(binding.method().name(), "ListBookTitles");
    let (binding, _) = routes.find(&Method::GET, "/v1/shelves/s:watch").unwrap();
    assert!(binding.is_server_streaming());
    assert!(
        !routes
            .find(&Method::GET, "/v1/books")
            .unwrap()
            .0
            .is_server_streaming()
    );
    // A custom verb.
    let (binding, captures) = routes.find(&Method::HEAD, "/v1/shelves/s").unwrap();
    assert_eq!(
        (binding.method().name(), captures.get("shelf")),
        ("CheckShelf", Some("s"))
    );
}

#[test]
fn openapi_parameter_names_do_not_clash() {
    let pool = inline_pool(
        r#"syntax = "proto3"; package t; import "google/api/annotations.proto";
        message Req { string name = 1; string shelves = 2; }
        service S {
          rpc M(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name=shelves/*/x/*}/x/*/{shelves}" }; }
        }"#,
    );
    let doc = HttpRoutes::new(&pool, &["t.S"]).unwrap().openapi("t", "1");
    let paths = doc["paths"].as_object().unwrap();
    let (path, item) = paths.iter().next().unwrap();
    assert_eq!(path, "/v1/shelves/{shelves_2}/x/{x}/x/{x_2}/{shelves}");
    let names: Vec<_> = item["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["shelves_2", "x", "x_2", "shelves"]);
    validate_with_openapi_spec_validator(&doc);
}

#[test]
fn the_most_specific_template_wins() {
    let pool = inline_pool(
        r#"syntax = "proto3"; package t; import "google/api/annotations.proto";
        message Req { string name = 1; string rest = 2; }
        service S {
          rpc Any(Req) returns (Req) { option (google.api.http) = { get: "/v1/{rest=**}" }; }
          rpc Thing(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name=things/*}" }; }
          rpc Special(Req) returns (Req) { option (google.api.http) = { get: "/v1/things/special" }; }
          rpc Verb(Req) returns (Req) { option (google.api.http) = { get: "/v1/{name=things/*}:do" }; }
        }"#,
    );
    let routes = HttpRoutes::new(&pool, &["t.S"]).unwrap();
    for (path, method) in [
        ("/v1/things/special", "Special"),
        ("/v1/things/x", "Thing"),
        ("/v1/things/x:do", "Verb"),
        ("/v1/things/x/y", "Any"),
        ("/v1/other", "Any"),
    ] {
        assert_eq!(
            routes.find(&Method::GET, path).unwrap().0.method().name(),
            method,
            "{path}"
        );
    }
}

#[test]
fn route_errors_name_method_and_template() {
    let rule = |options: &str| {
        format!("rpc M(Req) returns (Req) {{ option (google.api.http) = {{ {options} }}; }}")
    };
    for (options, expected) in [
        (r#"get: "/v1/{id""#, ["t.S.M", "`/v1/{id`", "unclosed"]),
        (r#"get: "v1""#, ["t.S.M", "`v1`", "must start with `/`"]),
        (
            r#"post: "/v1" body: "nope""#,
            ["t.S.M", "`/v1`", "body `nope`"],
        ),
        (
            r#"get: "/v1" response_body: "nope""#,
            ["t.S.M", "`/v1`", "response_body `nope`"],
        ),
        (
            r#"get: "/v1/{nope}""#,
            ["t.S.M", "`/v1/{nope}`", "t.Req has no field `nope`"],
        ),
        (
            r#"get: "/v1/{sub.nope}""#,
            ["t.S.M", "`/v1/{sub.nope}`", "t.Sub has no field `nope`"],
        ),
        (
            r#"get: "/v1/{tags}""#,
            ["t.S.M", "`/v1/{tags}`", "singular scalar field"],
        ),
        (
            r#"get: "/v1/{id.x}""#,
            ["t.S.M", "`/v1/{id.x}`", "not a singular message field"],
        ),
        (
            r#"custom: {kind: "BAD VERB" path: "/v1"}"#,
            ["t.S.M", "`/v1`", "not an HTTP method"],
        ),
        (
            r#"get: "/v1" additional_bindings { get: "/v2" additional_bindings { get: "/v3" } }"#,
            ["t.S.M", "`/v2`", "of its own"],
        ),
        (r#"body: "*""#, ["t.S.M", "``", "no pattern"]),
    ] {
        let message = route_error(&rule(options));
        for part in expected {
            assert!(
                message.contains(part),
                "{options}: {message:?} lacks {part:?}"
            );
        }
    }
    // The same verb and template shape twice, across methods.
    let message = route_error(&format!(
        "{} rpc N(Req) returns (Req) {{ option (google.api.http) = {{ get: \"/v1/{{sub.id}}\" }}; }}",
        rule(r#"get: "/v1/{id}""#)
    ));
    assert_eq!(
        message,
        "GET /v1/{sub.id} is bound twice: by t.S.M and by t.S.N"
    );

    let pool = library_pool();
    let err = HttpRoutes::new(&pool, &["library.v1.Nope"]).unwrap_err();
    assert!(matches!(err, RouteError::UnknownService(name) if name == "library.v1.Nope"));
}

#[test]
fn response_json_and_response_body() {
    let (pool, routes) = routes();
    let books = pool
        .get_message_by_name("library.v1.ListBooksResponse")
        .unwrap();
    let list = serde_json::json!({
        "books": [{ "title": "Dune", "isbn": "9780441013593" }, { "title": "Emma", "pageCount": 474 }],
        "nextPageToken": "n",
    });
    let response = DynamicMessage::deserialize(books.clone(), &list).unwrap();
    let json = |binding: &Binding, response: &DynamicMessage, defaults: bool| -> Json {
        serde_json::from_slice(&binding.response_json(response, defaults).unwrap()).unwrap()
    };

    let (whole, _) = routes.find(&Method::GET, "/v1/books").unwrap();
    assert_eq!(json(whole, &response, false), list);
    let with_defaults = json(whole, &response, true);
    assert_eq!(with_defaults["books"][0]["pageCount"], json!(0));
    assert_eq!(with_defaults["books"][1]["tags"], json!([]));

    let (titles, _) = routes
        .find(&Method::GET, "/v1/shelves/s/books:titles")
        .unwrap();
    assert_eq!(titles.response_body(), Some("books"));
    assert_eq!(json(titles, &response, false), list["books"]);
    assert_eq!(json(titles, &response, true)[0]["pageCount"], json!(0));
    // An empty list is still a list.
    assert_eq!(json(titles, &DynamicMessage::new(books), false), json!([]));

    // A message of another type is refused.
    let shelf = DynamicMessage::new(pool.get_message_by_name("library.v1.Shelf").unwrap());
    let err = whole.response_json(&shelf, false).unwrap_err();
    assert_eq!(err.code(), Code::Internal);
}

#[test]
fn well_known_types_round_trip() {
    let (_, routes) = routes();
    let book = json!({
        "name": "shelves/s/books/b",
        "title": "Dune",
        "author": { "displayName": "Frank", "born": "1920-10-08T00:00:00Z", "notableBooks": [{ "title": "Dune" }] },
        "genre": "FICTION",
        "published": "1965-08-01T12:30:00.250Z",
        "readTime": "36000s",
        "isbn": "9780441013593",
        "copies": "18446744073709551615",
        "rating": 4.5,
        "metadata": { "series": "Dune", "volume": 1.0, "tags": ["a", null, true], "nested": { "x": {} } },
        "extra": [1.0, "two", { "three": false }],
        "tags": ["sf", "classic"],
        "cover": "AAEC/w==",
        "stock": { "north": 3, "south": -1 },
        "pageCount": 412,
        "inPrint": false,
        "weight": 0.5,
        "edition": 4294967295u32,
        "visibleFields": "title,author.displayName",
        "lentTo": "ann",
    });
    let (binding, captures) = routes
        .find(&Method::PATCH, "/v1/shelves/s/books/b")
        .unwrap();
    let request = binding
        .request(&captures, None, book.to_string().as_bytes())
        .unwrap();
    let Some(Value::Message(parsed)) = request.get_field_by_name("book").map(|v| v.into_owned())
    else {
        panic!("no book in {request:?}");
    };
    // Back out through a method that returns a Book.
    let (get, _) = routes.find(&Method::GET, "/v1/shelves/s/books/1").unwrap();
    let out: Json = serde_json::from_slice(&get.response_json(&parsed, false).unwrap()).unwrap();
    assert_eq!(out, book);
}

#[test]
fn status_json_with_details() {
    let pool = library_pool();
    let quota = pool.get_message_by_name("library.v1.QuotaFailure").unwrap();
    let quota =
        DynamicMessage::deserialize(quota, &json!({ "subject": "user:1", "limit": "10" })).unwrap();
    let any = |type_url: &str, value: Vec<u8>| prost_types::Any {
        type_url: type_url.into(),
        value,
    };
    let details = RpcStatus {
        code: Code::ResourceExhausted as i32,
        message: "slow down".into(),
        details: vec![
            any(
                "type.googleapis.com/library.v1.QuotaFailure",
                quota.encode_to_vec(),
            ),
            any(
                "type.googleapis.com/google.protobuf.Duration",
                prost_types::Duration {
                    seconds: 30,
                    nanos: 0,
                }
                .encode_to_vec(),
            ),
            any("type.googleapis.com/acme.Unknown", vec![1, 2, 3, 255]),
        ],
    }
    .encode_to_vec();
    let body: Json = serde_json::from_slice(&status_json(
        Code::ResourceExhausted,
        "slow down",
        &details,
        &pool,
    ))
    .unwrap();
    assert_eq!(
        body,
        json!({
            "code": 8,
            "message": "slow down",
            "details": [
                { "@type": "type.googleapis.com/library.v1.QuotaFailure", "subject": "user:1", "limit": "10" },
                { "@type": "type.googleapis.com/google.protobuf.Duration", "value": "30s" },
                { "@type": "type.googleapis.com/acme.Unknown", "value": "AQID/w==" },
            ],
        })
    );
    // No details, or details that do not decode: code and message remain.
    for details in [&[][..], &[0xff, 0xff]] {
        let body: Json =
            serde_json::from_slice(&status_json(Code::NotFound, "gone", details, &pool)).unwrap();
        assert_eq!(body, json!({ "code": 5, "message": "gone", "details": [] }));
    }
}

#[test]
fn http_status_mapping() {
    let expected = [
        (Code::Ok, 200),
        (Code::Cancelled, 499),
        (Code::Unknown, 500),
        (Code::InvalidArgument, 400),
        (Code::DeadlineExceeded, 504),
        (Code::NotFound, 404),
        (Code::AlreadyExists, 409),
        (Code::PermissionDenied, 403),
        (Code::ResourceExhausted, 429),
        (Code::FailedPrecondition, 400),
        (Code::Aborted, 409),
        (Code::OutOfRange, 400),
        (Code::Unimplemented, 501),
        (Code::Internal, 500),
        (Code::Unavailable, 503),
        (Code::DataLoss, 500),
        (Code::Unauthenticated, 401),
    ];
    for (code, status) in expected {
        assert_eq!(
            http_status(code),
            StatusCode::from_u16(status).unwrap(),
            "{code:?}"
        );
    }
}

#[test]
fn openapi_document() {
    let (_, routes) = routes();
    let doc = routes.openapi("Library", "1.0.0");
    assert_eq!(doc["openapi"], "3.0.3");
    let paths = doc["paths"].as_object().unwrap();
    let mut keys: Vec<_> = paths.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "/library.v1.Library/Ping",
            "/v1/books",
            "/v1/files/{files}",
            "/v1/shelves",
            "/v1/shelves/{shelf}",
            "/v1/shelves/{shelf}/books",
            "/v1/shelves/{shelf}/books/{book}",
            "/v1/shelves/{shelf}/books:search",
            "/v1/shelves/{shelf}/books:titles",
            "/v1/shelves/{shelf}:watch",
            "/v1/shelves/{shelves}/books/{books}",
        ]
    );
    // Path parameters are typed as their fields; query parameters are the
    // fields left, nested ones dotted, recursion cut.
    let get_book = &paths["/v1/shelves/{shelf}/books/{book}"]["get"];
    assert_eq!(
        get_book["parameters"][1],
        json!({ "name": "book", "in": "path", "required": true, "schema": { "type": "string", "format": "int64" } })
    );
    assert_eq!(get_book["parameters"][2]["name"], "read_mask");
    let list = &paths["/v1/shelves/{shelf}/books"]["get"];
    let names: Vec<_> = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"filter.pages.min") && names.contains(&"filter.min_isbn"),
        "{names:?}"
    );
    // `filter.next` is a Filter again: not listed (the request still takes it).
    assert!(
        !names.iter().any(|n| n.starts_with("filter.next")),
        "{names:?}"
    );
    assert_eq!(
        names.iter().filter(|n| **n == "shelf").count(),
        1,
        "{names:?}"
    );
    let tags = list["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "tags")
        .unwrap();
    assert_eq!(
        tags["schema"],
        json!({ "type": "array", "items": { "type": "string" } })
    );
    // Bodies, responses and errors.
    let update = &paths["/v1/shelves/{shelves}/books/{books}"]["patch"];
    assert_eq!(
        update["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/library.v1.Book"
    );
    assert_eq!(
        update["responses"]["default"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/google.rpc.Status"
    );
    let titles = &paths["/v1/shelves/{shelf}/books:titles"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert_eq!(
        titles,
        &json!({ "type": "array", "items": { "$ref": "#/components/schemas/library.v1.Book" } })
    );
    let watch = &paths["/v1/shelves/{shelf}:watch"]["get"]["responses"]["200"]["content"];
    assert!(watch["application/x-ndjson"].is_object() && watch["text/event-stream"].is_object());
    assert!(paths["/v1/shelves/{shelf}"]["head"].is_object());
    // Schemas in the JSON mapping.
    let schemas = &doc["components"]["schemas"];
    let book = &schemas["library.v1.Book"]["properties"];
    assert_eq!(
        book["published"],
        json!({ "type": "string", "format": "date-time" })
    );
    assert_eq!(book["readTime"]["type"], "string");
    assert_eq!(book["isbn"], json!({ "type": "string", "format": "int64" }));
    assert_eq!(
        book["copies"],
        json!({ "type": "string", "format": "int64" })
    );
    assert_eq!(
        book["rating"],
        json!({ "type": "number", "format": "double", "nullable": true })
    );
    assert_eq!(
        book["metadata"],
        json!({ "type": "object", "additionalProperties": true })
    );
    assert_eq!(book["extra"], json!({}));
    assert_eq!(book["cover"], json!({ "type": "string", "format": "byte" }));
    assert_eq!(
        book["stock"],
        json!({ "type": "object", "additionalProperties": { "type": "integer", "format": "int32" } })
    );
    assert_eq!(
        book["genre"]["$ref"],
        "#/components/schemas/library.v1.Genre"
    );
    assert_eq!(
        schemas["library.v1.Genre"]["enum"],
        json!(["GENRE_UNSPECIFIED", "FICTION", "HISTORY", "POETRY"])
    );
    assert_eq!(
        schemas["library.v1.Author"]["properties"]["notableBooks"]["items"]["$ref"],
        "#/components/schemas/library.v1.Book"
    );
    assert!(schemas["google.rpc.Status"].is_object() && schemas["google.protobuf.Any"].is_object());

    validate_with_openapi_spec_validator(&doc);
}

/// Runs the PyPI `openapi-spec-validator` on the document, if python has it.
#[allow(clippy::print_stderr)]
fn validate_with_openapi_spec_validator(doc: &Json) {
    let has_validator = std::process::Command::new("python3")
        .args(["-c", "import openapi_spec_validator"])
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_validator {
        eprintln!(
            "\n!!! SKIPPED: OpenAPI validation: python3 has no openapi_spec_validator \
             (pip install openapi-spec-validator) !!!\n"
        );
        return;
    }
    // A folder of its own: tests that validate run beside each other.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("openapi.json");
    std::fs::write(&file, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(Path::new(&file))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openapi-spec-validator rejected the document:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
