//! After a run: VACUUM or ANALYZE the tables rows were deleted from, as each table's `vacuum`
//! setting says. A failure is logged and never fails the run: the archived data is safe.

use std::collections::HashMap;
use std::sync::Arc;

use archiver_engine::config::VacuumType;
use archiver_engine::setup::Prepared;
use archiver_engine::source::db::qualified;
use archiver_engine::source::table::TableInfo;

use crate::summary::Summary;

/// VACUUM / ANALYZE the tables this run deleted rows from, as configured.
pub async fn vacuum(prepared: &Prepared, summary: &Summary) {
    let by_label: HashMap<String, &Arc<TableInfo>> = prepared.tables.iter().map(|t| (t.label(), t)).collect();
    for (label, totals) in &summary.tables {
        let Some(info) = by_label.get(label) else { continue };
        if totals.rows == 0 {
            continue;
        }
        let s = &info.settings;
        let t = qualified(&s.schema, &s.table);
        let stmt = match s.vacuum {
            VacuumType::None => continue,
            VacuumType::Analyze => format!("ANALYZE {t}"),
            VacuumType::Standard => format!("VACUUM (ANALYZE) {t}"),
            VacuumType::Full => format!("VACUUM (FULL, ANALYZE) {t}"),
        };
        let pool = &prepared.sources[&s.database].pool;
        match sqlx::query(&stmt).execute(pool).await {
            Ok(_) => tracing::info!(table = %label, statement = %stmt, "vacuumed"),
            Err(e) => tracing::warn!(table = %label, error = %e, "vacuum failed (the archived data is safe)"),
        }
    }
}
