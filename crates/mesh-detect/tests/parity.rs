//! Model parity: the Rust evaluator reproduces Python LightGBM's raw scores
//! and probabilities on held-out rows (written by scripts/mesh/train.py,
//! including rows with injected NaN and zeros) to 1e-9.

use ben_mesh_detect::{defaults, LgbmModel};

#[test]
fn rust_matches_python_lightgbm() {
    let model = LgbmModel::parse(defaults::MODEL).expect("committed model parses");
    let text = include_str!("data/parity.csv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let nf = model.feature_names().len();
    let k = model.num_outputs();
    assert_eq!(
        header.len(),
        nf + 2 * k,
        "fixture columns = features + raw + prob"
    );
    for (i, name) in model.feature_names().iter().enumerate() {
        assert_eq!(header[i], name, "fixture column {i}");
    }
    let (mut max_raw, mut max_prob, mut rows, mut nan_rows) = (0f64, 0f64, 0usize, 0usize);
    for (no, line) in lines.enumerate() {
        let v: Vec<f64> = line
            .split(',')
            .map(|c| {
                c.parse::<f64>()
                    .unwrap_or_else(|_| panic!("line {}: {c:?}", no + 2))
            })
            .collect();
        let x = &v[..nf];
        nan_rows += usize::from(x.iter().any(|f| f.is_nan()));
        let raw = model.predict_raw(x);
        let mut prob = raw.clone();
        model.transform(&mut prob);
        for c in 0..k {
            max_raw = max_raw.max((raw[c] - v[nf + c]).abs());
            max_prob = max_prob.max((prob[c] - v[nf + k + c]).abs());
        }
        rows += 1;
    }
    println!("parity: {rows} rows ({nan_rows} with NaN), {} trees, max |Δraw| = {max_raw:e}, max |Δprob| = {max_prob:e}", model.num_trees());
    assert!(rows >= 100, "fixture too small: {rows}");
    assert!(nan_rows > 0, "fixture must exercise missing values");
    assert!(max_raw <= 1e-9, "raw scores differ by {max_raw:e}");
    assert!(max_prob <= 1e-9, "probabilities differ by {max_prob:e}");
}

#[test]
fn saabas_contributions_add_up_on_real_rows() {
    let model = LgbmModel::parse(defaults::MODEL).expect("committed model parses");
    let nf = model.feature_names().len();
    for line in include_str!("data/parity.csv").lines().skip(1).take(50) {
        let v: Vec<f64> = line
            .split(',')
            .map(|c| c.parse().unwrap_or(f64::NAN))
            .collect();
        let raw = model.predict_raw(&v[..nf]);
        for (c, r) in raw.iter().enumerate() {
            let sum: f64 = model.contributions(&v[..nf], c).iter().sum();
            assert!((sum - r).abs() < 1e-9, "class {c}: {sum} vs {r}");
        }
    }
}
