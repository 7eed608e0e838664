//! Sources, spans and compiler-grade diagnostics.
//!
//! A [`Diagnostic`] names the place (file:line:col), shows the source line
//! with a caret under the span, says what was expected and, where a name was
//! misspelled, suggests the nearest one.

use serde::Serialize;
use std::fmt::Write as _;

/// Index of a file in a [`SourceMap`].
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    Default,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct FileId(pub u32);

/// A byte range in one source file.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub struct Span {
    pub file: FileId,
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn new(file: FileId, start: usize, end: usize) -> Self {
        Span {
            file,
            start: start as u32,
            end: end as u32,
        }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        if self.file != other.file {
            return self;
        }
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }
}

/// One source file: its display name and text.
#[derive(Debug, Clone)]
pub struct Source {
    pub name: String,
    pub text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> Self {
        let text = text.into();
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Source {
            name: name.into(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in chars) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = match self.line_starts.binary_search(&offset) {
            Ok(i) => i,
            Err(i) => i.saturating_sub(1),
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count());
        (line + 1, col + 1)
    }

    /// The text of a 1-based line, without its newline.
    pub fn line_text(&self, line: usize) -> &str {
        let Some(&start) = self.line_starts.get(line.wrapping_sub(1)) else {
            return "";
        };
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |&e| e.saturating_sub(1));
        self.text
            .get(start..end)
            .unwrap_or("")
            .trim_end_matches('\r')
    }
}

/// All files of one compilation.
#[derive(Debug, Clone, Default)]
pub struct SourceMap {
    files: Vec<Source>,
}

impl SourceMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, name: impl Into<String>, text: impl Into<String>) -> FileId {
        self.files.push(Source::new(name, text));
        FileId((self.files.len() - 1) as u32)
    }

    pub fn get(&self, id: FileId) -> Option<&Source> {
        self.files.get(id.0 as usize)
    }

    pub fn files(&self) -> impl Iterator<Item = (FileId, &Source)> {
        self.files
            .iter()
            .enumerate()
            .map(|(i, s)| (FileId(i as u32), s))
    }

    /// The source text a span covers.
    pub fn snippet(&self, span: Span) -> &str {
        self.get(span.file)
            .and_then(|s| s.text.get(span.start as usize..span.end as usize))
            .unwrap_or("")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// A compiler message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    /// Stable code, e.g. `E0201`; see [`codes`].
    pub code: &'static str,
    pub message: String,
    pub span: Span,
    /// Short text printed under the caret.
    pub label: String,
    /// "did you mean" or what to do next.
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn error(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Error,
            code,
            message: message.into(),
            span,
            label: String::new(),
            help: None,
        }
    }

    pub fn warning(code: &'static str, span: Span, message: impl Into<String>) -> Self {
        Diagnostic {
            severity: Severity::Warning,
            ..Diagnostic::error(code, span, message)
        }
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    pub fn help_opt(mut self, help: Option<String>) -> Self {
        if help.is_some() {
            self.help = help;
        }
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// Renders in the style of rustc: header, location, source line, caret.
    pub fn render(&self, map: &SourceMap) -> String {
        let mut out = String::new();
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let _ = writeln!(out, "{sev}[{}]: {}", self.code, self.message);
        if let Some(src) = map.get(self.span.file) {
            let (line, col) = src.line_col(self.span.start as usize);
            let (end_line, end_col) = src.line_col(self.span.end as usize);
            let gutter = line.to_string().len();
            let _ = writeln!(out, "{:gutter$}--> {}:{}:{}", "", src.name, line, col);
            let _ = writeln!(out, "{:gutter$} |", "");
            let text = src.line_text(line);
            let _ = writeln!(out, "{line} | {text}");
            let width = if end_line == line {
                end_col.saturating_sub(col).max(1)
            } else {
                text.chars().count().saturating_sub(col - 1).max(1)
            };
            let pad: String = text
                .chars()
                .take(col - 1)
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            let _ = write!(out, "{:gutter$} | {pad}{}", "", "^".repeat(width));
            if !self.label.is_empty() {
                let _ = write!(out, " {}", self.label);
            }
            out.push('\n');
            if let Some(help) = &self.help {
                let _ = writeln!(out, "{:gutter$} |", "");
                let _ = writeln!(out, "{:gutter$} = help: {help}", "");
            }
        } else if let Some(help) = &self.help {
            let _ = writeln!(out, "  = help: {help}");
        }
        out
    }

    /// Machine-readable form for `--format json`.
    pub fn to_json(&self, map: &SourceMap) -> serde_json::Value {
        let (file, line, col, end_line, end_col) = match map.get(self.span.file) {
            Some(src) => {
                let (l, c) = src.line_col(self.span.start as usize);
                let (el, ec) = src.line_col(self.span.end as usize);
                (src.name.clone(), l, c, el, ec)
            }
            None => (String::new(), 0, 0, 0, 0),
        };
        serde_json::json!({
            "severity": self.severity,
            "code": self.code,
            "message": self.message,
            "file": file,
            "line": line,
            "col": col,
            "end_line": end_line,
            "end_col": end_col,
            "label": self.label,
            "help": self.help,
        })
    }
}

/// Renders many diagnostics, errors first in source order.
pub fn render_all(diags: &[Diagnostic], map: &SourceMap) -> String {
    let mut out = String::new();
    for d in diags {
        out.push_str(&d.render(map));
        out.push('\n');
    }
    out
}

/// The nearest candidate to `name` by edit distance, if close enough to be a
/// plausible typo.
pub fn suggest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<String> {
    let max = (name.chars().count() / 3).max(1) + usize::from(name.len() > 6);
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (edit_distance(name, c), c))
        .filter(|(d, _)| *d <= max)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c.to_string())
}

/// `did you mean` help text.
pub fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<String> {
    suggest(name, candidates).map(|s| format!("did you mean `{s}`?"))
}

/// Damerau-style (optimal string alignment) edit distance over chars.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[n][m]
}

/// Diagnostic codes. Stable: tools may match on them.
pub mod codes {
    pub const LEX: &str = "E0001";
    pub const UNTERMINATED_STRING: &str = "E0002";
    pub const BAD_NUMBER: &str = "E0003";
    pub const BAD_LITERAL: &str = "E0004";
    pub const EXPECTED: &str = "E0101";
    pub const UNKNOWN_ITEM: &str = "E0102";
    pub const DUPLICATE: &str = "E0201";
    pub const UNKNOWN_TYPE: &str = "E0202";
    pub const UNKNOWN_SCHEMA: &str = "E0203";
    pub const UNKNOWN_FIELD: &str = "E0204";
    pub const UNKNOWN_FLAG: &str = "E0205";
    pub const UNKNOWN_FUNCTION: &str = "E0206";
    pub const UNKNOWN_META: &str = "E0207";
    pub const UNKNOWN_CONTRACT: &str = "E0208";
    pub const UNKNOWN_PII: &str = "E0209";
    pub const UNKNOWN_ACTION: &str = "E0210";
    pub const UNKNOWN_ROUTE: &str = "E0211";
    pub const TYPE_MISMATCH: &str = "E0301";
    pub const ARITY: &str = "E0302";
    pub const BAD_REGEX: &str = "E0303";
    pub const FLAG_CYCLE: &str = "E0304";
    pub const MISSING_FIELD: &str = "E0305";
    pub const NOT_REDACTED: &str = "E0306";
    pub const BAD_REDACT: &str = "E0307";
    pub const COST: &str = "E0308";
    pub const AMBIGUOUS: &str = "E0309";
    pub const RESERVED: &str = "E0310";
    pub const BAD_PLAYBOOK: &str = "E0311";
    pub const BAD_MIGRATION: &str = "E0312";
    pub const BAD_TEST: &str = "E0313";
    pub const LOCK: &str = "E0401";
    pub const UNUSED: &str = "W0001";
    /// `ben.toml`: an app whose selector is `"any"`.
    pub const ANY_SELECTOR: &str = "W0002";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_chars() {
        let s = Source::new("f", "ab\ncé d\n");
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(3), (2, 1));
        assert_eq!(s.line_col(6), (2, 3));
        assert_eq!(s.line_text(2), "cé d");
    }

    #[test]
    fn suggestions_pick_close_names() {
        assert_eq!(
            suggest("stauts", ["status", "path", "bytes"]),
            Some("status".into())
        );
        assert_eq!(suggest("zzz", ["status", "path"]), None);
        assert_eq!(edit_distance("abc", "acb"), 1);
    }
}
