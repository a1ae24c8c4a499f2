//! Decoding of `application/x-www-form-urlencoded` webhook bodies into a JSON tree.
//!
//! Mailchimp posts PHP-style bracketed keys such as `data[merges][FNAME]=Jo`. The nesting
//! is rebuilt here so later stages address fields by path instead of re-parsing keys.
//! Every node is an object or a string: list-like keys (`a[0]`, `a[]`) become object keys,
//! so an index chosen by the sender can never make us allocate in proportion to its value.

use std::borrow::Cow;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use percent_encoding::percent_decode;
use serde_json::{Map, Value};

/// Deepest bracket nesting accepted; Mailchimp's own keys such as
/// `data[merges][GROUPINGS][0][groups]` use four levels.
pub const MAX_DEPTH: usize = 16;
/// Most `key=value` pairs accepted in one body, far above what a real webhook carries.
pub const MAX_FIELDS: usize = 10_000;
/// Keys quoted in error messages are cut short so a hostile key cannot bloat the response.
const SHOWN_KEY_CHARS: usize = 100;

/// Why a body could not be decoded; the message is meant as an HTTP 400 body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormError {
    #[error("body is not valid UTF-8 in field {}", printable(key))]
    NotUtf8 { key: String },
    /// No text field of Odoo's may hold a NUL (PostgreSQL refuses it), and no real
    /// Mailchimp value has one.
    #[error("body has a NUL character in field {}", printable(key))]
    Nul { key: String },
    #[error("body nests a field deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("body has more than {MAX_FIELDS} fields")]
    TooManyFields,
}

/// Decodes a form body into nested objects of strings.
///
/// When a path is set twice, a later scalar replaces an earlier scalar and an object
/// replaces a scalar, but a scalar never replaces an object: Mailchimp sends both
/// `ADDRESS=` and `ADDRESS[addr1]=…`, in either order, and the sub-fields must survive.
pub fn decode(body: &[u8]) -> Result<Map<String, Value>, FormError> {
    let mut tree = Tree::default();
    let pairs = body.split(|&b| b == b'&').filter(|pair| !pair.is_empty());
    for (index, pair) in pairs.enumerate() {
        if index == MAX_FIELDS {
            return Err(FormError::TooManyFields);
        }
        let (key, value) = decode_pair(pair)?;
        // An empty name addresses nothing, so the pair is dropped like PHP drops it.
        if !key.is_empty() {
            tree.insert(&parse_key(&key)?, value);
        }
    }
    Ok(tree.root)
}

fn decode_pair(pair: &[u8]) -> Result<(Cow<'_, str>, String), FormError> {
    let (raw_key, raw_value) = match pair.iter().position(|&b| b == b'=') {
        Some(at) => (&pair[..at], &pair[at + 1..]),
        None => (pair, &[][..]),
    };
    let key = unescape(raw_key);
    let value = String::from_utf8(unescape(raw_value).into_owned());
    let name = match key {
        Cow::Borrowed(bytes) => std::str::from_utf8(bytes).map(Cow::Borrowed),
        Cow::Owned(bytes) => String::from_utf8(bytes)
            .map(Cow::Owned)
            .map_err(|error| error.utf8_error()),
    };
    match (name, value) {
        (Ok(name), Ok(value)) if name.contains('\0') || value.contains('\0') => {
            Err(FormError::Nul {
                key: name.into_owned(),
            })
        }
        (Ok(name), Ok(value)) => Ok((name, value)),
        _ => Err(FormError::NotUtf8 {
            key: String::from_utf8_lossy(&unescape(raw_key)).into_owned(),
        }),
    }
}

/// Form rules turn `+` into a space before percent-decoding, so `%2B` stays a plus. Most
/// names and values need neither, and are borrowed as they are.
fn unescape(raw: &[u8]) -> Cow<'_, [u8]> {
    if !raw.iter().any(|&b| b == b'+' || b == b'%') {
        return Cow::Borrowed(raw);
    }
    let spaced: Vec<u8> = raw
        .iter()
        .map(|&b| if b == b'+' { b' ' } else { b })
        .collect();
    Cow::Owned(percent_decode(&spaced).collect())
}

/// One step of a key path; `Append` is the empty bracket pair of `a[]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Name(String),
    Append,
}

fn parse_key(key: &str) -> Result<Vec<Segment>, FormError> {
    match bracket_path(key) {
        Some(path) if path.len() > MAX_DEPTH + 1 => Err(FormError::TooDeep),
        Some(path) => Ok(path),
        None => Ok(vec![Segment::Name(key.to_owned())]),
    }
}

/// Splits `a[b][]` into its segments; `None` when the key is not cleanly bracketed,
/// in which case the caller keeps it whole rather than guessing at the intent.
fn bracket_path(key: &str) -> Option<Vec<Segment>> {
    let (base, mut rest) = key.split_at(key.find('[')?);
    if base.is_empty() || base.contains(']') {
        return None;
    }
    let mut path = vec![Segment::Name(base.to_owned())];
    while let Some(inner) = rest.strip_prefix('[') {
        let close = inner.find(']')?;
        let name = &inner[..close];
        if name.contains('[') {
            return None;
        }
        path.push(segment(name));
        rest = &inner[close + 1..];
    }
    rest.is_empty().then_some(path)
}

fn segment(name: &str) -> Segment {
    if name.is_empty() {
        Segment::Append
    } else {
        Segment::Name(name.to_owned())
    }
}

#[derive(Default)]
struct Tree {
    root: Map<String, Value>,
    slots: AppendSlots,
}

impl Tree {
    fn insert(&mut self, path: &[Segment], value: String) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut node = &mut self.root;
        let mut node_id = 0;
        for step in parents {
            let key = self.slots.resolve(step, node, node_id);
            node_id = child_id(node_id, &key);
            node = child_object(node, key);
        }
        let key = self.slots.resolve(last, node, node_id);
        set_scalar(node, key, value);
    }
}

/// Identifies an object by the path leading to it, without storing the path. Should two
/// paths collide, `[]` merely skips some indexes, because a slot is always checked to be
/// free before it is used.
fn child_id(parent: u64, key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    (parent, key).hash(&mut hasher);
    hasher.finish()
}

/// Next index to try for `[]`, per object. Remembering it keeps appends linear even
/// when explicit numeric keys already occupy the obvious slots.
#[derive(Default)]
struct AppendSlots(HashMap<u64, usize>);

impl AppendSlots {
    fn resolve(&mut self, step: &Segment, node: &Map<String, Value>, node_id: u64) -> String {
        match step {
            Segment::Name(name) => name.clone(),
            Segment::Append => free_index(node, self.0.entry(node_id).or_default()),
        }
    }
}

fn free_index(node: &Map<String, Value>, next: &mut usize) -> String {
    loop {
        let key = next.to_string();
        *next += 1;
        if !node.contains_key(&key) {
            return key;
        }
    }
}

/// An object replaces a scalar found on its way.
fn child_object(node: &mut Map<String, Value>, key: String) -> &mut Map<String, Value> {
    let slot = node.entry(key).or_insert(Value::Null);
    if !slot.is_object() {
        *slot = Value::Object(Map::new());
    }
    slot.as_object_mut().expect("slot was just made an object")
}

/// A scalar never replaces an object, so a late `ADDRESS=` cannot wipe its sub-fields.
fn set_scalar(node: &mut Map<String, Value>, key: String, value: String) {
    let slot = node.entry(key).or_insert(Value::Null);
    if !slot.is_object() {
        *slot = Value::String(value);
    }
}

/// Keeps error messages on one short line whatever the key contains.
fn printable(key: &str) -> String {
    let mut shown = String::new();
    for c in key.chars().take(SHOWN_KEY_CHARS) {
        if c.is_control() {
            shown.extend(c.escape_default());
        } else {
            shown.push(c);
        }
    }
    if key.chars().nth(SHOWN_KEY_CHARS).is_some() {
        shown.push('…');
    }
    shown
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_nul_character_is_refused_with_its_field() {
        let error = super::decode(b"type=subscribe&data%5Blist_id%5D=P%001").unwrap_err();
        assert_eq!(
            error.to_string(),
            "body has a NUL character in field data[list_id]"
        );
        assert!(super::decode(b"a%00b=1").is_err());
    }

    use super::*;
    use serde_json::json;

    fn tree(body: &str) -> Value {
        Value::Object(decode(body.as_bytes()).unwrap())
    }

    #[test]
    fn mailchimp_example_is_nested() {
        let body = "type=subscribe&fired_at=2026-03-02+09%3A15%3A01&data%5Bid%5D=a1b2c3d4e5\
                    &data%5Blist_id%5D=4f1c9a7e20&data%5Bemail%5D=jo%2Bnews%40example.com\
                    &data%5Bmerges%5D%5BFNAME%5D=Jo&data%5Bmerges%5D%5BADDRESS%5D=";
        let expected = json!({
            "type": "subscribe",
            "fired_at": "2026-03-02 09:15:01",
            "data": {
                "id": "a1b2c3d4e5",
                "list_id": "4f1c9a7e20",
                "email": "jo+news@example.com",
                "merges": { "FNAME": "Jo", "ADDRESS": "" }
            }
        });
        assert_eq!(tree(body), expected);
    }

    #[test]
    fn plus_is_space_and_encoded_plus_is_literal() {
        assert_eq!(tree("a=1+2%2B3"), json!({ "a": "1 2+3" }));
    }

    #[test]
    fn invalid_percent_sequences_are_kept() {
        assert_eq!(tree("a=100%25+%ZZ%4"), json!({ "a": "100% %ZZ%4" }));
    }

    #[test]
    fn unencoded_brackets_nest_too() {
        assert_eq!(
            tree("data[merges][FNAME]=Jo"),
            json!({ "data": { "merges": { "FNAME": "Jo" } } })
        );
    }

    #[test]
    fn object_replaces_earlier_scalar() {
        let body = "ADDRESS=&ADDRESS[addr1]=12+Harbour+Row&ADDRESS[city]=Portsmouth";
        let expected = json!({ "ADDRESS": { "addr1": "12 Harbour Row", "city": "Portsmouth" } });
        assert_eq!(tree(body), expected);
    }

    #[test]
    fn scalar_never_replaces_object() {
        let body = "ADDRESS[addr1]=12+Harbour+Row&ADDRESS[city]=Portsmouth&ADDRESS=";
        let expected = json!({ "ADDRESS": { "addr1": "12 Harbour Row", "city": "Portsmouth" } });
        assert_eq!(tree(body), expected);
    }

    #[test]
    fn later_scalar_replaces_scalar() {
        assert_eq!(
            tree("PHONE=&PHONE=%2B44+23+9000+0000"),
            json!({ "PHONE": "+44 23 9000 0000" })
        );
    }

    #[test]
    fn indexed_groupings_are_object_keys() {
        let body = "g[0][name]=Hobbies&g[0][groups]=Sailing&g[1][name]=Region";
        let expected = json!({ "g": {
            "0": { "name": "Hobbies", "groups": "Sailing" },
            "1": { "name": "Region" }
        } });
        assert_eq!(tree(body), expected);
    }

    #[test]
    fn huge_index_is_just_a_key() {
        assert_eq!(
            tree("g[99999999999999999999999][x]=1"),
            json!({ "g": { "99999999999999999999999": { "x": "1" } } })
        );
    }

    #[test]
    fn empty_brackets_append() {
        assert_eq!(
            tree("a[]=x&a[]=y&b[][c]=1&b[][c]=2"),
            json!({ "a": { "0": "x", "1": "y" }, "b": { "0": { "c": "1" }, "1": { "c": "2" } } })
        );
    }

    #[test]
    fn append_skips_taken_indexes() {
        assert_eq!(
            tree("a[1]=x&a[]=y&a[]=z"),
            json!({ "a": { "1": "x", "0": "y", "2": "z" } })
        );
    }

    #[test]
    fn appends_after_crowded_explicit_indexes_fill_every_gap() {
        let explicit = (5_000..9_999).map(|i| format!("a[{i}]=x"));
        let appended = (0..5_000).map(|_| "a[]=y".to_owned());
        let body = explicit.chain(appended).collect::<Vec<_>>().join("&");
        let fields = decode(body.as_bytes()).unwrap();
        let list = fields["a"].as_object().unwrap();
        assert_eq!(list.len(), 9_999);
        assert!((0..9_999).all(|i| list.contains_key(&i.to_string())));
    }

    #[test]
    fn invalid_utf8_names_the_field() {
        let error = decode(b"data%5Blist_id%5D=%FF%FE").unwrap_err();
        assert_eq!(
            error,
            FormError::NotUtf8 {
                key: "data[list_id]".into()
            }
        );
        assert_eq!(
            error.to_string(),
            "body is not valid UTF-8 in field data[list_id]"
        );
    }

    #[test]
    fn invalid_utf8_in_key_is_shown_lossily() {
        let error = decode(b"a%FF%0Ab=1").unwrap_err();
        assert_eq!(
            error.to_string(),
            "body is not valid UTF-8 in field a\u{FFFD}\\nb"
        );
    }

    #[test]
    fn sixteen_levels_are_accepted() {
        let key = format!("a{}", "[b]".repeat(MAX_DEPTH));
        assert!(decode(format!("{key}=1").as_bytes()).is_ok());
    }

    #[test]
    fn seventeen_levels_are_too_deep() {
        let key = format!("a{}", "[b]".repeat(MAX_DEPTH + 1));
        let error = decode(format!("{key}=1").as_bytes()).unwrap_err();
        assert_eq!(error, FormError::TooDeep);
    }

    fn numbered_pairs(count: usize) -> String {
        (0..count)
            .map(|i| format!("k{i}=v"))
            .collect::<Vec<_>>()
            .join("&")
    }

    #[test]
    fn ten_thousand_pairs_are_accepted() {
        let fields = decode(numbered_pairs(MAX_FIELDS).as_bytes()).unwrap();
        assert_eq!(fields.len(), MAX_FIELDS);
    }

    #[test]
    fn one_more_pair_is_too_many() {
        let error = decode(numbered_pairs(MAX_FIELDS + 1).as_bytes()).unwrap_err();
        assert_eq!(error, FormError::TooManyFields);
    }

    #[test]
    fn empty_body_is_empty_map() {
        assert!(decode(b"").unwrap().is_empty());
    }

    #[test]
    fn malformed_keys_stay_literal() {
        for key in [
            "]]]", "[", "a[b", "a]b[", "[a]", "a[b]c", "a[b[c]]", "a]b[c]",
        ] {
            let body = format!("{key}=v");
            assert_eq!(tree(&body), json!({ key: "v" }), "{key}");
        }
    }

    #[test]
    fn empty_names_and_pieces_are_skipped() {
        assert_eq!(tree("=x&&&"), json!({}));
        assert_eq!(tree("&&a&b=&=&"), json!({ "a": "", "b": "" }));
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        assert_eq!(tree("a==b=c"), json!({ "a": "=b=c" }));
    }
}

/// Properties over arbitrary input: the decoder never panics, never nests deeper than it
/// allows, and round-trips plain pairs.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::{FormError, MAX_DEPTH, MAX_FIELDS, decode};

    fn depth(value: &Value) -> usize {
        match value {
            Value::Object(map) => 1 + map.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn bracketed_key() -> impl Strategy<Value = String> {
        let segment = prop_oneof![
            Just("[]".to_owned()),
            Just("[".to_owned()),
            Just("]".to_owned()),
            "\\[[0-9]{1,12}\\]",
            "\\[[a-zA-Z_]{1,6}\\]",
        ];
        ("[a-z]{1,6}", prop::collection::vec(segment, 0..40))
            .prop_map(|(root, segments)| format!("{root}{}", segments.concat()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_decode_or_fail_cleanly(body in prop::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(tree) = decode(&body) {
                prop_assert!(depth(&Value::Object(tree)) <= MAX_DEPTH + 2);
            }
        }

        #[test]
        fn bracketed_keys_nest_within_the_limit(keys in prop::collection::vec(bracketed_key(), 1..20)) {
            let body: Vec<String> = keys.iter().map(|key| format!("{key}=v")).collect();
            match decode(body.join("&").as_bytes()) {
                Ok(tree) => prop_assert!(depth(&Value::Object(tree)) <= MAX_DEPTH + 2),
                Err(error) => prop_assert_eq!(error, FormError::TooDeep),
            }
        }

        #[test]
        fn a_plain_pair_round_trips(key in "[a-z_]{1,12}", value in "\\PC{0,40}") {
            let body = format!(
                "{key}={}",
                percent_encoding::utf8_percent_encode(&value, percent_encoding::NON_ALPHANUMERIC)
            );
            let tree = decode(body.as_bytes()).expect("a plain pair decodes");
            prop_assert_eq!(tree.get(&key), Some(&Value::String(value)));
        }
    }

    #[test]
    fn a_huge_index_allocates_nothing_in_proportion() {
        let tree = decode(b"data[GROUPINGS][99999999][name]=x").expect("decoded");
        let groupings = &tree["data"]["GROUPINGS"];
        assert_eq!(groupings.as_object().map(|map| map.len()), Some(1));
    }

    #[test]
    fn the_field_limit_is_exact() {
        let body = |n: usize| vec!["k=v"; n].join("&");
        assert!(decode(body(MAX_FIELDS).as_bytes()).is_ok());
        assert_eq!(
            decode(body(MAX_FIELDS + 1).as_bytes()),
            Err(FormError::TooManyFields)
        );
    }
}
