//! Legal holds: ranges of a table that are never archived or deleted while the hold is active.
//!
//! Input: holds placed and released by an operator (or by an in-place restore). Output: rows of
//! `{schema}.holds`, with who placed and released each and why. Invariant: a hold is never
//! removed, only released, so the record of who held what stays.

use archiver_proto::WorkItem;
use chrono::{DateTime, Utc};

use super::CheckpointStore;

/// One hold, active or released.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct Hold {
    pub id: i64,
    pub database: String,
    pub schema_name: String,
    pub table_name: String,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    pub reason: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    pub released_by: Option<String>,
    pub released_at: Option<DateTime<Utc>>,
}

impl Hold {
    pub fn active(&self) -> bool {
        self.released_at.is_none()
    }
}

/// What a new hold covers, and why.
#[derive(Debug, Clone)]
pub struct NewHold<'a> {
    pub database: &'a str,
    pub schema: &'a str,
    pub table: &'a str,
    pub range_start: DateTime<Utc>,
    pub range_end: DateTime<Utc>,
    pub reason: &'a str,
    pub by: &'a str,
}

const COLUMNS: &str = "id, database, schema_name, table_name, range_start, range_end, reason, created_by, created_at, \
     released_by, released_at";

/// Who is acting, for the record: `$USER@host`, or `unknown`.
pub fn operator() -> String {
    let user = std::env::var("USER").or_else(|_| std::env::var("USERNAME")).unwrap_or_else(|_| "unknown".into());
    match std::fs::read_to_string("/etc/hostname") {
        Ok(host) if !host.trim().is_empty() => format!("{user}@{}", host.trim()),
        _ => user,
    }
}

impl CheckpointStore {
    /// Places a hold; returns it.
    pub async fn add_hold(&self, h: &NewHold<'_>) -> Result<Hold, sqlx::Error> {
        sqlx::query_as(&format!(
            "INSERT INTO {} (database, schema_name, table_name, range_start, range_end, reason, created_by)
             VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {COLUMNS}",
            self.t("holds")
        ))
        .bind(h.database)
        .bind(h.schema)
        .bind(h.table)
        .bind(h.range_start)
        .bind(h.range_end)
        .bind(h.reason)
        .bind(h.by)
        .fetch_one(self.pool())
        .await
    }

    /// Every hold, active ones first, then by table and start.
    pub async fn holds(&self) -> Result<Vec<Hold>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM {} ORDER BY released_at IS NOT NULL, database, schema_name, table_name, range_start, id",
            self.t("holds")
        ))
        .fetch_all(self.pool())
        .await
    }

    /// Releases an active hold; returns it, or None if there is no active hold with that id.
    pub async fn release_hold(&self, id: i64, by: &str) -> Result<Option<Hold>, sqlx::Error> {
        sqlx::query_as(&format!(
            "UPDATE {} SET released_by = $2, released_at = now() WHERE id = $1 AND released_at IS NULL RETURNING {COLUMNS}",
            self.t("holds")
        ))
        .bind(id)
        .bind(by)
        .fetch_optional(self.pool())
        .await
    }

    /// The active holds on `item`'s table that overlap its range, as ranges ordered by start,
    /// read on `conn` (a transaction of the caller's, or the store's pool).
    pub async fn held_ranges<'e, E: sqlx::PgExecutor<'e>>(&self, conn: E, item: &WorkItem) -> Result<Vec<(DateTime<Utc>, DateTime<Utc>)>, sqlx::Error> {
        sqlx::query_as(&format!(
            "SELECT range_start, range_end FROM {} WHERE database = $1 AND schema_name = $2 AND table_name = $3
               AND released_at IS NULL AND range_start < $5 AND range_end > $4
             ORDER BY range_start",
            self.t("holds")
        ))
        .bind(&item.database)
        .bind(&item.schema)
        .bind(&item.table)
        .bind(item.range_start)
        .bind(item.range_end)
        .fetch_all(conn)
        .await
    }
}

/// The part of `[start, end)` that may be read: from `start` (moved past any hold it falls in) up
/// to the next hold's start, or None if holds cover `[start, end)` entirely. `holds` are sorted by
/// start and may overlap.
pub fn unheld(start: DateTime<Utc>, end: DateTime<Utc>, holds: &[(DateTime<Utc>, DateTime<Utc>)]) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
    let mut from = start;
    for &(hs, he) in holds {
        if hs <= from && he > from {
            from = he;
        }
    }
    if from >= end {
        return None;
    }
    let to = holds.iter().map(|&(hs, _)| hs).filter(|&hs| hs > from).min().map_or(end, |hs| hs.min(end));
    Some((from, to))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(h: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, h, 0, 0).unwrap()
    }

    #[test]
    fn a_window_stops_before_a_hold_and_resumes_after_it() {
        let holds = [(t(4), t(6)), (t(5), t(8)), (t(10), t(11))];
        assert_eq!(unheld(t(0), t(12), &holds), Some((t(0), t(4))));
        assert_eq!(unheld(t(4), t(12), &holds), Some((t(8), t(10))), "overlapping holds are skipped together");
        assert_eq!(unheld(t(10), t(11), &holds), None);
        assert_eq!(unheld(t(10), t(12), &holds), Some((t(11), t(12))));
        assert_eq!(unheld(t(0), t(3), &holds), Some((t(0), t(3))));
        assert_eq!(unheld(t(0), t(12), &[]), Some((t(0), t(12))));
    }
}
