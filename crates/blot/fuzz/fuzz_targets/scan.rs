//! Arbitrary bytes through the scanner: no panic, spans well-formed, and the
//! redacted output holds nothing the scanner still recognizes.
#![no_main]

use ben_blot::{Action, Limits, Redactor, Scanner};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let scanner = Scanner::new();
    let spans = scanner.find(&text).expect("find never fails on valid UTF-8");
    let mut last = 0;
    for s in &spans {
        assert!(s.start >= last && s.end > s.start && s.end <= text.len());
        assert!(text.is_char_boundary(s.start) && text.is_char_boundary(s.end));
        last = s.end;
    }
    let out = scanner.redact(&text).expect("redact");
    let again = scanner.find(&out).expect("find");
    assert!(again.is_empty(), "output {out:?} still has {again:?}");
    // The field path with limits: an over-limit field is an error, never output.
    let r = Redactor::new(None, Limits { max_field_bytes: 64, max_record_bytes: 128 });
    match r.apply(Action::Scan, &text) {
        Ok(Some(v)) => assert!(text.len() <= 64 && v == out),
        Ok(None) => unreachable!("scan never drops"),
        Err(_) => assert!(text.len() > 64),
    }
});
