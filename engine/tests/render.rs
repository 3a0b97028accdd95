//! The archiver renders rows from PostgreSQL's binary format itself (see `pipeline::render`): every
//! row it writes must be the JSON `row_to_json` makes of the row, value for value, or a restore
//! brings back something else. Edge values of every kind it renders, beside types it leaves to
//! the server, are compared with `row_to_json` as `jsonb` (strings, timestamps included, must
//! match exactly), for both ways a page is read.

use archiver_engine::config;
use archiver_engine::pipeline::encode::{decode, Encoder};
use archiver_engine::pipeline::extract::{Batch, Page, TableSql, Window};
use archiver_engine::source::table::TableInfo;
use archiver_proto::{Compression, Partition};
use archiver_testkit::config::{ConfigBuilder, Database, Storage, Table};
use archiver_testkit::TestDb;
use chrono::{TimeZone, Utc};

const TABLE: &str = "
CREATE TABLE edge (
    id      bigint PRIMARY KEY,
    ts      timestamptz NOT NULL,
    i2      smallint,
    i4      integer,
    i8      bigint,
    b       boolean,
    t       text,
    vc      varchar(20),
    u       uuid,
    jb      jsonb,
    j       json,
    tsz3    timestamp(3) with time zone,
    tsn     timestamp,
    d       date,
    n       numeric,
    f       double precision,
    ip      inet,
    arr     text[],
    by      bytea,
    iv      interval,
    \"we\"\"ird \\ name\" text
)";

const ROWS: &str = "
INSERT INTO edge VALUES
 (1, '2024-03-01 12:00:00+00', -32768, -2147483648, -9223372036854775808, true, '', '', '00000000-0000-0000-0000-000000000000',
  '{}', '{}', '2024-03-01 12:00:00.1+00', '2024-03-01 12:00:00', '2024-02-29', 0, 0, '::1', '{}', '', '0', 'x'),
 (2, '2024-03-01 12:00:01.000001+00', 32767, 2147483647, 9223372036854775807, false,
  E'quote \" backslash \\\\ nl \\n cr \\r tab \\t bs \\b ff \\f c1 \\x01 us \\x1f rs \\x1e del \\x7f é 😀 \\u2028',
  'ünïcødé', 'ffffffff-ffff-ffff-ffff-ffffffffffff',
  '{\"a\": [1, 2.50, null, true], \"s\": \"x\\ny\", \"n\": {\"\": -0.0}}', E'{\\n  \"pretty\" : [1,\\r\\n 2] }',
  'infinity', '-infinity', 'infinity', 1e-20, 'NaN', '10.0.0.1/8', '{a,NULL,\"b c\"}', '\\x00ff', '1 day 02:03:04', NULL),
 (3, '2024-03-01 12:00:02+00', NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, '-infinity', '0001-01-01 00:00:00',
  '0044-03-15 BC', NULL, '-Infinity', NULL, NULL, NULL, NULL, ''),
 (4, '2024-03-01 12:00:03.123456+00', 0, 0, 0, true, 'x', 'y', '123e4567-e89b-12d3-a456-426614174000', '\"s\"', 'null',
  '1999-12-31 23:59:59.999+00', '0001-12-31 23:59:59.5 BC', '0001-01-01 BC', 123456789012345678901234567890.5, 1.5e300,
  'fe80::1', '{}', '\\x', '-1 mon', 'y'),
 (5, '2024-03-01 12:00:04+00', 1, 1, 1, false, 'a', 'b', NULL, '[1, \"a\", {\"b\": null}]', '  [ ]  ', '2000-02-29 00:00:00+00',
  '9999-12-31 23:59:59.999999', '294276-12-31', 1, 1, NULL, NULL, NULL, NULL, NULL),
 (6, '2024-03-01 12:00:05+00', 2, 2, 2, true, 'z', 'z', NULL, 'true', '1', '4713-11-24 00:00:00+00 BC',
  '294276-12-31 23:59:59.999999', '4714-11-24 BC', -1, -1, NULL, NULL, NULL, NULL, NULL)";

async fn edge_table(db: &TestDb) -> (TableInfo, tempfile::TempDir) {
    sqlx::query(TABLE).execute(&db.pool).await.unwrap();
    sqlx::query(ROWS).execute(&db.pool).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let yaml = ConfigBuilder::new()
        .storage(Storage::local(dir.path()))
        .database(Database::of(db).table(Table::new("edge", "ts", "id")))
        .yaml();
    let loaded = config::parse("test.yaml", &yaml, &|_| None).unwrap();
    let settings = loaded.config.tables().remove(0);
    (TableInfo::inspect(&db.pool, &settings).await.unwrap(), dir)
}

/// The edge table, its statements, and a session as the pipeline opens one (at UTC).
async fn setup() -> (TestDb, TableSql, sqlx::PgConnection, tempfile::TempDir) {
    let db = TestDb::new().await;
    let (info, dir) = edge_table(&db).await;
    let opts = archiver_engine::source::db::url_options(&db.url()).unwrap();
    let conn = archiver_engine::source::db::connect(&opts, std::time::Duration::from_secs(10)).await.unwrap();
    (db, TableSql::new(&info, None), conn, dir)
}

fn page(limit: u32) -> Page<'static> {
    let day = Utc.with_ymd_and_hms(2024, 3, 1, 0, 0, 0).unwrap();
    Page { window: Window::at(day, day + chrono::Duration::days(1), Partition::Day), after: None, limit }
}

/// Each line of the batch against `row_to_json` of its row, as jsonb; returns how many matched.
async fn assert_rows_match(db: &TestDb, batch: Batch) -> usize {
    let extracted = batch.finish(&tracing::Span::none()).expect("rows were read");
    let text = String::from_utf8(decode(Compression::Zstd, &extracted.encoded.body).unwrap()).unwrap();
    let mut matched = 0;
    for line in text.lines() {
        let ours: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        let id = ours["id"].as_i64().unwrap();
        let (same, theirs): (bool, String) =
            sqlx::query_as("SELECT $1::jsonb = row_to_json(e)::jsonb, row_to_json(e)::text FROM edge e WHERE id = $2")
                .bind(line)
                .bind(id)
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert!(same, "row {id} rendered\n  {line}\nbut row_to_json is\n  {theirs}");
        matched += 1;
    }
    matched
}

#[tokio::test]
async fn rendered_rows_equal_row_to_json() {
    let (db, sql, mut conn, _dir) = setup().await;
    // Streamed, as with the governor off.
    let mut streamed = Batch::new(Encoder::new(Compression::Zstd, 3));
    assert_eq!(streamed.read_page(&mut conn, &sql, page(100)).await.unwrap(), 6);
    assert_eq!(assert_rows_match(&db, streamed).await, 6);
    // Fetched whole, then rendered, in pages of four, as the governor reads.
    let mut whole = Batch::new(Encoder::new(Compression::Zstd, 3));
    for want in [4, 2, 0] {
        let rows = whole.fetch_page(&mut conn, &sql, page(4)).await.unwrap();
        assert_eq!(whole.add_page(&sql, &rows).unwrap(), want);
    }
    assert_eq!(assert_rows_match(&db, whole).await, 6);
}

#[tokio::test]
async fn a_column_added_while_archiving_stops_the_batch_before_it_is_stored() {
    let (db, sql, mut conn, _dir) = setup().await;
    sqlx::query("ALTER TABLE edge ADD COLUMN added text DEFAULT 'not in the archive'").execute(&db.pool).await.unwrap();
    let mut batch = Batch::new(Encoder::new(Compression::Zstd, 3));
    let err = batch.read_page(&mut conn, &sql, page(100)).await.unwrap_err().to_string();
    assert!(err.contains("the columns of") && err.contains("changed while it was being archived"), "{err}");
    let rows = batch.fetch_page(&mut conn, &sql, page(100)).await.unwrap();
    let err = batch.add_page(&sql, &rows).unwrap_err().to_string();
    assert!(err.contains("changed while it was being archived"), "{err}");
    assert!(batch.finish(&tracing::Span::none()).is_none(), "no row was taken into the batch");
}
