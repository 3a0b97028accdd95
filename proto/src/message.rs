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

/// Parses and checks a message body; the error says what is wrong with it.
pub fn decode(body: &[u8]) -> Result<WorkItem, String> {
    let msg: ItemMessage = serde_json::from_slice(body).map_err(|e| format!("not a work-item message: {e}"))?;
    if msg.version != VERSION {
        return Err(format!("unsupported message version {}", msg.version));
    }
    let item = msg.item;
    if item.range_start >= item.range_end {
        return Err(format!("invalid range: start {} is not before end {}", item.range_start, item.range_end));
    }
    if item.id <= 0 || item.generation < 0 {
        return Err("invalid item id or generation".into());
    }
    for (what, v) in [("database", &item.database), ("schema", &item.schema), ("table", &item.table)] {
        if v.is_empty() || v.len() > 512 || v.contains('\0') {
            return Err(format!("invalid {what} name"));
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
        assert!(decode(b"{not json").unwrap_err().contains("not a work-item message"));
        let mut inverted = item();
        std::mem::swap(&mut inverted.range_start, &mut inverted.range_end);
        assert!(decode(&encode(&inverted)).unwrap_err().contains("invalid range"));
        let extra = br#"{"version":1,"item":{"id":1},"sql":"DROP TABLE x"}"#;
        assert!(decode(extra).is_err());
        let mut nul = item();
        nul.table = "a\0b".into();
        assert!(decode(&encode(&nul)).unwrap_err().contains("invalid table"));
    }
}
