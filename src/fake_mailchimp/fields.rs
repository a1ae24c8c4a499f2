//! `fields` and `exclude_fields`: comma lists of dot paths (`members.email_address`) that
//! narrow a response. A path reaches through arrays to their elements; a path naming
//! nothing simply selects nothing, as Mailchimp does.
//!
//! Big responses are written straight from the members, without building a JSON tree
//! first, so a [`Selection`] is asked key by key what to write; small responses are built as
//! JSON values and narrowed with [`Selection::apply`].

use serde::Serialize;
use serde::ser::{Error, SerializeMap};
use serde_json::{Map, Value};

/// What to write of one JSON value, given the paths still to follow below it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Selection<'q> {
    /// `None` keeps everything; otherwise only what these paths reach.
    keep: Option<Vec<Vec<&'q str>>>,
    drop: Vec<Vec<&'q str>>,
}

impl<'q> Selection<'q> {
    pub fn new(fields: Option<&'q str>, exclude: Option<&'q str>) -> Selection<'q> {
        Selection {
            keep: fields.map(paths),
            drop: exclude.map(paths).unwrap_or_default(),
        }
    }

    /// Everything below is written as it is.
    pub fn is_everything(&self) -> bool {
        self.keep.is_none() && self.drop.is_empty()
    }

    /// What to write under `key`, or `None` to leave the key out.
    pub fn child(&self, key: &str) -> Option<Selection<'q>> {
        let below = |paths: &[Vec<&'q str>]| -> Vec<Vec<&'q str>> {
            paths
                .iter()
                .filter(|path| path[0] == key)
                .map(|path| path[1..].to_vec())
                .collect()
        };
        let keep = match &self.keep {
            None => None,
            Some(paths) => match below(paths) {
                rest if rest.is_empty() => return None,
                rest if rest.iter().any(Vec::is_empty) => None,
                rest => Some(rest),
            },
        };
        let drop = below(&self.drop);
        if drop.iter().any(Vec::is_empty) {
            return None;
        }
        Some(Selection { keep, drop })
    }

    /// `value` narrowed; `None` when the paths look for keys inside a scalar.
    pub fn apply(&self, value: Value) -> Option<Value> {
        if self.is_everything() {
            return Some(value);
        }
        match value {
            Value::Object(map) => Some(Value::Object(self.apply_to_keys(map))),
            Value::Array(items) => Some(Value::Array(
                items
                    .into_iter()
                    .filter_map(|item| self.apply(item))
                    .collect(),
            )),
            scalar if self.keep.is_none() => Some(scalar),
            _ => None,
        }
    }

    fn apply_to_keys(&self, map: Map<String, Value>) -> Map<String, Value> {
        let mut kept = Map::new();
        for (key, child) in map {
            if let Some(child) = self
                .child(&key)
                .and_then(|selection| selection.apply(child))
            {
                kept.insert(key, child);
            }
        }
        kept
    }
}

fn paths(list: &str) -> Vec<Vec<&str>> {
    let items = list
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty());
    items.map(|item| item.split('.').collect()).collect()
}

/// Writes `key: value` into a map being serialized, as far as `selection` wants it: as is
/// when it wants all of it, through a JSON value narrowed otherwise.
pub(crate) fn write_entry<M, T>(
    map: &mut M,
    selection: &Selection<'_>,
    key: &str,
    value: &T,
) -> Result<(), M::Error>
where
    M: SerializeMap,
    T: Serialize + ?Sized,
{
    let Some(child) = selection.child(key) else {
        return Ok(());
    };
    if child.is_everything() {
        return map.serialize_entry(key, value);
    }
    let value = serde_json::to_value(value).map_err(M::Error::custom)?;
    match child.apply(value) {
        Some(narrowed) => map.serialize_entry(key, &narrowed),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::Selection;

    fn narrow(value: Value, fields: Option<&str>, exclude: Option<&str>) -> Value {
        Selection::new(fields, exclude)
            .apply(value)
            .expect("an object stays")
    }

    fn sample() -> serde_json::Value {
        json!({
            "members": [{
                "id": "a",
                "email_address": "x@y",
                "merge_fields": {"FNAME": "X", "LNAME": "Y"},
            }],
            "list_id": "l",
            "total_items": 1,
        })
    }

    #[test]
    fn fields_keep_only_the_named_paths_through_arrays() {
        let fields = "members.email_address,members.merge_fields.FNAME,total_items";
        let expected = json!({
            "members": [{"email_address": "x@y", "merge_fields": {"FNAME": "X"}}],
            "total_items": 1,
        });
        assert_eq!(narrow(sample(), Some(fields), None), expected);
    }

    #[test]
    fn unknown_fields_are_simply_absent() {
        let narrowed = narrow(
            sample(),
            Some("members.nope,total_items.deeper,bogus"),
            None,
        );
        assert_eq!(narrowed, json!({"members": [{}]}));
    }

    #[test]
    fn exclude_fields_drop_the_named_paths() {
        let narrowed = narrow(sample(), None, Some("members.merge_fields.LNAME,list_id"));
        let expected = json!({
            "members": [{"id": "a", "email_address": "x@y", "merge_fields": {"FNAME": "X"}}],
            "total_items": 1,
        });
        assert_eq!(narrowed, expected);
    }
}
