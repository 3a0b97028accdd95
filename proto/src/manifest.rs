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
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyBound {
    pub ts: String,
    pub pk: String,
}

pub const FORMAT: u32 = 1;
