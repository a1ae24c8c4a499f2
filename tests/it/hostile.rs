//! Hostile bodies through the front door: arbitrary bytes, deep and odd bracket nesting,
//! huge indexes, invalid UTF-8 and ten thousand keys. Whatever arrives, the service answers
//! without a 5xx and keeps one stored event per request, so nothing is lost or hidden.

use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};

use crate::helpers::TestApp;

/// Cases per run: enough variety to find a crash, few enough for the suite's time.
const CASES: u32 = 48;

/// Keys Mailchimp uses, and fragments that make them odd.
fn key() -> impl Strategy<Value = String> {
    let root = prop::sample::select(vec!["type", "fired_at", "data", "data[merges]", "x"]);
    let segment = prop_oneof![
        prop::sample::select(vec![
            "[email]",
            "[list_id]",
            "[GROUPINGS]",
            "[]",
            "[99999999]",
            "[0]",
            "[",
            "]",
            "[[",
            "]]",
            "[%5B]",
            "[merges]",
        ])
        .prop_map(str::to_owned),
        "\\[[0-9]{1,20}\\]",
        "\\[[a-zA-Z%]{0,8}\\]",
    ];
    (root, prop::collection::vec(segment, 0..24))
        .prop_map(|(root, segments)| format!("{root}{}", segments.concat()))
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-zA-Z0-9@.+%-]{0,40}".prop_map(String::into_bytes),
        prop::sample::select(vec!["subscribe", "2026-03-02+09%3A15%3A01", "a%40b.c"])
            .prop_map(|value| value.as_bytes().to_vec()),
        prop::collection::vec(any::<u8>(), 0..24),
        prop::sample::select(vec!["%FF%FE", "%C3%28", "\u{fffd}", "%00"])
            .prop_map(|value| value.as_bytes().to_vec()),
    ]
}

fn nested_form() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec((key(), value()), 1..40).prop_map(|pairs| {
        let mut body = b"type=subscribe&".to_vec();
        for (key, value) in pairs {
            body.extend_from_slice(key.as_bytes());
            body.push(b'=');
            body.extend_from_slice(&value);
            body.push(b'&');
        }
        body
    })
}

fn deep_brackets() -> impl Strategy<Value = Vec<u8>> {
    (1usize..200).prop_map(|depth| format!("type=profile&data{}=x", "[a]".repeat(depth)).into())
}

/// Around the field limit, with distinct three-character keys so the body stays under the
/// 64 KiB limit.
fn many_keys() -> impl Strategy<Value = Vec<u8>> {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let key = |i: usize| {
        let base = ALPHABET.len();
        [i / (base * base), (i / base) % base, i % base].map(|digit| ALPHABET[digit])
    };
    prop::sample::select(vec![9_999usize, 10_000, 10_001]).prop_map(move |n| {
        let mut body = Vec::with_capacity(n * 4);
        for i in 0..n {
            body.extend_from_slice(&key(i));
            body.push(b'&');
        }
        body
    })
}

/// Any of the above; never empty (an empty body is Mailchimp's URL check, not an event).
fn hostile_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 1..2048),
        4 => nested_form(),
        1 => deep_brackets(),
        1 => many_keys(),
    ]
}

#[test]
fn any_body_is_answered_without_a_5xx_and_stored_as_one_event() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let app = runtime.block_on(TestApp::spawn());
    let (account_id, url) = runtime.block_on(app.create_account());
    let posted = std::cell::Cell::new(0usize);
    let mut runner = TestRunner::new(ProptestConfig::with_cases(CASES));
    let result = runner.run(&hostile_body(), |body| {
        let (status, text) = runtime.block_on(app.post_webhook(&url, body.clone()));
        posted.set(posted.get() + 1);
        prop_assert!(
            status < 500,
            "{status} {text} for {:?}",
            String::from_utf8_lossy(&body)
        );
        let stored = runtime.block_on(app.events_of(account_id)).len();
        if stored != posted.get() {
            return Err(TestCaseError::fail(format!(
                "{} posted, {stored} stored, last {status} {text}",
                posted.get()
            )));
        }
        Ok(())
    });
    runtime.block_on(app.shutdown());
    result.expect("every hostile body handled");
}

#[tokio::test]
async fn a_client_that_never_finishes_a_request_head_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let app = TestApp::spawn_with(|config| {
        config.header_read_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let half_sent: [&[u8]; 3] = [b"", b"GET /heal", b"GET /healthz HTTP/1.1\r\nHost: a\r\n"];
    for bytes in half_sent {
        let mut stream = tokio::net::TcpStream::connect(app.http_addr)
            .await
            .expect("connects");
        stream.write_all(bytes).await.expect("sent");
        // The bound is for a failure; the server closes long before it.
        let mut answer = Vec::new();
        let read = stream.read_to_end(&mut answer);
        let closed = tokio::time::timeout(std::time::Duration::from_secs(30), read).await;
        assert!(closed.is_ok(), "still open after {bytes:?}");
        let answer = String::from_utf8_lossy(&answer);
        assert!(!answer.contains("200 OK"), "{answer}");
    }
    // Whole requests are still served.
    assert_eq!(app.get(&app.http_url("/healthz")).await.0, 200);
    app.shutdown().await;
}
