//! The checked program: names resolved to slots and indexes, every
//! expression typed. Both evaluators (reference interpreter and compiled)
//! start from here.

use crate::ast::BinOp;
use crate::diag::Span;
use crate::value::{Type, Value};
use std::sync::Arc;

/// A whole checked bundle.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub schemas: Vec<Schema>,
    pub contracts: Vec<Contract>,
    pub packs: Vec<Pack>,
    pub playbooks: Vec<Playbook>,
    pub migrations: Vec<Migration>,
    pub tests: Vec<Test>,
}

impl Program {
    /// The schema `name vN`, or the newest version of `name` when
    /// `version` is `None`.
    pub fn schema(&self, name: &str, version: Option<u32>) -> Option<usize> {
        self.schemas
            .iter()
            .enumerate()
            .filter(|(_, s)| s.name == name && version.is_none_or(|v| v == s.version))
            .max_by_key(|(_, s)| s.version)
            .map(|(i, _)| i)
    }

    pub fn contract(&self, name: &str) -> Option<usize> {
        self.contracts.iter().position(|c| c.name == name)
    }

    /// Packs that evaluate records of schema `schema`, in declaration order.
    pub fn packs_on(&self, schema: usize) -> impl Iterator<Item = (usize, &Pack)> {
        self.packs
            .iter()
            .enumerate()
            .filter(move |(_, p)| p.schema == schema)
    }
}

/// A field of a schema. Dotted paths are nested objects in JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Field {
    pub path: String,
    pub ty: Type,
    pub pii: Option<String>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schema {
    pub name: String,
    pub version: u32,
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn slot(&self, path: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.path == path)
    }

    /// `http.request v2`
    pub fn id(&self) -> String {
        format!("{} v{}", self.name, self.version)
    }
}

/// App record (JSON) → schema record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Contract {
    pub name: String,
    pub schema: usize,
    /// One expression per assigned slot; slots not listed are optional and
    /// become null.
    pub assigns: Vec<(usize, TExpr)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RedactAction {
    Hmac,
    Mask { keep_last: u32 },
    Hash,
    Drop,
    Scan,
}

impl RedactAction {
    pub fn name(&self) -> &'static str {
        match self {
            RedactAction::Hmac => "hmac",
            RedactAction::Mask { .. } => "mask",
            RedactAction::Hash => "hash",
            RedactAction::Drop => "drop",
            RedactAction::Scan => "scan",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum RouteTarget {
    Spine,
    Lucius,
}

impl RouteTarget {
    pub fn name(&self) -> &'static str {
        match self {
            RouteTarget::Spine => "spine",
            RouteTarget::Lucius => "lucius",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FlagDef {
    pub name: String,
    pub expr: TExpr,
    /// Bit position from `ben.lock`; set by [`crate::lock`].
    pub bit: u32,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MetaDef {
    pub name: String,
    pub expr: TExpr,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub target: RouteTarget,
    pub when: TExpr,
}

/// A node of the pack's evaluation order.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Def {
    Flag(usize),
    Meta(usize),
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Pack {
    pub name: String,
    pub schema: usize,
    pub flags: Vec<FlagDef>,
    pub metas: Vec<MetaDef>,
    /// Flags and metas in dependency order (no cycles: checked).
    pub order: Vec<Def>,
    pub redactions: Vec<(usize, RedactAction)>,
    pub routes: Vec<Route>,
    /// Static cost bound of one evaluation (node count, regexes weighted).
    pub cost: u64,
}

impl Pack {
    /// Number of 64-bit words the pack's bitmask needs.
    pub fn words(&self) -> usize {
        self.flags
            .iter()
            .map(|f| f.bit as usize / 64 + 1)
            .max()
            .unwrap_or(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Aggregate {
    Count,
    Sum,
    Distinct,
    Min,
    Max,
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn name(&self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// `when AGG(ARG) by KEYS within WINDOW OP THRESHOLD` → `signal NAME`.
/// Flags in `arg` are [`TKind::Flag`] indexes into `flag_names`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Playbook {
    pub name: String,
    pub schema: usize,
    pub flag_names: Vec<String>,
    pub agg: Aggregate,
    pub arg: Option<TExpr>,
    pub by: Vec<usize>,
    pub window_ns: i64,
    pub op: BinOp,
    pub threshold: f64,
    pub signal: String,
    pub severity: Severity,
}

/// `migrate S vA -> vB`: every slot of the new schema comes from an
/// expression over the old record.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Migration {
    pub from: usize,
    pub to: usize,
    pub assigns: Vec<(usize, TExpr)>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ExpectTarget {
    Flags,
    Bits,
    Route,
    Meta(String),
    Field(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ExpectOp {
    Eq,
    Ne,
    Contains,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Expectation {
    pub target: ExpectTarget,
    pub op: ExpectOp,
    pub value: Value,
    /// The source text of the expectation, for failure reports.
    pub text: String,
    pub span: Span,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Test {
    pub name: String,
    pub schema: usize,
    /// A full record: one value per slot (null for omitted optionals).
    pub record: Vec<Value>,
    pub expects: Vec<Expectation>,
    pub span: Span,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Func {
    Lower,
    Upper,
    Len,
    Int,
    Float,
}

impl Func {
    pub fn name(&self) -> &'static str {
        match self {
            Func::Lower => "lower",
            Func::Upper => "upper",
            Func::Len => "len",
            Func::Int => "int",
            Func::Float => "float",
        }
    }

    pub const ALL: [Func; 5] = [Func::Lower, Func::Upper, Func::Len, Func::Int, Func::Float];
}

/// A typed expression.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct TExpr {
    pub kind: TKind,
    pub ty: Type,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum TKind {
    Const(Value),
    Field(usize),
    /// A contract input path: `in.customer.email` → `["customer", "email"]`.
    Input(Vec<String>),
    Flag(usize),
    Meta(usize),
    Not(Box<TExpr>),
    Neg(Box<TExpr>),
    And(Box<TExpr>, Box<TExpr>),
    Or(Box<TExpr>, Box<TExpr>),
    /// Any other binary operator (never `and` / `or`).
    Bin(BinOp, Box<TExpr>, Box<TExpr>),
    Call(Func, Vec<TExpr>),
    If(Box<TExpr>, Box<TExpr>, Box<TExpr>),
    List(Vec<TExpr>),
    Matches(Box<TExpr>, #[serde(with = "regex_serde")] Arc<regex::Regex>),
}

impl TExpr {
    pub fn new(kind: TKind, ty: Type) -> Self {
        TExpr { kind, ty }
    }

    pub fn constant(v: Value, ty: Type) -> Self {
        TExpr {
            kind: TKind::Const(v),
            ty,
        }
    }

    /// Static cost: one per node, regexes and string scans weigh more.
    pub fn cost(&self) -> u64 {
        let kids: u64 = self.children().map(TExpr::cost).sum();
        let own = match &self.kind {
            TKind::Matches(..) => 16,
            TKind::Bin(BinOp::Contains | BinOp::StartsWith | BinOp::EndsWith, ..) => 4,
            TKind::Call(Func::Lower | Func::Upper, _) => 4,
            _ => 1,
        };
        own + kids
    }

    /// Direct sub-expressions.
    pub fn children(&self) -> Box<dyn Iterator<Item = &TExpr> + '_> {
        match &self.kind {
            TKind::Const(_)
            | TKind::Field(_)
            | TKind::Input(_)
            | TKind::Flag(_)
            | TKind::Meta(_) => Box::new(std::iter::empty()),
            TKind::Not(a) | TKind::Neg(a) | TKind::Matches(a, _) => Box::new(std::iter::once(&**a)),
            TKind::And(a, b) | TKind::Or(a, b) | TKind::Bin(_, a, b) => {
                Box::new([&**a, &**b].into_iter())
            }
            TKind::If(a, b, c) => Box::new([&**a, &**b, &**c].into_iter()),
            TKind::Call(_, xs) | TKind::List(xs) => Box::new(xs.iter()),
        }
    }
}

/// Regexes travel as their pattern and are compiled again on load (with
/// the same size limit the checker uses).
mod regex_serde {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::sync::Arc;

    pub fn serialize<S: Serializer>(re: &Arc<regex::Regex>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(re.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<regex::Regex>, D::Error> {
        let pat = String::deserialize(d)?;
        regex::RegexBuilder::new(&pat)
            .size_limit(1 << 20)
            .build()
            .map(Arc::new)
            .map_err(serde::de::Error::custom)
    }
}
