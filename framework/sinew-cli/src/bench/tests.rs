use super::*;

fn plan(concurrency: usize, connections: usize, stop: Stop) -> Plan {
    Plan {
        concurrency,
        connections,
        stop,
        rps: None,
        progress: false,
    }
}

fn plain_target(addr: std::net::SocketAddr) -> Target {
    Target {
        uri: format!("http://{addr}").parse().unwrap(),
        tls: None,
        connect_timeout: Duration::from_secs(10),
    }
}

fn call(path: &'static str, message: Bytes) -> Call {
    Call {
        path: PathAndQuery::from_static(path),
        metadata: HeaderMap::new(),
        message,
        timeout: None,
    }
}

#[test]
fn frame_has_flag_length_and_message() {
    let frame = grpc_frame(b"hello").unwrap();
    assert_eq!(&frame[..], b"\x00\x00\x00\x00\x05hello");
    let empty = grpc_frame(b"").unwrap();
    assert_eq!(&empty[..], &[0, 0, 0, 0, 0]);
    let big = vec![7u8; 70_000];
    let frame = grpc_frame(&big).unwrap();
    assert_eq!(&frame[..5], &[0, 0, 1, 0x11, 0x70]);
    assert_eq!(frame.len(), 70_005);
}

#[test]
fn timeout_uses_at_most_eight_digits() {
    assert_eq!(grpc_timeout(Duration::from_millis(250)), "250000u");
    assert_eq!(grpc_timeout(Duration::from_nanos(99_999_999)), "99999999n");
    assert_eq!(grpc_timeout(Duration::from_millis(50)), "50000000n");
    assert_eq!(grpc_timeout(Duration::from_secs(5)), "5000000u");
    assert_eq!(grpc_timeout(Duration::from_secs(3600)), "3600000m");
    assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
}

#[test]
fn status_from_trailers() {
    assert_eq!(
        parse_status(Some(&HeaderValue::from_static("0"))),
        Outcome::Code(0)
    );
    assert_eq!(
        parse_status(Some(&HeaderValue::from_static("14"))),
        Outcome::Code(14)
    );
    assert_eq!(
        parse_status(Some(&HeaderValue::from_static("16"))),
        Outcome::Code(16)
    );
    assert_eq!(
        parse_status(Some(&HeaderValue::from_static("17"))),
        Outcome::Other(Cow::Borrowed(INVALID_STATUS))
    );
    assert_eq!(
        parse_status(Some(&HeaderValue::from_static("ok"))),
        Outcome::Other(Cow::Borrowed(INVALID_STATUS))
    );
    assert_eq!(
        parse_status(None),
        Outcome::Other(Cow::Borrowed(MISSING_STATUS))
    );
}

#[test]
fn status_from_head() {
    let mut headers = HeaderMap::new();
    // A normal response head: the status comes later, in the trailers.
    assert_eq!(outcome_from_head(StatusCode::OK, &headers), None);
    // Trailers-only response.
    headers.insert("grpc-status", HeaderValue::from_static("5"));
    assert_eq!(
        outcome_from_head(StatusCode::OK, &headers),
        Some(Outcome::Code(5))
    );
    // A non-200 HTTP status wins over anything else.
    assert_eq!(
        outcome_from_head(StatusCode::SERVICE_UNAVAILABLE, &headers),
        Some(Outcome::Code(UNAVAILABLE))
    );
}

#[test]
fn http_status_mapping() {
    let cases = [
        (400, "INTERNAL"),
        (401, "UNAUTHENTICATED"),
        (403, "PERMISSION_DENIED"),
        (404, "UNIMPLEMENTED"),
        (429, "UNAVAILABLE"),
        (502, "UNAVAILABLE"),
        (503, "UNAVAILABLE"),
        (504, "UNAVAILABLE"),
        (500, "UNKNOWN"),
        (302, "UNKNOWN"),
    ];
    for (http, grpc) in cases {
        let code = http_to_grpc(StatusCode::from_u16(http).unwrap());
        assert_eq!(CODE_NAMES[usize::from(code)], grpc, "HTTP {http}");
    }
}

#[test]
fn plan_validation() {
    assert!(plan(10, 1, Stop::Total(5)).validate().is_ok());
    assert!(plan(2, 8, Stop::Total(5)).validate().is_ok());
    assert_eq!(plan(2, 8, Stop::Total(5)).effective_connections(), 2);
    let bad = [
        plan(0, 1, Stop::Total(5)),
        plan(1, 0, Stop::Total(5)),
        plan(1, 1, Stop::Total(0)),
        plan(1, 1, Stop::Duration(Duration::ZERO)),
        Plan {
            rps: Some(0.0),
            ..plan(1, 1, Stop::Total(1))
        },
        Plan {
            rps: Some(f64::NAN),
            ..plan(1, 1, Stop::Total(1))
        },
        Plan {
            rps: Some(-3.0),
            ..plan(1, 1, Stop::Total(1))
        },
    ];
    for p in bad {
        assert!(
            matches!(p.validate(), Err(BenchError::InvalidPlan(_))),
            "{p:?}"
        );
    }
    let message = plan(0, 1, Stop::Total(5))
        .validate()
        .unwrap_err()
        .to_string();
    assert!(message.contains("concurrency"), "{message}");
}

#[test]
fn target_checks() {
    let target = |uri: &str| Target {
        uri: uri.parse().unwrap(),
        tls: None,
        connect_timeout: Duration::from_secs(10),
    };
    assert_eq!(
        dial_address(&target("http://localhost:50051")).unwrap(),
        "localhost:50051"
    );
    assert_eq!(
        dial_address(&target("http://example.test")).unwrap(),
        "example.test:80"
    );
    assert!(matches!(
        dial_address(&target("https://localhost:443")),
        Err(BenchError::InvalidTarget { .. })
    ));
    assert!(matches!(
        dial_address(&target("/just/a/path")),
        Err(BenchError::InvalidTarget { .. })
    ));
}

#[test]
fn request_is_built_once_and_shared() {
    let mut c = call("/pkg.Svc/Method", Bytes::from_static(b"abc"));
    c.metadata
        .insert("x-token", HeaderValue::from_static("secret"));
    c.metadata
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    c.timeout = Some(Duration::from_secs(2));
    let target = Target {
        uri: "http://127.0.0.1:9".parse().unwrap(),
        tls: None,
        connect_timeout: Duration::from_secs(10),
    };
    let prepared = Prepared::new(&target, &c).unwrap();
    let a = prepared.request();
    let b = prepared.request();
    assert_eq!(a.method(), Method::POST);
    assert_eq!(a.uri(), "http://127.0.0.1:9/pkg.Svc/Method");
    assert_eq!(a.headers()[CONTENT_TYPE], "application/grpc");
    assert_eq!(a.headers()[TE], "trailers");
    assert_eq!(a.headers()["x-token"], "secret");
    assert_eq!(a.headers()["grpc-timeout"], "2000000u");
    assert!(
        a.headers()[USER_AGENT]
            .to_str()
            .unwrap()
            .starts_with("sinew-bench/")
    );
    assert_eq!(a.headers(), b.headers());

    let mut c = call("/pkg.Svc/Method", Bytes::new());
    c.metadata
        .insert("connection", HeaderValue::from_static("close"));
    let error = Prepared::new(&target, &c).err().unwrap();
    assert!(
        matches!(error, BenchError::InvalidMetadata(ref name) if name == "connection"),
        "{error}"
    );
    assert_eq!(&prepared.frame[..], b"\x00\x00\x00\x00\x03abc");
}

fn tally_with(values: &[(u64, Outcome)]) -> Tally {
    let mut tally = Tally::new();
    for (micros, outcome) in values {
        tally.record(outcome.clone(), *micros);
    }
    tally
}

#[test]
fn summary_counts_add_up() {
    let mut a = tally_with(&[
        (100, Outcome::Code(0)),
        (200, Outcome::Code(0)),
        (5_000, Outcome::Code(14)),
        (300, Outcome::Other(Cow::Borrowed(MISSING_STATUS))),
    ]);
    let b = tally_with(&[
        (150, Outcome::Code(0)),
        (
            10_000,
            Outcome::Other(Cow::Owned(format!("{TRANSPORT_ERROR}: connection closed"))),
        ),
        (120, Outcome::Other(Cow::Borrowed(MISSING_STATUS))),
    ]);
    a.merge(b);
    let summary = Summary::new(
        a,
        Duration::from_secs(2),
        PlanEcho::new(&plan(2, 1, Stop::Total(7))),
    );
    assert_eq!(summary.requests, 7);
    assert_eq!(summary.codes.values().sum::<u64>(), 7);
    assert_eq!(summary.codes["OK"], 3);
    assert_eq!(summary.codes["UNAVAILABLE"], 1);
    assert_eq!(summary.codes[MISSING_STATUS], 2);
    assert_eq!(summary.codes["transport error: connection closed"], 1);
    assert_eq!(summary.histogram.iter().map(|b| b.count).sum::<u64>(), 7);
    assert!(summary.histogram.len() <= 10);
    assert_eq!(
        summary.histogram.last().unwrap().le_us,
        summary.latency_us.max
    );
    assert!((summary.rps - 3.5).abs() < 1e-9);
    assert_eq!(summary.latency_us.min, 100);
    assert!(summary.latency_us.max >= 10_000 && summary.latency_us.max < 10_010);
    assert!(summary.latency_us.p50 >= 150 && summary.latency_us.p50 <= 200);
    let text = summary.to_string();
    assert!(text.contains("Requests/sec:  3.50"), "{text}");
    assert!(text.contains("[UNAVAILABLE] 1 responses"), "{text}");
    let json = serde_json::to_value(&summary).unwrap();
    assert_eq!(json["requests"], 7);
    assert_eq!(json["plan"]["total"], 7);
    assert_eq!(json["codes"]["OK"], 3);
    assert!(json["latency_us"]["p999"].is_u64());
}

#[test]
fn histogram_of_one_value() {
    let summary = Summary::new(
        tally_with(&[(42, Outcome::Code(0)), (42, Outcome::Code(0))]),
        Duration::from_secs(1),
        PlanEcho::new(&plan(1, 1, Stop::Total(2))),
    );
    assert_eq!(
        summary.histogram,
        vec![Bucket {
            le_us: 42,
            count: 2
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_follows_the_shared_schedule() {
    let start = Instant::now();
    let shared = Arc::new(Shared {
        tickets: AtomicU64::new(0),
        done: None,
        total: Some(6),
        deadline: None,
        schedule: Some(Schedule { start, rate: 10.0 }),
    });
    let mut handles = Vec::new();
    for _ in 0..3 {
        let shared = Arc::clone(&shared);
        handles.push(tokio::spawn(async move {
            let mut starts = Vec::new();
            while let Some(ticket) = shared.next().await {
                starts.push((ticket, start.elapsed()));
            }
            starts
        }));
    }
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.unwrap());
    }
    all.sort();
    let tickets: Vec<u64> = all.iter().map(|(t, _)| *t).collect();
    assert_eq!(tickets, [0, 1, 2, 3, 4, 5]);
    for (ticket, at) in all {
        // Each call starts at its slot (ticket / 10 s), not before.
        assert_eq!(at.as_millis(), u128::from(ticket) * 100, "ticket {ticket}");
    }
}

#[tokio::test(start_paused = true)]
async fn rate_limiter_stops_at_the_deadline() {
    let start = Instant::now();
    let shared = Shared {
        tickets: AtomicU64::new(0),
        done: None,
        total: None,
        deadline: Some(start + Duration::from_secs(1)),
        schedule: Some(Schedule { start, rate: 4.0 }),
    };
    let mut count = 0;
    while shared.next().await.is_some() {
        count += 1;
    }
    // Slots at 0, 250, 500 and 750 ms; the one at 1 s is past the end.
    assert_eq!(count, 4);
    assert_eq!(start.elapsed(), Duration::from_millis(750));
}

async fn start_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(testserver::serve(listener));
    addr
}

#[tokio::test]
async fn runs_against_an_echo_server() {
    let addr = start_server().await;
    let message = testserver::payload_message(64);
    let summary = run(
        plain_target(addr),
        call(testserver::ECHO_PATH, message),
        plan(8, 2, Stop::Total(200)),
    )
    .await
    .unwrap();
    assert_eq!(summary.requests, 200);
    assert_eq!(summary.codes.get("OK"), Some(&200), "{:?}", summary.codes);
    assert_eq!(summary.codes.len(), 1);
    assert_eq!(summary.plan.connections, 2);
    assert!(summary.rps > 0.0);
}

#[tokio::test]
async fn counts_error_statuses() {
    let addr = start_server().await;
    let mut c = call(testserver::FAIL_PATH, testserver::payload_message(1));
    c.timeout = Some(Duration::from_secs(5));
    let summary = run(plain_target(addr), c, plan(4, 1, Stop::Total(50)))
        .await
        .unwrap();
    assert_eq!(summary.requests, 50);
    assert_eq!(
        summary.codes.get("UNAVAILABLE"),
        Some(&50),
        "{:?}",
        summary.codes
    );

    let c = call("/bench.Echo/Nope", testserver::payload_message(1));
    let summary = run(plain_target(addr), c, plan(2, 1, Stop::Total(10)))
        .await
        .unwrap();
    assert_eq!(
        summary.codes.get("UNIMPLEMENTED"),
        Some(&10),
        "{:?}",
        summary.codes
    );
}

#[tokio::test]
async fn duration_mode_stops() {
    let addr = start_server().await;
    let c = call(testserver::ECHO_PATH, testserver::payload_message(8));
    let p = Plan {
        rps: Some(200.0),
        ..plan(4, 1, Stop::Duration(Duration::from_millis(300)))
    };
    let summary = run(plain_target(addr), c, p).await.unwrap();
    // 200 rps for 0.3 s: slots at 0, 5, ..., 295 ms.
    assert_eq!(summary.requests, 60);
    assert_eq!(summary.codes["OK"], 60);
    assert!(
        summary.elapsed_seconds >= 0.29,
        "{}",
        summary.elapsed_seconds
    );
}

#[tokio::test]
async fn connection_refused_names_the_address() {
    // Bind then drop a listener to get a port nobody listens on.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = call(testserver::ECHO_PATH, Bytes::new());
    let error = run(plain_target(addr), c, plan(1, 1, Stop::Total(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, BenchError::Connect { .. }), "{error:?}");
    assert!(error.to_string().contains(&addr.to_string()), "{error}");
}

#[tokio::test]
async fn tls_failure_is_reported() {
    // A plain-text HTTP/2 server cannot complete a TLS handshake.
    let addr = start_server().await;
    // The workspace's provider (sinew-core's `tls::provider()`), deprecated
    // by rustls for lacking post-quantum key exchange.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let target = Target {
        uri: format!("https://{addr}").parse().unwrap(),
        tls: Some((Arc::new(config), ServerName::try_from("localhost").unwrap())),
        connect_timeout: Duration::from_secs(10),
    };
    let c = call(testserver::ECHO_PATH, Bytes::new());
    let error = run(target, c, plan(1, 1, Stop::Total(1)))
        .await
        .unwrap_err();
    assert!(matches!(error, BenchError::Tls { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .starts_with("TLS handshake with 127.0.0.1:"),
        "{error}"
    );
}

/// An HTTP/2 server that takes every request and never answers it.
async fn start_silent_server() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut connection) = h2::server::handshake(socket).await else {
                    return;
                };
                let mut held = Vec::new();
                while let Some(Ok(request)) = connection.accept().await {
                    held.push(request);
                }
            });
        }
    });
    addr
}

#[tokio::test]
async fn calls_a_hung_server_never_answers_are_counted_unfinished() {
    let addr = start_silent_server().await;
    let c = call(testserver::ECHO_PATH, testserver::payload_message(8));
    let summary = run(
        plain_target(addr),
        c,
        plan(3, 1, Stop::Duration(Duration::from_millis(50))),
    )
    .await
    .unwrap();
    // Each worker's one call is still waiting when the grace ends.
    assert_eq!(summary.requests, 3);
    assert_eq!(
        summary.codes.get(UNFINISHED),
        Some(&3),
        "{:?}",
        summary.codes
    );
    assert_eq!(summary.codes.values().sum::<u64>(), 3);
    assert!(summary.elapsed_seconds >= DRAIN_GRACE.as_secs_f64());
}

#[tokio::test]
async fn a_server_that_never_finishes_the_tls_handshake_times_out() {
    // Accepts TCP, then says nothing: no ServerHello ever comes. (Over
    // plain text, h2's handshake does not wait for the server's SETTINGS:
    // there, the call's timeout bounds the wait.)
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let target = Target {
        uri: format!("https://{addr}").parse().unwrap(),
        tls: Some((Arc::new(config), ServerName::try_from("localhost").unwrap())),
        connect_timeout: Duration::from_millis(200),
    };
    let c = call(testserver::ECHO_PATH, Bytes::new());
    let error = run(target, c, plan(1, 1, Stop::Total(1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, BenchError::Connect { source, .. } if source.kind() == io::ErrorKind::TimedOut),
        "{error:?}"
    );
}
