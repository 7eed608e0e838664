//! Arbitrary bytes as a .bspec file: the compiler must return a result or
//! diagnostics, never panic, and every diagnostic must render.
#![no_main]

use ben_bitspec::{compile, lock::BitTable, Source};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    match compile(&[Source::new("fuzz.bspec", text.as_ref())], &BitTable::default(), Default::default()) {
        Ok(c) => {
            for p in &c.program.packs {
                let compiled = ben_bitspec::compile::CompiledPack::new(p);
                let mut s = compiled.scratch();
                let rec = vec![ben_bitspec::Value::Null; c.program.schemas[p.schema].fields.len()];
                compiled.eval(&rec, &mut s);
                let _ = ben_bitspec::interp::eval_pack(p, &rec);
            }
        }
        Err(f) => {
            let _ = f.render();
        }
    }
});
