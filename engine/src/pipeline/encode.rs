//! Encode: rows as JSON Lines into one compressed object body.
//!
//! Input: each row's JSON text, as `row_to_json` would render it (see [`super::render`]). Output: the compressed
//! body and its SHA-256. Invariant: the body decompresses to exactly the rows pushed, in order, one
//! row per line; only the compressed bytes are held in memory.
//!
//! `row_to_json` escapes line breaks inside strings, but a `json` value (unlike `jsonb`) keeps
//! the text it was written with, and its whitespace between tokens reaches the output raw: a
//! pretty-printed `json` column makes a row of several lines. Every raw `\n` and `\r` in a row is
//! such whitespace (PostgreSQL refuses them inside a JSON string), so the encoder writes each as a
//! space: the same JSON, on one line.

use std::io::Write;

use archiver_proto::Compression;
use bytes::Bytes;

use crate::storage::sha256;

/// What a page's rendered rows are joined by: ASCII's record separator, which a rendered row
/// never holds raw (control characters in strings are escaped, and PostgreSQL refuses them in a
/// JSON value except as whitespace, which this is not).
pub const ROW_SEPARATOR: char = '\x1e';

pub struct Encoder {
    inner: Inner,
    raw_bytes: u64,
}

enum Inner {
    Zstd(zstd::stream::write::Encoder<'static, Vec<u8>>),
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
}

/// A finished object body.
pub struct Encoded {
    pub body: Bytes,
    pub sha256: [u8; 32],
    /// Uncompressed size.
    pub raw_bytes: u64,
}

impl Encoder {
    pub fn new(compression: Compression, level: i32) -> Self {
        let inner = match compression {
            Compression::Zstd => {
                let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level).expect("zstd level validated");
                // The frame states its checksum, so `zstd -t` can test an object on its own.
                enc.include_checksum(true).expect("zstd checksum flag");
                Inner::Zstd(enc)
            }
            Compression::Gzip => {
                Inner::Gzip(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level as u32)))
            }
        };
        Encoder { inner, raw_bytes: 0 }
    }

    /// Appends one row: its JSON text (raw line breaks as spaces) and a newline.
    pub fn push(&mut self, json: &str) {
        self.push_rows(json);
    }

    /// Appends `rows` rows at once: their JSON texts joined by [`ROW_SEPARATOR`] (no trailing
    /// one), each written as one line.
    pub fn push_rows_joined(&mut self, joined: &str, rows: usize) {
        debug_assert_eq!(joined.matches(ROW_SEPARATOR).count() + 1, rows, "one separator between rows");
        self.push_rows(joined);
    }

    /// Writes `text` with every raw `\n` and `\r` as a space and every [`ROW_SEPARATOR`] as a
    /// newline, then a newline.
    fn push_rows(&mut self, text: &str) {
        let w: &mut dyn Write = match &mut self.inner {
            Inner::Zstd(e) => e,
            Inner::Gzip(e) => e,
        };
        // Writing into a Vec cannot fail.
        let bytes = text.as_bytes();
        let mut from = 0;
        for at in memchr::memchr3_iter(b'\n', b'\r', ROW_SEPARATOR as u8, bytes) {
            w.write_all(&bytes[from..at]).expect("write to memory");
            w.write_all(if bytes[at] == ROW_SEPARATOR as u8 { b"\n" } else { b" " }).expect("write to memory");
            from = at + 1;
        }
        w.write_all(&bytes[from..]).expect("write to memory");
        w.write_all(b"\n").expect("write to memory");
        self.raw_bytes += text.len() as u64 + 1;
    }

    pub fn finish(self) -> Encoded {
        let mut body = match self.inner {
            Inner::Zstd(e) => e.finish().expect("finish in memory"),
            Inner::Gzip(e) => e.finish().expect("finish in memory"),
        };
        // The buffer grew by doubling; keep only what the object needs while it waits in line.
        body.shrink_to_fit();
        Encoded { sha256: sha256(&body), body: Bytes::from(body), raw_bytes: self.raw_bytes }
    }
}

/// Decompresses a body (for verification tools and tests).
pub fn decode(compression: Compression, body: &[u8]) -> std::io::Result<Vec<u8>> {
    match compression {
        Compression::Zstd => zstd::stream::decode_all(body),
        Compression::Gzip => {
            let mut out = Vec::new();
            std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(body), &mut out)?;
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_lines_in_both_codecs() {
        for (c, level) in [(Compression::Zstd, 3), (Compression::Gzip, 6)] {
            let mut e = Encoder::new(c, level);
            e.push(r#"{"id":1,"v":"a"}"#);
            e.push(r#"{"id":2,"v":"b\nc"}"#);
            let out = e.finish();
            assert_eq!(out.sha256, sha256(&out.body));
            let text = decode(c, &out.body).unwrap();
            assert_eq!(text, b"{\"id\":1,\"v\":\"a\"}\n{\"id\":2,\"v\":\"b\\nc\"}\n");
            assert_eq!(out.raw_bytes, text.len() as u64);
        }
    }

    #[test]
    fn raw_line_breaks_of_json_values_become_spaces_and_joined_rows_lines() {
        // As row_to_json renders a pretty-printed `json` column, and a text column's escaped one.
        let pretty = "{\"id\":1,\"doc\":{\n  \"a\": [1,\r\n 2]\n},\"t\":\"x\\ny\"}";
        let mut e = Encoder::new(Compression::Zstd, 3);
        e.push(pretty);
        e.push_rows_joined(&format!("{pretty}{ROW_SEPARATOR}{{\"id\":2}}{ROW_SEPARATOR}{{\"id\":3,\"j\":[\n]}}"), 3);
        let out = e.finish();
        let text = String::from_utf8(decode(Compression::Zstd, &out.body).unwrap()).unwrap();
        let one_line = "{\"id\":1,\"doc\":{   \"a\": [1,   2] },\"t\":\"x\\ny\"}";
        assert_eq!(text, format!("{one_line}\n{one_line}\n{{\"id\":2}}\n{{\"id\":3,\"j\":[ ]}}\n"));
        assert_eq!(out.raw_bytes, text.len() as u64, "the same bytes, some replaced");
        let parsed: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        let want: serde_json::Value = serde_json::from_str(pretty).unwrap();
        assert_eq!(parsed[0], want, "the same JSON");
        assert_eq!(parsed.len(), 4);
    }
}
