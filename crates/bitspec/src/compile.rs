//! The compiled evaluator: each typed expression becomes a tree of
//! specialised closures. Field reads are slot indexes resolved at build
//! time, constants live in a pool, flags are bits, and the common shapes
//! (`field OP constant`, `field starts_with "…"`, `ip in cidr`, flag logic)
//! get dedicated closures. Evaluation allocates nothing except where an
//! expression itself builds a new string (`upper`, `+` on strings).
//!
//! Semantics are those of [`crate::interp`]; property tests check that the
//! two agree on random records and random expressions.

use crate::ast::BinOp;
use crate::interp::{self, float_to_int, truthy};
use crate::ir::*;
use crate::value::{Cidr, Type, Value};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::net::IpAddr;

/// What compiled code reads: the record, the flag bits so far, metas, and
/// the constant pool.
pub struct Ctx<'a> {
    pub record: &'a [Value],
    pub bits: &'a [u64],
    pub metas: &'a [Value],
    /// The pack's constant pool: constants are borrowed, never cloned.
    pub consts: &'a [Value],
}

type CondFn = Box<dyn Fn(&Ctx) -> bool + Send + Sync>;
type IntFn = Box<dyn Fn(&Ctx) -> Option<i64> + Send + Sync>;
type FloatFn = Box<dyn Fn(&Ctx) -> Option<f64> + Send + Sync>;
type StrFn = Box<dyn for<'a> Fn(&Ctx<'a>) -> Option<Cow<'a, str>> + Send + Sync>;
type IpFn = Box<dyn Fn(&Ctx) -> Option<IpAddr> + Send + Sync>;
type OptBoolFn = Box<dyn Fn(&Ctx) -> Option<bool> + Send + Sync>;
type ValFn = Box<dyn for<'a> Fn(&Ctx<'a>) -> Cow<'a, Value> + Send + Sync>;

enum Step {
    Flag { bit: u32, f: CondFn },
    Meta { idx: usize, f: ValFn },
}

/// A pack ready for fast evaluation.
pub struct CompiledPack {
    consts: Vec<Value>,
    steps: Vec<Step>,
    routes: Vec<(RouteTarget, CondFn)>,
    words: usize,
    n_metas: usize,
}

/// Reusable per-thread buffers: evaluate many records without allocating.
#[derive(Debug, Clone, Default)]
pub struct Scratch {
    pub bits: Vec<u64>,
    pub metas: Vec<Value>,
}

impl CompiledPack {
    pub fn new(pack: &Pack) -> Self {
        let bits: Vec<u32> = pack.flags.iter().map(|f| f.bit).collect();
        let c = Compiler {
            flag_bits: &bits,
            consts: std::cell::RefCell::new(Vec::new()),
        };
        let steps = pack
            .order
            .iter()
            .map(|d| match *d {
                Def::Flag(i) => Step::Flag {
                    bit: bits[i],
                    f: c.cond(&pack.flags[i].expr),
                },
                Def::Meta(i) => Step::Meta {
                    idx: i,
                    f: c.val(&pack.metas[i].expr),
                },
            })
            .collect();
        let routes = pack
            .routes
            .iter()
            .map(|r| (r.target, c.cond(&r.when)))
            .collect();
        CompiledPack {
            consts: c.consts.into_inner(),
            steps,
            routes,
            words: pack.words(),
            n_metas: pack.metas.len(),
        }
    }

    pub fn scratch(&self) -> Scratch {
        Scratch {
            bits: vec![0; self.words],
            metas: vec![Value::Null; self.n_metas],
        }
    }

    /// Evaluates flags (into `out.bits`, by lock bit), metas (into
    /// `out.metas`) and the route.
    pub fn eval(&self, record: &[Value], out: &mut Scratch) -> RouteTarget {
        out.bits.clear();
        out.bits.resize(self.words, 0);
        out.metas.resize(self.n_metas, Value::Null);
        for step in &self.steps {
            match step {
                Step::Flag { bit, f } => {
                    let ctx = Ctx {
                        record,
                        bits: &out.bits,
                        metas: &out.metas,
                        consts: &self.consts,
                    };
                    if f(&ctx) {
                        out.bits[*bit as usize / 64] |= 1 << (bit % 64);
                    }
                }
                Step::Meta { idx, f } => {
                    // A meta never reads itself (cycles are refused), so its
                    // slot can be taken out while the others are read.
                    let mut slot = std::mem::replace(&mut out.metas[*idx], Value::Null);
                    {
                        let ctx = Ctx {
                            record,
                            bits: &out.bits,
                            metas: &out.metas,
                            consts: &self.consts,
                        };
                        assign(&mut slot, f(&ctx));
                    }
                    out.metas[*idx] = slot;
                }
            }
        }
        let ctx = Ctx {
            record,
            bits: &out.bits,
            metas: &out.metas,
            consts: &self.consts,
        };
        for (t, f) in &self.routes {
            if f(&ctx) {
                return *t;
            }
        }
        RouteTarget::Spine
    }
}

struct Compiler<'p> {
    flag_bits: &'p [u32],
    consts: std::cell::RefCell<Vec<Value>>,
}

/// Stores a meta value, reusing the slot's string buffer when it can, so a
/// steady stream of records allocates nothing.
fn assign(slot: &mut Value, v: Cow<'_, Value>) {
    match (slot, v) {
        (Value::Str(dst), Cow::Borrowed(Value::Str(src))) => {
            dst.clear();
            dst.push_str(src);
        }
        (slot, v) => *slot = v.into_owned(),
    }
}

fn slot_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        _ => None,
    }
}

fn cmp_holds(op: BinOp, o: Option<Ordering>) -> bool {
    match (op, o) {
        (_, None) => false,
        (BinOp::Lt, Some(o)) => o.is_lt(),
        (BinOp::Le, Some(o)) => o.is_le(),
        (BinOp::Gt, Some(o)) => o.is_gt(),
        (BinOp::Ge, Some(o)) => o.is_ge(),
        (BinOp::Eq, Some(o)) => o.is_eq(),
        (BinOp::Ne, Some(o)) => o.is_ne(),
        _ => false,
    }
}

fn is_int(t: &Type) -> bool {
    t.base() == &Type::Int
}

fn is_float_or_int(t: &Type) -> bool {
    matches!(t.base(), Type::Int | Type::Float)
}

impl Compiler<'_> {
    /// A condition: null is false.
    fn cond(&self, e: &TExpr) -> CondFn {
        match &e.kind {
            TKind::Const(v) => {
                let b = truthy(v);
                Box::new(move |_| b)
            }
            TKind::Field(s) => {
                let s = *s;
                Box::new(move |cx| matches!(cx.record.get(s), Some(Value::Bool(true))))
            }
            TKind::Flag(i) => {
                let bit = self.flag_bits.get(*i).copied().unwrap_or(0);
                let (w, m) = (bit as usize / 64, 1u64 << (bit % 64));
                Box::new(move |cx| cx.bits.get(w).is_some_and(|x| x & m != 0))
            }
            TKind::Not(a) => {
                let a = self.cond(a);
                Box::new(move |cx| !a(cx))
            }
            TKind::And(a, b) => {
                let (a, b) = (self.cond(a), self.cond(b));
                Box::new(move |cx| a(cx) && b(cx))
            }
            TKind::Or(a, b) => {
                let (a, b) = (self.cond(a), self.cond(b));
                Box::new(move |cx| a(cx) || b(cx))
            }
            TKind::If(c, a, b) => {
                let (c, a, b) = (self.cond(c), self.cond(a), self.cond(b));
                Box::new(move |cx| if c(cx) { a(cx) } else { b(cx) })
            }
            TKind::Matches(a, re) => {
                let re = re.clone();
                if let TKind::Field(s) = a.kind {
                    return Box::new(
                        move |cx| matches!(cx.record.get(s), Some(Value::Str(x)) if re.is_match(x)),
                    );
                }
                let a = self.str(a);
                Box::new(move |cx| a(cx).is_some_and(|x| re.is_match(&x)))
            }
            TKind::Bin(op, l, r) => self
                .bin_cond(*op, l, r)
                .unwrap_or_else(|| self.generic_cond(e)),
            _ => self.generic_cond(e),
        }
    }

    fn generic_cond(&self, e: &TExpr) -> CondFn {
        // `dynamic` never comes back here for these kinds; `val` handles the rest.
        let v = match &e.kind {
            TKind::Bin(..) | TKind::Call(..) | TKind::Neg(_) => self.dynamic(e),
            _ => self.val(e),
        };
        Box::new(move |cx| truthy(&v(cx)))
    }

    fn bin_cond(&self, op: BinOp, l: &TExpr, r: &TExpr) -> Option<CondFn> {
        let (lt, rt) = (l.ty.base(), r.ty.base());
        match op {
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let eq_null_ok = matches!(op, BinOp::Eq | BinOp::Ne);
                if is_int(lt) && is_int(rt) {
                    // field OP const: the hottest shape.
                    if let (TKind::Field(s), TKind::Const(Value::Int(k))) = (&l.kind, &r.kind) {
                        let (s, k) = (*s, *k);
                        return Some(match op {
                            BinOp::Eq => {
                                Box::new(move |cx| cx.record.get(s).and_then(slot_int) == Some(k))
                            }
                            BinOp::Ne => {
                                Box::new(move |cx| cx.record.get(s).and_then(slot_int) != Some(k))
                            }
                            BinOp::Lt => Box::new(move |cx| {
                                cx.record.get(s).and_then(slot_int).is_some_and(|v| v < k)
                            }),
                            BinOp::Le => Box::new(move |cx| {
                                cx.record.get(s).and_then(slot_int).is_some_and(|v| v <= k)
                            }),
                            BinOp::Gt => Box::new(move |cx| {
                                cx.record.get(s).and_then(slot_int).is_some_and(|v| v > k)
                            }),
                            _ => Box::new(move |cx| {
                                cx.record.get(s).and_then(slot_int).is_some_and(|v| v >= k)
                            }),
                        });
                    }
                    let (a, b) = (self.int(l), self.int(r));
                    return Some(Box::new(move |cx| match (a(cx), b(cx)) {
                        (Some(x), Some(y)) => cmp_holds(op, Some(x.cmp(&y))),
                        (None, None) => op == BinOp::Eq,
                        _ => op == BinOp::Ne,
                    }));
                }
                if is_float_or_int(lt) && is_float_or_int(rt) {
                    let (a, b) = (self.float(l), self.float(r));
                    return Some(Box::new(move |cx| match (a(cx), b(cx)) {
                        (Some(x), Some(y)) => match op {
                            BinOp::Eq => x == y,
                            BinOp::Ne => x != y,
                            _ => cmp_holds(op, x.partial_cmp(&y)),
                        },
                        (None, None) => op == BinOp::Eq,
                        _ => op == BinOp::Ne,
                    }));
                }
                if lt == &Type::String && rt == &Type::String {
                    if let (TKind::Field(s), TKind::Const(Value::Str(k))) = (&l.kind, &r.kind) {
                        let (s, k) = (*s, k.clone());
                        return Some(Box::new(move |cx| match cx.record.get(s) {
                            Some(Value::Str(x)) => cmp_holds(op, Some(x.as_str().cmp(k.as_str()))),
                            _ => op == BinOp::Ne,
                        }));
                    }
                    let (a, b) = (self.str(l), self.str(r));
                    return Some(Box::new(move |cx| match (a(cx), b(cx)) {
                        (Some(x), Some(y)) => cmp_holds(op, Some(x.as_ref().cmp(y.as_ref()))),
                        (None, None) => op == BinOp::Eq,
                        _ => op == BinOp::Ne,
                    }));
                }
                if matches!(
                    (lt, rt),
                    (Type::Time, Type::Time) | (Type::Duration, Type::Duration)
                ) {
                    let (a, b) = (self.int(l), self.int(r));
                    return Some(Box::new(move |cx| match (a(cx), b(cx)) {
                        (Some(x), Some(y)) => cmp_holds(op, Some(x.cmp(&y))),
                        (None, None) => op == BinOp::Eq,
                        _ => op == BinOp::Ne,
                    }));
                }
                if lt == &Type::Ip && rt == &Type::Ip {
                    let (a, b) = (self.ip(l), self.ip(r));
                    return Some(Box::new(move |cx| match (a(cx), b(cx)) {
                        (Some(x), Some(y)) => cmp_holds(op, Some(x.cmp(&y))),
                        (None, None) => op == BinOp::Eq,
                        _ => op == BinOp::Ne,
                    }));
                }
                if lt == &Type::Bool && rt == &Type::Bool && eq_null_ok {
                    let (a, b) = (self.opt_bool(l), self.opt_bool(r));
                    return Some(Box::new(move |cx| (a(cx) == b(cx)) == (op == BinOp::Eq)));
                }
                None
            }
            BinOp::StartsWith | BinOp::EndsWith | BinOp::Contains
                if lt == &Type::String && rt == &Type::String =>
            {
                if let (TKind::Field(s), TKind::Const(Value::Str(k))) = (&l.kind, &r.kind) {
                    let (s, k) = (*s, k.clone());
                    return Some(match op {
                        BinOp::StartsWith => Box::new(
                            move |cx| matches!(cx.record.get(s), Some(Value::Str(x)) if x.starts_with(k.as_str())),
                        ),
                        BinOp::EndsWith => Box::new(
                            move |cx| matches!(cx.record.get(s), Some(Value::Str(x)) if x.ends_with(k.as_str())),
                        ),
                        _ => {
                            let finder = memchr_finder(&k);
                            Box::new(
                                move |cx| matches!(cx.record.get(s), Some(Value::Str(x)) if finder(x)),
                            )
                        }
                    });
                }
                let (a, b) = (self.str(l), self.str(r));
                Some(Box::new(move |cx| match (a(cx), b(cx)) {
                    (Some(x), Some(y)) => match op {
                        BinOp::StartsWith => x.starts_with(y.as_ref()),
                        BinOp::EndsWith => x.ends_with(y.as_ref()),
                        _ => x.contains(y.as_ref()),
                    },
                    _ => false,
                }))
            }
            BinOp::In if lt == &Type::Ip && rt == &Type::Cidr => {
                if let (TKind::Field(s), TKind::Const(Value::Cidr(c))) = (&l.kind, &r.kind) {
                    let (s, c) = (*s, *c);
                    return Some(cidr_test(s, c));
                }
                let a = self.ip(l);
                let b = self.val(r);
                Some(Box::new(move |cx| match (a(cx), b(cx).as_ref()) {
                    (Some(ip), Value::Cidr(c)) => c.contains(ip),
                    _ => false,
                }))
            }
            _ => None,
        }
    }

    fn opt_bool(&self, e: &TExpr) -> OptBoolFn {
        if !e.ty.is_optional() {
            let c = self.cond(e);
            return Box::new(move |cx| Some(c(cx)));
        }
        let v = self.val(e);
        Box::new(move |cx| match v(cx).as_ref() {
            Value::Bool(b) => Some(*b),
            _ => None,
        })
    }

    fn int(&self, e: &TExpr) -> IntFn {
        match &e.kind {
            TKind::Const(Value::Int(k) | Value::Time(k) | Value::Duration(k)) => {
                let k = *k;
                Box::new(move |_| Some(k))
            }
            TKind::Const(Value::Null) => Box::new(|_| None),
            TKind::Field(s) => {
                let s = *s;
                Box::new(move |cx| match cx.record.get(s) {
                    Some(Value::Int(i) | Value::Time(i) | Value::Duration(i)) => Some(*i),
                    _ => None,
                })
            }
            TKind::Neg(a) if matches!(a.ty.base(), Type::Int | Type::Duration) => {
                let a = self.int(a);
                Box::new(move |cx| a(cx).and_then(i64::checked_neg))
            }
            TKind::Bin(
                op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem),
                l,
                r,
            ) if matches!(l.ty.base(), Type::Int | Type::Time | Type::Duration)
                && matches!(r.ty.base(), Type::Int | Type::Time | Type::Duration) =>
            {
                let (a, b) = (self.int(l), self.int(r));
                match op {
                    BinOp::Add => Box::new(move |cx| a(cx)?.checked_add(b(cx)?)),
                    BinOp::Sub => Box::new(move |cx| a(cx)?.checked_sub(b(cx)?)),
                    BinOp::Mul => Box::new(move |cx| a(cx)?.checked_mul(b(cx)?)),
                    BinOp::Div => Box::new(move |cx| a(cx)?.checked_div(b(cx)?)),
                    _ => Box::new(move |cx| a(cx)?.checked_rem(b(cx)?)),
                }
            }
            TKind::Bin(BinOp::Coalesce, l, r)
                if matches!(
                    l.ty.base(),
                    Type::Int | Type::Time | Type::Duration | Type::Null
                ) =>
            {
                let (a, b) = (self.int(l), self.int(r));
                Box::new(move |cx| a(cx).or_else(|| b(cx)))
            }
            TKind::If(c, a, b) => {
                let (c, a, b) = (self.cond(c), self.int(a), self.int(b));
                Box::new(move |cx| if c(cx) { a(cx) } else { b(cx) })
            }
            TKind::Call(Func::Len, args)
                if args.first().is_some_and(|a| a.ty.base() == &Type::String) =>
            {
                let a = self.str(&args[0]);
                Box::new(move |cx| a(cx).map(|s| s.chars().count() as i64))
            }
            TKind::Call(Func::Int, args)
                if args.first().is_some_and(|a| a.ty.base() == &Type::Float) =>
            {
                let a = self.float(&args[0]);
                Box::new(move |cx| a(cx).and_then(float_to_int))
            }
            TKind::Call(Func::Int, args)
                if args.first().is_some_and(|a| a.ty.base() == &Type::String) =>
            {
                let a = self.str(&args[0]);
                Box::new(move |cx| a(cx).and_then(|s| s.trim().parse().ok()))
            }
            _ => {
                let v = self.val(e);
                Box::new(move |cx| match v(cx).as_ref() {
                    Value::Int(i) | Value::Time(i) | Value::Duration(i) => Some(*i),
                    _ => None,
                })
            }
        }
    }

    fn float(&self, e: &TExpr) -> FloatFn {
        if is_int(&e.ty) {
            let a = self.int(e);
            return Box::new(move |cx| a(cx).map(|i| i as f64));
        }
        match &e.kind {
            TKind::Const(Value::Float(k)) => {
                let k = *k;
                Box::new(move |_| Some(k))
            }
            TKind::Field(s) => {
                let s = *s;
                Box::new(move |cx| match cx.record.get(s) {
                    Some(Value::Float(f)) => Some(*f),
                    Some(Value::Int(i)) => Some(*i as f64),
                    _ => None,
                })
            }
            TKind::Bin(
                op @ (BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem),
                l,
                r,
            ) if is_float_or_int(&l.ty) && is_float_or_int(&r.ty) => {
                let (a, b) = (self.float(l), self.float(r));
                match op {
                    BinOp::Add => Box::new(move |cx| Some(a(cx)? + b(cx)?)),
                    BinOp::Sub => Box::new(move |cx| Some(a(cx)? - b(cx)?)),
                    BinOp::Mul => Box::new(move |cx| Some(a(cx)? * b(cx)?)),
                    BinOp::Div => Box::new(move |cx| Some(a(cx)? / b(cx)?)),
                    _ => Box::new(move |cx| Some(a(cx)? % b(cx)?)),
                }
            }
            TKind::Neg(a) => {
                let a = self.float(a);
                Box::new(move |cx| a(cx).map(|x| -x))
            }
            _ => {
                let v = self.val(e);
                Box::new(move |cx| match v(cx).as_ref() {
                    Value::Float(f) => Some(*f),
                    Value::Int(i) => Some(*i as f64),
                    _ => None,
                })
            }
        }
    }

    fn str(&self, e: &TExpr) -> StrFn {
        match &e.kind {
            TKind::Field(s) => {
                let s = *s;
                Box::new(move |cx| match cx.record.get(s) {
                    Some(Value::Str(x)) => Some(Cow::Borrowed(x.as_str())),
                    _ => None,
                })
            }
            TKind::Call(f @ (Func::Lower | Func::Upper), args) if !args.is_empty() => {
                let a = self.str(&args[0]);
                if *f == Func::Lower {
                    Box::new(move |cx| a(cx).map(|s| lower(s)))
                } else {
                    Box::new(move |cx| a(cx).map(|s| upper(s)))
                }
            }
            TKind::If(c, a, b) => {
                let (c, a, b) = (self.cond(c), self.str(a), self.str(b));
                Box::new(move |cx| if c(cx) { a(cx) } else { b(cx) })
            }
            _ => {
                let v = self.val(e);
                Box::new(move |cx| match v(cx) {
                    Cow::Borrowed(Value::Str(s)) => Some(Cow::Borrowed(s.as_str())),
                    Cow::Owned(Value::Str(s)) => Some(Cow::Owned(s)),
                    _ => None,
                })
            }
        }
    }

    fn ip(&self, e: &TExpr) -> IpFn {
        match &e.kind {
            TKind::Field(s) => {
                let s = *s;
                Box::new(move |cx| match cx.record.get(s) {
                    Some(Value::Ip(ip)) => Some(*ip),
                    _ => None,
                })
            }
            _ => {
                let v = self.val(e);
                Box::new(move |cx| match v(cx).as_ref() {
                    Value::Ip(ip) => Some(*ip),
                    _ => None,
                })
            }
        }
    }

    /// The generic path: any expression to a (possibly borrowed) value.
    fn val(&self, e: &TExpr) -> ValFn {
        match &e.kind {
            TKind::Const(v) => {
                let i = {
                    let mut pool = self.consts.borrow_mut();
                    pool.push(v.clone());
                    pool.len() - 1
                };
                Box::new(move |cx| {
                    cx.consts
                        .get(i)
                        .map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                })
            }
            TKind::Field(s) => {
                let s = *s;
                Box::new(move |cx| {
                    cx.record
                        .get(s)
                        .map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                })
            }
            TKind::Meta(i) => {
                let i = *i;
                Box::new(move |cx| {
                    cx.metas
                        .get(i)
                        .map_or(Cow::Owned(Value::Null), Cow::Borrowed)
                })
            }
            TKind::Input(_) => Box::new(|_| Cow::Owned(Value::Null)),
            TKind::If(c, a, b) => {
                let (c, a, b) = (self.cond(c), self.val(a), self.val(b));
                Box::new(move |cx| if c(cx) { a(cx) } else { b(cx) })
            }
            TKind::List(xs) => {
                let fs: Vec<ValFn> = xs.iter().map(|x| self.val(x)).collect();
                Box::new(move |cx| {
                    Cow::Owned(Value::List(fs.iter().map(|f| f(cx).into_owned()).collect()))
                })
            }
            _ => match e.ty.base() {
                Type::Bool => {
                    let c = self.cond(e);
                    Box::new(move |cx| Cow::Owned(Value::Bool(c(cx))))
                }
                Type::Int => {
                    let f = self.int_direct(e);
                    Box::new(move |cx| Cow::Owned(f(cx).map_or(Value::Null, Value::Int)))
                }
                Type::Float => {
                    let f = self.float_direct(e);
                    Box::new(move |cx| Cow::Owned(f(cx).map_or(Value::Null, Value::Float)))
                }
                Type::String => self.string_val(e),
                _ => self.dynamic(e),
            },
        }
    }

    /// Int-typed nodes that `int` would otherwise send back to `val`.
    fn int_direct(&self, e: &TExpr) -> IntFn {
        match &e.kind {
            TKind::Call(Func::Len, args) | TKind::Call(Func::Int, args) if !args.is_empty() => {
                let f = if let TKind::Call(f, _) = &e.kind {
                    *f
                } else {
                    Func::Len
                };
                let a = self.val(&args[0]);
                Box::new(move |cx| match interp::call(f, a(cx).into_owned()) {
                    Ok(Value::Int(i)) => Some(i),
                    _ => None,
                })
            }
            TKind::Bin(
                BinOp::Coalesce | BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem,
                l,
                r,
            ) if matches!(l.ty.base(), Type::Int | Type::Null) && is_int(&r.ty) => self.int(e),
            TKind::Neg(a) if is_int(&a.ty) => self.int(e),
            _ => {
                let d = self.dynamic(e);
                Box::new(move |cx| match d(cx).as_ref() {
                    Value::Int(i) => Some(*i),
                    _ => None,
                })
            }
        }
    }

    fn float_direct(&self, e: &TExpr) -> FloatFn {
        match &e.kind {
            TKind::Bin(BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem, l, r)
                if is_float_or_int(&l.ty) && is_float_or_int(&r.ty) =>
            {
                self.float(e)
            }
            TKind::Neg(a) if is_float_or_int(&a.ty) => self.float(e),
            TKind::Call(Func::Float, args) if !args.is_empty() => {
                let a = self.val(&args[0]);
                Box::new(
                    move |cx| match interp::call(Func::Float, a(cx).into_owned()) {
                        Ok(Value::Float(f)) => Some(f),
                        _ => None,
                    },
                )
            }
            _ => {
                let d = self.dynamic(e);
                Box::new(move |cx| match d(cx).as_ref() {
                    Value::Float(f) => Some(*f),
                    Value::Int(i) => Some(*i as f64),
                    _ => None,
                })
            }
        }
    }

    fn string_val(&self, e: &TExpr) -> ValFn {
        match &e.kind {
            TKind::Call(Func::Lower | Func::Upper, _) => {
                let f = self.str(e);
                Box::new(move |cx| {
                    Cow::Owned(f(cx).map_or(Value::Null, |s| Value::Str(s.into_owned())))
                })
            }
            TKind::Bin(BinOp::Add, l, r)
                if l.ty.base() == &Type::String && r.ty.base() == &Type::String =>
            {
                let (a, b) = (self.str(l), self.str(r));
                Box::new(move |cx| match (a(cx), b(cx)) {
                    (Some(x), Some(y)) => {
                        let mut s = String::with_capacity(x.len() + y.len());
                        s.push_str(&x);
                        s.push_str(&y);
                        Cow::Owned(Value::Str(s))
                    }
                    _ => Cow::Owned(Value::Null),
                })
            }
            _ => self.dynamic(e),
        }
    }

    /// Nodes whose operand types are only known at run time (metas, lists,
    /// times, IPs): value-level operators shared with the interpreter.
    fn dynamic(&self, e: &TExpr) -> ValFn {
        match &e.kind {
            TKind::Bin(BinOp::Coalesce, l, r) => {
                let (a, b) = (self.val(l), self.val(r));
                Box::new(move |cx| {
                    let x = a(cx);
                    if x.is_null() {
                        b(cx)
                    } else {
                        x
                    }
                })
            }
            TKind::Bin(op, l, r) => {
                let (op, a, b) = (*op, self.val(l), self.val(r));
                Box::new(move |cx| {
                    Cow::Owned(interp::binop(op, &a(cx), &b(cx)).unwrap_or(Value::Null))
                })
            }
            TKind::Neg(a) => {
                let a = self.val(a);
                Box::new(move |cx| {
                    Cow::Owned(match a(cx).as_ref() {
                        Value::Int(i) => i.checked_neg().map_or(Value::Null, Value::Int),
                        Value::Float(f) => Value::Float(-f),
                        Value::Duration(d) => d.checked_neg().map_or(Value::Null, Value::Duration),
                        _ => Value::Null,
                    })
                })
            }
            TKind::Call(f, args) if !args.is_empty() => {
                let (f, a) = (*f, self.val(&args[0]));
                Box::new(move |cx| {
                    Cow::Owned(interp::call(f, a(cx).into_owned()).unwrap_or(Value::Null))
                })
            }
            TKind::Flag(_)
            | TKind::Not(_)
            | TKind::And(..)
            | TKind::Or(..)
            | TKind::Matches(..) => {
                let c = self.cond(e);
                Box::new(move |cx| Cow::Owned(Value::Bool(c(cx))))
            }
            _ => Box::new(|_| Cow::Owned(Value::Null)),
        }
    }
}

fn cidr_test(s: usize, c: Cidr) -> CondFn {
    match c.addr {
        IpAddr::V4(n) => {
            let net = u32::from(n);
            let mask = if c.prefix == 0 {
                0
            } else {
                u32::MAX << (32 - c.prefix as u32)
            };
            Box::new(move |cx| match cx.record.get(s) {
                Some(Value::Ip(IpAddr::V4(a))) => u32::from(*a) & mask == net,
                Some(Value::Ip(ip)) => c.contains(*ip),
                _ => false,
            })
        }
        IpAddr::V6(_) => {
            Box::new(move |cx| matches!(cx.record.get(s), Some(Value::Ip(ip)) if c.contains(*ip)))
        }
    }
}

fn memchr_finder(needle: &str) -> Box<dyn Fn(&str) -> bool + Send + Sync> {
    let n = needle.to_string();
    Box::new(move |h| h.contains(n.as_str()))
}

/// Borrows when the text is ASCII with nothing to change.
fn lower(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        s
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

fn upper(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_lowercase()) {
        s
    } else {
        Cow::Owned(s.to_uppercase())
    }
}
