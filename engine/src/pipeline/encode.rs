//! Encode: rows as JSON Lines into one compressed object body.
//!
//! Input: each row's JSON text, as PostgreSQL's `row_to_json` rendered it. Output: the compressed
//! body and its SHA-256. Invariant: the body decompresses to exactly the lines pushed, in order, one
//! row per line; only the compressed bytes are held in memory.

use std::io::Write;

use archiver_proto::Compression;
use bytes::Bytes;

use crate::storage::sha256;

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

    /// Appends one row: its JSON text and a newline.
    pub fn push(&mut self, json: &str) {
        debug_assert!(!json.contains('\n'), "row_to_json output has no raw newlines");
        self.push_text(json);
    }

    /// Appends text and a newline.
    fn push_text(&mut self, json: &str) {
        let w: &mut dyn Write = match &mut self.inner {
            Inner::Zstd(e) => e,
            Inner::Gzip(e) => e,
        };
        // Writing into a Vec cannot fail.
        w.write_all(json.as_bytes()).expect("write to memory");
        w.write_all(b"\n").expect("write to memory");
        self.raw_bytes += json.len() as u64 + 1;
    }

    /// Appends `rows` rows at once: their JSON texts joined by newlines (no trailing one).
    pub fn push_lines(&mut self, joined: &str, rows: usize) {
        debug_assert_eq!(joined.matches('\n').count() + 1, rows, "one line a row");
        self.push_text(joined);
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
}
