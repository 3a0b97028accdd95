//! The work-item message on the queue: JSON, versioned.
//!
//! The coordinator publishes one per work item; the worker trusts nothing in it. `decode` checks
//! the shape and the range; the worker then checks the table against its own configuration (the
//! allowlist) and the item against the checkpoint store before touching any table.

use serde::{Deserialize, Serialize};

use crate::WorkItem;

pub const VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ItemMessage {
    pub version: u32,
    pub item: WorkItem,
}

pub fn encode(item: &WorkItem) -> Vec<u8> {
    serde_json::to_vec(&ItemMessage { version: VERSION, item: item.clone() }).expect("a work item serializes")
}

/// Why a message body is not a work item; the text goes with the dead-lettered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Not JSON of the message's shape (unknown fields included, at any level).
    Shape(String),
    UnsupportedVersion(u32),
    EmptyRange { start: String, end: String },
    InvalidId,
    InvalidName(&'static str),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Shape(e) => write!(f, "not a work-item message: {e}"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported message version {v}"),
            DecodeError::EmptyRange { start, end } => write!(f, "invalid range: start {start} is not before end {end}"),
            DecodeError::InvalidId => write!(f, "invalid item id or generation"),
            DecodeError::InvalidName(what) => write!(f, "invalid {what} name"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// Parses and checks a message body; the error says what is wrong with it.
pub fn decode(body: &[u8]) -> Result<WorkItem, DecodeError> {
    let msg: ItemMessage = serde_json::from_slice(body).map_err(|e| DecodeError::Shape(e.to_string()))?;
    if msg.version != VERSION {
        return Err(DecodeError::UnsupportedVersion(msg.version));
    }
    let item = msg.item;
    if item.range_start >= item.range_end {
        return Err(DecodeError::EmptyRange { start: item.range_start.to_string(), end: item.range_end.to_string() });
    }
    if item.id <= 0 || item.generation < 0 {
        return Err(DecodeError::InvalidId);
    }
    for (what, v) in [("database", &item.database), ("schema", &item.schema), ("table", &item.table)] {
        if v.is_empty() || v.len() > 512 || v.contains('\0') {
            return Err(DecodeError::InvalidName(what));
        }
    }
    Ok(item)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};

    fn item() -> WorkItem {
        WorkItem {
            id: 3,
            database: "db".into(),
            schema: "public".into(),
            table: "audit".into(),
            range_start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            range_end: Utc.with_ymd_and_hms(2024, 1, 2, 0, 0, 0).unwrap(),
            generation: 0,
        }
    }

    #[test]
    fn round_trips() {
        assert_eq!(decode(&encode(&item())).unwrap(), item());
    }

    #[test]
    fn refuses_garbage_inverted_ranges_and_unknown_fields() {
        assert!(matches!(decode(b"{not json"), Err(DecodeError::Shape(_))));
        let mut inverted = item();
        std::mem::swap(&mut inverted.range_start, &mut inverted.range_end);
        assert!(decode(&encode(&inverted)).unwrap_err().to_string().contains("invalid range"));
        let extra = br#"{"version":1,"item":{"id":1},"sql":"DROP TABLE x"}"#;
        assert!(decode(extra).is_err());
        let mut nul = item();
        nul.table = "a\0b".into();
        assert_eq!(decode(&encode(&nul)), Err(DecodeError::InvalidName("table")));
    }

    #[test]
    fn refuses_an_unknown_field_inside_the_item() {
        let mut v: serde_json::Value = serde_json::from_slice(&encode(&item())).unwrap();
        v["item"]["where"] = serde_json::json!("1=1");
        let e = decode(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(matches!(&e, DecodeError::Shape(m) if m.contains("unknown field `where`")), "{e}");
    }
}
