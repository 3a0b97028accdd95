//! The archive read back: what is stored, restored into a table, and checked.
//!
//! - `catalog`: the manifests of a table and the objects they list, chosen by the rows' dates.
//! - `restore`: archived rows back into a table (`load` holds its SQL).
//! - `validate`: the archive against its manifests and the checkpoint store.
//!
//! Everything here reads the archive alone (the manifests describe it); the checkpoint store is
//! consulted where it is reachable, never required.

pub mod catalog;
mod load;
pub mod restore;
pub mod validate;
