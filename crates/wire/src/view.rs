//! Records of a [`pb::RecordBatch`] read in place.
//!
//! A hop that only decides where a record goes (the proxy) needs a few of
//! its fields, then sends the record on unchanged. Decoding every record
//! into a [`pb::Record`] allocates each string and byte field, and sending
//! it on encodes it again; at 500-record batches that was most of the
//! proxy's time. [`read_batch`] instead walks the batch once, checks every
//! record as strictly as decoding it would (wire types, lengths, UTF-8 in
//! every string field, so what is passed on decodes downstream), and gives
//! each record as a [`RecordView`]: its bytes (a shared slice of the
//! message, no copy) and the fields a router reads.
//!
//! Field semantics follow protobuf and prost: the last occurrence of a
//! singular field wins, unknown fields are skipped, `uint32` and `int64`
//! are read from varints the way prost reads them.

use crate::pb;
use prost::bytes::Bytes;
use prost::encoding::{decode_key, decode_varint, skip_field, DecodeContext, WireType};
use prost::DecodeError;
use std::ops::Range;

/// Why a batch could not be read; the text is the dead-letter reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ViewError(String);

impl From<DecodeError> for ViewError {
    fn from(e: DecodeError) -> Self {
        ViewError(e.to_string())
    }
}

/// One record of a batch, in place.
#[derive(Debug, Clone)]
pub struct RecordView {
    raw: Bytes,
    id: Range<usize>,
    schema: Range<usize>,
    pub schema_version: u32,
    pub received_ns: i64,
    body: Range<usize>,
    values: Range<usize>,
}

impl RecordView {
    /// A view of `rec` as it would arrive (encodes it).
    pub fn encode(rec: &pb::Record) -> Result<RecordView, ViewError> {
        read_record(Bytes::from(prost::Message::encode_to_vec(rec)))
    }
    /// The record's encoding, as it arrived (a [`pb::Record`] message).
    pub fn raw(&self) -> &[u8] {
        &self.raw
    }
    pub fn id(&self) -> &str {
        self.text(&self.id)
    }
    pub fn schema(&self) -> &str {
        self.text(&self.schema)
    }
    pub fn body(&self) -> &[u8] {
        &self.raw[self.body.clone()]
    }
    pub fn values(&self) -> &[u8] {
        &self.raw[self.values.clone()]
    }
    /// The whole record, decoded (for a hop that needs the rest).
    pub fn decode(&self) -> Result<pb::Record, DecodeError> {
        prost::Message::decode(self.raw())
    }
    fn text(&self, r: &Range<usize>) -> &str {
        // Checked by `read_record`; the empty fallback cannot be reached.
        std::str::from_utf8(&self.raw[r.clone()]).unwrap_or_default()
    }
}

/// Every record of an encoded [`pb::RecordBatch`]; an error if the batch,
/// or any record in it, would not decode.
pub fn read_batch(batch: Bytes) -> Result<Vec<RecordView>, ViewError> {
    let mut out = Vec::new();
    let mut buf: &[u8] = &batch;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        if tag != 1 {
            skip_field(wire, tag, &mut buf, DecodeContext::default())?;
            continue;
        }
        let r = delimited(wire, &mut buf, batch.len())?;
        let record = read_record(batch.slice(r))
            .map_err(|e| ViewError(format!("record #{}: {e}", out.len())))?;
        out.push(record);
    }
    Ok(out)
}

/// The range (within a buffer of `total` bytes, whose unread tail is
/// `buf`) of a length-delimited field's contents; `buf` moves past it.
fn delimited(wire: WireType, buf: &mut &[u8], total: usize) -> Result<Range<usize>, ViewError> {
    if wire != WireType::LengthDelimited {
        return Err(ViewError(format!(
            "invalid wire type: {wire:?} (expected LengthDelimited)"
        )));
    }
    let len = decode_varint(buf)?;
    if len > buf.len() as u64 {
        return Err(ViewError("buffer underflow".into()));
    }
    let start = total - buf.len();
    let end = start + len as usize;
    *buf = &buf[len as usize..];
    Ok(start..end)
}

fn varint(wire: WireType, buf: &mut &[u8]) -> Result<u64, ViewError> {
    if wire != WireType::Varint {
        return Err(ViewError(format!(
            "invalid wire type: {wire:?} (expected Varint)"
        )));
    }
    Ok(decode_varint(buf)?)
}

fn read_record(raw: Bytes) -> Result<RecordView, ViewError> {
    let mut v = RecordView {
        raw: Bytes::new(),
        id: 0..0,
        schema: 0..0,
        schema_version: 0,
        received_ns: 0,
        body: 0..0,
        values: 0..0,
    };
    let total = raw.len();
    let mut buf: &[u8] = &raw;
    while !buf.is_empty() {
        let (tag, wire) = decode_key(&mut buf)?;
        match tag {
            // Strings: id, schema, intent_version, bee_subject, app, flags.
            1 | 2 | 4 | 5 | 6 | 9 => {
                let r = delimited(wire, &mut buf, total)?;
                if std::str::from_utf8(&raw[r.clone()]).is_err() {
                    return Err(ViewError(format!(
                        "field {tag}: a string that is not UTF-8"
                    )));
                }
                match tag {
                    1 => v.id = r,
                    2 => v.schema = r,
                    _ => {}
                }
            }
            3 => v.schema_version = varint(wire, &mut buf)? as u32,
            7 => v.received_ns = varint(wire, &mut buf)? as i64,
            // Bytes: body, bits, meta, values.
            8 | 10 | 11 | 12 => {
                let r = delimited(wire, &mut buf, total)?;
                match tag {
                    8 => v.body = r,
                    12 => v.values = r,
                    _ => {}
                }
            }
            _ => skip_field(wire, tag, &mut buf, DecodeContext::default())?,
        }
    }
    v.raw = raw;
    Ok(v)
}

/// Appends `record` (a [`pb::Record`]'s encoding) to `batch` (a
/// [`pb::RecordBatch`]'s encoding) as its next record.
pub fn push_raw(batch: &mut Vec<u8>, record: &[u8]) {
    prost::encoding::encode_key(1, WireType::LengthDelimited, batch);
    prost::encoding::encode_varint(record.len() as u64, batch);
    batch.extend_from_slice(record);
}

/// Appends `record` to `batch` (a [`pb::RecordBatch`]'s encoding).
pub fn push_record(batch: &mut Vec<u8>, record: &pb::Record) {
    prost::encoding::message::encode(1, record, batch);
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn rec(i: u64) -> pb::Record {
        pb::Record {
            id: format!("r-{i}"),
            schema: "http.request".into(),
            schema_version: 2,
            intent_version: "v1".into(),
            bee_subject: "shop/1000/7".into(),
            app: "shop".into(),
            received_ns: 1_700_000_000_000_000_000 + i as i64,
            body: if i.is_multiple_of(2) {
                vec![]
            } else {
                b"{}".to_vec()
            },
            flags: vec!["a".into(), "b".into()],
            bits: vec![1, 2],
            meta: b"{\"x\":1}".to_vec(),
            values: vec![i as u8; (i % 7) as usize],
        }
    }

    #[test]
    fn views_read_the_fields_and_pass_records_on_unchanged() {
        let batch = pb::RecordBatch {
            records: (0..20).map(rec).collect(),
        };
        let views = read_batch(Bytes::from(batch.encode_to_vec())).unwrap();
        assert_eq!(views.len(), 20);
        let mut again = Vec::new();
        for (v, r) in views.iter().zip(&batch.records) {
            assert_eq!(v.id(), r.id);
            assert_eq!(v.schema(), r.schema);
            assert_eq!(v.schema_version, r.schema_version);
            assert_eq!(v.received_ns, r.received_ns);
            assert_eq!(v.body(), r.body.as_slice());
            assert_eq!(v.values(), r.values.as_slice());
            assert_eq!(&v.decode().unwrap(), r);
            push_raw(&mut again, v.raw());
        }
        assert_eq!(pb::RecordBatch::decode(again.as_slice()).unwrap(), batch);
        let mut encoded = Vec::new();
        for r in &batch.records {
            push_record(&mut encoded, r);
        }
        assert_eq!(encoded, batch.encode_to_vec());
    }

    #[test]
    fn the_last_of_a_repeated_field_wins_and_unknown_fields_are_skipped() {
        let mut raw = rec(1).encode_to_vec();
        // id again (field 1), an unknown varint field 40 and fixed32 field 41.
        raw.extend_from_slice(&[
            0x0a, 2, b'z', b'z', 0xc0, 0x02, 0x05, 0xcd, 0x02, 1, 2, 3, 4,
        ]);
        let mut batch = Vec::new();
        push_raw(&mut batch, &raw);
        let v = read_batch(Bytes::from(batch)).unwrap();
        assert_eq!(v[0].id(), "zz");
        assert_eq!(v[0].decode().unwrap().id, "zz");
    }

    #[test]
    fn what_prost_refuses_is_refused() {
        let good = pb::RecordBatch {
            records: (0..3).map(rec).collect(),
        }
        .encode_to_vec();
        // Every truncation, and every single-byte corruption, agrees with
        // prost on whether the batch is readable.
        for cut in 0..good.len() {
            let b = &good[..cut];
            assert_eq!(
                read_batch(Bytes::copy_from_slice(b)).is_ok(),
                pb::RecordBatch::decode(b).is_ok(),
                "truncated at {cut}"
            );
        }
        for at in 0..good.len() {
            for x in [0x00, 0x80, 0xff, 0x0a, 0x12, 0xc3] {
                let mut b = good.clone();
                b[at] = x;
                let ours = read_batch(Bytes::from(b.clone()));
                let theirs = pb::RecordBatch::decode(b.as_slice());
                assert_eq!(ours.is_ok(), theirs.is_ok(), "byte {at} set to {x:#x}");
                if let (Ok(o), Ok(t)) = (ours, theirs) {
                    let decoded: Vec<pb::Record> = o.iter().map(|v| v.decode().unwrap()).collect();
                    assert_eq!(decoded, t.records, "byte {at} set to {x:#x}");
                }
            }
        }
    }
}
