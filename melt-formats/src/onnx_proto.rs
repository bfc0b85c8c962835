//! A small writer of ONNX models: protobuf wire encoding over the field numbers of
//! `onnx.proto` (ModelProto, GraphProto, NodeProto, AttributeProto, TensorProto,
//! ValueInfoProto) — just what a decoder LM needs, with no protobuf dependency. Used by the
//! testkit's tiny models and by the GGUF → ONNX exporter in `melt-backends`.

/// Protobuf wire encoding: just what an ONNX model needs.
#[derive(Default)]
pub struct Pb(pub Vec<u8>);

impl Pb {
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.0.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
    }
    pub fn key(&mut self, field: u32, wire: u8) {
        self.varint(((field as u64) << 3) | wire as u64);
    }
    pub fn int(&mut self, field: u32, v: i64) {
        self.key(field, 0);
        self.varint(v as u64);
    }
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.key(field, 2);
        self.varint(b.len() as u64);
        self.0.extend_from_slice(b);
    }
    pub fn str(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }
    pub fn msg(&mut self, field: u32, m: Pb) {
        self.bytes(field, &m.0);
    }
}

/// ONNX `TensorProto.DataType` values used here.
pub const FLOAT: i64 = 1;
pub const UINT8: i64 = 2;
pub const INT32: i64 = 6;
pub const INT64: i64 = 7;
pub const BOOL: i64 = 9;
pub const FLOAT16: i64 = 10;

/// A tensor dimension in a graph input or output.
pub enum Dim<'a> {
    Fixed(i64),
    Sym(&'a str),
}

pub enum Attr<'a> {
    Int(&'a str, i64),
    Ints(&'a str, &'a [i64]),
    Float(&'a str, f32),
}

/// A graph under construction: nodes, initializers, inputs and outputs, in order.
#[derive(Default)]
pub struct Graph {
    nodes: Vec<Pb>,
    initializers: Vec<Pb>,
    inputs: Vec<Pb>,
    outputs: Vec<Pb>,
    next: usize,
    /// Whether a node uses ONNX Runtime's `com.microsoft` operators (the model then imports
    /// that domain).
    uses_ms_domain: bool,
    /// `ModelProto.metadata_props`, in order.
    metadata: Vec<(String, String)>,
}

/// ONNX Runtime's contributed operators (`MatMulNBits`, `GatherBlockQuantized`, ...).
pub const MS_DOMAIN: &str = "com.microsoft";

impl Graph {
    /// A fresh intermediate name.
    pub fn tmp(&mut self, what: &str) -> String {
        self.next += 1;
        format!("{what}_{}", self.next)
    }

    pub fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: &[Attr]) {
        self.node_in("", op, inputs, outputs, attrs);
    }

    /// A node of an operator `domain` defines (`""`: ONNX's own).
    pub fn node_in(
        &mut self,
        domain: &str,
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: &[Attr],
    ) {
        let mut n = Pb::default();
        for i in inputs {
            n.str(1, i);
        }
        for o in outputs {
            n.str(2, o);
        }
        n.str(3, &format!("{op}_{}", self.nodes.len()));
        n.str(4, op);
        for a in attrs {
            let mut m = Pb::default();
            match a {
                Attr::Int(name, v) => {
                    m.str(1, name);
                    m.int(3, *v);
                    m.int(20, 2);
                }
                Attr::Float(name, v) => {
                    m.str(1, name);
                    m.key(2, 5);
                    m.0.extend_from_slice(&v.to_le_bytes());
                    m.int(20, 1);
                }
                Attr::Ints(name, vs) => {
                    m.str(1, name);
                    for v in *vs {
                        m.int(8, *v);
                    }
                    m.int(20, 7);
                }
            }
            n.msg(5, m);
        }
        if !domain.is_empty() {
            n.str(7, domain);
            self.uses_ms_domain |= domain == MS_DOMAIN;
        }
        self.nodes.push(n);
    }

    /// One `com.microsoft` node with one fresh output, returned.
    pub fn ms_op(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let out = self.tmp(&op.to_lowercase());
        self.node_in(MS_DOMAIN, op, inputs, &[&out], attrs);
        out
    }

    /// One node with one fresh output, returned.
    pub fn op(&mut self, op: &str, inputs: &[&str], attrs: &[Attr]) -> String {
        let out = self.tmp(&op.to_lowercase());
        self.node(op, inputs, &[&out], attrs);
        out
    }

    pub fn initializer(&mut self, name: &str, data_type: i64, dims: &[i64], raw: Vec<u8>) {
        let mut t = Pb::default();
        for d in dims {
            t.int(1, *d);
        }
        t.int(2, data_type);
        t.str(8, name);
        t.bytes(9, &raw);
        self.initializers.push(t);
    }

    pub fn f32s(&mut self, name: &str, dims: &[i64], data: &[f32]) {
        let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, FLOAT, dims, raw);
    }

    /// A `metadata_props` entry of the model (what the file says about itself, e.g. how its
    /// weights were quantized).
    pub fn metadata(&mut self, key: &str, value: &str) {
        self.metadata.push((key.into(), value.into()));
    }

    pub fn u8s(&mut self, name: &str, dims: &[i64], data: Vec<u8>) {
        self.initializer(name, UINT8, dims, data);
    }

    pub fn i64s(&mut self, name: &str, dims: &[i64], data: &[i64]) {
        let raw = data.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.initializer(name, INT64, dims, raw);
    }

    fn value_info(name: &str, elem_type: i64, dims: &[Dim]) -> Pb {
        let mut shape = Pb::default();
        for d in dims {
            let mut dim = Pb::default();
            match d {
                Dim::Fixed(v) => dim.int(1, *v),
                Dim::Sym(s) => dim.str(2, s),
            }
            shape.msg(1, dim);
        }
        let mut tensor = Pb::default();
        tensor.int(1, elem_type);
        tensor.msg(2, shape);
        let mut ty = Pb::default();
        ty.msg(1, tensor);
        let mut vi = Pb::default();
        vi.str(1, name);
        vi.msg(2, ty);
        vi
    }

    pub fn input(&mut self, name: &str, elem_type: i64, dims: &[Dim]) {
        self.inputs.push(Self::value_info(name, elem_type, dims));
    }

    pub fn output(&mut self, name: &str, elem_type: i64, dims: &[Dim]) {
        self.outputs.push(Self::value_info(name, elem_type, dims));
    }

    /// The serialized `ModelProto` (IR 8, default domain at opset 17, `com.microsoft` at 1
    /// when a node uses it).
    pub fn model(self, graph_name: &str, producer: &str) -> Vec<u8> {
        let mut g = Pb::default();
        for n in self.nodes {
            g.msg(1, n);
        }
        g.str(2, graph_name);
        for t in self.initializers {
            g.msg(5, t);
        }
        for i in self.inputs {
            g.msg(11, i);
        }
        for o in self.outputs {
            g.msg(12, o);
        }
        let mut opset = Pb::default();
        opset.str(1, "");
        opset.int(2, 17);
        let mut m = Pb::default();
        m.int(1, 8); // IR version 8 (ONNX 1.10+)
        m.str(2, producer);
        m.msg(7, g);
        m.msg(8, opset);
        if self.uses_ms_domain {
            let mut ms = Pb::default();
            ms.str(1, MS_DOMAIN);
            ms.int(2, 1);
            m.msg(8, ms);
        }
        for (k, v) in self.metadata {
            let mut e = Pb::default();
            e.str(1, &k);
            e.str(2, &v);
            m.msg(14, e);
        }
        m.0
    }
}

/// What a model file says about itself, read without loading it: the graph's name, the
/// producer, its initializers' element counts per data type (the weights) and its operators.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Summary {
    pub graph_name: String,
    pub producer: String,
    /// `TensorProto.DataType` → elements of initializers of that type.
    pub initializer_elements: std::collections::BTreeMap<i64, u64>,
    /// `metadata_props`.
    pub metadata: std::collections::BTreeMap<String, String>,
    /// How many nodes of each operator the main graph has (subgraphs not counted).
    pub op_types: std::collections::BTreeMap<String, usize>,
}

impl Summary {
    /// Elements of floating-point and 8-bit initializers: the model's weights (4-bit packed
    /// weights count one per byte, so an int4 model is undercounted twofold).
    pub fn n_params(&self) -> u64 {
        self.initializer_elements
            .iter()
            .filter(|(t, _)| matches!(**t, 1 | 2 | 3 | 10 | 11 | 16))
            .map(|(_, n)| n)
            .sum()
    }

    /// The data type holding most weights, as a short name (`F32`, `F16`, ...).
    pub fn weight_type(&self) -> Option<&'static str> {
        let (t, _) = self
            .initializer_elements
            .iter()
            .filter(|(t, _)| matches!(**t, 1 | 2 | 3 | 10 | 11 | 16))
            .max_by_key(|(_, n)| **n)?;
        Some(match *t {
            1 => "F32",
            2 => "U8",
            3 => "I8",
            10 => "F16",
            11 => "F64",
            _ => "BF16",
        })
    }
}

/// A protobuf reader over a file that skips what it does not need (a weight's bytes) by
/// seeking, so a gigabyte model is summarized in milliseconds.
struct Scan<R> {
    r: R,
    pos: u64,
    /// The file's length: no length read from the file may reach past it.
    len: u64,
}

impl<R: std::io::BufRead + std::io::Seek> Scan<R> {
    fn varint(&mut self) -> std::io::Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let mut b = [0u8; 1];
            self.r.read_exact(&mut b)?;
            self.pos += 1;
            v |= u64::from(b[0] & 0x7f) << shift;
            if b[0] < 0x80 {
                return Ok(v);
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "varint longer than 10 bytes",
        ))
    }

    /// `n` more bytes from here, refused when they would run past the end of the file (a
    /// length read from a hostile file could otherwise overflow the position or seek back).
    fn within(&self, n: u64) -> std::io::Result<u64> {
        match self.pos.checked_add(n) {
            Some(end) if end <= self.len => Ok(end),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "a length of {n} at byte {} runs past the end of the file ({} bytes)",
                    self.pos, self.len
                ),
            )),
        }
    }

    /// A length-delimited field's length, checked against the file's.
    fn length(&mut self) -> std::io::Result<u64> {
        let n = self.varint()?;
        self.within(n).map(|_| n)
    }

    /// Where a length-delimited field's value ends.
    fn end(&mut self) -> std::io::Result<u64> {
        let n = self.varint()?;
        self.within(n)
    }

    fn skip(&mut self, n: u64) -> std::io::Result<()> {
        let end = self.within(n)?;
        // `within` bounds `n` by the file's length, which fits an i64.
        self.r.seek_relative(n as i64)?;
        self.pos = end;
        Ok(())
    }

    fn bytes(&mut self, n: u64) -> std::io::Result<Vec<u8>> {
        let mut b = vec![0u8; n.min(1 << 20) as usize];
        self.r.read_exact(&mut b)?;
        self.pos += b.len() as u64;
        self.skip(n - b.len() as u64)?;
        Ok(b)
    }

    /// Skips a field's value of wire type `wire`.
    fn skip_value(&mut self, wire: u64) -> std::io::Result<()> {
        match wire {
            0 => self.varint().map(|_| ()),
            1 => self.skip(8),
            2 => {
                let n = self.length()?;
                self.skip(n)
            }
            5 => self.skip(4),
            w => Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("wire type {w} at byte {}", self.pos),
            )),
        }
    }

    /// Calls `f(field, wire)` for each field until `end`; `f` consumes the value or returns
    /// false to have it skipped.
    fn fields(
        &mut self,
        end: u64,
        mut f: impl FnMut(&mut Self, u64, u64) -> std::io::Result<bool>,
    ) -> std::io::Result<()> {
        while self.pos < end {
            let key = self.varint()?;
            let (field, wire) = (key >> 3, key & 7);
            if !f(self, field, wire)? {
                self.skip_value(wire)?;
            }
        }
        if self.pos != end {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a message overruns its length",
            ));
        }
        Ok(())
    }
}

/// Reads `path`'s [`Summary`]. Errors on anything that is not a well-formed ONNX protobuf.
pub fn summarize(path: &std::path::Path) -> std::io::Result<Summary> {
    let file = std::fs::File::open(path)?;
    let len = file.metadata()?.len();
    let mut s = Scan {
        r: std::io::BufReader::new(file),
        pos: 0,
        len,
    };
    let mut out = Summary::default();
    let text = |b: Vec<u8>| String::from_utf8_lossy(&b).into_owned();
    s.fields(len, |s, field, wire| match (field, wire) {
        (2, 2) => {
            let n = s.length()?;
            out.producer = text(s.bytes(n)?);
            Ok(true)
        }
        (14, 2) => {
            let end = s.end()?;
            let (mut key, mut value) = (String::new(), String::new());
            s.fields(end, |s, field, wire| match (field, wire) {
                (1 | 2, 2) => {
                    let n = s.length()?;
                    let t = text(s.bytes(n)?);
                    *(if field == 1 { &mut key } else { &mut value }) = t;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            out.metadata.insert(key, value);
            Ok(true)
        }
        (7, 2) => {
            let end = s.end()?;
            s.fields(end, |s, field, wire| match (field, wire) {
                (2, 2) => {
                    let n = s.length()?;
                    out.graph_name = text(s.bytes(n)?);
                    Ok(true)
                }
                (1, 2) => {
                    let end = s.end()?;
                    let mut op = String::new();
                    s.fields(end, |s, field, wire| match (field, wire) {
                        (4, 2) => {
                            let n = s.length()?;
                            op = text(s.bytes(n)?);
                            Ok(true)
                        }
                        _ => Ok(false),
                    })?;
                    *out.op_types.entry(op).or_default() += 1;
                    Ok(true)
                }
                (5, 2) => {
                    let end = s.end()?;
                    let (mut elements, mut data_type) = (1u64, 0i64);
                    s.fields(end, |s, field, wire| match (field, wire) {
                        (1, 0) => {
                            elements = elements.saturating_mul(s.varint()?);
                            Ok(true)
                        }
                        (1, 2) => {
                            let end = s.end()?;
                            while s.pos < end {
                                elements = elements.saturating_mul(s.varint()?);
                            }
                            Ok(true)
                        }
                        (2, 0) => {
                            data_type = s.varint()? as i64;
                            Ok(true)
                        }
                        _ => Ok(false),
                    })?;
                    *out.initializer_elements.entry(data_type).or_default() += elements;
                    Ok(true)
                }
                _ => Ok(false),
            })?;
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_fields_are_protobuf() {
        let mut p = Pb::default();
        p.int(1, 300);
        assert_eq!(p.0, [0x08, 0xAC, 0x02]);
        let mut p = Pb::default();
        p.int(3, -1);
        assert_eq!(p.0.len(), 1 + 10, "negative int64 is ten bytes");
        let mut p = Pb::default();
        p.str(2, "ab");
        assert_eq!(p.0, [0x12, 2, b'a', b'b']);
    }

    #[test]
    fn float_attribute_is_fixed32() {
        let mut g = Graph::default();
        g.node("Gelu", &["x"], &["y"], &[Attr::Float("alpha", 1.0)]);
        let n = &g.nodes[0].0;
        // AttributeProto: name (field 1), f (field 2, wire type 5: 0x15) = 1.0f32, type FLOAT.
        let f = [0x15, 0x00, 0x00, 0x80, 0x3F];
        assert!(n.windows(f.len()).any(|w| w == f), "{n:?}");
    }

    #[test]
    fn summary_counts_initializers_by_type() {
        let mut g = Graph::default();
        g.f32s("w", &[3, 4], &[0.5; 12]);
        g.i64s("shape", &[2], &[1, 2]);
        g.initializer("h", FLOAT16, &[5], vec![0; 10]);
        g.node("MatMul", &["x", "w"], &["y"], &[]);
        g.metadata("quantization", "INT4 \"block 32\"");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        std::fs::write(&path, g.model("tiny graph", "melt test")).unwrap();
        let s = summarize(&path).unwrap();
        assert_eq!(
            (s.graph_name.as_str(), s.producer.as_str()),
            ("tiny graph", "melt test")
        );
        assert_eq!(s.initializer_elements[&FLOAT], 12);
        assert_eq!(s.initializer_elements[&INT64], 2);
        assert_eq!((s.n_params(), s.weight_type()), (17, Some("F32")));
        assert_eq!(s.metadata["quantization"], "INT4 \"block 32\"");
        assert_eq!(s.op_types.get("MatMul"), Some(&1));
        assert_eq!(s.op_types.len(), 1);
        // Not protobuf, or cut short: an error, never a made-up count.
        std::fs::write(&path, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff").unwrap();
        assert!(summarize(&path).is_err());
        let full = g_bytes();
        std::fs::write(&path, &full[..full.len() - 7]).unwrap();
        assert!(summarize(&path).is_err());
    }

    /// A length read from the file that reaches past its end — here the largest varint, which
    /// overflowed `pos + n` (found by fuzzing) — is refused naming it, at every nesting.
    #[test]
    fn a_length_past_the_end_of_the_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.onnx");
        let huge = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        // graph (7), metadata (14) and producer (2) fields, each with a length of u64::MAX;
        // then a graph whose node (1) claims 100 bytes of a 3-byte file.
        for key in [0x3a, 0x72, 0x12] {
            std::fs::write(&path, [&[key][..], &huge].concat()).unwrap();
            let e = summarize(&path).unwrap_err().to_string();
            assert!(
                e.contains("a length of 18446744073709551615 at byte")
                    && e.contains("runs past the end of the file (11 bytes)"),
                "{e}"
            );
        }
        std::fs::write(&path, [0x3a, 0x02, 0x0a, 100]).unwrap();
        let e = summarize(&path).unwrap_err().to_string();
        assert!(e.contains("a length of 100 at byte 4"), "{e}");
    }

    fn g_bytes() -> Vec<u8> {
        let mut g = Graph::default();
        g.f32s("w", &[64], &[1.0; 64]);
        g.model("g", "p")
    }
}
