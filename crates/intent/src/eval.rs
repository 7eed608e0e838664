//! The spine pipeline on JSON records, with no server: translate (contract
//! or schema form, migrating old versions) → evaluate every pack on the
//! schema (flags, bits, meta, route) → redact with Blot → one output line.
//!
//! Redaction fails closed (DESIGN.md §4, invariant 5): if any field cannot
//! be redacted the whole record is an error, and no part of it is output.

use crate::Built;
use ben_bitspec::compile::{CompiledPack, Scratch};
use ben_bitspec::interp::{self, RecordError};
use ben_bitspec::ir::{ExpectOp, ExpectTarget, RedactAction, RouteTarget, Test};
use ben_bitspec::Value;
use ben_blot::{Action, BlotKey, Limits, Redactor};
use serde_json::{Map, Value as J};
use std::sync::{Arc, Mutex};

/// How input records are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// App records, translated by this contract (index into the program).
    Contract(usize),
    /// Records already in this schema's JSON form.
    Schema(usize),
}

struct PackRun {
    pack: usize,
    compiled: CompiledPack,
    /// Uncontended in practice (one worker per evaluator); a Mutex keeps
    /// the evaluator `Sync` so it can live in a hot-swapped snapshot.
    scratch: Mutex<Scratch>,
}

/// Evaluates records against a built bundle.
pub struct Evaluator {
    program: Arc<ben_bitspec::ir::Program>,
    version: String,
    packs: Vec<PackRun>,
    redactor: Redactor,
    scan_undeclared: bool,
    /// Per schema index, the JSON layout of its records.
    shapes: Vec<Shape>,
}

fn action(a: RedactAction) -> Action {
    match a {
        RedactAction::Hmac => Action::Hmac,
        RedactAction::Mask { keep_last } => Action::Mask {
            keep_last: keep_last as usize,
        },
        RedactAction::Hash => Action::Hash,
        RedactAction::Drop => Action::Drop,
        RedactAction::Scan => Action::Scan,
    }
}

/// One evaluated record before it is rendered.
pub struct Evaluated {
    pub schema: usize,
    pub flags: Vec<(u32, String)>,
    pub bits: Vec<(String, Vec<u64>)>,
    pub metas: Map<String, J>,
    pub meta_values: Vec<(String, Value)>,
    pub route: RouteTarget,
    pub record: J,
}

/// One evaluated record with its redacted body already JSON text
/// ([`Evaluator::evaluate_to_json`]).
pub struct Rendered {
    pub schema: usize,
    pub flags: Vec<(u32, String)>,
    pub bits: Vec<(String, Vec<u64>)>,
    /// The metadata as a JSON object (same as `Evaluated::metas`).
    pub meta: Vec<u8>,
    pub route: RouteTarget,
    /// The redacted record as a JSON object.
    pub body: Vec<u8>,
}

/// What evaluation produces before the record is assembled: one JSON
/// value per schema field (redacted), plus undeclared fields by path.
struct Parts<'p> {
    flags: Vec<(u32, String)>,
    bits: Vec<(String, Vec<u64>)>,
    /// Every pack's metas in order; a name set twice keeps its first
    /// position and its last value (as a map would).
    metas: Vec<(&'p str, Value)>,
    route: RouteTarget,
    fields: Vec<J>,
    extra: Map<String, J>,
}

/// A schema's JSON object layout: dotted field paths folded into nested
/// objects, keys in first-declared order (what `set_path` over the fields
/// in slot order builds), keys pre-escaped.
#[derive(Debug, Default)]
struct Shape {
    entries: Vec<(Vec<u8>, Node)>,
}

#[derive(Debug)]
enum Node {
    Slot(usize),
    Object(Shape),
}

impl Shape {
    fn of(schema: &ben_bitspec::ir::Schema) -> Shape {
        let mut root = Shape::default();
        for (slot, f) in schema.fields.iter().enumerate() {
            let mut cur = &mut root;
            let mut segs = f.path.split('.').peekable();
            while let Some(seg) = segs.next() {
                let key = serde_json::to_vec(seg).unwrap_or_default();
                let i = match cur.entries.iter().position(|(k, _)| *k == key) {
                    Some(i) => i,
                    None => {
                        cur.entries.push((key, Node::Object(Shape::default())));
                        cur.entries.len() - 1
                    }
                };
                if segs.peek().is_none() {
                    cur.entries[i].1 = Node::Slot(slot);
                    break;
                }
                if matches!(cur.entries[i].1, Node::Slot(_)) {
                    cur.entries[i].1 = Node::Object(Shape::default());
                }
                let Node::Object(next) = &mut cur.entries[i].1 else {
                    break;
                };
                cur = next;
            }
        }
        root
    }

    fn write(&self, fields: &[J], out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (key, node)) in self.entries.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            out.extend_from_slice(key);
            out.push(b':');
            match node {
                Node::Slot(s) => {
                    // Writing a `serde_json::Value` into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, fields.get(*s).unwrap_or(&J::Null));
                }
                Node::Object(inner) => inner.write(fields, out),
            }
        }
        out.push(b'}');
    }
}

fn hex_bits(words: &[u64]) -> String {
    let mut s = String::new();
    for w in words.iter().rev() {
        if s.is_empty() {
            if *w != 0 {
                s = format!("{w:x}");
            }
        } else {
            s.push_str(&format!("{w:016x}"));
        }
    }
    if s.is_empty() {
        s.push('0');
    }
    format!("0x{s}")
}

fn set_path(obj: &mut Map<String, J>, path: &str, v: J) {
    let mut cur = obj;
    let mut segs = path.split('.').peekable();
    while let Some(seg) = segs.next() {
        if segs.peek().is_none() {
            cur.insert(seg.to_string(), v);
            return;
        }
        let entry = cur
            .entry(seg.to_string())
            .or_insert_with(|| J::Object(Map::new()));
        if !entry.is_object() {
            *entry = J::Object(Map::new());
        }
        let J::Object(next) = entry else { return };
        cur = next;
    }
}

/// The migrations (indexes into `program.migrations`) a record of `schema`
/// goes through before packs evaluate it: from a schema no pack is on, the
/// declared migration to the newest version, again, until a schema some
/// pack is on (or none leads further). Empty when packs are on `schema`
/// itself. Every hop that routes or evaluates a record follows this one
/// rule, so the proxy routes an old record by the pack `benctl eval` and
/// the spine apply to it.
pub fn migration_path(program: &ben_bitspec::ir::Program, mut schema: usize) -> Vec<usize> {
    let mut path = Vec::new();
    // Each step goes to a different schema; a cycle of declared
    // migrations ends after one pass.
    for _ in 0..program.schemas.len() {
        if program.packs_on(schema).next().is_some() {
            break;
        }
        let Some((i, m)) = program
            .migrations
            .iter()
            .enumerate()
            .filter(|(_, m)| m.from == schema)
            .max_by_key(|(_, m)| program.schemas[m.to].version)
        else {
            break;
        };
        path.push(i);
        schema = m.to;
    }
    path
}

/// Migrates a record of `schema` along [`migration_path`]; returns the
/// schema packs evaluate it in, and its values there.
pub fn migrate(
    program: &ben_bitspec::ir::Program,
    mut schema: usize,
    mut rec: Vec<Value>,
) -> Result<(usize, Vec<Value>), RecordError> {
    for i in migration_path(program, schema) {
        let m = &program.migrations[i];
        rec = interp::migrate(program, m, &rec)?;
        schema = m.to;
    }
    Ok((schema, rec))
}

impl Evaluator {
    /// `key` is the hmac key; without one, `hmac` redaction fails closed.
    pub fn new(built: &Built, key: Option<BlotKey>) -> Self {
        Self::from_program(
            Arc::new(built.program.clone()),
            &built.manifest.blot,
            built.version.clone(),
            key,
        )
    }

    /// An evaluator for a program loaded from artifacts (what a spine runs).
    pub fn from_program(
        program: Arc<ben_bitspec::ir::Program>,
        blot: &crate::manifest::BlotSection,
        version: String,
        key: Option<BlotKey>,
    ) -> Self {
        let packs = program
            .packs
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let compiled = CompiledPack::new(p);
                let scratch = Mutex::new(compiled.scratch());
                PackRun {
                    pack: i,
                    compiled,
                    scratch,
                }
            })
            .collect();
        let shapes = program.schemas.iter().map(Shape::of).collect();
        Evaluator {
            shapes,
            program,
            version,
            packs,
            redactor: Redactor::new(
                key,
                Limits {
                    max_field_bytes: blot.max_field_bytes,
                    max_record_bytes: blot.max_record_bytes,
                },
            ),
            scan_undeclared: blot.scan_undeclared,
        }
    }

    /// The intent version every output names.
    pub fn version(&self) -> &str {
        &self.version
    }

    pub fn program(&self) -> &ben_bitspec::ir::Program {
        &self.program
    }

    pub fn key_id(&self) -> Option<&str> {
        self.redactor.key_id()
    }

    /// Resolves `--contract NAME` or `--schema NAME[@vN]`.
    pub fn input_kind(
        &self,
        contract: Option<&str>,
        schema: Option<&str>,
    ) -> Result<InputKind, String> {
        let p = &self.program;
        if let Some(c) = contract {
            return p.contract(c).map(InputKind::Contract).ok_or_else(|| {
                let names: Vec<&str> = p.contracts.iter().map(|c| c.name.as_str()).collect();
                let hint = ben_bitspec::diag::did_you_mean(c, names.iter().copied())
                    .unwrap_or_else(|| format!("contracts in this bundle: {}", names.join(", ")));
                format!("no contract `{c}`; {hint}")
            });
        }
        if let Some(s) = schema {
            let (name, version) = match s.split_once('@') {
                Some((n, v)) => {
                    let v = v
                        .trim_start_matches('v')
                        .parse::<u32>()
                        .map_err(|_| format!("`{s}`: write the version as NAME@v2"))?;
                    (n, Some(v))
                }
                None => (s, None),
            };
            return p
                .schema(name, version)
                .map(InputKind::Schema)
                .ok_or_else(|| {
                    let names: Vec<String> = p
                        .schemas
                        .iter()
                        .map(|s| format!("{}@v{}", s.name, s.version))
                        .collect();
                    format!(
                        "no schema `{s}`; schemas in this bundle: {}",
                        names.join(", ")
                    )
                });
        }
        Err("say how records are shaped: --contract NAME (app records) or --schema NAME (records in schema form)".into())
    }

    /// Schema index after following declared migrations to a schema that
    /// packs evaluate (or the last one reachable); see [`migration_path`].
    fn migrate_chain(
        &self,
        schema: usize,
        rec: Vec<Value>,
    ) -> Result<(usize, Vec<Value>), RecordError> {
        migrate(&self.program, schema, rec)
    }

    /// Translates one input record to a schema record.
    pub fn translate(
        &self,
        kind: InputKind,
        input: &J,
    ) -> Result<(usize, Vec<Value>), RecordError> {
        let p = &self.program;
        let (schema, rec) = match kind {
            InputKind::Contract(c) => {
                if !input.is_object() {
                    return Err(RecordError {
                        field: "(record)".into(),
                        reason: format!(
                            "expected a JSON object, found {}",
                            interp::json_kind(input)
                        ),
                    });
                }
                (
                    p.contracts[c].schema,
                    interp::translate(p, &p.contracts[c], &input.into())?,
                )
            }
            InputKind::Schema(s) => (s, interp::from_json(&p.schemas[s], input)?),
        };
        self.migrate_chain(schema, rec)
    }

    /// A record of `schema` as a data-path message carries it (encoded
    /// values, or JSON when there are none), migrated like [`Self::translate`].
    pub fn translate_encoded(
        &self,
        schema: usize,
        values: &[u8],
        json: &[u8],
    ) -> Result<(usize, Vec<Value>), RecordError> {
        let rec = interp::decode_record(&self.program.schemas[schema], values, json)?;
        self.migrate_chain(schema, rec)
    }

    /// Evaluates packs and redacts. `undeclared`: the input object, whose
    /// fields the schema does not declare are scanned or dropped.
    pub fn evaluate(
        &self,
        schema: usize,
        rec: &[Value],
        undeclared: Option<&J>,
    ) -> Result<Evaluated, RecordError> {
        let parts = self.evaluate_parts(schema, rec, undeclared)?;
        let s = &self.program.schemas[schema];
        let mut out = Map::new();
        for (f, j) in s.fields.iter().zip(parts.fields) {
            set_path(&mut out, &f.path, j);
        }
        for (k, v) in parts.extra {
            set_path(&mut out, &k, v);
        }
        let mut metas = Map::new();
        for (name, v) in &parts.metas {
            metas.insert(name.to_string(), v.to_json());
        }
        Ok(Evaluated {
            schema,
            flags: parts.flags,
            bits: parts.bits,
            metas,
            meta_values: parts
                .metas
                .into_iter()
                .map(|(n, v)| (n.to_string(), v))
                .collect(),
            route: parts.route,
            record: J::Object(out),
        })
    }

    /// [`Self::evaluate`] for the data path: the redacted record is written
    /// straight to JSON text (same keys, order and values as
    /// `Evaluated::record`) without building a map per record.
    pub fn evaluate_to_json(&self, schema: usize, rec: &[Value]) -> Result<Rendered, RecordError> {
        let parts = self.evaluate_parts(schema, rec, None)?;
        let mut body = Vec::with_capacity(256);
        self.shapes[schema].write(&parts.fields, &mut body);
        let mut meta = Vec::with_capacity(32);
        meta.push(b'{');
        let mut first = true;
        for (i, (name, _)) in parts.metas.iter().enumerate() {
            if parts.metas[..i].iter().any(|(n, _)| n == name) {
                continue;
            }
            let last = parts
                .metas
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map_or(&Value::Null, |(_, v)| v);
            if !first {
                meta.push(b',');
            }
            first = false;
            // Writing into a Vec cannot fail.
            let _ = serde_json::to_writer(&mut meta, name);
            meta.push(b':');
            let _ = serde_json::to_writer(&mut meta, &last.to_json());
        }
        meta.push(b'}');
        Ok(Rendered {
            schema,
            flags: parts.flags,
            bits: parts.bits,
            meta,
            route: parts.route,
            body,
        })
    }

    fn evaluate_parts(
        &self,
        schema: usize,
        rec: &[Value],
        undeclared: Option<&J>,
    ) -> Result<Parts<'_>, RecordError> {
        let p = &self.program;
        let s = &p.schemas[schema];
        let mut flags = Vec::new();
        let mut bits = Vec::new();
        let mut metas = Vec::new();
        let mut route = RouteTarget::Spine;
        let mut redactions: Vec<Option<RedactAction>> = vec![None; s.fields.len()];
        for run in self
            .packs
            .iter()
            .filter(|r| p.packs[r.pack].schema == schema)
        {
            let pack = &p.packs[run.pack];
            let mut scratch = match run.scratch.lock() {
                Ok(g) => g,
                Err(poisoned) => poisoned.into_inner(),
            };
            if run.compiled.eval(rec, &mut scratch) == RouteTarget::Lucius {
                route = RouteTarget::Lucius;
            }
            for f in &pack.flags {
                if scratch
                    .bits
                    .get(f.bit as usize / 64)
                    .is_some_and(|w| w & (1 << (f.bit % 64)) != 0)
                {
                    flags.push((f.bit, f.name.clone()));
                }
            }
            bits.push((pack.name.clone(), scratch.bits.clone()));
            for (m, v) in pack.metas.iter().zip(scratch.metas.iter()) {
                metas.push((m.name.as_str(), v.clone()));
            }
            for (slot, a) in &pack.redactions {
                if redactions[*slot].is_none() {
                    redactions[*slot] = Some(*a);
                }
            }
        }
        flags.sort();
        // Fail closed: a PII field that no pack redacts never leaves.
        for (slot, f) in s.fields.iter().enumerate() {
            if f.pii.is_some() && redactions[slot].is_none() && !rec[slot].is_null() {
                return Err(RecordError {
                    field: f.path.clone(),
                    reason: format!("declared pii({}) but no pack on {} redacts it; the record is not forwarded", f.pii.as_deref().unwrap_or(""), s.id()),
                });
            }
        }
        let mut fields = Vec::with_capacity(s.fields.len());
        let mut total = 0usize;
        for (slot, f) in s.fields.iter().enumerate() {
            let v = &rec[slot];
            let j = match (redactions[slot], v) {
                (_, Value::Null) => J::Null,
                (Some(a), v) => {
                    let text = interp::text_of(v);
                    total += text.len();
                    match self.redactor.apply(action(a), &text) {
                        Ok(Some(r)) => J::String(r.into_owned()),
                        Ok(None) => J::Null,
                        Err(e) => {
                            return Err(RecordError {
                                field: f.path.clone(),
                                reason: format!(
                                    "redaction ({}) failed: {e}; the record is not forwarded",
                                    a.name()
                                ),
                            })
                        }
                    }
                }
                (None, v) => {
                    if let Value::Str(x) = v {
                        total += x.len();
                    }
                    v.to_json()
                }
            };
            fields.push(j);
        }
        let mut extra = Map::new();
        if let Some(J::Object(input)) = undeclared {
            self.undeclared(input, "", s, &mut extra, &mut total)?;
        }
        let limit = self.redactor.limits().max_record_bytes;
        if total > limit {
            return Err(RecordError {
                field: "(record)".into(),
                reason: format!("record is {total} bytes of text, over max_record_bytes = {limit}; raise [blot] max_record_bytes or split the record"),
            });
        }
        Ok(Parts {
            flags,
            bits,
            metas,
            route,
            fields,
            extra,
        })
    }

    /// Fields of a schema-form input that the schema does not declare:
    /// strings are scanned (or everything is dropped when
    /// `scan_undeclared = false`).
    fn undeclared(
        &self,
        obj: &Map<String, J>,
        prefix: &str,
        s: &ben_bitspec::ir::Schema,
        out: &mut Map<String, J>,
        total: &mut usize,
    ) -> Result<(), RecordError> {
        for (k, v) in obj {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if s.slot(&path).is_some() {
                continue;
            }
            let is_prefix = s
                .fields
                .iter()
                .any(|f| f.path.starts_with(&format!("{path}.")));
            if let (J::Object(inner), true) = (v, is_prefix) {
                self.undeclared(inner, &path, s, out, total)?;
                continue;
            }
            if !self.scan_undeclared {
                continue;
            }
            out.insert(path.clone(), self.scan_json(v, &path, total)?);
        }
        Ok(())
    }

    fn scan_json(&self, v: &J, path: &str, total: &mut usize) -> Result<J, RecordError> {
        Ok(match v {
            J::String(x) => {
                *total += x.len();
                let r = self.redactor.apply(Action::Scan, x).map_err(|e| RecordError {
                    field: path.to_string(),
                    reason: format!("undeclared field could not be scanned: {e}; the record is not forwarded"),
                })?;
                J::String(r.map(|c| c.into_owned()).unwrap_or_default())
            }
            J::Array(a) => J::Array(
                a.iter()
                    .map(|x| self.scan_json(x, path, total))
                    .collect::<Result<_, _>>()?,
            ),
            J::Object(o) => {
                let mut m = Map::new();
                for (k, x) in o {
                    m.insert(k.clone(), self.scan_json(x, &format!("{path}.{k}"), total)?);
                }
                J::Object(m)
            }
            other => other.clone(),
        })
    }

    /// The `benctl eval` output line for one input record.
    pub fn eval_line(&self, kind: InputKind, input: &J) -> Result<J, RecordError> {
        let (schema, rec) = self.translate(kind, input)?;
        let undeclared = matches!(kind, InputKind::Schema(_)).then_some(input);
        let ev = self.evaluate(schema, &rec, undeclared)?;
        Ok(self.render(&ev))
    }

    pub fn render(&self, ev: &Evaluated) -> J {
        let bits = match ev.bits.as_slice() {
            [] => J::String("0x0".into()),
            [(_, w)] => J::String(hex_bits(w)),
            many => J::Object(
                many.iter()
                    .map(|(n, w)| (n.clone(), J::String(hex_bits(w))))
                    .collect(),
            ),
        };
        serde_json::json!({
            "flags": ev.flags.iter().map(|(_, n)| n.clone()).collect::<Vec<_>>(),
            "bits": bits,
            "meta": ev.metas,
            "route": ev.route.name(),
            "record": ev.record,
            "intent": self.version,
        })
    }

    /// Runs one test block; returns its failures (empty: passed).
    pub fn check_test(&self, t: &Test) -> Vec<String> {
        let ev = match self.evaluate(t.schema, &t.record, None) {
            Ok(ev) => ev,
            Err(e) => return vec![format!("the record could not be processed: {e}")],
        };
        let s = &self.program.schemas[t.schema];
        let mut fails = Vec::new();
        for ex in &t.expects {
            let (actual, ok) = match &ex.target {
                ExpectTarget::Flags => {
                    let mut got: Vec<String> = ev.flags.iter().map(|(_, n)| n.clone()).collect();
                    got.sort();
                    let shown = format!("[{}]", got.join(", "));
                    let ok = match (&ex.op, &ex.value) {
                        (ExpectOp::Contains, Value::Str(n)) => got.contains(n),
                        (op, Value::List(want)) => {
                            let mut w: Vec<String> = want
                                .iter()
                                .filter_map(|v| {
                                    if let Value::Str(s) = v {
                                        Some(s.clone())
                                    } else {
                                        None
                                    }
                                })
                                .collect();
                            w.sort();
                            (w == got) == (*op == ExpectOp::Eq)
                        }
                        _ => false,
                    };
                    (shown, ok)
                }
                ExpectTarget::Route => {
                    let got = ev.route.name().to_string();
                    let ok = match &ex.value {
                        Value::Str(w) => (*w == got) == (ex.op == ExpectOp::Eq),
                        _ => false,
                    };
                    (got, ok)
                }
                ExpectTarget::Bits => {
                    let got = ev
                        .bits
                        .first()
                        .map(|(_, w)| hex_bits(w))
                        .unwrap_or_else(|| "0x0".into());
                    let want = match &ex.value {
                        Value::Int(i) => Some(hex_bits(&[*i as u64])),
                        Value::Str(s) => Some(s.to_lowercase()),
                        _ => None,
                    };
                    let ok = want.is_some_and(|w| (w == got) == (ex.op == ExpectOp::Eq));
                    (got, ok)
                }
                ExpectTarget::Meta(name) => {
                    let got = ev
                        .meta_values
                        .iter()
                        .find(|(n, _)| n == name)
                        .map(|(_, v)| v.clone())
                        .unwrap_or(Value::Null);
                    let ok = compare(&got, ex.op, &ex.value);
                    (got.to_string(), ok)
                }
                ExpectTarget::Field(slot) => {
                    let path = &s.fields[*slot].path;
                    let mut cur = Some(&ev.record);
                    for seg in path.split('.') {
                        cur = cur.and_then(|j| j.get(seg));
                    }
                    let got_j = cur.cloned().unwrap_or(J::Null);
                    let got = interp::json_to_value(&got_j).unwrap_or(Value::Null);
                    // Compare in output (JSON) form: times, IPs are strings there.
                    let want = match ex.value.to_json() {
                        J::String(x) => Value::Str(x),
                        j => interp::json_to_value(&j).unwrap_or(Value::Null),
                    };
                    let ok = compare(&got, ex.op, &want);
                    (got_j.to_string(), ok)
                }
            };
            if !ok {
                let op = match ex.op {
                    ExpectOp::Eq => "==",
                    ExpectOp::Ne => "!=",
                    ExpectOp::Contains => "contains",
                };
                fails.push(format!(
                    "{}\n      expected: {op} {}\n      actual:   {actual}",
                    ex.text.trim_end_matches(" …"),
                    ex.value
                ));
            }
        }
        fails
    }
}

fn compare(got: &Value, op: ExpectOp, want: &Value) -> bool {
    let eq = if got.is_null() || want.is_null() {
        got.is_null() && want.is_null()
    } else {
        got.bs_eq(want)
    };
    match op {
        ExpectOp::Eq => eq,
        ExpectOp::Ne => !eq,
        ExpectOp::Contains => match (got, want) {
            (Value::Str(a), Value::Str(b)) => a.contains(b.as_str()),
            (Value::List(a), b) => a.iter().any(|x| x.bs_eq(b)),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ben_bitspec::{compile, lock::BitTable, Source};

    #[test]
    fn json_text_matches_the_assembled_record() {
        let src = r#"
schema s v1 {
  a: int
  user.email: string pii(email)
  b: string?
  user.name: string
  extra.deep.x: float?
  note: string pii(text)
}
pack p on s v1 {
  flag big = a > 10
  meta m = if big then "B" else "S"
  redact user.email hmac
  redact note scan
}
"#;
        let c = compile(
            &[Source::new("t.bspec", src)],
            &BitTable::default(),
            Default::default(),
        )
        .expect("compiles");
        let key = BlotKey::from_material(&[7u8; 32]).expect("key");
        let ev = Evaluator::from_program(
            Arc::new(c.program),
            &crate::manifest::BlotSection::default(),
            "v".into(),
            Some(key),
        );
        let s = ev.program().schema("s", Some(1)).expect("schema");
        for rec in [
            serde_json::json!({"a": 12, "user": {"email": "a@b.example", "name": "Al \"q\" \u{e9}\n\t"}, "note": "mail x@y.example now", "extra": {"deep": {"x": 1.5}}}),
            serde_json::json!({"a": 1, "b": "z", "user": {"email": "c@d.example", "name": ""}, "note": ""}),
        ] {
            let values =
                ben_bitspec::interp::from_json(&ev.program().schemas[s], &rec).expect("record");
            let tree = ev.evaluate(s, &values, None).expect("evaluates");
            let text = ev.evaluate_to_json(s, &values).expect("evaluates");
            assert_eq!(
                String::from_utf8(text.body).unwrap(),
                serde_json::to_string(&tree.record).unwrap()
            );
            assert_eq!(text.flags, tree.flags);
            assert_eq!(
                String::from_utf8(text.meta).unwrap(),
                serde_json::to_string(&tree.metas).unwrap()
            );
        }
    }

    #[test]
    fn bits_render_as_minimal_hex() {
        assert_eq!(hex_bits(&[0]), "0x0");
        assert_eq!(hex_bits(&[0b101]), "0x5");
        assert_eq!(hex_bits(&[1, 1]), "0x10000000000000001");
    }
}
