//! Recursive-descent parser with error recovery: after an error it skips to
//! the next statement or item and keeps going, so one run reports many
//! mistakes.

use crate::ast::*;
use crate::diag::{codes, did_you_mean, Diagnostic, FileId, Span};
use crate::lexer::{lex, Tok, Token};

/// Nesting deeper than this is refused (keeps the parser's stack bounded on
/// hostile input).
pub const MAX_DEPTH: usize = 64;

const ITEM_KEYWORDS: [&str; 6] = ["schema", "contract", "pack", "playbook", "migrate", "test"];
const PACK_KEYWORDS: [&str; 4] = ["flag", "meta", "redact", "route"];

/// Parses one file. Always returns a tree (possibly partial) and every
/// diagnostic found.
pub fn parse(file: FileId, src: &str) -> (File, Vec<Diagnostic>) {
    let (toks, mut diags) = lex(file, src);
    let mut p = Parser {
        toks,
        pos: 0,
        diags: Vec::new(),
        depth: 0,
    };
    let f = p.file();
    diags.append(&mut p.diags);
    (f, diags)
}

/// Parses a single expression (for tools and tests).
pub fn parse_expr(file: FileId, src: &str) -> Result<Expr, Vec<Diagnostic>> {
    let (toks, mut diags) = lex(file, src);
    let mut p = Parser {
        toks,
        pos: 0,
        diags: Vec::new(),
        depth: 0,
    };
    let e = p.expr();
    if e.is_ok() && p.peek() != &Tok::Eof {
        let t = p.tok().clone();
        p.diags.push(
            Diagnostic::error(
                codes::EXPECTED,
                t.span,
                format!("expected end of expression, found {}", t.tok.describe()),
            )
            .label("unexpected here"),
        );
    }
    diags.append(&mut p.diags);
    match e {
        Ok(e) if diags.is_empty() => Ok(e),
        _ => Err(diags),
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
    diags: Vec<Diagnostic>,
    depth: usize,
}

/// Marker: an error was reported; the caller should resynchronise.
struct Recover;

type PResult<T> = Result<T, Recover>;

impl Parser {
    fn tok(&self) -> &Token {
        let i = self.pos.min(self.toks.len() - 1);
        &self.toks[i]
    }

    fn peek(&self) -> &Tok {
        &self.tok().tok
    }

    fn peek_at(&self, k: usize) -> &Tok {
        let i = (self.pos + k).min(self.toks.len() - 1);
        &self.toks[i].tok
    }

    fn span(&self) -> Span {
        self.tok().span
    }

    fn prev_span(&self) -> Span {
        if self.pos == 0 {
            return self.span();
        }
        self.toks[(self.pos - 1).min(self.toks.len() - 1)].span
    }

    fn bump(&mut self) -> Token {
        let t = self.tok().clone();
        if self.pos < self.toks.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn at_word(&self, w: &str) -> bool {
        matches!(self.peek(), Tok::Ident(s) if s == w)
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.at_word(w) {
            self.bump();
            true
        } else {
            false
        }
    }

    fn eat(&mut self, t: &Tok) -> bool {
        if self.peek() == t {
            self.bump();
            true
        } else {
            false
        }
    }

    fn error_here(&mut self, expected: &str) -> Recover {
        let t = self.tok().clone();
        let mut d = Diagnostic::error(
            codes::EXPECTED,
            t.span,
            format!("expected {expected}, found {}", t.tok.describe()),
        )
        .label(format!("expected {expected}"));
        if let Tok::Ident(s) = &t.tok {
            if expected.contains("item") {
                d = d.help_opt(did_you_mean(s, ITEM_KEYWORDS)).help_opt(if ITEM_KEYWORDS.iter().any(|k| did_you_mean(s, [*k]).is_some()) {
                    None
                } else {
                    Some("a bundle file holds schema, contract, pack, playbook, migrate and test blocks".into())
                });
                d.code = codes::UNKNOWN_ITEM;
            }
        }
        self.diags.push(d);
        Recover
    }

    fn expect(&mut self, t: Tok) -> PResult<Span> {
        if self.peek() == &t {
            Ok(self.bump().span)
        } else {
            Err(self.error_here(&format!("`{}`", t.symbol())))
        }
    }

    fn expect_word(&mut self, w: &str) -> PResult<Span> {
        if self.at_word(w) {
            Ok(self.bump().span)
        } else {
            Err(self.error_here(&format!("`{w}`")))
        }
    }

    fn name(&mut self, what: &str) -> PResult<Name> {
        match self.peek().clone() {
            Tok::Ident(text) => {
                let span = self.bump().span;
                Ok(Name { text, span })
            }
            _ => Err(self.error_here(what)),
        }
    }

    fn version(&mut self) -> PResult<(u32, Span)> {
        let t = self.tok().clone();
        if let Tok::Ident(s) = &t.tok {
            if let Some(n) = s.strip_prefix('v').and_then(|d| d.parse::<u32>().ok()) {
                self.bump();
                return Ok((n, t.span));
            }
        }
        self.diags.push(
            Diagnostic::error(codes::EXPECTED, t.span, format!("expected a version like `v1`, found {}", t.tok.describe()))
                .label("expected a version")
                .help("schemas are versioned: write `schema http.request v1 { … }` and refer to it as `http.request v1`"),
        );
        Err(Recover)
    }

    fn schema_ref(&mut self) -> PResult<SchemaRef> {
        let name = self.name("a schema name")?;
        let (version, vspan) = self.version()?;
        let span = name.span.to(vspan);
        Ok(SchemaRef {
            name,
            version,
            span,
        })
    }

    /// Skips to the next top-level item keyword at brace depth 0.
    fn sync_item(&mut self) {
        let mut depth: i32 = 0;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::LBrace => depth += 1,
                Tok::RBrace => {
                    depth -= 1;
                    if depth <= 0 {
                        self.bump();
                        if depth < 0 {
                            depth = 0;
                        }
                        if depth == 0 && self.at_item_start() {
                            return;
                        }
                        continue;
                    }
                }
                Tok::Ident(_) if depth == 0 && self.at_item_start() => return,
                _ => {}
            }
            self.bump();
        }
    }

    fn at_item_start(&self) -> bool {
        matches!(self.peek(), Tok::Ident(s) if ITEM_KEYWORDS.contains(&s.as_str()))
            && !matches!(self.peek_at(1), Tok::Colon | Tok::Assign)
    }

    /// Skips inside a block to the next statement start (one of `words`) or
    /// the block's closing brace.
    fn sync_stmt(&mut self, words: &[&str]) {
        let mut depth: i32 = 0;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::LBrace | Tok::LParen | Tok::LBracket => depth += 1,
                Tok::RBrace if depth == 0 => return,
                Tok::RBrace | Tok::RParen | Tok::RBracket => depth = (depth - 1).max(0),
                Tok::Ident(s) if depth == 0 && words.contains(&s.as_str()) => return,
                Tok::Ident(_) if depth == 0 && self.at_item_start() => return,
                _ => {}
            }
            self.bump();
        }
    }

    fn file(&mut self) -> File {
        let mut items = Vec::new();
        while self.peek() != &Tok::Eof {
            match self.item() {
                Ok(it) => items.push(it),
                Err(Recover) => self.sync_item(),
            }
        }
        File { items }
    }

    fn item(&mut self) -> PResult<Item> {
        let start = self.span();
        let kw = match self.peek() {
            Tok::Ident(s) => s.clone(),
            _ => {
                return Err(
                    self.error_here("an item (schema, contract, pack, playbook, migrate or test)")
                )
            }
        };
        match kw.as_str() {
            "schema" => self.schema(start).map(Item::Schema),
            "contract" => self.contract(start).map(Item::Contract),
            "pack" => self.pack(start).map(Item::Pack),
            "playbook" => self.playbook(start).map(|p| Item::Playbook(Box::new(p))),
            "migrate" => self.migrate(start).map(Item::Migrate),
            "test" => self.test(start).map(Item::Test),
            _ => {
                Err(self.error_here("an item (schema, contract, pack, playbook, migrate or test)"))
            }
        }
    }

    fn close_block(&mut self, open: Span, what: &str) -> PResult<Span> {
        if self.peek() == &Tok::RBrace {
            return Ok(self.bump().span);
        }
        if self.peek() == &Tok::Eof || self.at_item_start() {
            self.diags.push(
                Diagnostic::error(
                    codes::EXPECTED,
                    open,
                    format!("this {what} block is never closed"),
                )
                .label("opened here")
                .help("add `}` at the end of the block"),
            );
            return Err(Recover);
        }
        Err(self.error_here("`}`"))
    }

    fn schema(&mut self, start: Span) -> PResult<SchemaDecl> {
        self.bump();
        let name = self.name("a schema name")?;
        let (version, _) = self.version()?;
        let open = self.expect(Tok::LBrace)?;
        let mut fields = Vec::new();
        while !matches!(self.peek(), Tok::RBrace | Tok::Eof) && !self.at_item_start() {
            match self.field_decl() {
                Ok(f) => fields.push(f),
                Err(Recover) => self.sync_field(),
            }
        }
        let end = self.close_block(open, "schema")?;
        Ok(SchemaDecl {
            name,
            version,
            fields,
            span: start.to(end),
        })
    }

    /// In a schema, a field starts with `name :`.
    fn sync_field(&mut self) {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Tok::Eof | Tok::RBrace, _) => return,
                (Tok::Ident(_), Tok::Colon) => return,
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn field_decl(&mut self) -> PResult<FieldDecl> {
        let path = self.name("a field name")?;
        self.expect(Tok::Colon)?;
        let ty = self.type_expr()?;
        let mut span = path.span.to(ty.span);
        let pii = if self.eat_word("pii") {
            self.expect(Tok::LParen)?;
            let kind = self.name("a PII kind, e.g. `email`")?;
            let end = self.expect(Tok::RParen)?;
            span = span.to(end);
            Some(kind)
        } else {
            None
        };
        Ok(FieldDecl {
            path,
            ty,
            pii,
            span,
        })
    }

    fn type_expr(&mut self) -> PResult<TypeExpr> {
        let start = self.span();
        let kind = if self.eat(&Tok::LBracket) {
            let inner = self.type_expr()?;
            self.expect(Tok::RBracket)?;
            TypeExprKind::List(Box::new(inner))
        } else {
            TypeExprKind::Named(
                self.name("a type (string, int, float, bool, time, duration, ip, cidr, bytes)")?,
            )
        };
        let optional = self.eat(&Tok::Question);
        Ok(TypeExpr {
            kind,
            optional,
            span: start.to(self.prev_span()),
        })
    }

    fn assigns(&mut self, what: &str) -> PResult<(Vec<Assign>, Span)> {
        let open = self.expect(Tok::LBrace)?;
        let mut out = Vec::new();
        while !matches!(self.peek(), Tok::RBrace | Tok::Eof) && !self.at_item_start() {
            match self.assign() {
                Ok(a) => out.push(a),
                Err(Recover) => self.sync_assign(),
            }
        }
        let end = self.close_block(open, what)?;
        Ok((out, end))
    }

    fn sync_assign(&mut self) {
        loop {
            match (self.peek(), self.peek_at(1)) {
                (Tok::Eof | Tok::RBrace, _) => return,
                (Tok::Ident(_), Tok::Assign) => return,
                _ => {
                    self.bump();
                }
            }
        }
    }

    fn assign(&mut self) -> PResult<Assign> {
        let target = self.name("a field name")?;
        if self.peek() == &Tok::EqEq || self.peek() == &Tok::Colon {
            let sp = self.span();
            self.diags.push(
                Diagnostic::error(
                    codes::EXPECTED,
                    sp,
                    format!("expected `=`, found {}", self.peek().describe()),
                )
                .label("assignments use a single `=`")
                .help(format!("write `{} = …`", target.text)),
            );
            return Err(Recover);
        }
        self.expect(Tok::Assign)?;
        let value = self.expr()?;
        Ok(Assign { target, value })
    }

    fn contract(&mut self, start: Span) -> PResult<ContractDecl> {
        self.bump();
        let name = self.name("a contract name")?;
        self.expect(Tok::Arrow)?;
        let target = self.schema_ref()?;
        let (assigns, end) = self.assigns("contract")?;
        Ok(ContractDecl {
            name,
            target,
            assigns,
            span: start.to(end),
        })
    }

    fn migrate(&mut self, start: Span) -> PResult<MigrateDecl> {
        self.bump();
        let schema = self.name("a schema name")?;
        let (from, _) = self.version()?;
        self.expect(Tok::Arrow)?;
        let (to, _) = self.version()?;
        let (assigns, end) = self.assigns("migrate")?;
        Ok(MigrateDecl {
            schema,
            from,
            to,
            assigns,
            span: start.to(end),
        })
    }

    fn pack(&mut self, start: Span) -> PResult<PackDecl> {
        self.bump();
        let name = self.name("a pack name")?;
        self.expect_word("on")?;
        let target = self.schema_ref()?;
        let open = self.expect(Tok::LBrace)?;
        let mut stmts = Vec::new();
        while !matches!(self.peek(), Tok::RBrace | Tok::Eof) && !self.at_item_start() {
            match self.pack_stmt() {
                Ok(s) => stmts.push(s),
                Err(Recover) => self.sync_stmt(&PACK_KEYWORDS),
            }
        }
        let end = self.close_block(open, "pack")?;
        Ok(PackDecl {
            name,
            target,
            stmts,
            span: start.to(end),
        })
    }

    /// After a statement's expression the next token must start a new
    /// statement or close the block.
    fn end_stmt(&mut self, words: &[&str]) -> PResult<()> {
        match self.peek() {
            Tok::RBrace | Tok::Eof => Ok(()),
            Tok::Ident(s) if words.contains(&s.as_str()) => Ok(()),
            _ if self.at_item_start() => Ok(()),
            _ => {
                let t = self.tok().clone();
                self.diags.push(
                    Diagnostic::error(
                        codes::EXPECTED,
                        t.span,
                        format!(
                            "expected an operator or the next statement, found {}",
                            t.tok.describe()
                        ),
                    )
                    .label("the expression ends before this")
                    .help(
                        match &t.tok {
                            Tok::Ident(w) => did_you_mean(w, words.iter().copied()),
                            _ => None,
                        }
                        .unwrap_or_else(|| {
                            format!(
                                "statements here start with {}",
                                words
                                    .iter()
                                    .map(|w| format!("`{w}`"))
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            )
                        }),
                    ),
                );
                Err(Recover)
            }
        }
    }

    fn pack_stmt(&mut self) -> PResult<PackStmt> {
        let kw = self.tok().clone();
        let word = match &kw.tok {
            Tok::Ident(s) => s.clone(),
            _ => return Err(self.error_here("`flag`, `meta`, `redact` or `route`")),
        };
        let stmt = match word.as_str() {
            "flag" | "meta" => {
                self.bump();
                let name = self.name(&format!("a {word} name"))?;
                self.expect(Tok::Assign)?;
                let expr = self.expr()?;
                if word == "flag" {
                    PackStmt::Flag { name, expr }
                } else {
                    PackStmt::Meta { name, expr }
                }
            }
            "redact" => {
                self.bump();
                let field = self.name("a field to redact")?;
                let action = self.action()?;
                PackStmt::Redact { field, action }
            }
            "route" => {
                self.bump();
                let target = self.name("a route target (`lucius` or `spine`)")?;
                self.expect_word("when")?;
                let when = self.expr()?;
                PackStmt::Route { target, when }
            }
            _ => {
                let mut d = Diagnostic::error(
                    codes::EXPECTED,
                    kw.span,
                    format!("expected `flag`, `meta`, `redact` or `route`, found `{word}`"),
                )
                .label("not a pack statement");
                d = d.help_opt(did_you_mean(&word, PACK_KEYWORDS));
                self.diags.push(d);
                return Err(Recover);
            }
        };
        self.end_stmt(&PACK_KEYWORDS)?;
        Ok(stmt)
    }

    fn action(&mut self) -> PResult<ActionExpr> {
        let name = self.name("a redaction action (hmac, mask(keep_last: n), hash, drop, scan)")?;
        let mut args = Vec::new();
        let mut span = name.span;
        if self.eat(&Tok::LParen) {
            while self.peek() != &Tok::RParen {
                let k = self.name("an argument name, e.g. `keep_last`")?;
                self.expect(Tok::Colon)?;
                let v = self.expr()?;
                args.push((k, v));
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
            span = span.to(self.expect(Tok::RParen)?);
        }
        Ok(ActionExpr { name, args, span })
    }

    fn playbook(&mut self, start: Span) -> PResult<PlaybookDecl> {
        self.bump();
        let name = self.name("a playbook name")?;
        self.expect_word("on")?;
        let target = self.schema_ref()?;
        let open = self.expect(Tok::LBrace)?;
        let mut when = None;
        let mut signal = None;
        while !matches!(self.peek(), Tok::RBrace | Tok::Eof) && !self.at_item_start() {
            let r = if self.at_word("when") {
                self.condition().map(|c| when = Some(c))
            } else if self.at_word("signal") {
                self.signal().map(|s| signal = Some(s))
            } else {
                Err(self.error_here("`when` or `signal`"))
            };
            if r.is_err() {
                self.sync_stmt(&["when", "signal"]);
            }
        }
        let end = self.close_block(open, "playbook")?;
        Ok(PlaybookDecl {
            name,
            target,
            when,
            signal,
            span: start.to(end),
        })
    }

    fn condition(&mut self) -> PResult<Condition> {
        let start = self.bump().span;
        let agg = self.name("an aggregate: count, sum, distinct, min or max")?;
        self.expect(Tok::LParen)?;
        let arg = if self.peek() == &Tok::RParen {
            None
        } else {
            Some(self.expr()?)
        };
        self.expect(Tok::RParen)?;
        let mut by = Vec::new();
        if self.eat_word("by") {
            loop {
                by.push(self.name("a field to group by")?);
                if !self.eat(&Tok::Comma) {
                    break;
                }
            }
        }
        self.expect_word("within")?;
        let within = self.primary()?;
        let op = match self.peek() {
            Tok::Ge => BinOp::Ge,
            Tok::Gt => BinOp::Gt,
            Tok::Le => BinOp::Le,
            Tok::Lt => BinOp::Lt,
            Tok::EqEq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            _ => return Err(self.error_here("a comparison (`>=`, `>`, `==`, …) and a threshold")),
        };
        self.bump();
        let threshold = self.expr_bp(6)?;
        let span = start.to(threshold.span);
        self.end_stmt(&["when", "signal"])?;
        Ok(Condition {
            agg,
            arg,
            by,
            within,
            op,
            threshold,
            span,
        })
    }

    fn signal(&mut self) -> PResult<SignalDecl> {
        self.bump();
        let t = self.tok().clone();
        let name = match t.tok {
            Tok::Str(s) => {
                self.bump();
                s
            }
            _ => {
                return Err(
                    self.error_here("the signal's name as a string, e.g. \"auth.bruteforce\"")
                )
            }
        };
        self.expect_word("severity")?;
        let severity = self.name("a severity (low, medium, high, critical)")?;
        self.end_stmt(&["when", "signal"])?;
        Ok(SignalDecl {
            name,
            name_span: t.span,
            severity,
        })
    }

    fn test(&mut self, start: Span) -> PResult<TestDecl> {
        self.bump();
        let name = match self.peek().clone() {
            Tok::Str(s) => {
                self.bump();
                s
            }
            _ => return Err(self.error_here("the test's name as a string")),
        };
        let open = self.expect(Tok::LBrace)?;
        let mut given = None;
        let mut expects = Vec::new();
        while !matches!(self.peek(), Tok::RBrace | Tok::Eof) && !self.at_item_start() {
            let r = if self.at_word("given") {
                self.given().map(|g| given = Some(g))
            } else if self.at_word("expect") {
                self.expect_stmt().map(|e| expects.push(e))
            } else {
                Err(self.error_here("`given` or `expect`"))
            };
            if r.is_err() {
                self.sync_stmt(&["given", "expect"]);
            }
        }
        let end = self.close_block(open, "test")?;
        Ok(TestDecl {
            name,
            given,
            expects,
            span: start.to(end),
        })
    }

    fn given(&mut self) -> PResult<Given> {
        let start = self.bump().span;
        let schema = self.schema_ref()?;
        self.expect(Tok::LBrace)?;
        let mut fields = Vec::new();
        while self.peek() != &Tok::RBrace {
            let k = self.name("a field name")?;
            self.expect(Tok::Colon)?;
            let v = self.expr()?;
            fields.push((k, v));
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        let end = self.expect(Tok::RBrace)?;
        Ok(Given {
            schema,
            fields,
            span: start.to(end),
        })
    }

    fn expect_stmt(&mut self) -> PResult<Expect> {
        let start = self.bump().span;
        let lhs = self.name("what to check: `flags`, `meta.NAME`, `route`, `bits` or a field")?;
        let op = match self.peek() {
            Tok::EqEq => BinOp::Eq,
            Tok::Ne => BinOp::Ne,
            Tok::Ident(s) if s == "contains" => BinOp::Contains,
            _ => return Err(self.error_here("`==`, `!=` or `contains`")),
        };
        self.bump();
        let rhs = self.expr()?;
        let span = start.to(rhs.span);
        self.end_stmt(&["given", "expect"])?;
        Ok(Expect { lhs, op, rhs, span })
    }

    // ---- expressions ------------------------------------------------------

    fn expr(&mut self) -> PResult<Expr> {
        self.expr_bp(0)
    }

    /// Binding power of an infix operator at the cursor: (left, right, op).
    fn infix(&self) -> Option<(u8, BinOp)> {
        Some(match self.peek() {
            Tok::Ident(s) => match s.as_str() {
                "or" => (1, BinOp::Or),
                "and" => (2, BinOp::And),
                "in" => (4, BinOp::In),
                "starts_with" => (4, BinOp::StartsWith),
                "ends_with" => (4, BinOp::EndsWith),
                "contains" => (4, BinOp::Contains),
                _ => return None,
            },
            Tok::EqEq => (4, BinOp::Eq),
            Tok::Ne => (4, BinOp::Ne),
            Tok::Lt => (4, BinOp::Lt),
            Tok::Le => (4, BinOp::Le),
            Tok::Gt => (4, BinOp::Gt),
            Tok::Ge => (4, BinOp::Ge),
            Tok::QQ => (5, BinOp::Coalesce),
            Tok::Plus => (6, BinOp::Add),
            Tok::Minus => (6, BinOp::Sub),
            Tok::Star => (7, BinOp::Mul),
            Tok::Slash => (7, BinOp::Div),
            Tok::Percent => (7, BinOp::Rem),
            _ => return None,
        })
    }

    fn expr_bp(&mut self, min: u8) -> PResult<Expr> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let sp = self.span();
            self.diags.push(
                Diagnostic::error(
                    codes::EXPECTED,
                    sp,
                    format!("expression nested more than {MAX_DEPTH} levels deep"),
                )
                .label("too deep")
                .help("split the expression into several flags or metas"),
            );
            self.depth -= 1;
            return Err(Recover);
        }
        let r = self.expr_bp_inner(min);
        self.depth -= 1;
        r
    }

    fn expr_bp_inner(&mut self, min: u8) -> PResult<Expr> {
        let mut lhs = if self.at_word("not") {
            let start = self.bump().span;
            let e = self.expr_bp(3)?;
            let span = start.to(e.span);
            Expr {
                kind: ExprKind::Unary(UnOp::Not, Box::new(e)),
                span,
            }
        } else if self.peek() == &Tok::Minus {
            let start = self.bump().span;
            let e = self.expr_bp(8)?;
            let span = start.to(e.span);
            Expr {
                kind: ExprKind::Unary(UnOp::Neg, Box::new(e)),
                span,
            }
        } else {
            self.primary()?
        };
        // Comparisons do not chain: `a < b < c` is an error, `(a < b) == c` is not.
        let mut last_cmp = false;
        loop {
            let infix = if self.at_word("matches") {
                Some((4, None))
            } else {
                self.infix().map(|(bp, op)| (bp, Some(op)))
            };
            let Some((bp, op)) = infix else { break };
            if bp < min {
                break;
            }
            if bp == 4 && last_cmp {
                let sp = self.span();
                self.diags.push(
                    Diagnostic::error(codes::EXPECTED, sp, "comparisons cannot be chained")
                        .label("second comparison here")
                        .help("join them with `and`: `a < b and b < c`"),
                );
                return Err(Recover);
            }
            self.bump();
            let Some(op) = op else {
                let t = self.tok().clone();
                let Tok::Regex(pat) = t.tok else {
                    return Err(self.error_here("a regex literal `/…/` after `matches`"));
                };
                self.bump();
                let span = lhs.span.to(t.span);
                lhs = Expr {
                    kind: ExprKind::Matches(Box::new(lhs), pat, t.span),
                    span,
                };
                last_cmp = true;
                continue;
            };
            // Left-associative: the right side binds tighter.
            let rhs = self.expr_bp(bp + 1)?;
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
            last_cmp = bp == 4;
        }
        Ok(lhs)
    }

    fn primary(&mut self) -> PResult<Expr> {
        let t = self.tok().clone();
        let lit = |k| {
            Ok(Expr {
                kind: ExprKind::Lit(k),
                span: t.span,
            })
        };
        match t.tok {
            Tok::Bad => {
                self.bump();
                Ok(Expr {
                    kind: ExprKind::Error,
                    span: t.span,
                })
            }
            Tok::Int(i) => {
                self.bump();
                lit(Lit::Int(i))
            }
            Tok::Float(f) => {
                self.bump();
                lit(Lit::Float(f))
            }
            Tok::Str(s) => {
                self.bump();
                lit(Lit::Str(s))
            }
            Tok::Duration(d) => {
                self.bump();
                lit(Lit::Duration(d))
            }
            Tok::Time(v) => {
                self.bump();
                lit(Lit::Time(v))
            }
            Tok::Ip(ip) => {
                self.bump();
                lit(Lit::Ip(ip))
            }
            Tok::Cidr(c) => {
                self.bump();
                lit(Lit::Cidr(c))
            }
            Tok::LParen => {
                self.bump();
                let e = self.expr()?;
                let end = self.expect(Tok::RParen)?;
                Ok(Expr {
                    kind: e.kind,
                    span: t.span.to(end),
                })
            }
            Tok::LBracket => {
                self.bump();
                let mut items = Vec::new();
                while self.peek() != &Tok::RBracket {
                    items.push(self.expr()?);
                    if !self.eat(&Tok::Comma) {
                        break;
                    }
                }
                let end = self.expect(Tok::RBracket)?;
                Ok(Expr {
                    kind: ExprKind::List(items),
                    span: t.span.to(end),
                })
            }
            Tok::Ident(s) => match s.as_str() {
                "true" => {
                    self.bump();
                    lit(Lit::Bool(true))
                }
                "false" => {
                    self.bump();
                    lit(Lit::Bool(false))
                }
                "null" => {
                    self.bump();
                    lit(Lit::Null)
                }
                "if" => {
                    self.bump();
                    let c = self.expr()?;
                    self.expect_word("then")?;
                    let a = self.expr()?;
                    self.expect_word("else")?;
                    let b = self.expr()?;
                    let span = t.span.to(b.span);
                    Ok(Expr {
                        kind: ExprKind::If(Box::new(c), Box::new(a), Box::new(b)),
                        span,
                    })
                }
                w if RESERVED.contains(&w) => Err(self.error_here("an expression")),
                // `flag a =` followed by the next statement: the expression is
                // missing (a keyword followed by a name starts a statement).
                w if (PACK_KEYWORDS.contains(&w)
                    || ITEM_KEYWORDS.contains(&w)
                    || ["when", "signal", "given", "expect"].contains(&w))
                    && matches!(self.peek_at(1), Tok::Ident(_) | Tok::Str(_)) =>
                {
                    Err(self.error_here("an expression"))
                }
                _ => {
                    self.bump();
                    if self.peek() == &Tok::LParen {
                        self.bump();
                        let mut args = Vec::new();
                        while self.peek() != &Tok::RParen {
                            args.push(self.expr()?);
                            if !self.eat(&Tok::Comma) {
                                break;
                            }
                        }
                        let end = self.expect(Tok::RParen)?;
                        Ok(Expr {
                            kind: ExprKind::Call(
                                Name {
                                    text: s,
                                    span: t.span,
                                },
                                args,
                            ),
                            span: t.span.to(end),
                        })
                    } else {
                        Ok(Expr {
                            kind: ExprKind::Path(s),
                            span: t.span,
                        })
                    }
                }
            },
            _ => Err(self.error_here("an expression")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence() {
        let e = parse_expr(FileId(0), "a or b and not c == 1 + 2 * 3").unwrap();
        let ExprKind::Binary(BinOp::Or, _, rhs) = e.kind else {
            panic!("{e:?}")
        };
        let ExprKind::Binary(BinOp::And, _, rhs) = rhs.kind else {
            panic!()
        };
        let ExprKind::Unary(UnOp::Not, inner) = rhs.kind else {
            panic!()
        };
        assert!(matches!(inner.kind, ExprKind::Binary(BinOp::Eq, _, _)));
    }

    #[test]
    fn chained_comparison_is_an_error() {
        assert!(parse_expr(FileId(0), "a < b < c").is_err());
        assert!(parse_expr(FileId(0), "(a < b) == c").is_ok());
    }

    #[test]
    fn recovery_reports_several_errors() {
        let src =
            "pack p on s v1 {\n flag a = \n flag b = x == \n flg c = 1\n}\nschema s v1 { a: int }";
        let (f, d) = parse(FileId(0), src);
        assert!(d.len() >= 2, "{d:#?}");
        assert!(f.items.iter().any(|i| matches!(i, Item::Schema(_))));
    }
}
