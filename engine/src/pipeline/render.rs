//! Render: a row's columns, read in PostgreSQL's binary format, as the JSON object `row_to_json`
//! would make of the row.
//!
//! The server's `row_to_json` costs about 4 µs a row of the load test's table, three quarters of a
//! page read's server time; the same columns sent in binary cost the server about a third of that.
//! So the archiver renders the common types itself ([`Kind`]), exactly as `row_to_json` does with
//! the session's `TimeZone` at UTC (the archiver's sessions set it), and asks the server for
//! `to_json(column)` of every other type (arrays, composites, numeric, floats, inet, bytea,
//! domains…), which is what `row_to_json` writes for that column.
//!
//! Invariant: for every row, the rendered text equals `row_to_json` of the row as `jsonb` (the
//! test `rendered_rows_equal_row_to_json` compares them on edge values of every kind).

use sqlx::postgres::PgRow;
use sqlx::{Row, ValueRef};

/// How one column is read and rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Int2,
    Int4,
    Int8,
    Bool,
    /// `text` and `character varying`: a JSON string.
    Text,
    Uuid,
    /// Binary `jsonb` is a version byte and the text `jsonb_out` writes.
    Jsonb,
    /// `json` as written (the encoder writes its raw line breaks as spaces).
    Json,
    Timestamptz,
    Timestamp,
    Date,
    /// Rendered by the server: the column is selected as `to_json(column)::text`.
    Server,
}

impl Kind {
    /// The kind of a column of type `oid` (`pg_attribute.atttypid`): a domain or any type not
    /// listed is the server's.
    pub fn of(oid: u32) -> Kind {
        match oid {
            21 => Kind::Int2,
            23 => Kind::Int4,
            20 => Kind::Int8,
            16 => Kind::Bool,
            25 | 1043 => Kind::Text,
            2950 => Kind::Uuid,
            3802 => Kind::Jsonb,
            114 => Kind::Json,
            1184 => Kind::Timestamptz,
            1114 => Kind::Timestamp,
            1082 => Kind::Date,
            _ => Kind::Server,
        }
    }
}

/// Why a value could not be rendered: the server sent bytes its type does not have.
#[derive(Debug, thiserror::Error)]
#[error("column {column:?}: {problem}")]
pub struct RenderError {
    pub column: String,
    pub problem: String,
}

/// Renders rows of one table: each column's `"name":` prefix, escaped once, and its kind.
#[derive(Debug, Clone)]
pub struct Renderer {
    columns: Vec<(String, String, Kind)>,
}

impl Renderer {
    /// `columns`: each column's name and type oid, in the table's order.
    pub fn new<'a>(columns: impl IntoIterator<Item = (&'a str, u32)>) -> Self {
        let columns = columns
            .into_iter()
            .enumerate()
            .map(|(i, (name, oid))| {
                let mut prefix = String::from(if i == 0 { "{" } else { "," });
                push_string(&mut prefix, name);
                prefix.push(':');
                (name.to_string(), prefix, Kind::of(oid))
            })
            .collect();
        Renderer { columns }
    }

    pub fn kinds(&self) -> impl Iterator<Item = (&str, Kind)> {
        self.columns.iter().map(|(name, _, kind)| (name.as_str(), *kind))
    }

    /// Appends the row's object to `out`: its columns' values in binary, in the table's order
    /// (None for NULL).
    pub fn render<'v>(&self, values: impl IntoIterator<Item = Option<&'v [u8]>>, out: &mut String) -> Result<(), RenderError> {
        if self.columns.is_empty() {
            out.push_str("{}");
            return Ok(());
        }
        let mut values = values.into_iter();
        for (name, prefix, kind) in &self.columns {
            out.push_str(prefix);
            let fail = |problem: String| RenderError { column: name.clone(), problem };
            let value = values.next().ok_or_else(|| fail("no value was read".into()))?;
            value_json(value, *kind, out).map_err(fail)?;
        }
        out.push('}');
        Ok(())
    }
}

/// Column `i` of `row` in binary (None for NULL).
pub fn raw(row: &PgRow, i: usize) -> Result<Option<&[u8]>, sqlx::Error> {
    let value = row.try_get_raw(i)?;
    if value.is_null() {
        return Ok(None);
    }
    value.as_bytes().map(Some).map_err(sqlx::Error::Decode)
}

/// One value as JSON.
fn value_json(value: Option<&[u8]>, kind: Kind, out: &mut String) -> Result<(), String> {
    let Some(b) = value else {
        out.push_str("null");
        return Ok(());
    };
    let text = |b| std::str::from_utf8(b).map_err(|e| format!("not UTF-8: {e}"));
    use std::fmt::Write;
    match kind {
        Kind::Int2 => write!(out, "{}", i16::from_be_bytes(fixed(b)?)).expect("a String"),
        Kind::Int4 => write!(out, "{}", i32::from_be_bytes(fixed(b)?)).expect("a String"),
        Kind::Int8 => write!(out, "{}", i64::from_be_bytes(fixed(b)?)).expect("a String"),
        Kind::Bool => out.push_str(if fixed::<1>(b)?[0] != 0 { "true" } else { "false" }),
        Kind::Text => push_string(out, text(b)?),
        Kind::Uuid => {
            let u = uuid::Uuid::from_bytes(fixed(b)?);
            write!(out, "\"{}\"", u.hyphenated()).expect("a String");
        }
        Kind::Jsonb => match b.split_first() {
            Some((1, rest)) => out.push_str(text(rest)?),
            _ => return Err("jsonb of an unknown binary version".into()),
        },
        Kind::Json | Kind::Server => out.push_str(text(b)?),
        Kind::Timestamptz => timestamp(out, i64::from_be_bytes(fixed(b)?), true),
        Kind::Timestamp => timestamp(out, i64::from_be_bytes(fixed(b)?), false),
        Kind::Date => date(out, i32::from_be_bytes(fixed(b)?)),
    }
    Ok(())
}

fn fixed<const N: usize>(b: &[u8]) -> Result<[u8; N], String> {
    b.try_into().map_err(|_| format!("{} bytes where {N} were expected", b.len()))
}

/// A JSON string, escaped as PostgreSQL's `escape_json` does.
fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let mut from = 0;
    for (i, c) in s.char_indices() {
        let escaped = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            c if (c as u32) < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        if escaped.is_empty() {
            use std::fmt::Write;
            write!(out, "\\u{:04x}", c as u32).expect("a String");
        } else {
            out.push_str(escaped);
        }
        from = i + c.len_utf8();
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// Days from 2000-01-01 (PostgreSQL's epoch) to a proleptic Gregorian (year, month, day), for
/// any day a `date` or `timestamp` can hold (H. Hinnant's `civil_from_days`).
fn civil(days_since_2000: i64) -> (i64, u32, u32) {
    let z = days_since_2000 + 10_957 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// The year as PostgreSQL's XSD style writes it (four digits at least) and whether it is BC
/// (year 0 of the proleptic calendar is 1 BC).
fn push_date(out: &mut String, days: i64) -> bool {
    use std::fmt::Write;
    let (y, m, d) = civil(days);
    let (year, bc) = if y > 0 { (y, false) } else { (1 - y, true) };
    write!(out, "{year:04}-{m:02}-{d:02}").expect("a String");
    bc
}

/// A `timestamp` (µs since 2000-01-01) as `row_to_json` writes it: ISO 8601 with a `T`, the
/// fraction without trailing zeros, `+00:00` for a `timestamptz` (the session is at UTC), and
/// ` BC` after a year before 1; `infinity` and `-infinity` as such.
fn timestamp(out: &mut String, us: i64, tz: bool) {
    use std::fmt::Write;
    if us == i64::MAX || us == i64::MIN {
        out.push_str(if us == i64::MAX { "\"infinity\"" } else { "\"-infinity\"" });
        return;
    }
    out.push('"');
    let (days, us_of_day) = (us.div_euclid(86_400_000_000), us.rem_euclid(86_400_000_000));
    let bc = push_date(out, days);
    let secs = us_of_day / 1_000_000;
    write!(out, "T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60).expect("a String");
    let frac = us_of_day % 1_000_000;
    if frac != 0 {
        let digits = format!("{frac:06}");
        out.push('.');
        out.push_str(digits.trim_end_matches('0'));
    }
    if tz {
        out.push_str("+00:00");
    }
    if bc {
        out.push_str(" BC");
    }
    out.push('"');
}

/// A `date` (days since 2000-01-01) as `row_to_json` writes it.
fn date(out: &mut String, days: i32) {
    if days == i32::MAX || days == i32::MIN {
        out.push_str(if days == i32::MAX { "\"infinity\"" } else { "\"-infinity\"" });
        return;
    }
    out.push('"');
    if push_date(out, i64::from(days)) {
        out.push_str(" BC");
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(us: i64, tz: bool) -> String {
        let mut s = String::new();
        timestamp(&mut s, us, tz);
        s
    }

    #[test]
    fn timestamps_read_as_postgresql_writes_them() {
        assert_eq!(ts(0, true), "\"2000-01-01T00:00:00+00:00\"");
        assert_eq!(ts(-1, false), "\"1999-12-31T23:59:59.999999\"");
        assert_eq!(ts(1_500_000, true), "\"2000-01-01T00:00:01.5+00:00\"");
        assert_eq!(ts(i64::MAX, true), "\"infinity\"");
        // 0001-01-01 is 730,119 days before 2000-01-01; the day before it is 1 BC.
        assert_eq!(ts(-730_119 * 86_400_000_000, true), "\"0001-01-01T00:00:00+00:00\"");
        assert_eq!(ts(-730_120 * 86_400_000_000, true), "\"0001-12-31T00:00:00+00:00 BC\"");
    }

    #[test]
    fn strings_are_escaped_as_escape_json_does() {
        let mut s = String::new();
        push_string(&mut s, "a\"b\\c\n\u{1}\u{1e}é\u{7f}");
        assert_eq!(s, "\"a\\\"b\\\\c\\n\\u0001\\u001eé\u{7f}\"");
    }

    #[test]
    fn civil_dates_cross_leap_years_and_eras() {
        assert_eq!(civil(0), (2000, 1, 1));
        assert_eq!(civil(59), (2000, 2, 29));
        assert_eq!(civil(366), (2001, 1, 1));
        assert_eq!(civil(-1), (1999, 12, 31));
        // 2100 is not a leap year: 36,525 days to 2100-01-01, then 31 + 28.
        assert_eq!(civil(36_583), (2100, 2, 28));
        assert_eq!(civil(36_584), (2100, 3, 1));
    }
}
