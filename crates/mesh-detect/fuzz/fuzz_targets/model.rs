//! LightGBM text models: parsing never panics, and a parsed model evaluates
//! any row (NaN, zeros, huge values) without panicking or looping.
#![no_main]
use ben_mesh_detect::LgbmModel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = LgbmModel::parse(&String::from_utf8_lossy(data)) {
        let n = m.feature_names().len();
        for v in [f64::NAN, 0.0, -1.0, 1e300] {
            let x = vec![v; n];
            let _ = m.predict(&x);
            for c in 0..m.num_outputs() {
                let _ = m.contributions(&x, c);
            }
        }
    }
});
