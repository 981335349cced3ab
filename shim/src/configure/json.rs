//! A JSON value that keeps the order of object keys, so that editing `daemon.json` or
//! `config.json` leaves every key we do not own where it was. (serde_json's own `Map` sorts keys
//! unless the workspace-wide `preserve_order` feature is on; this keeps that choice local.)

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    /// Keys in file order. A key repeated in the file keeps its first position and last value,
    /// as Go's decoder (dockerd, the docker CLI) reads it.
    Object(Vec<(String, Json)>),
}

impl Json {
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets `key` (in place when present, appended otherwise). Panics on a non-object: callers
    /// check the shape first.
    pub fn set(&mut self, key: &str, value: Json) {
        let Json::Object(entries) = self else {
            panic!("Json::set on a non-object")
        };
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => entries.push((key.to_string(), value)),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }

    /// Parses a document. Errors carry serde_json's line and column.
    pub fn parse(bytes: &[u8]) -> Result<Json, String> {
        serde_json::from_slice(bytes).map_err(|e| format!("invalid JSON: {e}"))
    }

    /// Pretty-prints with `indent` (e.g. two spaces, or a tab as docker writes config.json),
    /// ending with a newline.
    pub fn to_pretty(&self, indent: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let fmt = serde_json::ser::PrettyFormatter::with_indent(indent);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, fmt);
        self.serialize(&mut ser)
            .expect("serialising JSON to memory cannot fail");
        out.push(b'\n');
        out
    }
}

/// The indentation a file already uses (the whitespace before the first indented line), if any.
pub fn detect_indent(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut lines = bytes.split(|&b| b == b'\n');
    lines.next();
    for line in lines {
        let ws: Vec<u8> = line.iter().copied().take_while(|&b| b == b' ' || b == b'\t').collect();
        if !ws.is_empty() && ws.len() < line.len() {
            return Some(ws);
        }
    }
    None
}

impl Serialize for Json {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Json::Null => s.serialize_unit(),
            Json::Bool(b) => s.serialize_bool(*b),
            Json::Number(n) => n.serialize(s),
            Json::String(v) => s.serialize_str(v),
            Json::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Json::Object(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Json, D::Error> {
        d.deserialize_any(JsonVisitor)
    }
}

struct JsonVisitor;

impl<'de> Visitor<'de> for JsonVisitor {
    type Value = Json;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_none<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("non-finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let mut obj = Json::Object(Vec::new());
        while let Some((k, v)) = map.next_entry::<String, Json>()? {
            obj.set(&k, v);
        }
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_values() {
        let src = br#"{"zeta": 1, "alpha": {"y": [1, 2.5, "x"], "b": null}, "mid": true}"#;
        let v = Json::parse(src).unwrap();
        let out = String::from_utf8(v.to_pretty(b"  ")).unwrap();
        let z = out.find("zeta").unwrap();
        let a = out.find("alpha").unwrap();
        let m = out.find("mid").unwrap();
        assert!(z < a && a < m, "{out}");
        assert!(out.find("\"y\"").unwrap() < out.find("\"b\"").unwrap());
        assert_eq!(Json::parse(out.as_bytes()).unwrap(), v);
    }

    #[test]
    fn detects_indent() {
        assert_eq!(detect_indent(b"{\n\t\"a\": 1\n}"), Some(b"\t".to_vec()));
        assert_eq!(detect_indent(b"{\n    \"a\": 1\n}"), Some(b"    ".to_vec()));
        assert_eq!(detect_indent(b"{\"a\": 1}"), None);
    }
}
