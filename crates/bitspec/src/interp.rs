//! The reference interpreter: a direct, dynamically-checked walk over the
//! typed program. It is the oracle the compiled evaluator is tested against
//! (property tests), and it runs contracts, migrations and test records.
//!
//! Null semantics, shared by both evaluators:
//! * a condition that is null is false (`and`, `or`, `not`, `if`, flags);
//! * `==` is true for two nulls, false for null and a value; `!=` its negation;
//! * ordering, `in`, `starts_with`, `ends_with`, `contains`, `matches` on a
//!   null are false;
//! * arithmetic and functions on a null give null; integer overflow and
//!   division by zero give null; `a ?? b` is `b` when `a` is null.

use crate::ast::BinOp;
use crate::ir::*;
use crate::json::Json;
use crate::value::{parse_duration, parse_time, Cidr, Type, Value};
use std::borrow::Cow;

/// A dynamic failure: only input (contracts, migrations) can cause one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("expected {expected}, found {found}")]
    Type {
        expected: String,
        found: &'static str,
    },
    #[error("required value is missing")]
    Missing,
    #[error("{0}")]
    Other(String),
}

/// A per-record error: which field, and why. Never contains the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct RecordError {
    pub field: String,
    pub reason: String,
}

/// What an expression can read.
#[derive(Clone, Copy)]
pub struct Env<'a> {
    pub record: &'a [Value],
    pub input: Option<&'a Json<'a>>,
    pub flags: &'a [bool],
    pub metas: &'a [Value],
}

impl<'a> Env<'a> {
    pub fn record(record: &'a [Value]) -> Self {
        Env {
            record,
            input: None,
            flags: &[],
            metas: &[],
        }
    }
}

pub fn truthy(v: &Value) -> bool {
    matches!(v, Value::Bool(true))
}

/// Evaluates an expression that reads nothing.
pub fn eval_const(e: &TExpr) -> Result<Value, EvalError> {
    eval(e, &Env::record(&[]))
}

pub fn eval(e: &TExpr, env: &Env) -> Result<Value, EvalError> {
    Ok(match &e.kind {
        TKind::Const(v) => v.clone(),
        TKind::Field(s) => env.record.get(*s).cloned().unwrap_or(Value::Null),
        TKind::Input(path) => {
            let mut cur = env.input;
            for seg in path {
                cur = cur.and_then(|j| j.get(seg));
            }
            match cur {
                None => Value::Null,
                Some(j) => input_to_value(j)?,
            }
        }
        TKind::Flag(i) => Value::Bool(env.flags.get(*i).copied().unwrap_or(false)),
        TKind::Meta(i) => env.metas.get(*i).cloned().unwrap_or(Value::Null),
        TKind::Not(a) => Value::Bool(!truthy(&eval(a, env)?)),
        TKind::And(a, b) => Value::Bool(truthy(&eval(a, env)?) && truthy(&eval(b, env)?)),
        TKind::Or(a, b) => Value::Bool(truthy(&eval(a, env)?) || truthy(&eval(b, env)?)),
        TKind::Neg(a) => match eval(a, env)? {
            Value::Null => Value::Null,
            Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
            Value::Float(f) => Value::Float(-f),
            Value::Duration(d) => d.checked_neg().map_or(Value::Null, Value::Duration),
            v => return Err(type_err("a number", &v)),
        },
        TKind::Bin(op, a, b) => {
            let l = eval(a, env)?;
            if *op == BinOp::Coalesce && !l.is_null() {
                return Ok(l);
            }
            let r = eval(b, env)?;
            binop(*op, &l, &r)?
        }
        TKind::Call(f, args) => {
            let v = match args.first() {
                Some(a) => eval(a, env)?,
                None => Value::Null,
            };
            call(*f, v)?
        }
        TKind::If(c, a, b) => {
            if truthy(&eval(c, env)?) {
                eval(a, env)?
            } else {
                eval(b, env)?
            }
        }
        TKind::List(xs) => Value::List(xs.iter().map(|x| eval(x, env)).collect::<Result<_, _>>()?),
        TKind::Matches(a, re) => match eval(a, env)? {
            Value::Str(s) => Value::Bool(re.is_match(&s)),
            _ => Value::Bool(false),
        },
    })
}

fn type_err(expected: &str, v: &Value) -> EvalError {
    EvalError::Type {
        expected: expected.to_string(),
        found: v.kind_name(),
    }
}

/// Applies a binary operator (never `and`/`or`) to two values.
pub fn binop(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    use Value as V;
    let b = V::Bool;
    Ok(match op {
        BinOp::Coalesce => {
            if l.is_null() {
                r.clone()
            } else {
                l.clone()
            }
        }
        BinOp::Eq | BinOp::Ne => {
            let eq = if l.is_null() || r.is_null() {
                l.is_null() && r.is_null()
            } else {
                l.bs_eq(r)
            };
            b(eq == (op == BinOp::Eq))
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let o = l.bs_cmp(r);
            b(match op {
                BinOp::Lt => o.is_some_and(|o| o.is_lt()),
                BinOp::Le => o.is_some_and(|o| o.is_le()),
                BinOp::Gt => o.is_some_and(|o| o.is_gt()),
                _ => o.is_some_and(|o| o.is_ge()),
            })
        }
        BinOp::In => b(match (l, r) {
            (V::Ip(ip), V::Cidr(c)) => c.contains(*ip),
            (V::Null, _) => false,
            (x, V::List(items)) => items.iter().any(|it| match (x, it) {
                (V::Ip(ip), V::Cidr(c)) => c.contains(*ip),
                _ => !it.is_null() && x.bs_eq(it),
            }),
            _ => false,
        }),
        BinOp::StartsWith => {
            b(matches!((l, r), (V::Str(a), V::Str(p)) if a.starts_with(p.as_str())))
        }
        BinOp::EndsWith => b(matches!((l, r), (V::Str(a), V::Str(p)) if a.ends_with(p.as_str()))),
        BinOp::Contains => b(match (l, r) {
            (V::Str(a), V::Str(p)) => a.contains(p.as_str()),
            (V::List(items), x) if !x.is_null() => items.iter().any(|it| it.bs_eq(x)),
            (V::Cidr(c), V::Ip(ip)) => c.contains(*ip),
            _ => false,
        }),
        BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => arith(op, l, r)?,
        BinOp::And => b(truthy(l) && truthy(r)),
        BinOp::Or => b(truthy(l) || truthy(r)),
    })
}

fn arith(op: BinOp, l: &Value, r: &Value) -> Result<Value, EvalError> {
    use Value as V;
    let int = |x: Option<i64>| x.map_or(V::Null, V::Int);
    Ok(match (l, r) {
        (V::Null, _) | (_, V::Null) => V::Null,
        (V::Int(a), V::Int(b)) => int(match op {
            BinOp::Add => a.checked_add(*b),
            BinOp::Sub => a.checked_sub(*b),
            BinOp::Mul => a.checked_mul(*b),
            BinOp::Div => a.checked_div(*b),
            _ => a.checked_rem(*b),
        }),
        (V::Int(_) | V::Float(_), V::Int(_) | V::Float(_)) => {
            let a = as_f64(l);
            let b = as_f64(r);
            V::Float(match op {
                BinOp::Add => a + b,
                BinOp::Sub => a - b,
                BinOp::Mul => a * b,
                BinOp::Div => a / b,
                _ => a % b,
            })
        }
        (V::Str(a), V::Str(b)) if op == BinOp::Add => V::Str(format!("{a}{b}")),
        (V::Time(t), V::Duration(d)) if op == BinOp::Add => {
            t.checked_add(*d).map_or(V::Null, V::Time)
        }
        (V::Duration(d), V::Time(t)) if op == BinOp::Add => {
            t.checked_add(*d).map_or(V::Null, V::Time)
        }
        (V::Time(t), V::Duration(d)) if op == BinOp::Sub => {
            t.checked_sub(*d).map_or(V::Null, V::Time)
        }
        (V::Time(a), V::Time(b)) if op == BinOp::Sub => {
            a.checked_sub(*b).map_or(V::Null, V::Duration)
        }
        (V::Duration(a), V::Duration(b)) if op == BinOp::Add => {
            a.checked_add(*b).map_or(V::Null, V::Duration)
        }
        (V::Duration(a), V::Duration(b)) if op == BinOp::Sub => {
            a.checked_sub(*b).map_or(V::Null, V::Duration)
        }
        (V::Duration(a), V::Int(b)) if op == BinOp::Mul => {
            a.checked_mul(*b).map_or(V::Null, V::Duration)
        }
        (V::Duration(a), V::Int(b)) if op == BinOp::Div => {
            a.checked_div(*b).map_or(V::Null, V::Duration)
        }
        _ => {
            return Err(EvalError::Type {
                expected: format!("operands that `{}` accepts", op.symbol()),
                found: l.kind_name(),
            })
        }
    })
}

fn as_f64(v: &Value) -> f64 {
    match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        _ => f64::NAN,
    }
}

/// `int(x)` of a float: truncates toward zero; null when not finite or out
/// of range.
pub fn float_to_int(f: f64) -> Option<i64> {
    // i64::MIN is exactly -2^63; i64::MAX + 1 is exactly 2^63.
    const LIMIT: f64 = 9_223_372_036_854_775_808.0;
    if (-LIMIT..LIMIT).contains(&f) {
        Some(f.trunc() as i64)
    } else {
        None
    }
}

pub fn call(f: Func, v: Value) -> Result<Value, EvalError> {
    use Value as V;
    Ok(match (f, v) {
        (_, V::Null) => V::Null,
        (Func::Lower, V::Str(s)) => V::Str(s.to_lowercase()),
        (Func::Upper, V::Str(s)) => V::Str(s.to_uppercase()),
        (Func::Len, V::Str(s)) => V::Int(s.chars().count() as i64),
        (Func::Len, V::Bytes(b)) => V::Int(b.len() as i64),
        (Func::Len, V::List(l)) => V::Int(l.len() as i64),
        (Func::Int, V::Int(i)) => V::Int(i),
        (Func::Int, V::Bool(b)) => V::Int(i64::from(b)),
        (Func::Int, V::Float(x)) => float_to_int(x).map_or(V::Null, V::Int),
        (Func::Int, V::Str(s)) => s.trim().parse::<i64>().map_or(V::Null, V::Int),
        (Func::Float, V::Float(x)) => V::Float(x),
        (Func::Float, V::Int(i)) => V::Float(i as f64),
        (Func::Float, V::Str(s)) => s
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .map_or(V::Null, V::Float),
        (f, v) => {
            return Err(type_err(
                &format!("a valid argument for {}()", f.name()),
                &v,
            ))
        }
    })
}

/// A JSON input value as a Bitspec value (objects are refused: a field holds
/// a scalar or a list).
pub fn json_to_value(j: &serde_json::Value) -> Result<Value, EvalError> {
    // One reading of JSON for both forms: a borrowed view of the value
    // (strings not copied until they become values).
    input_to_value(&Json::from(j))
}

/// An app record's JSON value as a Bitspec value (objects are refused: a
/// field holds a scalar or a list).
pub fn input_to_value(j: &Json) -> Result<Value, EvalError> {
    Ok(match j {
        Json::Null => Value::Null,
        Json::Bool(b) => Value::Bool(*b),
        Json::Int(i) => Value::Int(*i),
        Json::Float(f) => Value::Float(*f),
        Json::Str(s) => Value::Str(s.to_string()),
        Json::Array(a) => Value::List(a.iter().map(input_to_value).collect::<Result<_, _>>()?),
        Json::Object(_) => {
            return Err(EvalError::Type {
                expected: "a value".into(),
                found: "object",
            })
        }
    })
}

/// Converts a value to a field's type: strings to times, IPs, CIDRs and
/// durations; ints to floats; integral floats to ints.
pub fn coerce(v: Value, ty: &Type) -> Result<Value, EvalError> {
    use Value as V;
    let bad = |v: &Value, what: &str| EvalError::Type {
        expected: what.to_string(),
        found: v.kind_name(),
    };
    Ok(match (v, ty.base()) {
        (V::Null, _) if ty.is_optional() => V::Null,
        (V::Null, _) => return Err(EvalError::Missing),
        (v, Type::Dyn) => v,
        (v @ V::Str(_), Type::String) => v,
        (v @ V::Int(_), Type::Int) => v,
        (v @ V::Float(_), Type::Float) => v,
        (v @ V::Bool(_), Type::Bool) => v,
        (v @ V::Time(_), Type::Time) => v,
        (v @ V::Duration(_), Type::Duration) => v,
        (v @ V::Ip(_), Type::Ip) => v,
        (v @ V::Cidr(_), Type::Cidr) => v,
        (v @ V::Bytes(_), Type::Bytes) => v,
        (V::Int(i), Type::Float) => V::Float(i as f64),
        (V::Float(f), Type::Int) if f.fract() == 0.0 => float_to_int(f)
            .map(V::Int)
            .ok_or_else(|| bad(&V::Float(f), "an int"))?,
        (V::Str(s), Type::Time) => parse_time(&s).map(V::Time).ok_or(EvalError::Other(
            "expected an RFC 3339 time like 2026-01-01T00:00:00Z".into(),
        ))?,
        (V::Str(s), Type::Duration) => parse_duration(&s)
            .map(V::Duration)
            .ok_or(EvalError::Other("expected a duration like 60s".into()))?,
        (V::Str(s), Type::Ip) => s
            .trim()
            .parse()
            .map(V::Ip)
            .map_err(|_| EvalError::Other("expected an IP address".into()))?,
        (V::Str(s), Type::Cidr) => Cidr::parse(s.trim())
            .map(V::Cidr)
            .ok_or(EvalError::Other("expected a CIDR like 10.0.0.0/8".into()))?,
        (V::Str(s), Type::Bytes) => V::Bytes(s.into_bytes()),
        (V::List(items), Type::List(t)) => V::List(
            items
                .into_iter()
                .map(|x| coerce(x, t))
                .collect::<Result<_, _>>()?,
        ),
        (v, t) => return Err(bad(&v, &format!("{t}"))),
    })
}

fn record_err(field: &str, e: EvalError) -> RecordError {
    let reason = match e {
        EvalError::Missing => "required, but missing or null".to_string(),
        e => e.to_string(),
    };
    RecordError {
        field: field.to_string(),
        reason,
    }
}

/// App record (JSON) → schema record, through a contract.
pub fn translate(
    prog: &Program,
    contract: &Contract,
    input: &Json,
) -> Result<Vec<Value>, RecordError> {
    if !input.is_object() {
        return Err(RecordError {
            field: "(record)".into(),
            reason: format!("expected a JSON object, found {}", input.kind()),
        });
    }
    let schema = &prog.schemas[contract.schema];
    let mut rec = vec![Value::Null; schema.fields.len()];
    let env = Env {
        record: &[],
        input: Some(input),
        flags: &[],
        metas: &[],
    };
    for (slot, e) in &contract.assigns {
        let f = &schema.fields[*slot];
        let v = eval(e, &env).map_err(|err| record_err(&f.path, err))?;
        rec[*slot] = coerce(v, &f.ty).map_err(|err| record_err(&f.path, err))?;
    }
    for (slot, f) in schema.fields.iter().enumerate() {
        if rec[slot].is_null() && !f.ty.is_optional() {
            return Err(record_err(&f.path, EvalError::Missing));
        }
    }
    Ok(rec)
}

/// A record already in the global schema's JSON form (dotted paths nested)
/// → schema record. Returns the record and the input's undeclared paths.
pub fn from_json(schema: &Schema, input: &serde_json::Value) -> Result<Vec<Value>, RecordError> {
    if !input.is_object() {
        return Err(RecordError {
            field: "(record)".into(),
            reason: format!("expected a JSON object, found {}", json_kind(input)),
        });
    }
    let mut rec = Vec::with_capacity(schema.fields.len());
    for f in &schema.fields {
        let mut cur = Some(input);
        for seg in f.path.split('.') {
            cur = cur.and_then(|j| j.get(seg));
        }
        let v = match cur {
            None => Value::Null,
            Some(j) => json_to_value(j).map_err(|e| record_err(&f.path, e))?,
        };
        rec.push(coerce(v, &f.ty).map_err(|e| record_err(&f.path, e))?);
    }
    Ok(rec)
}

/// A schema record from values in slot order (what [`crate::codec`]
/// decodes): one value per field, each coerced to its field's type, so a
/// record from another hop meets the same checks as one from JSON.
pub fn from_values(schema: &Schema, values: Vec<Value>) -> Result<Vec<Value>, RecordError> {
    if values.len() != schema.fields.len() {
        return Err(RecordError {
            field: "(record)".into(),
            reason: format!(
                "{} field values for {} v{}, which has {} fields",
                values.len(),
                schema.name,
                schema.version,
                schema.fields.len()
            ),
        });
    }
    values
        .into_iter()
        .zip(&schema.fields)
        .map(|(v, f)| coerce(v, &f.ty).map_err(|e| record_err(&f.path, e)))
        .collect()
}

/// A schema record from what a data-path message carries: the encoded
/// field values ([`crate::codec`]) when there are any, otherwise the JSON
/// body.
pub fn decode_record(
    schema: &Schema,
    values: &[u8],
    json: &[u8],
) -> Result<Vec<Value>, RecordError> {
    if !values.is_empty() {
        let v = crate::codec::decode(values).map_err(|e| RecordError {
            field: "(record)".into(),
            reason: e.to_string(),
        })?;
        return from_values(schema, v);
    }
    let body: serde_json::Value = serde_json::from_slice(json).map_err(|e| RecordError {
        field: "(record)".into(),
        reason: format!("record body is not JSON: {e}"),
    })?;
    from_json(schema, &body)
}

/// [`decode_record`] for a reader of only some fields (`keep[slot]`):
/// the others are null and not checked against their types. For the JSON
/// form every field is read.
pub fn decode_record_some(
    schema: &Schema,
    values: &[u8],
    json: &[u8],
    keep: &[bool],
) -> Result<Vec<Value>, RecordError> {
    if values.is_empty() {
        return decode_record(schema, values, json);
    }
    let v = crate::codec::decode_some(values, keep).map_err(|e| RecordError {
        field: "(record)".into(),
        reason: e.to_string(),
    })?;
    if v.len() != schema.fields.len() {
        return from_values(schema, v);
    }
    v.into_iter()
        .zip(&schema.fields)
        .zip(keep.iter().chain(std::iter::repeat(&false)))
        .map(|((v, f), k)| {
            if *k {
                coerce(v, &f.ty).map_err(|e| record_err(&f.path, e))
            } else {
                Ok(v)
            }
        })
        .collect()
}

pub fn json_kind(j: &serde_json::Value) -> &'static str {
    match j {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a bool",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Old-version record → new-version record.
pub fn migrate(prog: &Program, m: &Migration, old: &[Value]) -> Result<Vec<Value>, RecordError> {
    let new = &prog.schemas[m.to];
    let mut rec = vec![Value::Null; new.fields.len()];
    let env = Env::record(old);
    for (slot, e) in &m.assigns {
        let f = &new.fields[*slot];
        let v = eval(e, &env).map_err(|err| record_err(&f.path, err))?;
        rec[*slot] = coerce(v, &f.ty).map_err(|err| record_err(&f.path, err))?;
    }
    Ok(rec)
}

/// The result of evaluating one pack on one record.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Per flag, in the pack's declaration order.
    pub flags: Vec<bool>,
    /// Per meta, in declaration order.
    pub metas: Vec<Value>,
    pub route: RouteTarget,
}

impl Outcome {
    /// The flag bitmask by `ben.lock` bit positions, as 64-bit words.
    pub fn bits(&self, pack: &Pack) -> Vec<u64> {
        let mut words = vec![0u64; pack.words()];
        for (i, f) in pack.flags.iter().enumerate() {
            if self.flags[i] {
                words[f.bit as usize / 64] |= 1 << (f.bit % 64);
            }
        }
        words
    }
}

/// Evaluates a pack's flags, metas and route on a record.
pub fn eval_pack(pack: &Pack, record: &[Value]) -> Result<Outcome, EvalError> {
    let mut flags = vec![false; pack.flags.len()];
    let mut metas = vec![Value::Null; pack.metas.len()];
    for d in &pack.order {
        let env = Env {
            record,
            input: None,
            flags: &flags,
            metas: &metas,
        };
        match *d {
            Def::Flag(i) => {
                let v = truthy(&eval(&pack.flags[i].expr, &env)?);
                flags[i] = v;
            }
            Def::Meta(i) => {
                let v = eval(&pack.metas[i].expr, &env)?;
                metas[i] = v;
            }
        }
    }
    let env = Env {
        record,
        input: None,
        flags: &flags,
        metas: &metas,
    };
    let mut route = RouteTarget::Spine;
    for r in &pack.routes {
        if truthy(&eval(&r.when, &env)?) {
            route = r.target;
            break;
        }
    }
    Ok(Outcome {
        flags,
        metas,
        route,
    })
}

/// Borrowed text of a value, for redaction.
pub fn text_of(v: &Value) -> Cow<'_, str> {
    match v {
        Value::Str(s) => Cow::Borrowed(s),
        v => Cow::Owned(v.to_text()),
    }
}
