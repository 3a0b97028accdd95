//! The archive pipeline and what it needs: configuration, storage, database access.
//!
//! `pipeline` runs one work item through extract, encode, upload, verify, checkpoint and delete;
//! the coordinator's standalone mode and the distributed worker both call it unchanged.

pub mod config;
pub mod db;
pub mod pipeline;
pub mod seed;
pub mod setup;
pub mod storage;
pub mod table;
