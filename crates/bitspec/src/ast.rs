//! The syntax tree, as written. Names are resolved by the checker.

use crate::diag::Span;
use crate::value::{Cidr, Value};
use std::net::IpAddr;

/// A name with its place in the source (possibly dotted: `client.ip`).
#[derive(Debug, Clone, PartialEq)]
pub struct Name {
    pub text: String,
    pub span: Span,
}

/// `http.request v2`
#[derive(Debug, Clone, PartialEq)]
pub struct SchemaRef {
    pub name: Name,
    pub version: u32,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Schema(SchemaDecl),
    Contract(ContractDecl),
    Pack(PackDecl),
    Playbook(Box<PlaybookDecl>),
    Migrate(MigrateDecl),
    Test(TestDecl),
}

#[derive(Debug, Clone, PartialEq)]
pub struct SchemaDecl {
    pub name: Name,
    pub version: u32,
    pub fields: Vec<FieldDecl>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FieldDecl {
    pub path: Name,
    pub ty: TypeExpr,
    pub pii: Option<Name>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TypeExprKind {
    Named(Name),
    List(Box<TypeExpr>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TypeExpr {
    pub kind: TypeExprKind,
    pub optional: bool,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContractDecl {
    pub name: Name,
    pub target: SchemaRef,
    pub assigns: Vec<Assign>,
    pub span: Span,
}

/// `field = expr`
#[derive(Debug, Clone, PartialEq)]
pub struct Assign {
    pub target: Name,
    pub value: Expr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PackDecl {
    pub name: Name,
    pub target: SchemaRef,
    pub stmts: Vec<PackStmt>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PackStmt {
    Flag { name: Name, expr: Expr },
    Meta { name: Name, expr: Expr },
    Redact { field: Name, action: ActionExpr },
    Route { target: Name, when: Expr },
}

/// `hmac`, `mask(keep_last: 4)`
#[derive(Debug, Clone, PartialEq)]
pub struct ActionExpr {
    pub name: Name,
    pub args: Vec<(Name, Expr)>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PlaybookDecl {
    pub name: Name,
    pub target: SchemaRef,
    pub when: Option<Condition>,
    pub signal: Option<SignalDecl>,
    pub span: Span,
}

/// `count(login_failed) by client.ip within 60s >= 5`
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub agg: Name,
    pub arg: Option<Expr>,
    pub by: Vec<Name>,
    pub within: Expr,
    pub op: BinOp,
    pub threshold: Expr,
    pub span: Span,
}

/// `signal "auth.bruteforce" severity high`
#[derive(Debug, Clone, PartialEq)]
pub struct SignalDecl {
    pub name: String,
    pub name_span: Span,
    pub severity: Name,
}

#[derive(Debug, Clone, PartialEq)]
pub struct MigrateDecl {
    pub schema: Name,
    pub from: u32,
    pub to: u32,
    pub assigns: Vec<Assign>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TestDecl {
    pub name: String,
    pub given: Option<Given>,
    pub expects: Vec<Expect>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Given {
    pub schema: SchemaRef,
    pub fields: Vec<(Name, Expr)>,
    pub span: Span,
}

/// `expect LHS OP RHS`
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    pub lhs: Name,
    pub op: BinOp,
    pub rhs: Expr,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Time(i64),
    Duration(i64),
    Ip(IpAddr),
    Cidr(Cidr),
}

impl Lit {
    pub fn to_value(&self) -> Value {
        match self {
            Lit::Null => Value::Null,
            Lit::Bool(b) => Value::Bool(*b),
            Lit::Int(i) => Value::Int(*i),
            Lit::Float(f) => Value::Float(*f),
            Lit::Str(s) => Value::Str(s.clone()),
            Lit::Time(t) => Value::Time(*t),
            Lit::Duration(d) => Value::Duration(*d),
            Lit::Ip(ip) => Value::Ip(*ip),
            Lit::Cidr(c) => Value::Cidr(*c),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Lit(Lit),
    Path(String),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Name, Vec<Expr>),
    If(Box<Expr>, Box<Expr>, Box<Expr>),
    List(Vec<Expr>),
    Matches(Box<Expr>, String, Span),
    /// Stands in for an expression that failed to parse.
    Error,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnOp {
    Not,
    Neg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    StartsWith,
    EndsWith,
    Contains,
    Coalesce,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Or => "or",
            BinOp::And => "and",
            BinOp::Eq => "==",
            BinOp::Ne => "!=",
            BinOp::Lt => "<",
            BinOp::Le => "<=",
            BinOp::Gt => ">",
            BinOp::Ge => ">=",
            BinOp::In => "in",
            BinOp::StartsWith => "starts_with",
            BinOp::EndsWith => "ends_with",
            BinOp::Contains => "contains",
            BinOp::Coalesce => "??",
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::Rem => "%",
        }
    }

    pub fn is_comparison(self) -> bool {
        matches!(
            self,
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge
        )
    }
}

/// Words that cannot name a field, flag or meta.
pub const RESERVED: &[&str] = &[
    "and",
    "or",
    "not",
    "in",
    "if",
    "then",
    "else",
    "true",
    "false",
    "null",
    "starts_with",
    "ends_with",
    "contains",
    "matches",
];
