//! Name resolution and type checking: AST → [`Program`].
//!
//! Every error names the place, what was expected, and where a name was
//! misspelled, the nearest declared one.

use crate::ast::{self, BinOp, ExprKind, Item, Lit, UnOp, RESERVED};
use crate::diag::{codes, did_you_mean, Diagnostic, Span};
use crate::interp;
use crate::ir::*;
use crate::value::{parse_duration, parse_time, Cidr, Type, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// PII kinds a schema field may declare with `pii(KIND)`.
pub const PII_KINDS: &[&str] = &[
    "email",
    "card",
    "iban",
    "us_ssn",
    "phone",
    "ip",
    "ipv4",
    "ipv6",
    "jwt",
    "bearer_token",
    "aws_access_key",
    "aws_secret_key",
    "private_key",
    "text",
    "name",
    "address",
    "birthdate",
    "secret",
    "other",
];

/// Limits the checker enforces; named settings, not magic numbers.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Largest static cost of one pack evaluation.
    pub max_pack_cost: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_pack_cost: 100_000,
        }
    }
}

/// Checks parsed files into one program. The program is meaningful only when
/// no error diagnostic is returned.
pub fn check(files: &[ast::File], opts: CheckOptions) -> (Program, Vec<Diagnostic>) {
    let mut c = Checker {
        prog: Program::default(),
        diags: Vec::new(),
        deps: Vec::new(),
    };
    let items: Vec<&Item> = files.iter().flat_map(|f| f.items.iter()).collect();
    for it in &items {
        if let Item::Schema(s) = it {
            c.schema(s);
        }
    }
    for it in &items {
        if let Item::Contract(x) = it {
            c.contract(x);
        }
    }
    for it in &items {
        if let Item::Pack(x) = it {
            c.pack(x, opts);
        }
    }
    c.cross_pack_flags(&items);
    for it in &items {
        match it {
            Item::Playbook(x) => c.playbook(x),
            Item::Migrate(x) => c.migration(x),
            _ => {}
        }
    }
    for it in &items {
        if let Item::Test(x) = it {
            c.test(x);
        }
    }
    // Packs run in name order everywhere (here and in components that load
    // them from artifacts), so evaluation never depends on file order.
    c.prog.packs.sort_by(|a, b| a.name.cmp(&b.name));
    (c.prog, c.diags)
}

enum Scope<'a> {
    Pack {
        schema: &'a Schema,
        flags: &'a HashMap<String, usize>,
        metas: &'a HashMap<String, usize>,
    },
    Contract,
    Migration {
        schema: &'a Schema,
    },
    Playbook {
        schema: &'a Schema,
        flags: &'a [String],
    },
    Const,
}

struct Checker {
    prog: Program,
    diags: Vec<Diagnostic>,
    /// Flags and metas the expression being checked refers to.
    deps: Vec<Def>,
}

fn err_expr() -> TExpr {
    TExpr::constant(Value::Null, Type::Dyn)
}

fn is_bool(t: &Type) -> bool {
    matches!(t.base(), Type::Bool | Type::Dyn | Type::Null)
}

/// The common type of two branches or list items.
fn unify(a: &Type, b: &Type) -> Option<Type> {
    let opt = a.is_optional() || b.is_optional();
    let wrap = |t: Type| if opt { t.optional() } else { t };
    match (a.base(), b.base()) {
        (Type::Dyn, _) | (_, Type::Dyn) => Some(Type::Dyn),
        (Type::Null, t) | (t, Type::Null) => Some(t.clone().optional()),
        (x, y) if x == y => Some(wrap(x.clone())),
        (Type::Int, Type::Float) | (Type::Float, Type::Int) => Some(wrap(Type::Float)),
        (Type::List(x), Type::List(y)) => unify(x, y).map(|t| wrap(Type::List(Box::new(t)))),
        _ => None,
    }
}

/// Converts a string constant to the type it is compared with, at build time.
fn coerce_const(e: &mut TExpr, want: &Type) -> Result<(), String> {
    let TKind::Const(Value::Str(s)) = &e.kind else {
        return Ok(());
    };
    let v = match want.base() {
        Type::Ip => s
            .parse()
            .map(Value::Ip)
            .map_err(|_| format!("\"{s}\" is not an IP address"))?,
        Type::Cidr => Cidr::parse(s)
            .map(Value::Cidr)
            .ok_or_else(|| format!("\"{s}\" is not a CIDR like 10.0.0.0/8 or 2001:db8::/32"))?,
        Type::Time => parse_time(s)
            .map(Value::Time)
            .ok_or_else(|| format!("\"{s}\" is not an RFC 3339 time"))?,
        Type::Duration => parse_duration(s)
            .map(Value::Duration)
            .ok_or_else(|| format!("\"{s}\" is not a duration like 60s"))?,
        _ => return Ok(()),
    };
    e.ty = want.base().clone();
    e.kind = TKind::Const(v);
    Ok(())
}

impl Checker {
    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn schema_ref(&mut self, r: &ast::SchemaRef) -> Option<usize> {
        if let Some(i) = self.prog.schema(&r.name.text, Some(r.version)) {
            return Some(i);
        }
        let versions: Vec<String> = self
            .prog
            .schemas
            .iter()
            .filter(|s| s.name == r.name.text)
            .map(|s| format!("v{}", s.version))
            .collect();
        let d = if versions.is_empty() {
            let names: Vec<&str> = self.prog.schemas.iter().map(|s| s.name.as_str()).collect();
            Diagnostic::error(
                codes::UNKNOWN_SCHEMA,
                r.span,
                format!("unknown schema `{}`", r.name.text),
            )
            .label("no schema has this name")
            .help(did_you_mean(&r.name.text, names).unwrap_or_else(|| {
                format!(
                    "declare it: `schema {} v{} {{ … }}`",
                    r.name.text, r.version
                )
            }))
        } else {
            Diagnostic::error(
                codes::UNKNOWN_SCHEMA,
                r.span,
                format!("schema `{}` has no version v{}", r.name.text, r.version),
            )
            .label("unknown version")
            .help(format!("declared versions: {}", versions.join(", ")))
        };
        self.error(d);
        None
    }

    /// Reports a second declaration of `what` named `name`; true if it is one.
    fn refuse_duplicate(&mut self, what: &str, name: &ast::Name, exists: bool) -> bool {
        if exists {
            self.error(
                Diagnostic::error(
                    codes::DUPLICATE,
                    name.span,
                    format!("{what} `{}` is declared twice", name.text),
                )
                .label("second declaration"),
            );
        }
        exists
    }

    fn check_name(&mut self, n: &ast::Name, what: &str) {
        for seg in n.text.split('.') {
            if RESERVED.contains(&seg) || (what != "field" && seg.contains('.')) {
                self.error(
                    Diagnostic::error(
                        codes::RESERVED,
                        n.span,
                        format!("`{seg}` is a reserved word and cannot name a {what}"),
                    )
                    .label("reserved")
                    .help(format!("pick another name, e.g. `{seg}_`")),
                );
                return;
            }
        }
        if what != "field" && n.text.contains('.') {
            self.error(
                Diagnostic::error(
                    codes::RESERVED,
                    n.span,
                    format!("a {what} name cannot contain `.`"),
                )
                .label("dotted name")
                .help(format!("use `_`: `{}`", n.text.replace('.', "_"))),
            );
        }
    }

    fn type_expr(&mut self, t: &ast::TypeExpr) -> Type {
        let base = match &t.kind {
            ast::TypeExprKind::List(inner) => Type::List(Box::new(self.type_expr(inner))),
            ast::TypeExprKind::Named(n) => match Type::from_name(&n.text) {
                Some(t) => t,
                None => {
                    self.error(
                        Diagnostic::error(
                            codes::UNKNOWN_TYPE,
                            n.span,
                            format!("unknown type `{}`", n.text),
                        )
                        .label("not a type")
                        .help(
                            did_you_mean(&n.text, Type::NAMES).unwrap_or_else(|| {
                                format!("types are: {}", Type::NAMES.join(", "))
                            }),
                        ),
                    );
                    Type::Dyn
                }
            },
        };
        if t.optional {
            base.optional()
        } else {
            base
        }
    }

    fn schema(&mut self, s: &ast::SchemaDecl) {
        if self.prog.schema(&s.name.text, Some(s.version)).is_some() {
            self.error(
                Diagnostic::error(
                    codes::DUPLICATE,
                    s.name.span,
                    format!("schema `{} v{}` is declared twice", s.name.text, s.version),
                )
                .label("second declaration")
                .help("give the new shape a new version, e.g. `v2`, and add a `migrate` block"),
            );
            return;
        }
        let mut fields: Vec<Field> = Vec::new();
        for f in &s.fields {
            self.check_name(&f.path, "field");
            if fields.iter().any(|x| x.path == f.path.text) {
                self.error(
                    Diagnostic::error(
                        codes::DUPLICATE,
                        f.path.span,
                        format!("field `{}` is declared twice", f.path.text),
                    )
                    .label("second declaration"),
                );
                continue;
            }
            if let Some(other) = fields.iter().find(|x| {
                x.path.starts_with(&format!("{}.", f.path.text))
                    || f.path.text.starts_with(&format!("{}.", x.path))
            }) {
                self.error(
                    Diagnostic::error(
                        codes::DUPLICATE,
                        f.path.span,
                        format!("field `{}` overlaps field `{}`", f.path.text, other.path),
                    )
                    .label("a field cannot be both a value and an object")
                    .help("rename one of them"),
                );
                continue;
            }
            if f.path.text.split('.').next() == Some("meta") {
                self.error(
                    Diagnostic::error(
                        codes::RESERVED,
                        f.path.span,
                        "a field cannot start with `meta.`",
                    )
                    .label("`meta.` names a pack's metadata")
                    .help("rename the field"),
                );
            }
            let ty = self.type_expr(&f.ty);
            let pii = f.pii.as_ref().map(|k| {
                if !PII_KINDS.contains(&k.text.as_str()) {
                    self.error(
                        Diagnostic::error(
                            codes::UNKNOWN_PII,
                            k.span,
                            format!("unknown PII kind `{}`", k.text),
                        )
                        .label("not a PII kind")
                        .help(
                            did_you_mean(&k.text, PII_KINDS.iter().copied())
                                .unwrap_or_else(|| format!("kinds: {}", PII_KINDS.join(", "))),
                        ),
                    );
                }
                k.text.clone()
            });
            fields.push(Field {
                path: f.path.text.clone(),
                ty,
                pii,
            });
        }
        self.prog.schemas.push(Schema {
            name: s.name.text.clone(),
            version: s.version,
            fields,
        });
    }

    fn field_slot(&mut self, schema: &Schema, n: &ast::Name) -> Option<usize> {
        if let Some(i) = schema.slot(&n.text) {
            return Some(i);
        }
        self.error(
            Diagnostic::error(
                codes::UNKNOWN_FIELD,
                n.span,
                format!("unknown field `{}` in schema {}", n.text, schema.id()),
            )
            .label(format!("not a field of {}", schema.id()))
            .help_opt(did_you_mean(
                &n.text,
                schema.fields.iter().map(|f| f.path.as_str()),
            )),
        );
        None
    }

    /// Checks a value assigned to a field, converting string constants.
    fn assignable(&mut self, field: &Field, e: &mut TExpr, span: Span) {
        if let Err(msg) = coerce_const(e, &field.ty) {
            self.error(
                Diagnostic::error(codes::TYPE_MISMATCH, span, msg)
                    .label(format!("expected {}", field.ty)),
            );
            return;
        }
        let ok = match (field.ty.base(), e.ty.base()) {
            (_, Type::Dyn) => true,
            (_, Type::Null) => field.ty.is_optional(),
            (Type::Float, Type::Int) => true,
            (a, b) => a == b,
        };
        if !ok {
            self.error(
                Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    span,
                    format!(
                        "field `{}` is {}, but this expression is {}",
                        field.path, field.ty, e.ty
                    ),
                )
                .label(format!("expected {}", field.ty))
                .help_opt(conversion_help(&field.ty, &e.ty)),
            );
        }
    }

    fn contract(&mut self, x: &ast::ContractDecl) {
        self.check_name(&x.name, "contract");
        let exists = self.prog.contract(&x.name.text).is_some();
        if self.refuse_duplicate("contract", &x.name, exists) {
            return;
        }
        let Some(si) = self.schema_ref(&x.target) else {
            return;
        };
        let schema = self.prog.schemas[si].clone();
        let mut assigns: Vec<(usize, TExpr)> = Vec::new();
        for a in &x.assigns {
            let Some(slot) = self.field_slot(&schema, &a.target) else {
                continue;
            };
            if assigns.iter().any(|(s, _)| *s == slot) {
                self.error(
                    Diagnostic::error(
                        codes::DUPLICATE,
                        a.target.span,
                        format!("field `{}` is assigned twice", a.target.text),
                    )
                    .label("second assignment"),
                );
                continue;
            }
            let mut e = self.expr(&a.value, &Scope::Contract);
            self.assignable(&schema.fields[slot], &mut e, a.value.span);
            assigns.push((slot, e));
        }
        let missing: Vec<&str> = schema
            .fields
            .iter()
            .enumerate()
            .filter(|(i, f)| !f.ty.is_optional() && !assigns.iter().any(|(s, _)| s == i))
            .map(|(_, f)| f.path.as_str())
            .collect();
        if !missing.is_empty() {
            self.error(
                Diagnostic::error(
                    codes::MISSING_FIELD,
                    x.name.span,
                    format!(
                        "contract `{}` does not fill required field{} {}",
                        x.name.text,
                        if missing.len() > 1 { "s" } else { "" },
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .label("incomplete contract")
                .help(format!(
                    "add `{} = in.…` (or make the field optional with `?` in the schema)",
                    missing[0]
                )),
            );
        }
        self.prog.contracts.push(Contract {
            name: x.name.text.clone(),
            schema: si,
            assigns,
        });
    }

    fn pack(&mut self, x: &ast::PackDecl, opts: CheckOptions) {
        self.check_name(&x.name, "pack");
        let exists = self.prog.packs.iter().any(|p| p.name == x.name.text);
        if self.refuse_duplicate("pack", &x.name, exists) {
            return;
        }
        let Some(si) = self.schema_ref(&x.target) else {
            return;
        };
        let schema = self.prog.schemas[si].clone();
        // Names first, so definitions may refer to later ones.
        let mut flags: HashMap<String, usize> = HashMap::new();
        let mut metas: HashMap<String, usize> = HashMap::new();
        let mut flag_spans = Vec::new();
        let mut meta_spans = Vec::new();
        for st in &x.stmts {
            let (name, map, spans, what) = match st {
                ast::PackStmt::Flag { name, .. } => (name, &mut flags, &mut flag_spans, "flag"),
                ast::PackStmt::Meta { name, .. } => (name, &mut metas, &mut meta_spans, "meta"),
                _ => continue,
            };
            if map.contains_key(&name.text) {
                let d = Diagnostic::error(
                    codes::DUPLICATE,
                    name.span,
                    format!(
                        "{what} `{}` is declared twice in pack `{}`",
                        name.text, x.name.text
                    ),
                )
                .label("second declaration");
                self.diags.push(d);
                continue;
            }
            map.insert(name.text.clone(), spans.len());
            spans.push(name.clone());
        }
        for n in flag_spans.iter().chain(meta_spans.iter()) {
            self.check_name(n, "flag or meta");
        }
        for n in &flag_spans {
            if schema.slot(&n.text).is_some() {
                self.error(
                    Diagnostic::error(
                        codes::AMBIGUOUS,
                        n.span,
                        format!(
                            "flag `{}` has the same name as a field of {}",
                            n.text,
                            schema.id()
                        ),
                    )
                    .label("ambiguous name")
                    .help("rename the flag, e.g. with an `is_` prefix"),
                );
            }
        }
        let scope = Scope::Pack {
            schema: &schema,
            flags: &flags,
            metas: &metas,
        };
        let mut flag_defs: Vec<Option<(FlagDef, Vec<Def>, Span)>> = vec![None; flag_spans.len()];
        let mut meta_defs: Vec<Option<(MetaDef, Vec<Def>, Span)>> = vec![None; meta_spans.len()];
        let mut redactions: Vec<(usize, RedactAction)> = Vec::new();
        let mut routes = Vec::new();
        for st in &x.stmts {
            match st {
                ast::PackStmt::Flag { name, expr } => {
                    self.deps.clear();
                    let e = self.expr(expr, &scope);
                    let deps = std::mem::take(&mut self.deps);
                    if !is_bool(&e.ty) {
                        self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                expr.span,
                                format!(
                                    "flag `{}` must be a condition (bool), but this is {}",
                                    name.text, e.ty
                                ),
                            )
                            .label("expected bool")
                            .help(
                                "compare it, e.g. `status >= 500`, or declare it as `meta` instead",
                            ),
                        );
                    }
                    if let Some(&i) = flags.get(&name.text) {
                        if flag_defs[i].is_none() && flag_spans[i].span == name.span {
                            flag_defs[i] = Some((
                                FlagDef {
                                    name: name.text.clone(),
                                    expr: e,
                                    bit: i as u32,
                                },
                                deps,
                                name.span,
                            ));
                        }
                    }
                }
                ast::PackStmt::Meta { name, expr } => {
                    self.deps.clear();
                    let e = self.expr(expr, &scope);
                    let deps = std::mem::take(&mut self.deps);
                    if let Some(&i) = metas.get(&name.text) {
                        if meta_defs[i].is_none() && meta_spans[i].span == name.span {
                            meta_defs[i] = Some((
                                MetaDef {
                                    name: name.text.clone(),
                                    expr: e,
                                },
                                deps,
                                name.span,
                            ));
                        }
                    }
                }
                ast::PackStmt::Redact { field, action } => {
                    let Some(slot) = self.field_slot(&schema, field) else {
                        continue;
                    };
                    let Some(act) = self.action(action) else {
                        continue;
                    };
                    if redactions.iter().any(|(s, _)| *s == slot) {
                        self.error(
                            Diagnostic::error(
                                codes::DUPLICATE,
                                field.span,
                                format!("field `{}` is redacted twice", field.text),
                            )
                            .label("second redaction")
                            .help("keep one `redact` clause per field"),
                        );
                        continue;
                    }
                    redactions.push((slot, act));
                }
                ast::PackStmt::Route { target, when } => {
                    let t = match target.text.as_str() {
                        "lucius" => Some(RouteTarget::Lucius),
                        "spine" => Some(RouteTarget::Spine),
                        _ => {
                            self.error(
                                Diagnostic::error(
                                    codes::UNKNOWN_ROUTE,
                                    target.span,
                                    format!("unknown route target `{}`", target.text),
                                )
                                .label("expected `lucius` or `spine`")
                                .help_opt(did_you_mean(&target.text, ["lucius", "spine"])),
                            );
                            None
                        }
                    };
                    self.deps.clear();
                    let e = self.expr(when, &scope);
                    self.deps.clear();
                    if !is_bool(&e.ty) {
                        self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                when.span,
                                format!("a route condition must be bool, but this is {}", e.ty),
                            )
                            .label("expected bool"),
                        );
                    }
                    if let Some(target) = t {
                        routes.push(Route { target, when: e });
                    }
                }
            }
        }
        for (slot, f) in schema.fields.iter().enumerate() {
            if f.pii.is_some() && !redactions.iter().any(|(s, _)| *s == slot) {
                self.error(
                    Diagnostic::error(
                        codes::NOT_REDACTED,
                        x.name.span,
                        format!(
                            "pack `{}` does not redact `{}`, which {} declares pii({})",
                            x.name.text,
                            f.path,
                            schema.id(),
                            f.pii.as_deref().unwrap_or("")
                        ),
                    )
                    .label("PII would leave the spine unredacted")
                    .help(format!(
                        "add `redact {} hmac` (or mask / hash / drop / scan)",
                        f.path
                    )),
                );
            }
        }
        for (m, _, span) in meta_defs.iter().flatten() {
            let mut leaks = Vec::new();
            value_pii(&m.expr, &schema, &mut leaks);
            if let Some(field) = leaks.first() {
                self.error(
                    Diagnostic::error(codes::NOT_REDACTED, *span, format!("meta `{}` would carry the value of `{field}`, which is PII", m.name))
                        .label("metadata is not redacted")
                        .help(format!("derive something that is not the value itself, e.g. `len({field})`, or use the value in a condition")),
                );
            }
        }
        let order = self.order(&x.name.text, &flag_defs, &meta_defs);
        let flags: Vec<FlagDef> = flag_defs.into_iter().flatten().map(|(d, _, _)| d).collect();
        let metas: Vec<MetaDef> = meta_defs.into_iter().flatten().map(|(d, _, _)| d).collect();
        let cost = flags.iter().map(|f| f.expr.cost()).sum::<u64>()
            + metas.iter().map(|m| m.expr.cost()).sum::<u64>()
            + routes.iter().map(|r| r.when.cost()).sum::<u64>();
        if cost > opts.max_pack_cost {
            self.error(
                Diagnostic::error(
                    codes::COST,
                    x.name.span,
                    format!(
                        "pack `{}` costs {cost} units per record, over the limit of {}",
                        x.name.text, opts.max_pack_cost
                    ),
                )
                .label("too expensive")
                .help("split it into several packs or raise [limits] max_pack_cost in ben.toml"),
            );
        }
        self.prog.packs.push(Pack {
            name: x.name.text.clone(),
            schema: si,
            flags,
            metas,
            order,
            redactions,
            routes,
            cost,
        });
    }

    /// Topological order of flags and metas; reports cycles.
    fn order(
        &mut self,
        pack: &str,
        flags: &[Option<(FlagDef, Vec<Def>, Span)>],
        metas: &[Option<(MetaDef, Vec<Def>, Span)>],
    ) -> Vec<Def> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let nodes: Vec<Def> = (0..flags.len())
            .map(Def::Flag)
            .chain((0..metas.len()).map(Def::Meta))
            .collect();
        let idx = |d: Def| match d {
            Def::Flag(i) => i,
            Def::Meta(i) => flags.len() + i,
        };
        let deps_of = |d: Def| -> &[Def] {
            match d {
                Def::Flag(i) => flags[i].as_ref().map_or(&[], |x| &x.1),
                Def::Meta(i) => metas[i].as_ref().map_or(&[], |x| &x.1),
            }
        };
        let name_of = |d: Def| -> (String, Span) {
            match d {
                Def::Flag(i) => flags[i]
                    .as_ref()
                    .map_or((String::new(), Span::default()), |x| {
                        (x.0.name.clone(), x.2)
                    }),
                Def::Meta(i) => metas[i]
                    .as_ref()
                    .map_or((String::new(), Span::default()), |x| {
                        (format!("meta.{}", x.0.name), x.2)
                    }),
            }
        };
        let mut mark = vec![Mark::New; nodes.len()];
        let mut order = Vec::new();
        let mut reported = false;
        for &start in &nodes {
            if mark[idx(start)] != Mark::New {
                continue;
            }
            // Iterative DFS with an explicit path for cycle reporting.
            let mut stack: Vec<(Def, usize)> = vec![(start, 0)];
            mark[idx(start)] = Mark::Active;
            while let Some(&mut (node, ref mut next)) = stack.last_mut() {
                let deps = deps_of(node);
                if *next < deps.len() {
                    let d = deps[*next];
                    *next += 1;
                    match mark[idx(d)] {
                        Mark::New => {
                            mark[idx(d)] = Mark::Active;
                            stack.push((d, 0));
                        }
                        Mark::Active if !reported => {
                            reported = true;
                            let pos = stack.iter().position(|(n, _)| *n == d).unwrap_or(0);
                            let mut path: Vec<String> =
                                stack[pos..].iter().map(|(n, _)| name_of(*n).0).collect();
                            path.push(name_of(d).0);
                            let (_, span) = name_of(d);
                            self.error(
                                Diagnostic::error(codes::FLAG_CYCLE, span, format!("cycle in pack `{pack}`: {}", path.join(" -> ")))
                                    .label("defined in terms of itself")
                                    .help("a flag or meta may use others only if no chain leads back to it"),
                            );
                        }
                        _ => {}
                    }
                } else {
                    mark[idx(node)] = Mark::Done;
                    order.push(node);
                    stack.pop();
                }
            }
        }
        // Flags/metas that failed to check are absent from the def lists;
        // renumber to the compacted indexes.
        let flag_map: Vec<Option<usize>> = compact_index(flags.iter().map(Option::is_some));
        let meta_map: Vec<Option<usize>> = compact_index(metas.iter().map(Option::is_some));
        order
            .into_iter()
            .filter_map(|d| match d {
                Def::Flag(i) => flag_map[i].map(Def::Flag),
                Def::Meta(i) => meta_map[i].map(Def::Meta),
            })
            .collect()
    }

    fn cross_pack_flags(&mut self, items: &[&Item]) {
        let mut seen: HashMap<(usize, String), String> = HashMap::new();
        let mut pi = 0;
        for it in items {
            let Item::Pack(x) = it else { continue };
            let Some(p) = self.prog.packs.get(pi) else {
                break;
            };
            if p.name != x.name.text {
                continue;
            }
            pi += 1;
            for st in &x.stmts {
                if let ast::PackStmt::Flag { name, .. } = st {
                    let key = (p.schema, name.text.clone());
                    if let Some(other) = seen.get(&key) {
                        if *other != p.name {
                            let d = Diagnostic::error(
                                codes::DUPLICATE,
                                name.span,
                                format!("flag `{}` is also declared by pack `{other}` on the same schema", name.text),
                            )
                            .label("flag names must be unique per schema")
                            .help("rename one of them; playbooks and tests refer to flags by name");
                            self.diags.push(d);
                        }
                    } else {
                        seen.insert(key, p.name.clone());
                    }
                }
            }
        }
    }

    fn action(&mut self, a: &ast::ActionExpr) -> Option<RedactAction> {
        const ACTIONS: [&str; 5] = ["hmac", "mask", "hash", "drop", "scan"];
        let act = match a.name.text.as_str() {
            "hmac" => RedactAction::Hmac,
            "hash" => RedactAction::Hash,
            "drop" => RedactAction::Drop,
            "scan" => RedactAction::Scan,
            "mask" => {
                let mut keep = None;
                for (k, v) in &a.args {
                    if k.text != "keep_last" {
                        self.error(
                            Diagnostic::error(
                                codes::BAD_REDACT,
                                k.span,
                                format!("`mask` has no argument `{}`", k.text),
                            )
                            .label("unknown argument")
                            .help("write `mask(keep_last: 4)`"),
                        );
                        return None;
                    }
                    match &v.kind {
                        ExprKind::Lit(Lit::Int(n)) if (0..=1024).contains(n) => {
                            keep = Some(*n as u32)
                        }
                        _ => {
                            self.error(
                                Diagnostic::error(
                                    codes::BAD_REDACT,
                                    v.span,
                                    "`keep_last` must be a whole number from 0 to 1024",
                                )
                                .label("expected a number"),
                            );
                            return None;
                        }
                    }
                }
                match keep {
                    Some(keep_last) => RedactAction::Mask { keep_last },
                    None => {
                        self.error(
                            Diagnostic::error(
                                codes::BAD_REDACT,
                                a.span,
                                "`mask` needs `keep_last`",
                            )
                            .label("how many trailing characters stay visible?")
                            .help(
                                "write `mask(keep_last: 4)`; `mask(keep_last: 0)` hides everything",
                            ),
                        );
                        return None;
                    }
                }
            }
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::UNKNOWN_ACTION,
                        a.name.span,
                        format!("unknown redaction action `{}`", a.name.text),
                    )
                    .label("not a redaction action")
                    .help(did_you_mean(&a.name.text, ACTIONS).unwrap_or_else(|| {
                        "actions: hmac, mask(keep_last: n), hash, drop, scan".into()
                    })),
                );
                return None;
            }
        };
        if !matches!(act, RedactAction::Mask { .. }) && !a.args.is_empty() {
            self.error(
                Diagnostic::error(
                    codes::BAD_REDACT,
                    a.span,
                    format!("`{}` takes no arguments", a.name.text),
                )
                .label("unexpected arguments"),
            );
            return None;
        }
        Some(act)
    }

    fn playbook(&mut self, x: &ast::PlaybookDecl) {
        self.check_name(&x.name, "playbook");
        let exists = self.prog.playbooks.iter().any(|p| p.name == x.name.text);
        if self.refuse_duplicate("playbook", &x.name, exists) {
            return;
        }
        let Some(si) = self.schema_ref(&x.target) else {
            return;
        };
        let schema = self.prog.schemas[si].clone();
        let flag_names: Vec<String> = self
            .prog
            .packs_on(si)
            .flat_map(|(_, p)| p.flags.iter().map(|f| f.name.clone()))
            .collect();
        let (Some(c), Some(sig)) = (&x.when, &x.signal) else {
            let what = if x.when.is_none() {
                "a `when` condition"
            } else {
                "a `signal`"
            };
            self.error(
                Diagnostic::error(codes::BAD_PLAYBOOK, x.name.span, format!("playbook `{}` needs {what}", x.name.text))
                    .label("incomplete playbook")
                    .help("write `when count(FLAG) by FIELD within 60s >= 5` and `signal \"name\" severity high`"),
            );
            return;
        };
        let agg = match c.agg.text.as_str() {
            "count" => Aggregate::Count,
            "sum" => Aggregate::Sum,
            "distinct" => Aggregate::Distinct,
            "min" => Aggregate::Min,
            "max" => Aggregate::Max,
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::BAD_PLAYBOOK,
                        c.agg.span,
                        format!("unknown aggregate `{}`", c.agg.text),
                    )
                    .label("not an aggregate")
                    .help(
                        did_you_mean(&c.agg.text, ["count", "sum", "distinct", "min", "max"])
                            .unwrap_or_else(|| "aggregates: count, sum, distinct, min, max".into()),
                    ),
                );
                return;
            }
        };
        let scope = Scope::Playbook {
            schema: &schema,
            flags: &flag_names,
        };
        let arg = c.arg.as_ref().map(|a| (self.expr(a, &scope), a.span));
        self.deps.clear();
        match (&agg, &arg) {
            (Aggregate::Count, Some((e, sp))) if !is_bool(&e.ty) => self.error(
                Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    *sp,
                    format!(
                        "count(…) takes a condition (a flag or a bool expression), but this is {}",
                        e.ty
                    ),
                )
                .label("expected bool")
                .help("to count distinct values use distinct(…)"),
            ),
            (Aggregate::Sum | Aggregate::Min | Aggregate::Max, Some((e, sp)))
                if !e.ty.is_numeric() && e.ty.base() != &Type::Dyn =>
            {
                self.error(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        *sp,
                        format!("{}(…) needs a number, but this is {}", c.agg.text, e.ty),
                    )
                    .label("expected int or float"),
                )
            }
            (Aggregate::Sum | Aggregate::Min | Aggregate::Max | Aggregate::Distinct, None) => self
                .error(
                    Diagnostic::error(
                        codes::BAD_PLAYBOOK,
                        c.agg.span,
                        format!("{}(…) needs an argument", c.agg.text),
                    )
                    .label("missing argument"),
                ),
            _ => {}
        }
        let mut by = Vec::new();
        for b in &c.by {
            if let Some(s) = self.field_slot(&schema, b) {
                by.push(s);
            }
        }
        let window_ns = match &c.within.kind {
            ExprKind::Lit(Lit::Duration(d)) if *d > 0 => *d,
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::BAD_PLAYBOOK,
                        c.within.span,
                        "the window must be a positive duration",
                    )
                    .label("expected a duration like 60s or 5m"),
                );
                return;
            }
        };
        let threshold = match &c.threshold.kind {
            ExprKind::Lit(Lit::Int(n)) => *n as f64,
            ExprKind::Lit(Lit::Float(f)) => *f,
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::BAD_PLAYBOOK,
                        c.threshold.span,
                        "the threshold must be a number",
                    )
                    .label("expected a number"),
                );
                return;
            }
        };
        let severity = match sig.severity.text.as_str() {
            "low" => Severity::Low,
            "medium" => Severity::Medium,
            "high" => Severity::High,
            "critical" => Severity::Critical,
            _ => {
                self.error(
                    Diagnostic::error(
                        codes::BAD_PLAYBOOK,
                        sig.severity.span,
                        format!("unknown severity `{}`", sig.severity.text),
                    )
                    .label("expected low, medium, high or critical")
                    .help_opt(did_you_mean(
                        &sig.severity.text,
                        ["low", "medium", "high", "critical"],
                    )),
                );
                return;
            }
        };
        if sig.name.is_empty() {
            self.error(
                Diagnostic::error(codes::BAD_PLAYBOOK, sig.name_span, "a signal needs a name")
                    .label("empty name"),
            );
            return;
        }
        self.prog.playbooks.push(Playbook {
            name: x.name.text.clone(),
            schema: si,
            flag_names,
            agg,
            arg: arg.map(|(e, _)| e),
            by,
            window_ns,
            op: c.op,
            threshold,
            signal: sig.name.clone(),
            severity,
        });
    }

    fn migration(&mut self, x: &ast::MigrateDecl) {
        let from_ref = ast::SchemaRef {
            name: x.schema.clone(),
            version: x.from,
            span: x.schema.span,
        };
        let to_ref = ast::SchemaRef {
            name: x.schema.clone(),
            version: x.to,
            span: x.schema.span,
        };
        let (Some(from), Some(to)) = (self.schema_ref(&from_ref), self.schema_ref(&to_ref)) else {
            return;
        };
        if x.from >= x.to {
            self.error(
                Diagnostic::error(
                    codes::BAD_MIGRATION,
                    x.span,
                    format!(
                        "a migration goes to a newer version, but v{} -> v{} does not",
                        x.from, x.to
                    ),
                )
                .label("versions out of order"),
            );
            return;
        }
        if self
            .prog
            .migrations
            .iter()
            .any(|m| m.from == from && m.to == to)
        {
            self.error(
                Diagnostic::error(codes::DUPLICATE, x.span, "this migration is declared twice")
                    .label("second declaration"),
            );
            return;
        }
        let old = self.prog.schemas[from].clone();
        let new = self.prog.schemas[to].clone();
        let scope = Scope::Migration { schema: &old };
        let mut assigns: Vec<(usize, TExpr)> = Vec::new();
        for a in &x.assigns {
            let Some(slot) = self.field_slot(&new, &a.target) else {
                continue;
            };
            let mut e = self.expr(&a.value, &scope);
            self.assignable(&new.fields[slot], &mut e, a.value.span);
            assigns.push((slot, e));
        }
        let mut missing = Vec::new();
        for (slot, f) in new.fields.iter().enumerate() {
            if assigns.iter().any(|(s, _)| *s == slot) {
                continue;
            }
            match old.slot(&f.path) {
                Some(os)
                    if unify(&old.fields[os].ty, &f.ty)
                        .is_some_and(|t| t.base() == f.ty.base())
                        && (f.ty.is_optional() || !old.fields[os].ty.is_optional()) =>
                {
                    assigns.push((
                        slot,
                        TExpr::new(TKind::Field(os), old.fields[os].ty.clone()),
                    ));
                }
                Some(_) => missing.push(format!("`{}` (its type changed)", f.path)),
                None if f.ty.is_optional() => {}
                None => missing.push(format!("`{}`", f.path)),
            }
        }
        if !missing.is_empty() {
            self.error(
                Diagnostic::error(
                    codes::BAD_MIGRATION,
                    x.span,
                    format!(
                        "migration {} v{} -> v{} does not say how to fill {}",
                        x.schema.text,
                        x.from,
                        x.to,
                        missing.join(", ")
                    ),
                )
                .label("incomplete migration")
                .help("assign each new or changed field, e.g. `bytes = 0`"),
            );
            return;
        }
        assigns.sort_by_key(|(s, _)| *s);
        self.prog.migrations.push(Migration { from, to, assigns });
    }

    fn const_value(&mut self, e: &ast::Expr) -> Option<TExpr> {
        let te = self.expr(e, &Scope::Const);
        Some(te)
    }

    fn test(&mut self, x: &ast::TestDecl) {
        if self.prog.tests.iter().any(|t| t.name == x.name) {
            self.error(
                Diagnostic::error(
                    codes::DUPLICATE,
                    x.span,
                    format!("test \"{}\" is declared twice", x.name),
                )
                .label("second declaration"),
            );
            return;
        }
        let Some(g) = &x.given else {
            self.error(
                Diagnostic::error(
                    codes::BAD_TEST,
                    x.span,
                    format!("test \"{}\" has no `given` record", x.name),
                )
                .label("nothing to test")
                .help("add `given SCHEMA vN { field: value, … }`"),
            );
            return;
        };
        let Some(si) = self.schema_ref(&g.schema) else {
            return;
        };
        let schema = self.prog.schemas[si].clone();
        let mut record = vec![Value::Null; schema.fields.len()];
        let mut set = vec![false; schema.fields.len()];
        let n_before = self.diags.len();
        for (k, v) in &g.fields {
            let Some(slot) = self.field_slot(&schema, k) else {
                continue;
            };
            if set[slot] {
                self.error(
                    Diagnostic::error(
                        codes::DUPLICATE,
                        k.span,
                        format!("field `{}` is given twice", k.text),
                    )
                    .label("second value"),
                );
                continue;
            }
            let Some(mut te) = self.const_value(v) else {
                continue;
            };
            self.assignable(&schema.fields[slot], &mut te, v.span);
            match interp::eval_const(&te) {
                Ok(val) => match interp::coerce(val, &schema.fields[slot].ty) {
                    Ok(val) => {
                        record[slot] = val;
                        set[slot] = true;
                    }
                    Err(e) => self.error(
                        Diagnostic::error(codes::TYPE_MISMATCH, v.span, e.to_string())
                            .label(format!("expected {}", schema.fields[slot].ty)),
                    ),
                },
                Err(e) => self.error(
                    Diagnostic::error(codes::BAD_TEST, v.span, e.to_string())
                        .label("not a constant"),
                ),
            }
        }
        let missing: Vec<&str> = schema
            .fields
            .iter()
            .enumerate()
            .filter(|(i, f)| !f.ty.is_optional() && !set[*i])
            .map(|(_, f)| f.path.as_str())
            .collect();
        if !missing.is_empty() && self.diags.len() == n_before {
            self.error(
                Diagnostic::error(
                    codes::MISSING_FIELD,
                    g.span,
                    format!(
                        "the given record misses required field{} {}",
                        if missing.len() > 1 { "s" } else { "" },
                        missing
                            .iter()
                            .map(|m| format!("`{m}`"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                )
                .label(format!("incomplete {} record", schema.id())),
            );
        }
        let flag_names: Vec<String> = self
            .prog
            .packs_on(si)
            .flat_map(|(_, p)| p.flags.iter().map(|f| f.name.clone()))
            .collect();
        let meta_names: Vec<String> = self
            .prog
            .packs_on(si)
            .flat_map(|(_, p)| p.metas.iter().map(|m| m.name.clone()))
            .collect();
        let mut expects = Vec::new();
        for ex in &x.expects {
            let text = format!(
                "expect {} {} …",
                ex.lhs.text,
                match ex.op {
                    BinOp::Eq => "==",
                    BinOp::Ne => "!=",
                    _ => "contains",
                }
            );
            let op = match ex.op {
                BinOp::Eq => ExpectOp::Eq,
                BinOp::Ne => ExpectOp::Ne,
                _ => ExpectOp::Contains,
            };
            let lhs = ex.lhs.text.as_str();
            let (target, value) = if lhs == "flags" {
                let names: Vec<&ast::Expr> = match (&ex.rhs.kind, op) {
                    (ExprKind::List(items), ExpectOp::Eq | ExpectOp::Ne) => items.iter().collect(),
                    (ExprKind::Path(_), ExpectOp::Contains) => vec![&ex.rhs],
                    _ => {
                        self.error(
                            Diagnostic::error(codes::BAD_TEST, ex.rhs.span, "compare flags with a list of flag names")
                                .label("expected `[flag, …]`")
                                .help("write `expect flags == [admin_path, login_failed]` or `expect flags contains admin_path`"),
                        );
                        continue;
                    }
                };
                let mut vals = Vec::new();
                for n in names {
                    match &n.kind {
                        ExprKind::Path(p) if flag_names.contains(p) => {
                            vals.push(Value::Str(p.clone()))
                        }
                        ExprKind::Path(p) => self.error(
                            Diagnostic::error(
                                codes::UNKNOWN_FLAG,
                                n.span,
                                format!("unknown flag `{p}`"),
                            )
                            .label(format!("no pack on {} declares it", schema.id()))
                            .help_opt(did_you_mean(p, flag_names.iter().map(String::as_str))),
                        ),
                        _ => self.error(
                            Diagnostic::error(codes::BAD_TEST, n.span, "expected a flag name")
                                .label("not a flag name"),
                        ),
                    }
                }
                (
                    ExpectTarget::Flags,
                    if op == ExpectOp::Contains {
                        vals.pop().unwrap_or(Value::Null)
                    } else {
                        Value::List(vals)
                    },
                )
            } else if lhs == "route" {
                match &ex.rhs.kind {
                    ExprKind::Path(p) if p == "lucius" || p == "spine" => {
                        (ExpectTarget::Route, Value::Str(p.clone()))
                    }
                    _ => {
                        self.error(
                            Diagnostic::error(
                                codes::BAD_TEST,
                                ex.rhs.span,
                                "a route is `lucius` or `spine`",
                            )
                            .label("expected a route target"),
                        );
                        continue;
                    }
                }
            } else {
                let target = if lhs == "bits" {
                    ExpectTarget::Bits
                } else if let Some(m) = lhs.strip_prefix("meta.") {
                    if !meta_names.iter().any(|n| n == m) {
                        self.error(
                            Diagnostic::error(
                                codes::UNKNOWN_META,
                                ex.lhs.span,
                                format!("unknown meta `{m}`"),
                            )
                            .label(format!("no pack on {} declares it", schema.id()))
                            .help_opt(did_you_mean(m, meta_names.iter().map(String::as_str))),
                        );
                        continue;
                    }
                    ExpectTarget::Meta(m.to_string())
                } else {
                    match schema.slot(lhs) {
                        Some(s) => ExpectTarget::Field(s),
                        None => {
                            let cands: Vec<&str> = ["flags", "bits", "route"]
                                .into_iter()
                                .chain(schema.fields.iter().map(|f| f.path.as_str()))
                                .collect();
                            self.error(
                                Diagnostic::error(
                                    codes::UNKNOWN_FIELD,
                                    ex.lhs.span,
                                    format!("cannot check `{lhs}`"),
                                )
                                .label("not a field, `flags`, `bits`, `route` or `meta.NAME`")
                                .help_opt(did_you_mean(lhs, cands)),
                            );
                            continue;
                        }
                    }
                };
                let Some(te) = self.const_value(&ex.rhs) else {
                    continue;
                };
                match interp::eval_const(&te) {
                    Ok(v) => (target, v),
                    Err(e) => {
                        self.error(
                            Diagnostic::error(codes::BAD_TEST, ex.rhs.span, e.to_string())
                                .label("not a constant"),
                        );
                        continue;
                    }
                }
            };
            expects.push(Expectation {
                target,
                op,
                value,
                text,
                span: ex.span,
            });
        }
        self.prog.tests.push(Test {
            name: x.name.clone(),
            schema: si,
            record,
            expects,
            span: x.span,
        });
    }

    // ---- expressions ------------------------------------------------------

    fn resolve_path(&mut self, p: &str, span: Span, scope: &Scope) -> TExpr {
        match scope {
            Scope::Contract => {
                if let Some(rest) = p.strip_prefix("in.") {
                    return TExpr::new(
                        TKind::Input(rest.split('.').map(str::to_string).collect()),
                        Type::Dyn,
                    );
                }
                self.error(
                    Diagnostic::error(
                        codes::UNKNOWN_FIELD,
                        span,
                        format!("unknown name `{p}` in a contract"),
                    )
                    .label("contracts read the app's record through `in.`")
                    .help(format!("write `in.{p}`")),
                );
                err_expr()
            }
            Scope::Const => {
                self.error(
                    Diagnostic::error(codes::BAD_TEST, span, format!("`{p}` is not a constant"))
                        .label("expected a literal value")
                        .help("strings need quotes: \"…\""),
                );
                err_expr()
            }
            Scope::Migration { schema } => match schema.slot(p) {
                Some(s) => TExpr::new(TKind::Field(s), schema.fields[s].ty.clone()),
                None => {
                    self.error(
                        Diagnostic::error(
                            codes::UNKNOWN_FIELD,
                            span,
                            format!("unknown field `{p}` in schema {}", schema.id()),
                        )
                        .label("migrations read the old record's fields")
                        .help_opt(did_you_mean(
                            p,
                            schema.fields.iter().map(|f| f.path.as_str()),
                        )),
                    );
                    err_expr()
                }
            },
            Scope::Playbook { schema, flags } => {
                if let Some(i) = flags.iter().position(|f| f == p) {
                    return TExpr::new(TKind::Flag(i), Type::Bool);
                }
                if let Some(s) = schema.slot(p) {
                    return TExpr::new(TKind::Field(s), schema.fields[s].ty.clone());
                }
                let cands = flags
                    .iter()
                    .map(String::as_str)
                    .chain(schema.fields.iter().map(|f| f.path.as_str()));
                self.error(
                    Diagnostic::error(
                        codes::UNKNOWN_FLAG,
                        span,
                        format!("unknown flag or field `{p}`"),
                    )
                    .label(format!(
                        "no pack on {} declares this flag, and it is not a field",
                        schema.id()
                    ))
                    .help_opt(did_you_mean(p, cands)),
                );
                err_expr()
            }
            Scope::Pack {
                schema,
                flags,
                metas,
            } => {
                if let Some(m) = p.strip_prefix("meta.") {
                    if let Some(&i) = metas.get(m) {
                        self.deps.push(Def::Meta(i));
                        return TExpr::new(TKind::Meta(i), Type::Dyn);
                    }
                    self.error(
                        Diagnostic::error(codes::UNKNOWN_META, span, format!("unknown meta `{m}`"))
                            .label("not declared in this pack")
                            .help_opt(did_you_mean(m, metas.keys().map(String::as_str))),
                    );
                    return err_expr();
                }
                if let Some(&i) = flags.get(p) {
                    self.deps.push(Def::Flag(i));
                    return TExpr::new(TKind::Flag(i), Type::Bool);
                }
                if let Some(s) = schema.slot(p) {
                    return TExpr::new(TKind::Field(s), schema.fields[s].ty.clone());
                }
                let cands: Vec<&str> = schema
                    .fields
                    .iter()
                    .map(|f| f.path.as_str())
                    .chain(flags.keys().map(String::as_str))
                    .collect();
                let code = if flags
                    .keys()
                    .any(|f| did_you_mean(p, [f.as_str()]).is_some())
                {
                    codes::UNKNOWN_FLAG
                } else {
                    codes::UNKNOWN_FIELD
                };
                self.error(
                    Diagnostic::error(code, span, format!("unknown field or flag `{p}`"))
                        .label(format!(
                            "not a field of {} nor a flag of this pack",
                            schema.id()
                        ))
                        .help_opt(did_you_mean(p, cands)),
                );
                err_expr()
            }
        }
    }

    fn expr(&mut self, e: &ast::Expr, scope: &Scope) -> TExpr {
        match &e.kind {
            ExprKind::Error => err_expr(),
            ExprKind::Lit(l) => {
                let ty = match l {
                    Lit::Null => Type::Null,
                    Lit::Bool(_) => Type::Bool,
                    Lit::Int(_) => Type::Int,
                    Lit::Float(_) => Type::Float,
                    Lit::Str(_) => Type::String,
                    Lit::Time(_) => Type::Time,
                    Lit::Duration(_) => Type::Duration,
                    Lit::Ip(_) => Type::Ip,
                    Lit::Cidr(_) => Type::Cidr,
                };
                TExpr::constant(l.to_value(), ty)
            }
            ExprKind::Path(p) => {
                // Meta types are only known after their definition is
                // checked; resolve them from the pack being built.
                let t = self.resolve_path(p, e.span, scope);
                if let (TKind::Meta(_), Scope::Pack { .. }) = (&t.kind, scope) {
                    return t;
                }
                t
            }
            ExprKind::Unary(op, a) => {
                let a = self.expr(a, scope);
                match op {
                    UnOp::Not => {
                        if !is_bool(&a.ty) {
                            self.error(
                                Diagnostic::error(
                                    codes::TYPE_MISMATCH,
                                    e.span,
                                    format!("`not` needs a bool, but this is {}", a.ty),
                                )
                                .label("expected bool"),
                            );
                        }
                        TExpr::new(TKind::Not(Box::new(a)), Type::Bool)
                    }
                    UnOp::Neg => {
                        if !matches!(
                            a.ty.base(),
                            Type::Int | Type::Float | Type::Duration | Type::Dyn
                        ) {
                            self.error(
                                Diagnostic::error(
                                    codes::TYPE_MISMATCH,
                                    e.span,
                                    format!("`-` needs a number or duration, but this is {}", a.ty),
                                )
                                .label("cannot negate"),
                            );
                            return err_expr();
                        }
                        let ty = if a.ty.base() == &Type::Int {
                            a.ty.clone().optional()
                        } else {
                            a.ty.clone()
                        };
                        TExpr::new(TKind::Neg(Box::new(a)), ty)
                    }
                }
            }
            ExprKind::Binary(op, a, b) => {
                let l = self.expr(a, scope);
                let r = self.expr(b, scope);
                self.binary(*op, l, r, a.span, b.span, e.span)
            }
            ExprKind::Matches(a, pat, pspan) => {
                let l = self.expr(a, scope);
                if !matches!(l.ty.base(), Type::String | Type::Dyn) {
                    self.error(
                        Diagnostic::error(
                            codes::TYPE_MISMATCH,
                            a.span,
                            format!("`matches` needs a string, but this is {}", l.ty),
                        )
                        .label("expected string"),
                    );
                }
                match regex::RegexBuilder::new(pat).size_limit(1 << 20).build() {
                    Ok(re) => TExpr::new(TKind::Matches(Box::new(l), Arc::new(re)), Type::Bool),
                    Err(err) => {
                        let msg = err.to_string();
                        let detail = msg
                            .lines()
                            .filter(|l| l.starts_with("error:"))
                            .map(|l| l.trim_start_matches("error:").trim())
                            .next()
                            .unwrap_or("invalid pattern")
                            .to_string();
                        self.error(
                            Diagnostic::error(codes::BAD_REGEX, *pspan, format!("invalid regex: {detail}"))
                                .label("this regex does not compile")
                                .help("Bitspec regexes use Rust regex syntax (no backreferences or lookaround); escape `/` as `\\/`"),
                        );
                        err_expr()
                    }
                }
            }
            ExprKind::If(c, a, b) => {
                let c2 = self.expr(c, scope);
                if !is_bool(&c2.ty) {
                    self.error(
                        Diagnostic::error(
                            codes::TYPE_MISMATCH,
                            c.span,
                            format!("an `if` condition must be bool, but this is {}", c2.ty),
                        )
                        .label("expected bool"),
                    );
                }
                let mut a2 = self.expr(a, scope);
                let mut b2 = self.expr(b, scope);
                let _ = coerce_const(&mut a2, &b2.ty);
                let _ = coerce_const(&mut b2, &a2.ty);
                let ty = match unify(&a2.ty, &b2.ty) {
                    Some(t) => t,
                    None => {
                        self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                b.span,
                                format!(
                                    "`if` branches differ: `then` is {}, `else` is {}",
                                    a2.ty, b2.ty
                                ),
                            )
                            .label(format!("expected {}", a2.ty))
                            .help("both branches must have the same type"),
                        );
                        Type::Dyn
                    }
                };
                TExpr::new(TKind::If(Box::new(c2), Box::new(a2), Box::new(b2)), ty)
            }
            ExprKind::List(items) => {
                let mut out: Vec<TExpr> = Vec::new();
                let mut ty = Type::Null;
                for it in items {
                    let t = self.expr(it, scope);
                    match unify(&ty, &t.ty) {
                        Some(u) => ty = u,
                        None => self.error(
                            Diagnostic::error(
                                codes::TYPE_MISMATCH,
                                it.span,
                                format!("list items differ: expected {ty}, found {}", t.ty),
                            )
                            .label(format!("expected {ty}")),
                        ),
                    }
                    out.push(t);
                }
                // A list of IP/CIDR/time strings follows the first typed item.
                for t in &mut out {
                    let _ = coerce_const(t, &ty);
                }
                let elem = if items.is_empty() { Type::Dyn } else { ty };
                TExpr::new(TKind::List(out), Type::List(Box::new(elem)))
            }
            ExprKind::Call(name, args) => self.call(name, args, e.span, scope),
        }
    }

    fn call(&mut self, name: &ast::Name, args: &[ast::Expr], span: Span, scope: &Scope) -> TExpr {
        let Some(f) = Func::ALL.iter().copied().find(|f| f.name() == name.text) else {
            self.error(
                Diagnostic::error(
                    codes::UNKNOWN_FUNCTION,
                    name.span,
                    format!("unknown function `{}`", name.text),
                )
                .label("not a function")
                .help(
                    did_you_mean(&name.text, Func::ALL.iter().map(|f| f.name()))
                        .unwrap_or_else(|| "functions: lower, upper, len, int, float".into()),
                ),
            );
            return err_expr();
        };
        let targs: Vec<TExpr> = args.iter().map(|a| self.expr(a, scope)).collect();
        if targs.len() != 1 {
            self.error(
                Diagnostic::error(
                    codes::ARITY,
                    span,
                    format!(
                        "`{}` takes 1 argument, but {} were given",
                        f.name(),
                        targs.len()
                    ),
                )
                .label("wrong number of arguments"),
            );
            return err_expr();
        }
        let at = &targs[0].ty;
        let opt = at.is_optional();
        let (ok, ret) = match f {
            Func::Lower | Func::Upper => {
                (matches!(at.base(), Type::String | Type::Dyn), Type::String)
            }
            Func::Len => (
                matches!(
                    at.base(),
                    Type::String | Type::Bytes | Type::List(_) | Type::Dyn
                ),
                Type::Int,
            ),
            Func::Int => (
                matches!(
                    at.base(),
                    Type::String | Type::Int | Type::Float | Type::Bool | Type::Dyn
                ),
                Type::Int,
            ),
            Func::Float => (
                matches!(
                    at.base(),
                    Type::String | Type::Int | Type::Float | Type::Dyn
                ),
                Type::Float,
            ),
        };
        if !ok {
            self.error(
                Diagnostic::error(
                    codes::TYPE_MISMATCH,
                    args[0].span,
                    format!("`{}` cannot take {}", f.name(), at),
                )
                .label("wrong argument type"),
            );
            return err_expr();
        }
        // int("x") and float("x") are null when the text is not a number.
        let fallible =
            matches!(f, Func::Int | Func::Float) && !matches!(at.base(), Type::Int | Type::Bool);
        let ret = if opt || fallible { ret.optional() } else { ret };
        TExpr::new(TKind::Call(f, targs), ret)
    }

    fn binary(
        &mut self,
        op: BinOp,
        mut l: TExpr,
        mut r: TExpr,
        ls: Span,
        rs: Span,
        span: Span,
    ) -> TExpr {
        use Type as T;
        if matches!(op, BinOp::And | BinOp::Or) {
            for (x, s) in [(&l, ls), (&r, rs)] {
                if !is_bool(&x.ty) {
                    self.error(
                        Diagnostic::error(
                            codes::TYPE_MISMATCH,
                            s,
                            format!(
                                "`{}` needs bool on both sides, but this is {}",
                                op.symbol(),
                                x.ty
                            ),
                        )
                        .label("expected bool")
                        .help("compare it first, e.g. `status >= 500`"),
                    );
                }
            }
            let (a, b) = (Box::new(l), Box::new(r));
            return TExpr::new(
                if op == BinOp::And {
                    TKind::And(a, b)
                } else {
                    TKind::Or(a, b)
                },
                T::Bool,
            );
        }
        // String constants next to typed operands become IPs, CIDRs, times.
        let want_r = match (op, l.ty.base()) {
            (BinOp::In, T::Ip) => match r.ty.base() {
                T::List(_) => T::List(Box::new(T::Cidr)),
                _ => T::Cidr,
            },
            (_, t) => t.clone(),
        };
        let cr = if let T::List(inner) = &want_r {
            if let TKind::List(items) = &mut r.kind {
                let mut res = Ok(());
                for it in items.iter_mut() {
                    res = res.and(coerce_const(it, inner));
                }
                if res.is_ok() {
                    r.ty = want_r.clone();
                }
                res
            } else {
                Ok(())
            }
        } else {
            coerce_const(&mut r, &want_r)
        };
        let cl = coerce_const(&mut l, &r.ty.clone());
        if let Err(m) = cr.and(cl) {
            self.error(
                Diagnostic::error(codes::TYPE_MISMATCH, span, m)
                    .label("cannot convert this string"),
            );
            return err_expr();
        }
        let (lt, rt) = (l.ty.base().clone(), r.ty.base().clone());
        let opt = l.ty.is_optional() || r.ty.is_optional();
        let dynamic = lt == T::Dyn || rt == T::Dyn;
        let result: Option<Type> = match op {
            BinOp::Eq | BinOp::Ne => {
                (dynamic || lt == T::Null || rt == T::Null || unify(&lt, &rt).is_some())
                    .then_some(T::Bool)
            }
            BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
                let ord = |t: &Type| {
                    matches!(
                        t,
                        T::Int | T::Float | T::String | T::Time | T::Duration | T::Ip
                    )
                };
                (dynamic || (ord(&lt) && unify(&lt, &rt).is_some())).then_some(T::Bool)
            }
            BinOp::In => match (&lt, &rt) {
                _ if dynamic => Some(T::Bool),
                (T::Ip, T::Cidr) => Some(T::Bool),
                (T::Ip, T::List(x)) if matches!(**x, T::Cidr | T::Ip | T::Dyn) => Some(T::Bool),
                (x, T::List(y)) if unify(x, y).is_some() || **y == T::Dyn => Some(T::Bool),
                _ => None,
            },
            BinOp::StartsWith | BinOp::EndsWith => (matches!(lt, T::String | T::Dyn)
                && matches!(rt, T::String | T::Dyn))
            .then_some(T::Bool),
            BinOp::Contains => match (&lt, &rt) {
                _ if dynamic => Some(T::Bool),
                (T::String, T::String) => Some(T::Bool),
                (T::List(x), y) if unify(x, y).is_some() || **x == T::Dyn => Some(T::Bool),
                (T::Cidr, T::Ip) => Some(T::Bool),
                _ => None,
            },
            BinOp::Coalesce => {
                if lt == T::Dyn {
                    Some(if r.ty.is_optional() {
                        T::Dyn
                    } else {
                        r.ty.clone()
                    })
                } else {
                    unify(&lt, &rt).map(|t| {
                        if r.ty.is_optional() {
                            t.optional()
                        } else {
                            t.base().clone()
                        }
                    })
                }
            }
            BinOp::Add | BinOp::Sub | BinOp::Mul | BinOp::Div | BinOp::Rem => {
                let t = match (op, &lt, &rt) {
                    _ if dynamic => Some(T::Dyn),
                    (_, T::Int, T::Int) => Some(T::Int),
                    (_, T::Int | T::Float, T::Int | T::Float) => Some(T::Float),
                    (BinOp::Add, T::String, T::String) => Some(T::String),
                    (BinOp::Add | BinOp::Sub, T::Time, T::Duration) => Some(T::Time),
                    (BinOp::Add, T::Duration, T::Time) => Some(T::Time),
                    (BinOp::Sub, T::Time, T::Time) => Some(T::Duration),
                    (BinOp::Add | BinOp::Sub, T::Duration, T::Duration) => Some(T::Duration),
                    (BinOp::Mul | BinOp::Div, T::Duration, T::Int) => Some(T::Duration),
                    _ => None,
                };
                // Integer and time arithmetic is null on overflow or / 0.
                t.map(|t| match t {
                    T::Float | T::String | T::Dyn if !opt => t,
                    t => t.optional(),
                })
            }
            BinOp::And | BinOp::Or => Some(T::Bool),
        };
        match result {
            Some(ty) => TExpr::new(TKind::Bin(op, Box::new(l), Box::new(r)), ty),
            None => {
                self.error(
                    Diagnostic::error(
                        codes::TYPE_MISMATCH,
                        span,
                        format!("`{}` cannot combine {} and {}", op.symbol(), l.ty, r.ty),
                    )
                    .label("type mismatch")
                    .help_opt(op_help(op, &lt, &rt)),
                );
                err_expr()
            }
        }
    }
}

/// PII fields whose value (not merely a test on it) flows into `e`.
fn value_pii(e: &TExpr, schema: &Schema, out: &mut Vec<String>) {
    match &e.kind {
        TKind::Field(s) => {
            if let Some(f) = schema.fields.get(*s) {
                if f.pii.is_some() {
                    out.push(f.path.clone());
                }
            }
        }
        TKind::If(_, a, b) | TKind::Bin(BinOp::Coalesce | BinOp::Add, a, b) => {
            value_pii(a, schema, out);
            value_pii(b, schema, out);
        }
        TKind::Call(Func::Lower | Func::Upper, xs) | TKind::List(xs) => {
            xs.iter().for_each(|x| value_pii(x, schema, out))
        }
        _ => {}
    }
}

fn compact_index(present: impl Iterator<Item = bool>) -> Vec<Option<usize>> {
    let mut n = 0;
    present
        .map(|p| {
            p.then(|| {
                n += 1;
                n - 1
            })
        })
        .collect()
}

fn conversion_help(want: &Type, got: &Type) -> Option<String> {
    match (want.base(), got.base()) {
        (Type::Int, Type::String) => Some("convert it with int(…)".into()),
        (Type::Float, Type::String) => Some("convert it with float(…)".into()),
        (Type::String, _) => Some("only strings can be assigned to a string field".into()),
        _ => None,
    }
}

fn op_help(op: BinOp, l: &Type, r: &Type) -> Option<String> {
    match (op, l, r) {
        (
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge,
            Type::Int,
            Type::String,
        ) => Some("compare with a number (no quotes), or convert with int(…)".into()),
        (
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge,
            Type::String,
            Type::Int | Type::Float,
        ) => Some(
            "put the number in quotes to compare text, or convert the field with int(…)".into(),
        ),
        (BinOp::In, Type::Ip, _) => {
            Some("an IP is `in` a CIDR (10.0.0.0/8) or a list of CIDRs".into())
        }
        (BinOp::In, Type::String, Type::String) => {
            Some("for substrings use `contains`: `path contains \"admin\"`".into())
        }
        (BinOp::StartsWith | BinOp::EndsWith, _, _) => {
            Some(format!("`{}` works on strings", op.symbol()))
        }
        _ => None,
    }
}
