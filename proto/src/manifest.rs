//! The manifest of a work item: written last, it is the item's commit marker.
//!
//! A reader that finds a manifest knows every object it lists was written, verified, and its rows
//! deleted from the source. Query engines do not need it: they read the data objects directly.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::Compression;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format: u32,
    pub database: String,
    pub schema: String,
    pub table: String,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    pub generation: i32,
    pub created_at: DateTime<Utc>,
    pub compression: Compression,
    pub timestamp_column: String,
    pub primary_key: String,
    /// The table's columns and their PostgreSQL types, in table order.
    pub columns: Vec<Column>,
    pub objects: Vec<ManifestObject>,
    pub total_rows: i64,
    pub total_bytes: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    /// As `format_type` renders it, e.g. `timestamp with time zone`, `jsonb`, `character varying(64)`.
    #[serde(rename = "type")]
    pub type_name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestObject {
    pub key: String,
    pub seq: i32,
    pub rows: i64,
    pub bytes: i64,
    /// Hex SHA-256 of the object's bytes.
    pub sha256: String,
    /// The first and last (timestamp, primary key) of the batch, as PostgreSQL prints them.
    pub first_key: KeyBound,
    pub last_key: KeyBound,
    /// Keys (as PostgreSQL prints them) of rows in this object that changed on the source after
    /// they were read: their row was not deleted, and its later version is archived by a later run
    /// or is still in the table. Restore skips these rows, so a row archived twice comes back as
    /// its last archived version. Absent in format 1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub superseded: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBound {
    pub ts: String,
    pub pk: String,
}

/// The format this release writes. Format 2 added `superseded`; readers take 1 and 2.
pub const FORMAT: u32 = 2;

/// Whether this release can read a manifest of `format`.
pub fn readable(format: u32) -> bool {
    (1..=FORMAT).contains(&format)
}
