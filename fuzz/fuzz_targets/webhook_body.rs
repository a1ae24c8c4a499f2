//! Any bytes as a webhook body: decoding and interpreting must return, never panic, and a
//! decoded tree never nests deeper than the decoder allows.

#![no_main]

use libfuzzer_sys::fuzz_target;
use mailchimp_sync_fuzz::webhook::event::{self, Envelope};
use mailchimp_sync_fuzz::webhook::form;

fuzz_target!(|body: &[u8]| {
    if let Ok(tree) = form::decode(body) {
        assert!(depth(&serde_json::Value::Object(tree)) <= form::MAX_DEPTH + 2);
    }
    if let Ok(Envelope::Event(raw)) = event::parse(body) {
        let _ = event::interpret(&raw);
    }
});

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}
