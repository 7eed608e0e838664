//! Tokens. Newlines are not significant; `#` and `//` start comments.
//!
//! Literals the lexer recognises directly: strings, ints, floats, durations
//! (`60s`, `1h30m`), RFC 3339 times, IPv4 addresses and CIDRs. IPv6
//! addresses and networks are written as strings (`"2001:db8::/32"`) and
//! converted where the checker expects an `ip` or `cidr`. A regex literal
//! `/…/` is read only right after the `matches` keyword.

use crate::diag::{codes, Diagnostic, FileId, Span};
use crate::value::{parse_duration, parse_time, Cidr};
use std::net::IpAddr;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A name, possibly dotted (`client.ip`, `in.customer.email`).
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Duration(i64),
    Time(i64),
    Ip(IpAddr),
    Cidr(Cidr),
    Regex(String),
    /// A literal that failed to lex (already reported); parses as an
    /// expression so one mistake gives one message.
    Bad,
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Colon,
    Question,
    QQ,
    Arrow,
    Assign,
    EqEq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Eof,
}

impl Tok {
    /// How the token reads in "expected X, found Y" messages.
    pub fn describe(&self) -> String {
        match self {
            Tok::Ident(s) => format!("`{s}`"),
            Tok::Str(_) => "a string".into(),
            Tok::Int(_) | Tok::Float(_) => "a number".into(),
            Tok::Duration(_) => "a duration".into(),
            Tok::Time(_) => "a time".into(),
            Tok::Ip(_) => "an IP address".into(),
            Tok::Cidr(_) => "a CIDR".into(),
            Tok::Regex(_) => "a regex".into(),
            Tok::Bad => "an invalid literal".into(),
            Tok::Eof => "end of file".into(),
            t => format!("`{}`", t.symbol()),
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Colon => ":",
            Tok::Question => "?",
            Tok::QQ => "??",
            Tok::Arrow => "->",
            Tok::Assign => "=",
            Tok::EqEq => "==",
            Tok::Ne => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Plus => "+",
            Tok::Minus => "-",
            Tok::Star => "*",
            Tok::Slash => "/",
            Tok::Percent => "%",
            _ => "",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// Splits `src` into tokens; lexical errors are collected and the bad text
/// skipped, so parsing continues and reports more.
pub fn lex(file: FileId, src: &str) -> (Vec<Token>, Vec<Diagnostic>) {
    let mut lx = Lexer {
        file,
        src,
        b: src.as_bytes(),
        i: 0,
        out: Vec::new(),
        diags: Vec::new(),
    };
    lx.run();
    (lx.out, lx.diags)
}

struct Lexer<'a> {
    file: FileId,
    src: &'a str,
    b: &'a [u8],
    i: usize,
    out: Vec<Token>,
    diags: Vec<Diagnostic>,
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

impl Lexer<'_> {
    fn span(&self, start: usize) -> Span {
        Span::new(self.file, start, self.i)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        let span = self.span(start);
        self.out.push(Token { tok, span });
    }

    fn peek(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }

    fn run(&mut self) {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let start = self.i;
            match c {
                b' ' | b'\t' | b'\r' | b'\n' => self.i += 1,
                b'#' => self.skip_line(),
                b'/' if self.peek(1) == Some(b'/') => self.skip_line(),
                b'/' if self.after_matches() => self.regex(),
                b'"' => self.string(),
                b'0'..=b'9' => self.number(),
                c if is_ident_start(c) => self.ident(),
                _ => self.punct(start),
            }
        }
        let end = self.b.len();
        self.out.push(Token {
            tok: Tok::Eof,
            span: Span::new(self.file, end, end),
        });
    }

    fn skip_line(&mut self) {
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
    }

    fn after_matches(&self) -> bool {
        matches!(self.out.last(), Some(Token { tok: Tok::Ident(s), .. }) if s == "matches")
    }

    fn ident(&mut self) {
        let start = self.i;
        loop {
            while self.i < self.b.len() && is_ident_char(self.b[self.i]) {
                self.i += 1;
            }
            // A dot joins segments only when a name follows directly.
            if self.peek(0) == Some(b'.') && self.peek(1).is_some_and(is_ident_start) {
                self.i += 1;
            } else {
                break;
            }
        }
        let text = self.src[start..self.i].to_string();
        self.push(Tok::Ident(text), start);
    }

    fn string(&mut self) {
        let start = self.i;
        self.i += 1;
        let mut s = String::new();
        loop {
            let Some(c) = self.src[self.i..].chars().next() else {
                self.diags.push(
                    Diagnostic::error(
                        codes::UNTERMINATED_STRING,
                        self.span(start),
                        "unterminated string",
                    )
                    .label("this string never ends")
                    .help("add a closing `\"`"),
                );
                return;
            };
            self.i += c.len_utf8();
            match c {
                '"' => break,
                '\n' => {
                    self.diags.push(
                        Diagnostic::error(
                            codes::UNTERMINATED_STRING,
                            Span::new(self.file, start, self.i - 1),
                            "unterminated string",
                        )
                        .label("the line ends inside this string")
                        .help(
                            "close the string with `\"` before the end of the line, or write `\\n`",
                        ),
                    );
                    self.out.push(Token {
                        tok: Tok::Str(s),
                        span: Span::new(self.file, start, self.i - 1),
                    });
                    return;
                }
                '\\' => {
                    let esc_start = self.i - 1;
                    let e = self.src[self.i..].chars().next();
                    self.i += e.map_or(0, char::len_utf8);
                    match e {
                        Some('n') => s.push('\n'),
                        Some('t') => s.push('\t'),
                        Some('r') => s.push('\r'),
                        Some('\\') => s.push('\\'),
                        Some('"') => s.push('"'),
                        Some('0') => s.push('\0'),
                        _ => self.diags.push(
                            Diagnostic::error(
                                codes::LEX,
                                self.span(esc_start),
                                "unknown escape in string",
                            )
                            .label("not a valid escape")
                            .help("valid escapes are \\n \\t \\r \\\\ \\\" \\0"),
                        ),
                    }
                }
                c => s.push(c),
            }
        }
        self.push(Tok::Str(s), start);
    }

    fn regex(&mut self) {
        let start = self.i;
        self.i += 1;
        let mut pat = String::new();
        loop {
            match self.peek(0) {
                None | Some(b'\n') => {
                    self.diags.push(
                        Diagnostic::error(
                            codes::UNTERMINATED_STRING,
                            self.span(start),
                            "unterminated regex",
                        )
                        .label("this regex never ends")
                        .help("close it with `/`; write `\\/` for a literal slash"),
                    );
                    return;
                }
                Some(b'/') => {
                    self.i += 1;
                    break;
                }
                Some(b'\\') if self.peek(1) == Some(b'/') => {
                    pat.push('/');
                    self.i += 2;
                }
                Some(_) => {
                    let c = self.src[self.i..].chars().next().unwrap_or('\0');
                    pat.push(c);
                    self.i += c.len_utf8().max(1);
                }
            }
        }
        // Trailing `i` means case-insensitive.
        if self.peek(0) == Some(b'i') && !self.peek(1).is_some_and(is_ident_char) {
            self.i += 1;
            pat = format!("(?i){pat}");
        }
        self.push(Tok::Regex(pat), start);
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.peek(0).is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - s
    }

    fn number(&mut self) {
        let start = self.i;
        // RFC 3339 time: dddd-dd-ddT…
        let b = &self.b[start..];
        if b.len() >= 11 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-' {
            let mut j = start;
            while j < self.b.len()
                && matches!(
                    self.b[j],
                    b'0'..=b'9' | b'-' | b'+' | b':' | b'.' | b'T' | b't' | b'Z' | b'z'
                )
            {
                j += 1;
            }
            self.i = j;
            let text = &self.src[start..j];
            match parse_time(text) {
                Some(t) => self.push(Tok::Time(t), start),
                None => {
                    let d = Diagnostic::error(
                        codes::BAD_LITERAL,
                        self.span(start),
                        format!("invalid time `{text}`"),
                    )
                    .label("not an RFC 3339 time")
                    .help("write times like 2026-01-01T00:00:00Z or 2026-01-01T00:00:00.5+02:00");
                    self.diags.push(d);
                    self.push(Tok::Bad, start);
                }
            }
            return;
        }
        self.digits();
        // IPv4 address or CIDR: d.d.d.d[/n]
        if self.peek(0) == Some(b'.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
            let save = self.i;
            let mut dots = 0;
            while self.peek(0) == Some(b'.') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                self.i += 1;
                self.digits();
                dots += 1;
            }
            if dots == 3 {
                if self.peek(0) == Some(b'/') && self.peek(1).is_some_and(|c| c.is_ascii_digit()) {
                    self.i += 1;
                    self.digits();
                    let text = &self.src[start..self.i];
                    match Cidr::parse(text) {
                        Some(c) => self.push(Tok::Cidr(c), start),
                        None => self.bad_literal(
                            start,
                            "CIDR",
                            "write networks like 10.0.0.0/8 (prefix 0–32)",
                        ),
                    }
                } else {
                    let text = &self.src[start..self.i];
                    match text.parse::<std::net::Ipv4Addr>() {
                        Ok(ip) => self.push(Tok::Ip(IpAddr::V4(ip)), start),
                        Err(_) => self.bad_literal(
                            start,
                            "IP address",
                            "each part of an IPv4 address is 0–255",
                        ),
                    }
                }
                return;
            }
            if dots != 1 {
                self.bad_literal(
                    start,
                    "number",
                    "an IPv4 address has four parts: 203.0.113.9",
                );
                return;
            }
            self.i = save;
            // A float: d.d
            self.i += 1;
            self.digits();
            if matches!(self.peek(0), Some(b'e' | b'E')) {
                self.exponent();
            }
            let text = &self.src[start..self.i];
            if self.peek(0).is_some_and(is_ident_start) {
                self.trailing_letters(start);
                return;
            }
            match text.parse::<f64>() {
                Ok(f) => self.push(Tok::Float(f), start),
                Err(_) => self.bad_literal(start, "number", "write floats like 1.5 or 2.0e3"),
            }
            return;
        }
        if matches!(self.peek(0), Some(b'e' | b'E'))
            && self
                .peek(1)
                .is_some_and(|c| c.is_ascii_digit() || c == b'-' || c == b'+')
        {
            self.exponent();
            let text = &self.src[start..self.i];
            match text.parse::<f64>() {
                Ok(f) => self.push(Tok::Float(f), start),
                Err(_) => self.bad_literal(start, "number", "write floats like 2.0e3"),
            }
            return;
        }
        if self.peek(0).is_some_and(is_ident_start) {
            // Duration: digits followed by a unit, possibly compound (1h30m).
            while self
                .peek(0)
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_')
            {
                self.i += 1;
            }
            let text = &self.src[start..self.i];
            match parse_duration(text) {
                Some(d) => self.push(Tok::Duration(d), start),
                None => self.bad_literal(
                    start,
                    "number or duration",
                    "durations use the units ns us ms s m h d, as in 60s or 1h30m",
                ),
            }
            return;
        }
        let text = &self.src[start..self.i];
        match text.parse::<i64>() {
            Ok(n) => self.push(Tok::Int(n), start),
            Err(_) => self.bad_literal(
                start,
                "integer",
                "integers must fit in 64 bits (at most 9223372036854775807)",
            ),
        }
    }

    fn exponent(&mut self) {
        self.i += 1;
        if matches!(self.peek(0), Some(b'-' | b'+')) {
            self.i += 1;
        }
        self.digits();
    }

    fn trailing_letters(&mut self, start: usize) {
        while self.peek(0).is_some_and(is_ident_char) {
            self.i += 1;
        }
        self.bad_literal(
            start,
            "number",
            "a number cannot be followed directly by letters",
        );
    }

    fn bad_literal(&mut self, start: usize, what: &str, help: &str) {
        self.push(Tok::Bad, start);
        let text = self.src[start..self.i].to_string();
        self.diags.push(
            Diagnostic::error(
                codes::BAD_NUMBER,
                self.span(start),
                format!("invalid {what} `{text}`"),
            )
            .label(format!("not a valid {what}"))
            .help(help),
        );
    }

    fn punct(&mut self, start: usize) {
        let two = |a: u8, b: u8| self.b[self.i] == a && self.peek(1) == Some(b);
        let (tok, len) = if two(b'?', b'?') {
            (Tok::QQ, 2)
        } else if two(b'-', b'>') {
            (Tok::Arrow, 2)
        } else if two(b'=', b'=') {
            (Tok::EqEq, 2)
        } else if two(b'!', b'=') {
            (Tok::Ne, 2)
        } else if two(b'&', b'&') || two(b'|', b'|') {
            let (word, bad) = if self.b[self.i] == b'&' {
                ("and", "&&")
            } else {
                ("or", "||")
            };
            self.i += 2;
            self.diags.push(
                Diagnostic::error(
                    codes::LEX,
                    self.span(start),
                    format!("`{bad}` is not a Bitspec operator"),
                )
                .label(format!("write `{word}`"))
                .help(format!(
                    "Bitspec spells logic in words: `and`, `or`, `not`; write `{word}` here"
                )),
            );
            self.push(Tok::Ident(word.into()), start);
            return;
        } else if two(b'<', b'=') {
            (Tok::Le, 2)
        } else if two(b'>', b'=') {
            (Tok::Ge, 2)
        } else {
            let t = match self.b[self.i] {
                b'{' => Tok::LBrace,
                b'}' => Tok::RBrace,
                b'(' => Tok::LParen,
                b')' => Tok::RParen,
                b'[' => Tok::LBracket,
                b']' => Tok::RBracket,
                b',' => Tok::Comma,
                b':' => Tok::Colon,
                b'?' => Tok::Question,
                b'=' => Tok::Assign,
                b'<' => Tok::Lt,
                b'>' => Tok::Gt,
                b'+' => Tok::Plus,
                b'-' => Tok::Minus,
                b'*' => Tok::Star,
                b'/' => Tok::Slash,
                b'%' => Tok::Percent,
                _ => {
                    let c = self.src[self.i..].chars().next().unwrap_or('\u{fffd}');
                    self.i += c.len_utf8().max(1);
                    let help = match c {
                        '&' => "write `and` instead of `&&`".to_string(),
                        '|' => "write `or` instead of `||`".to_string(),
                        '!' => "write `not` instead of `!`".to_string(),
                        '\'' => "strings use double quotes: \"…\"".to_string(),
                        ';' => "statements need no `;`; remove it".to_string(),
                        _ => "remove it".to_string(),
                    };
                    self.diags.push(
                        Diagnostic::error(
                            codes::LEX,
                            self.span(start),
                            format!("unexpected character `{c}`"),
                        )
                        .label("not part of Bitspec")
                        .help(help),
                    );
                    return;
                }
            };
            (t, 1)
        };
        self.i += len;
        self.push(tok, start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Tok> {
        let (t, d) = lex(FileId(0), s);
        assert!(d.is_empty(), "{d:?}");
        t.into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn literals() {
        assert_eq!(
            toks("client.ip in 10.0.0.0/8 60s 1.5 2026-01-01T00:00:00Z 203.0.113.9 -> ??"),
            vec![
                Tok::Ident("client.ip".into()),
                Tok::Ident("in".into()),
                Tok::Cidr(Cidr::parse("10.0.0.0/8").unwrap()),
                Tok::Duration(60_000_000_000),
                Tok::Float(1.5),
                Tok::Time(1_767_225_600_000_000_000),
                Tok::Ip("203.0.113.9".parse().unwrap()),
                Tok::Arrow,
                Tok::QQ,
                Tok::Eof
            ]
        );
    }

    #[test]
    fn regex_only_after_matches() {
        assert_eq!(
            toks(r"path matches /^\/api\/v[0-9]+/ a / b"),
            vec![
                Tok::Ident("path".into()),
                Tok::Ident("matches".into()),
                Tok::Regex("^/api/v[0-9]+".into()),
                Tok::Ident("a".into()),
                Tok::Slash,
                Tok::Ident("b".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn errors_are_collected() {
        let (_, d) = lex(FileId(0), "a && b \"open\n 300.1.1.1 5x");
        assert_eq!(d.len(), 4, "{d:?}");
    }
}
