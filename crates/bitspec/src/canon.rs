//! Canonical artifacts: the checked program as deterministic JSON, one
//! artifact per concern, so each component fetches only what its role needs
//! and the bundle digest is identical on every machine for the same sources
//! (independent of file names, order, whitespace and comments).

use crate::ir::*;
use crate::value::Value;
use serde_json::{json, Value as J};

fn val(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!({ "int": i }),
        Value::Float(f) => json!({ "float": f.to_bits().to_string() }),
        Value::Str(s) => json!({ "str": s }),
        Value::Time(t) => json!({ "time": t }),
        Value::Duration(d) => json!({ "duration": d }),
        Value::Ip(ip) => json!({ "ip": ip.to_string() }),
        Value::Cidr(c) => json!({ "cidr": c.to_string() }),
        Value::Bytes(b) => json!({ "bytes": crate::value::base64(b) }),
        Value::List(l) => json!({ "list": l.iter().map(val).collect::<Vec<_>>() }),
    }
}

/// An expression as canonical JSON.
pub fn expr(e: &TExpr) -> J {
    let kids = |xs: &[&TExpr]| xs.iter().map(|x| expr(x)).collect::<Vec<_>>();
    let k = match &e.kind {
        TKind::Const(v) => json!({ "const": val(v) }),
        TKind::Field(s) => json!({ "field": s }),
        TKind::Input(p) => json!({ "input": p }),
        TKind::Flag(i) => json!({ "flag": i }),
        TKind::Meta(i) => json!({ "meta": i }),
        TKind::Not(a) => json!({ "not": kids(&[a]) }),
        TKind::Neg(a) => json!({ "neg": kids(&[a]) }),
        TKind::And(a, b) => json!({ "and": kids(&[a, b]) }),
        TKind::Or(a, b) => json!({ "or": kids(&[a, b]) }),
        TKind::Bin(op, a, b) => json!({ "op": op.symbol(), "args": kids(&[a, b]) }),
        TKind::Call(f, xs) => {
            json!({ "call": f.name(), "args": xs.iter().map(expr).collect::<Vec<_>>() })
        }
        TKind::If(c, a, b) => json!({ "if": kids(&[c, a, b]) }),
        TKind::List(xs) => json!({ "list": xs.iter().map(expr).collect::<Vec<_>>() }),
        TKind::Matches(a, re) => json!({ "matches": re.as_str(), "args": kids(&[a]) }),
    };
    json!({ "k": k, "t": e.ty.to_string() })
}

fn schema(s: &Schema) -> J {
    json!({
        "name": s.name,
        "version": s.version,
        "fields": s.fields.iter().map(|f| json!({ "path": f.path, "type": f.ty.to_string(), "pii": f.pii })).collect::<Vec<_>>(),
    })
}

fn action(a: &RedactAction) -> J {
    match a {
        RedactAction::Mask { keep_last } => json!({ "mask": { "keep_last": keep_last } }),
        a => json!(a.name()),
    }
}

/// `(artifact name, canonical JSON)` for every part of the program, sorted
/// by name.
pub fn artifacts(p: &Program) -> Vec<(String, J)> {
    let sid = |i: usize| p.schemas.get(i).map(Schema::id).unwrap_or_default();
    let mut out = Vec::new();
    for s in &p.schemas {
        out.push((format!("schema/{}@v{}", s.name, s.version), schema(s)));
    }
    for c in &p.contracts {
        out.push((
            format!("contract/{}", c.name),
            json!({
                "name": c.name,
                "schema": sid(c.schema),
                "assigns": c.assigns.iter().map(|(s, e)| json!([s, expr(e)])).collect::<Vec<_>>(),
            }),
        ));
    }
    for pk in &p.packs {
        out.push((
            format!("pack/{}", pk.name),
            json!({
                "name": pk.name,
                "schema": sid(pk.schema),
                "flags": pk.flags.iter().map(|f| json!({ "name": f.name, "bit": f.bit, "expr": expr(&f.expr) })).collect::<Vec<_>>(),
                "metas": pk.metas.iter().map(|m| json!({ "name": m.name, "expr": expr(&m.expr) })).collect::<Vec<_>>(),
                "order": pk.order.iter().map(|d| match d { Def::Flag(i) => json!(["flag", i]), Def::Meta(i) => json!(["meta", i]) }).collect::<Vec<_>>(),
                "redact": pk.redactions.iter().map(|(s, a)| json!([s, action(a)])).collect::<Vec<_>>(),
                "routes": pk.routes.iter().map(|r| json!({ "target": r.target.name(), "when": expr(&r.when) })).collect::<Vec<_>>(),
                "cost": pk.cost,
            }),
        ));
    }
    for pb in &p.playbooks {
        out.push((
            format!("playbook/{}", pb.name),
            json!({
                "name": pb.name,
                "schema": sid(pb.schema),
                "flags": pb.flag_names,
                "agg": format!("{:?}", pb.agg).to_lowercase(),
                "arg": pb.arg.as_ref().map(expr),
                "by": pb.by,
                "window_ns": pb.window_ns,
                "op": pb.op.symbol(),
                "threshold": pb.threshold.to_bits().to_string(),
                "signal": pb.signal,
                "severity": pb.severity.name(),
            }),
        ));
    }
    for m in &p.migrations {
        out.push((
            format!("migration/{}->{}", sid(m.from), sid(m.to)),
            json!({ "from": sid(m.from), "to": sid(m.to), "assigns": m.assigns.iter().map(|(s, e)| json!([s, expr(e)])).collect::<Vec<_>>() }),
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}
