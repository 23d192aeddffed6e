//! JSON values to DynamoDB attribute values and back: a job is stored as a map of its fields
//! (each one addressable by an update expression), not as one opaque string.

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Map, Number, Value};
use std::collections::HashMap;

pub type Item = HashMap<String, AttributeValue>;

pub fn to_attr(value: &Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(n) => AttributeValue::N(n.to_string()),
        Value::String(s) => AttributeValue::S(s.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(to_attr).collect()),
        Value::Object(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect())
        }
    }
}

pub fn from_attr(attr: &AttributeValue) -> Result<Value, String> {
    Ok(match attr {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(n) => Value::Number(parse_number(n)?),
        AttributeValue::S(s) => Value::String(s.clone()),
        AttributeValue::L(items) => {
            Value::Array(items.iter().map(from_attr).collect::<Result<_, _>>()?)
        }
        AttributeValue::M(map) => Value::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), from_attr(v)?)))
                .collect::<Result<Map<_, _>, String>>()?,
        ),
        AttributeValue::Ss(v) => Value::Array(v.iter().cloned().map(Value::String).collect()),
        AttributeValue::Ns(v) => Value::Array(
            v.iter()
                .map(|n| parse_number(n).map(Value::Number))
                .collect::<Result<_, _>>()?,
        ),
        other => return Err(format!("unsupported attribute type: {other:?}")),
    })
}

fn parse_number(n: &str) -> Result<Number, String> {
    if let Ok(i) = n.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = n.parse::<u64>() {
        return Ok(u.into());
    }
    n.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| format!("not a number: {n}"))
}

/// The fields of a JSON object as item attributes.
pub fn object_to_item(value: &Value) -> Item {
    match value {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), to_attr(v))).collect(),
        _ => Item::new(),
    }
}

/// An item's attributes as a JSON object, leaving out the names in `skip` (keys, index keys).
pub fn item_to_object(item: &Item, skip: &[&str]) -> Result<Value, String> {
    let mut map = Map::new();
    for (k, v) in item {
        if !skip.contains(&k.as_str()) {
            map.insert(k.clone(), from_attr(v)?);
        }
    }
    Ok(Value::Object(map))
}

pub fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

pub fn get_n(item: &Item, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_go_to_attributes_and_back_unchanged() {
        let v = json!({"a": null, "b": true, "c": -3, "d": 1.5, "e": "x", "f": [1, "y", {"g": []}],
                       "h": {}, "big": u64::MAX});
        let back = item_to_object(&object_to_item(&v), &[]).unwrap();
        assert_eq!(back, v);
    }
}
