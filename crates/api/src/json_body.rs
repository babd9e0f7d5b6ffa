//! Request bodies read as JSON objects in which every key appears once.
//!
//! serde_json keeps the last of two equal keys. A gateway, a firewall or a log that reads
//! the first would then see another command than the one Homeroom decides (a message to
//! one person in the log, sent to another), so a repeated key is refused instead.

use crate::problem::BodyError;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

/// Reads `bytes` as one JSON object, refusing an empty body, anything but an object and
/// a key given twice in any object inside it.
///
/// # Errors
/// [`BodyError`] saying which.
pub(crate) fn object(bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let repeated = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let read = Unique {
        path: String::new(),
        repeated: &repeated,
    }
    .deserialize(&mut de)
    .and_then(|value| de.end().map(|()| value));
    let value = match read {
        Ok(value) => value,
        Err(error) => {
            return Err(match repeated.into_inner() {
                Some(field) => BodyError::RepeatedKey { field },
                None => BodyError::NotJson(error),
            })
        }
    };
    if !value.is_object() {
        return Err(BodyError::NotAnObject);
    }
    Ok(value)
}

/// Reads one JSON value at `path`, noting in `repeated` the first key found twice.
struct Unique<'a> {
    path: String,
    repeated: &'a RefCell<Option<String>>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("a number JSON cannot hold"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Unique {
            path: format!("{}[{}]", self.path, items.len()),
            repeated: self.repeated,
        })? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            let path = if self.path.is_empty() {
                key.clone()
            } else {
                format!("{}.{key}", self.path)
            };
            if !seen.insert(key.clone()) {
                *self.repeated.borrow_mut() = Some(path.clone());
                return Err(A::Error::custom(format!("the key {path:?} is given twice")));
            }
            let value = map.next_value_seed(Unique {
                path,
                repeated: self.repeated,
            })?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_given_twice_is_refused_wherever_it_is() {
        for (body, field) in [
            (r#"{"recipient_id":"a","recipient_id":"b"}"#, "recipient_id"),
            (r#"{"a":{"b":1,"b":2}}"#, "a.b"),
            (r#"{"points":[{"x":1},{"x":1,"x":2}]}"#, "points[1].x"),
        ] {
            match object(body.as_bytes()) {
                Err(BodyError::RepeatedKey { field: found }) => assert_eq!(found, field),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn an_object_reads_as_serde_json_reads_it() {
        let body = r#"{"a":[1,-2,3.5,"x",null,true],"b":{"c":{}},"d":18446744073709551615}"#;
        let ours = object(body.as_bytes()).unwrap();
        let theirs: Value = serde_json::from_str(body).unwrap();
        assert_eq!(ours, theirs);
        // The same key in two different objects is not a repeat.
        assert!(object(br#"{"a":{"k":1},"b":{"k":1}}"#).is_ok());
    }

    #[test]
    fn not_an_object_nor_json_nor_anything_is_refused() {
        assert!(matches!(object(b"  "), Err(BodyError::Empty)));
        assert!(matches!(object(b"[1]"), Err(BodyError::NotAnObject)));
        assert!(matches!(object(b"{\"a\":1"), Err(BodyError::NotJson(_))));
        assert!(matches!(object(b"{} {}"), Err(BodyError::NotJson(_))));
    }
}
