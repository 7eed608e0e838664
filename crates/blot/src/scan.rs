//! Free-text PII scanning: [`Scanner`] finds [`Span`]s of every [`Kind`] in
//! one pass and replaces each with `[kind]`.
//!
//! The scanner is a hand-written byte state machine (see
//! `recognize/mod.rs`); it holds no compiled tables that need building, so
//! [`Scanner::new`] is free and a `Scanner` is `Copy`-cheap to share.

use crate::recognize;
use crate::BlotError;
use std::borrow::Cow;

/// A PII kind a recognizer finds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Email address (`local@domain.tld`, also URL-encoded `%40`).
    Email,
    /// Payment card number: 12–19 digits in an issuer range, Luhn.
    Card,
    /// IBAN: country length table and ISO 7064 mod-97.
    Iban,
    /// US Social Security number: SSA area/group/serial rules.
    UsSsn,
    /// Phone number: `+`/`00` international (assigned country codes), NANP,
    /// trunk-0 national, with extensions; other digit runs when context words
    /// (`phone`, `call`, `mobile`, …) name them.
    Phone,
    /// IPv4 dotted quad.
    Ipv4,
    /// IPv6 text form (RFC 4291).
    Ipv6,
    /// JSON Web Token (JWS compact form).
    Jwt,
    /// Bearer/Basic credential, vendor API token, or `token=`/`api_key=` value.
    BearerToken,
    /// AWS access key id (`AKIA…` and the other IAM prefixes).
    AwsAccessKey,
    /// AWS secret access key (40 bytes, named by its key).
    AwsSecretKey,
    /// PEM private-key block, BEGIN through END.
    PrivateKey,
}

impl Kind {
    /// Every kind, in declaration order.
    pub const ALL: [Kind; 12] = [
        Kind::Email,
        Kind::Card,
        Kind::Iban,
        Kind::UsSsn,
        Kind::Phone,
        Kind::Ipv4,
        Kind::Ipv6,
        Kind::Jwt,
        Kind::BearerToken,
        Kind::AwsAccessKey,
        Kind::AwsSecretKey,
        Kind::PrivateKey,
    ];

    /// The lowercase name used in `[kind]` replacement text and in the corpus.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Card => "card",
            Kind::Iban => "iban",
            Kind::UsSsn => "us_ssn",
            Kind::Phone => "phone",
            Kind::Ipv4 => "ipv4",
            Kind::Ipv6 => "ipv6",
            Kind::Jwt => "jwt",
            Kind::BearerToken => "bearer_token",
            Kind::AwsAccessKey => "aws_access_key",
            Kind::AwsSecretKey => "aws_secret_key",
            Kind::PrivateKey => "private_key",
        }
    }

    /// The replacement text, `[name]`.
    pub fn placeholder(self) -> &'static str {
        match self {
            Kind::Email => "[email]",
            Kind::Card => "[card]",
            Kind::Iban => "[iban]",
            Kind::UsSsn => "[us_ssn]",
            Kind::Phone => "[phone]",
            Kind::Ipv4 => "[ipv4]",
            Kind::Ipv6 => "[ipv6]",
            Kind::Jwt => "[jwt]",
            Kind::BearerToken => "[bearer_token]",
            Kind::AwsAccessKey => "[aws_access_key]",
            Kind::AwsSecretKey => "[aws_secret_key]",
            Kind::PrivateKey => "[private_key]",
        }
    }

    /// The kind with this [`Kind::name`].
    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Whether the format has a check that random strings fail (checksum,
    /// issuer/area rules, fixed structure), so recall must be total.
    pub fn is_validated(self) -> bool {
        !matches!(self, Kind::Phone | Kind::BearerToken)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A found span: byte offsets into the scanned text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
}

/// The multi-kind free-text scanner. Free to construct, clone and share.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scanner {}

impl Scanner {
    /// The scanner with every recognizer.
    pub fn new() -> Self {
        Scanner {}
    }

    /// Every PII span in `text`, in order, non-overlapping.
    pub fn find(&self, text: &str) -> Result<Vec<Span>, BlotError> {
        let mut out = Vec::new();
        self.find_into(text, &mut out)?;
        Ok(out)
    }

    /// Like [`Scanner::find`], reusing `out` (cleared first) to avoid an
    /// allocation per record.
    pub fn find_into(&self, text: &str, out: &mut Vec<Span>) -> Result<(), BlotError> {
        out.clear();
        recognize::scan(text.as_bytes(), out);
        check_spans(text, out)
    }

    /// `text` with each PII span replaced by `[kind]`. Borrows when nothing
    /// was found.
    ///
    /// The output is re-scanned until nothing in it is recognized: a value
    /// rejected only because of what stood next to it (`1::` glued to a card
    /// number) is recognized once that neighbour became `[card]`, and is then
    /// redacted too. So the output never holds a value the scanner would
    /// call PII. Each pass only removes original bytes, so this ends; past
    /// [`MAX_PASSES`] it is an error rather than an unchecked output.
    pub fn redact<'a>(&self, text: &'a str) -> Result<Cow<'a, str>, BlotError> {
        let mut spans = Vec::new();
        self.find_into(text, &mut spans)?;
        if spans.is_empty() {
            return Ok(Cow::Borrowed(text));
        }
        let mut out = String::with_capacity(text.len());
        splice(text, &spans, &mut out)?;
        self.settle(&mut out, 0, &mut spans)?;
        Ok(Cow::Owned(out))
    }

    /// Appends the redaction of `text` to `out`, reusing `spans` as scratch.
    /// On error `out` is restored to its length on entry, so no partial
    /// output escapes.
    pub fn redact_into(
        &self,
        text: &str,
        spans: &mut Vec<Span>,
        out: &mut String,
    ) -> Result<(), BlotError> {
        let mark = out.len();
        let r = self.find_into(text, spans).and_then(|()| {
            if spans.is_empty() {
                out.push_str(text);
                return Ok(());
            }
            splice(text, spans, out)?;
            self.settle(out, mark, spans)
        });
        if r.is_err() {
            out.truncate(mark);
        }
        r
    }

    /// Re-scans `out[from..]` and redacts again until nothing is found.
    fn settle(
        &self,
        out: &mut String,
        from: usize,
        spans: &mut Vec<Span>,
    ) -> Result<(), BlotError> {
        for _ in 1..MAX_PASSES {
            let tail = out
                .get(from..)
                .ok_or(BlotError::Internal("redaction buffer out of range"))?;
            self.find_into(tail, spans)?;
            if spans.is_empty() {
                return Ok(());
            }
            let mut next = String::with_capacity(tail.len());
            splice(tail, spans, &mut next)?;
            out.truncate(from);
            out.push_str(&next);
        }
        Err(BlotError::Internal("redaction did not settle"))
    }
}

/// Most scan passes [`Scanner::redact`] makes before it gives up (fails
/// closed). One pass is the norm; a second happens only for values glued to
/// a redacted neighbour.
pub const MAX_PASSES: usize = 8;

/// Spans must be in bounds, ordered, disjoint and on char boundaries; the
/// recognizers guarantee it, and this check turns a bug into an error
/// instead of a leak or a panic (invariant 5).
fn check_spans(text: &str, spans: &[Span]) -> Result<(), BlotError> {
    let mut last = 0;
    for s in spans {
        if s.start < last
            || s.end <= s.start
            || s.end > text.len()
            || !text.is_char_boundary(s.start)
            || !text.is_char_boundary(s.end)
        {
            return Err(BlotError::Internal("scanner produced an invalid span"));
        }
        last = s.end;
    }
    Ok(())
}

fn splice(text: &str, spans: &[Span], out: &mut String) -> Result<(), BlotError> {
    let mut last = 0;
    for s in spans {
        let keep = text
            .get(last..s.start)
            .ok_or(BlotError::Internal("span outside the text"))?;
        out.push_str(keep);
        out.push_str(s.kind.placeholder());
        last = s.end;
    }
    let tail = text
        .get(last..)
        .ok_or(BlotError::Internal("span outside the text"))?;
    out.push_str(tail);
    Ok(())
}
