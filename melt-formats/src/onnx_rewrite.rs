//! Changing an integer attribute of a model's nodes in its bytes, without a protobuf library:
//! what a session option needs when ONNX Runtime only reads the setting from the graph
//! (`MatMulNBits`'s `accuracy_level`). Only a value of the same encoded length is written, so
//! no length prefix moves and the bytes stay the same valid model but for that value.

use std::ops::Range;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("not a well-formed ONNX model: {0}")]
    Malformed(String),
    #[error("{op} node `{node}` has no integer attribute `{attr}` to change (melt changes one in place; it does not add one)")]
    Missing {
        op: String,
        node: String,
        attr: String,
    },
    #[error("{op} node `{node}`: `{attr}` is {from}, which cannot become {to} in place (another encoded length)")]
    Length {
        op: String,
        node: String,
        attr: String,
        from: i64,
        to: i64,
    },
}

fn malformed(what: impl Into<String>) -> RewriteError {
    RewriteError::Malformed(what.into())
}

/// A varint at `*pos` in `buf`, advancing `pos`.
fn varint(buf: &[u8], pos: &mut usize) -> Result<u64, RewriteError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *buf
            .get(*pos)
            .ok_or_else(|| malformed(format!("a varint runs past byte {}", buf.len())))?;
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(malformed(format!(
        "a varint at byte {} is over 10 bytes",
        *pos
    )))
}

/// A field of a message: its number, wire type, and where its value lies (a length-delimited
/// value's payload; a varint's own bytes).
struct Field {
    number: u64,
    wire: u64,
    value: Range<usize>,
}

/// The fields of the message in `buf[range]`.
fn fields(buf: &[u8], range: Range<usize>) -> Result<Vec<Field>, RewriteError> {
    let mut out = Vec::new();
    let mut pos = range.start;
    while pos < range.end {
        let key = varint(buf, &mut pos)?;
        let (number, wire) = (key >> 3, key & 7);
        let start = pos;
        let end = match wire {
            0 => {
                varint(buf, &mut pos)?;
                pos
            }
            1 => pos + 8,
            2 => {
                let n = varint(buf, &mut pos)? as usize;
                let start = pos;
                out.push(Field {
                    number,
                    wire,
                    value: start..start.saturating_add(n),
                });
                pos = start.saturating_add(n);
                if pos > range.end {
                    return Err(malformed(format!("field {number} overruns its message")));
                }
                continue;
            }
            5 => pos + 4,
            w => return Err(malformed(format!("wire type {w} at byte {start}"))),
        };
        if end > range.end {
            return Err(malformed(format!("field {number} overruns its message")));
        }
        pos = end;
        out.push(Field {
            number,
            wire,
            value: start..end,
        });
    }
    Ok(out)
}

fn text(buf: &[u8], r: &Range<usize>) -> String {
    String::from_utf8_lossy(&buf[r.clone()]).into_owned()
}

/// Sets the integer attribute `attr` of every `op_type` node of the model's main graph to
/// `value`; returns how many nodes were changed (0 when the graph has no such node). A node
/// without the attribute, or a value of another encoded length, is an error and changes
/// nothing.
pub fn set_int_attribute(
    model: &mut [u8],
    op_type: &str,
    attr: &str,
    value: i64,
) -> Result<usize, RewriteError> {
    // The value as protobuf encodes an int64 (the writer's own varint).
    let mut encoded = crate::onnx_proto::Pb::default();
    encoded.varint(value as u64);
    let new = encoded.0;
    let mut patches: Vec<Range<usize>> = Vec::new();
    let buf: &[u8] = model;
    let top = fields(buf, 0..buf.len())?;
    let graph = top
        .iter()
        .find(|f| f.number == 7 && f.wire == 2)
        .ok_or_else(|| malformed("no graph"))?;
    for node in fields(buf, graph.value.clone())?
        .iter()
        .filter(|f| f.number == 1 && f.wire == 2)
    {
        let node_fields = fields(buf, node.value.clone())?;
        let string = |n: u64| {
            node_fields
                .iter()
                .find(|f| f.number == n && f.wire == 2)
                .map(|f| text(buf, &f.value))
                .unwrap_or_default()
        };
        if string(4) != op_type {
            continue;
        }
        let mut found = None;
        for a in node_fields.iter().filter(|f| f.number == 5 && f.wire == 2) {
            let a_fields = fields(buf, a.value.clone())?;
            let named = a_fields
                .iter()
                .any(|f| f.number == 1 && f.wire == 2 && buf[f.value.clone()] == *attr.as_bytes());
            if let Some(i) = a_fields.iter().find(|f| f.number == 3 && f.wire == 0) {
                if named {
                    found = Some(i.value.clone());
                }
            }
        }
        let what = |attr: &str| (op_type.to_string(), string(3), attr.to_string());
        let Some(at) = found else {
            let (op, node, attr) = what(attr);
            return Err(RewriteError::Missing { op, node, attr });
        };
        if at.len() != new.len() {
            let (op, node, attr) = what(attr);
            let from = varint(buf, &mut at.start.clone())? as i64;
            return Err(RewriteError::Length {
                op,
                node,
                attr,
                from,
                to: value,
            });
        }
        patches.push(at);
    }
    for at in &patches {
        model[at.clone()].copy_from_slice(&new);
    }
    Ok(patches.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx_proto::{summarize, Attr, Graph, MS_DOMAIN};

    fn model(level: Option<i64>) -> Vec<u8> {
        let mut g = Graph::default();
        g.node("MatMul", &["x", "w"], &["y"], &[]);
        let mut attrs = vec![Attr::Int("bits", 4), Attr::Int("block_size", 32)];
        if let Some(l) = level {
            attrs.push(Attr::Int("accuracy_level", l));
        }
        for out in ["a", "b"] {
            g.node_in(MS_DOMAIN, "MatMulNBits", &["y", "q", "s"], &[out], &attrs);
        }
        g.model("g", "melt test")
    }

    /// The `accuracy_level` of each MatMulNBits node, read back by scanning the bytes again.
    fn levels(bytes: &[u8]) -> Vec<i64> {
        let top = fields(bytes, 0..bytes.len()).unwrap();
        let graph = top.iter().find(|f| f.number == 7).unwrap();
        let mut out = Vec::new();
        for node in fields(bytes, graph.value.clone()).unwrap() {
            if node.number != 1 {
                continue;
            }
            for a in fields(bytes, node.value.clone()).unwrap() {
                if a.number != 5 {
                    continue;
                }
                let af = fields(bytes, a.value.clone()).unwrap();
                if af
                    .iter()
                    .any(|f| f.number == 1 && bytes[f.value.clone()] == *b"accuracy_level")
                {
                    let i = af.iter().find(|f| f.number == 3).unwrap();
                    out.push(varint(bytes, &mut i.value.start.clone()).unwrap() as i64);
                }
            }
        }
        out
    }

    #[test]
    fn sets_the_attribute_of_every_matching_node_and_nothing_else() {
        let before = model(Some(4));
        let mut bytes = before.clone();
        assert_eq!(levels(&bytes), [4, 4]);
        assert_eq!(
            set_int_attribute(&mut bytes, "MatMulNBits", "accuracy_level", 1).unwrap(),
            2
        );
        assert_eq!(levels(&bytes), [1, 1]);
        // Two bytes changed, and the model still reads as the same model.
        let changed = before.iter().zip(&bytes).filter(|(a, b)| a != b).count();
        assert_eq!((bytes.len(), changed), (before.len(), 2));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(summarize(&path).unwrap().op_types["MatMulNBits"], 2);
        // No such node: nothing to change.
        assert_eq!(
            set_int_attribute(&mut bytes, "Conv", "accuracy_level", 1).unwrap(),
            0
        );
    }

    #[test]
    fn a_missing_attribute_or_a_longer_value_is_refused_and_changes_nothing() {
        let mut bytes = model(None);
        let before = bytes.clone();
        let err = set_int_attribute(&mut bytes, "MatMulNBits", "accuracy_level", 1).unwrap_err();
        assert!(matches!(err, RewriteError::Missing { .. }), "{err}");
        assert!(err.to_string().contains("MatMulNBits_1"), "{err}");
        let mut bytes = model(Some(4));
        let err = set_int_attribute(&mut bytes, "MatMulNBits", "accuracy_level", 300).unwrap_err();
        assert!(err.to_string().contains("is 4"), "{err}");
        assert_eq!(bytes, model(Some(4)));
        assert_eq!(before, model(None));
        let mut junk = b"\xff\xff\xff".to_vec();
        assert!(set_int_attribute(&mut junk, "MatMulNBits", "accuracy_level", 1).is_err());
    }
}
