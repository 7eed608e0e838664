//! LightGBM text-format models, parsed and evaluated natively.
//!
//! Reads the file `Booster.save_model()` writes (`tree` header, `Tree=N`
//! blocks, `end of trees`) and evaluates it exactly as LightGBM's own
//! `Tree::Predict` does on `f64` inputs:
//!
//! * numerical splits `x <= threshold` with `default_left` and the three
//!   missing types (`None`: NaN is treated as 0; `Zero`: |x| ≤ 1e-35 and NaN
//!   take the default branch; `NaN`: NaN takes the default branch);
//! * categorical splits (bitsets in `cat_threshold`, NaN and negatives go
//!   right);
//! * objectives `binary` (sigmoid with the model's `sigmoid:` factor),
//!   `multiclass` (softmax), `multiclassova` (per-class sigmoid) and the
//!   identity objectives (regression family).
//!
//! Tree outputs are summed in file order into `f64`, the same order LightGBM
//! uses, so raw scores agree with Python's to the last few ulps (the parity
//! test asserts 1e-9). Linear trees (`is_linear=1`) are rejected.
//!
//! Attribution is **Saabas** (per-tree path attribution): walking a sample's
//! path, each split credits its feature with the change of node value from
//! parent to child, using the `internal_value`s stored in the model. For
//! every class, `bias + Σ contributions == raw score` exactly (up to
//! rounding). It is cheaper than TreeSHAP and path-dependent, so it can
//! over-credit features split near the root; it is used for evidence only.

use crate::error::DetectError;

/// How the raw score becomes a probability.
#[derive(Clone, Debug, PartialEq)]
pub enum Objective {
    /// `binary sigmoid:s`: p = 1 / (1 + exp(-s·raw)).
    Binary {
        /// The model's sigmoid factor.
        sigmoid: f64,
    },
    /// `multiclass num_class:k`: softmax over the k raw scores.
    Multiclass,
    /// `multiclassova num_class:k sigmoid:s`: one sigmoid per class.
    MulticlassOva {
        /// The model's sigmoid factor.
        sigmoid: f64,
    },
    /// Regression-style objectives: the raw score is the output.
    Identity,
}

const MISSING_ZERO: u8 = 1;
const MISSING_NAN: u8 = 2;
const ZERO_THRESHOLD: f64 = 1e-35;

/// One split, packed for the evaluation loop (one cache line holds two).
#[derive(Clone, Copy, Debug)]
struct Node {
    threshold: f64,
    feature: u32,
    left: i32,
    right: i32,
    decision: u8,
}

#[derive(Clone, Debug)]
struct Tree {
    nodes: Vec<Node>,
    split_feature: Vec<usize>,
    threshold: Vec<f64>,
    left: Vec<i32>,
    right: Vec<i32>,
    leaf_value: Vec<f64>,
    internal_value: Vec<f64>,
    cat_boundaries: Vec<usize>,
    cat_threshold: Vec<u32>,
}

impl Tree {
    /// Index of the leaf `x` lands in (LightGBM's `GetLeaf`).
    #[inline]
    fn leaf(&self, x: &[f64]) -> usize {
        if self.left.is_empty() {
            return 0;
        }
        let mut node: i32 = 0;
        while node >= 0 {
            node = self.next(node as usize, x);
        }
        !node as usize
    }

    #[inline]
    fn next(&self, node: usize, x: &[f64]) -> i32 {
        let n = &self.nodes[node];
        let fval = x.get(n.feature as usize).copied().unwrap_or(f64::NAN);
        let dt = n.decision;
        if dt & 1 != 0 {
            return self.categorical(node, fval);
        }
        let missing = (dt >> 2) & 3;
        let mut v = fval;
        if v.is_nan() && missing != MISSING_NAN {
            v = 0.0;
        }
        if (missing == MISSING_ZERO && v.abs() <= ZERO_THRESHOLD)
            || (missing == MISSING_NAN && v.is_nan())
        {
            return if dt & 2 != 0 { n.left } else { n.right };
        }
        if v <= n.threshold {
            n.left
        } else {
            n.right
        }
    }

    #[inline]
    fn categorical(&self, node: usize, fval: f64) -> i32 {
        if fval.is_nan() {
            return self.right[node];
        }
        // C++ static_cast<int>: truncation toward zero (saturating here).
        let iv = fval as i32;
        if iv < 0 {
            return self.right[node];
        }
        let cat_idx = self.threshold[node] as usize;
        let (lo, hi) = match (
            self.cat_boundaries.get(cat_idx),
            self.cat_boundaries.get(cat_idx + 1),
        ) {
            (Some(&lo), Some(&hi)) if lo <= hi && hi <= self.cat_threshold.len() => (lo, hi),
            _ => return self.right[node],
        };
        let words = &self.cat_threshold[lo..hi];
        let word = (iv as usize) / 32;
        match words.get(word) {
            Some(w) if (w >> (iv as u32 % 32)) & 1 == 1 => self.left[node],
            _ => self.right[node],
        }
    }

    /// Adds Saabas contributions of this tree to `out` (one slot per
    /// feature, the last slot is the bias) and returns the leaf value.
    fn attribute(&self, x: &[f64], out: &mut [f64]) -> f64 {
        let bias_slot = out.len() - 1;
        if self.left.is_empty() {
            let v = self.leaf_value.first().copied().unwrap_or(0.0);
            out[bias_slot] += v;
            return v;
        }
        let mut node: i32 = 0;
        let mut value = self.internal_value[0];
        out[bias_slot] += value;
        while node >= 0 {
            let n = node as usize;
            let child = self.next(n, x);
            let child_value = if child >= 0 {
                self.internal_value[child as usize]
            } else {
                self.leaf_value[!child as usize]
            };
            if let Some(slot) = out.get_mut(self.split_feature[n]) {
                *slot += child_value - value;
            }
            value = child_value;
            node = child;
        }
        value
    }
}

/// A LightGBM model loaded from its text format.
#[derive(Clone, Debug)]
pub struct LgbmModel {
    num_class: usize,
    trees_per_iteration: usize,
    feature_names: Vec<String>,
    objective: Objective,
    trees: Vec<Tree>,
}

impl LgbmModel {
    /// Parses a model from LightGBM's text format.
    pub fn parse(text: &str) -> Result<Self, DetectError> {
        let mut lines = text.lines().enumerate().peekable();
        let mut header: Vec<(usize, &str, &str)> = Vec::new();
        // Header: key=value lines until the first `Tree=`.
        while let Some(&(no, line)) = lines.peek() {
            if line.starts_with("Tree=") || line.starts_with("end of trees") {
                break;
            }
            lines.next();
            if let Some((k, v)) = line.split_once('=') {
                header.push((no + 1, k.trim(), v.trim()));
            }
        }
        let get = |key: &str| header.iter().find(|(_, k, _)| *k == key).copied();
        let num_class: usize = match get("num_class") {
            Some((line, _, v)) => parse_num(v, line, "num_class")?,
            None => return Err(model_err(1, "missing `num_class` in the header")),
        };
        let trees_per_iteration: usize = match get("num_tree_per_iteration") {
            Some((line, _, v)) => parse_num(v, line, "num_tree_per_iteration")?,
            None => num_class,
        };
        if num_class == 0 || trees_per_iteration == 0 {
            return Err(model_err(
                1,
                "num_class and num_tree_per_iteration must be ≥ 1",
            ));
        }
        // Sizes come from the file and size what evaluation allocates, so
        // they are bounded here (invariant 11: a bad model is an error,
        // never an allocation that aborts the process).
        if num_class > MAX_CLASSES || trees_per_iteration > MAX_CLASSES {
            return Err(model_err(
                1,
                &format!("num_class and num_tree_per_iteration must be ≤ {MAX_CLASSES}"),
            ));
        }
        let max_feature_idx: usize = match get("max_feature_idx") {
            Some((line, _, v)) => parse_num(v, line, "max_feature_idx")?,
            None => return Err(model_err(1, "missing `max_feature_idx` in the header")),
        };
        if max_feature_idx >= MAX_FEATURES {
            return Err(model_err(
                1,
                &format!("max_feature_idx={max_feature_idx}: at most {MAX_FEATURES} features"),
            ));
        }
        let feature_names: Vec<String> = match get("feature_names") {
            Some((_, _, v)) => v.split_whitespace().map(str::to_owned).collect(),
            None => (0..=max_feature_idx)
                .map(|i| format!("Column_{i}"))
                .collect(),
        };
        if feature_names.len() != max_feature_idx + 1 {
            return Err(model_err(
                1,
                &format!(
                    "{} feature names for max_feature_idx={max_feature_idx}",
                    feature_names.len()
                ),
            ));
        }
        let objective = match get("objective") {
            Some((line, _, v)) => parse_objective(v, line)?,
            None => Objective::Identity,
        };

        let mut trees = Vec::new();
        while let Some((no, line)) = lines.next() {
            let line = line.trim();
            if line.starts_with("end of trees") {
                break;
            }
            if !line.starts_with("Tree=") {
                continue;
            }
            let start = no + 1;
            let mut fields: Vec<(usize, &str, &str)> = Vec::new();
            while let Some(&(no, l)) = lines.peek() {
                let l = l.trim();
                if l.starts_with("Tree=") || l.starts_with("end of trees") {
                    break;
                }
                lines.next();
                if let Some((k, v)) = l.split_once('=') {
                    fields.push((no + 1, k, v));
                }
            }
            trees.push(parse_tree(start, &fields, feature_names.len())?);
        }
        if trees.is_empty() {
            return Err(model_err(1, "the model has no trees"));
        }
        if trees.len() % trees_per_iteration != 0 {
            return Err(model_err(
                1,
                &format!(
                    "{} trees is not a multiple of num_tree_per_iteration={trees_per_iteration}",
                    trees.len()
                ),
            ));
        }
        Ok(Self {
            num_class,
            trees_per_iteration,
            feature_names,
            objective,
            trees,
        })
    }

    /// Number of output classes (1 for binary and regression).
    pub fn num_class(&self) -> usize {
        self.num_class
    }

    /// Number of raw scores per sample (`num_tree_per_iteration`).
    pub fn num_outputs(&self) -> usize {
        self.trees_per_iteration
    }

    /// Number of trees in the model.
    pub fn num_trees(&self) -> usize {
        self.trees.len()
    }

    /// Feature names, in the model's column order.
    pub fn feature_names(&self) -> &[String] {
        &self.feature_names
    }

    /// The objective that turns raw scores into outputs.
    pub fn objective(&self) -> &Objective {
        &self.objective
    }

    /// Raw scores (one per output) for a feature row in model column order.
    /// Missing trailing features are treated as NaN.
    pub fn predict_raw_into(&self, x: &[f64], raw: &mut [f64]) {
        let k = self.trees_per_iteration;
        raw.iter_mut().for_each(|r| *r = 0.0);
        for (i, tree) in self.trees.iter().enumerate() {
            if let Some(slot) = raw.get_mut(i % k) {
                *slot += tree.leaf_value[tree.leaf(x)];
            }
        }
    }

    /// Raw scores as a new vector.
    pub fn predict_raw(&self, x: &[f64]) -> Vec<f64> {
        let mut raw = vec![0.0; self.trees_per_iteration];
        self.predict_raw_into(x, &mut raw);
        raw
    }

    /// Applies the objective's output transform to raw scores, in place.
    pub fn transform(&self, raw: &mut [f64]) {
        match self.objective {
            Objective::Binary { sigmoid } | Objective::MulticlassOva { sigmoid } => {
                for r in raw.iter_mut() {
                    *r = 1.0 / (1.0 + (-sigmoid * *r).exp());
                }
            }
            Objective::Multiclass => softmax(raw),
            Objective::Identity => {}
        }
    }

    /// Outputs after the objective's transform (probabilities for the
    /// classification objectives).
    pub fn predict(&self, x: &[f64]) -> Vec<f64> {
        let mut raw = self.predict_raw(x);
        self.transform(&mut raw);
        raw
    }

    /// Saabas contributions for output `class`: one value per feature, then
    /// the bias as the last element; their sum equals the raw score.
    pub fn contributions(&self, x: &[f64], class: usize) -> Vec<f64> {
        let mut out = vec![0.0; self.feature_names.len() + 1];
        let k = self.trees_per_iteration;
        for (i, tree) in self.trees.iter().enumerate() {
            if i % k == class {
                tree.attribute(x, &mut out);
            }
        }
        out
    }
}

fn softmax(v: &mut [f64]) {
    // Same arithmetic as LightGBM's Common::Softmax: subtract the max,
    // exponentiate, divide by the sum.
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut sum = 0.0;
    for x in v.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in v.iter_mut() {
        *x /= sum;
    }
}

/// The most features a model may declare (CIC flows have 78).
pub const MAX_FEATURES: usize = 1 << 16;
/// The most classes (and trees per iteration) a model may declare.
pub const MAX_CLASSES: usize = 1 << 10;

fn model_err(line: usize, message: &str) -> DetectError {
    DetectError::Model {
        line,
        message: message.to_owned(),
    }
}

fn parse_num<T: std::str::FromStr>(v: &str, line: usize, what: &str) -> Result<T, DetectError> {
    v.trim()
        .parse()
        .map_err(|_| model_err(line, &format!("`{what}` is not a number: {v:?}")))
}

fn parse_objective(v: &str, line: usize) -> Result<Objective, DetectError> {
    let mut parts = v.split_whitespace();
    let name = parts.next().unwrap_or("");
    let mut sigmoid = 1.0;
    for p in parts {
        if let Some(s) = p.strip_prefix("sigmoid:") {
            sigmoid = parse_num(s, line, "sigmoid")?;
        }
    }
    Ok(match name {
        "binary" | "cross_entropy" | "xentropy" => Objective::Binary { sigmoid },
        "multiclass" | "softmax" => Objective::Multiclass,
        "multiclassova" | "multiclass_ova" | "ova" | "ovr" => Objective::MulticlassOva { sigmoid },
        "regression" | "regression_l1" | "huber" | "fair" | "quantile" | "mape" => {
            Objective::Identity
        }
        other => {
            return Err(model_err(
                line,
                &format!("unsupported objective `{other}` (binary, multiclass, multiclassova and regression are)"),
            ))
        }
    })
}

fn parse_list<T: std::str::FromStr>(
    fields: &[(usize, &str, &str)],
    key: &str,
    tree_line: usize,
) -> Result<Vec<T>, DetectError> {
    match fields.iter().find(|(_, k, _)| *k == key) {
        Some((line, _, v)) => v
            .split_whitespace()
            .map(|t| parse_num(t, *line, key))
            .collect(),
        None => Err(model_err(tree_line, &format!("tree is missing `{key}`"))),
    }
}

fn parse_tree(
    start: usize,
    fields: &[(usize, &str, &str)],
    num_features: usize,
) -> Result<Tree, DetectError> {
    let num_leaves: usize = match fields.iter().find(|(_, k, _)| *k == "num_leaves") {
        Some((line, _, v)) => parse_num(v, *line, "num_leaves")?,
        None => return Err(model_err(start, "tree is missing `num_leaves`")),
    };
    if let Some((line, _, v)) = fields.iter().find(|(_, k, _)| *k == "is_linear") {
        if v.trim() != "0" {
            return Err(model_err(*line, "linear trees are not supported"));
        }
    }
    let leaf_value: Vec<f64> = parse_list(fields, "leaf_value", start)?;
    if num_leaves == 0 || leaf_value.len() != num_leaves {
        return Err(model_err(
            start,
            &format!(
                "{} leaf values for num_leaves={num_leaves}",
                leaf_value.len()
            ),
        ));
    }
    if num_leaves == 1 {
        return Ok(Tree {
            nodes: vec![],
            split_feature: vec![],
            threshold: vec![],
            left: vec![],
            right: vec![],
            leaf_value,
            internal_value: vec![],
            cat_boundaries: vec![],
            cat_threshold: vec![],
        });
    }
    let n = num_leaves - 1;
    let split_feature: Vec<usize> = parse_list(fields, "split_feature", start)?;
    let threshold: Vec<f64> = parse_list(fields, "threshold", start)?;
    let decision_type: Vec<u8> = parse_list(fields, "decision_type", start)?;
    let left: Vec<i32> = parse_list(fields, "left_child", start)?;
    let right: Vec<i32> = parse_list(fields, "right_child", start)?;
    let internal_value: Vec<f64> = match parse_list(fields, "internal_value", start) {
        Ok(v) => v,
        Err(_) => vec![0.0; n],
    };
    for (name, len) in [
        ("split_feature", split_feature.len()),
        ("threshold", threshold.len()),
        ("decision_type", decision_type.len()),
        ("left_child", left.len()),
        ("right_child", right.len()),
        ("internal_value", internal_value.len()),
    ] {
        if len != n {
            return Err(model_err(
                start,
                &format!("`{name}` has {len} entries, expected {n}"),
            ));
        }
    }
    if let Some(f) = split_feature.iter().find(|&&f| f >= num_features) {
        return Err(model_err(
            start,
            &format!("split on feature {f} ≥ {num_features}"),
        ));
    }
    // Children must be valid and reachable only downward, so evaluation
    // always terminates (invariant 11: bad input never panics or hangs).
    let mut seen = vec![false; n];
    let mut leaf_seen = vec![false; num_leaves];
    for node in 0..n {
        for &child in [left[node], right[node]].iter() {
            if child >= 0 {
                let c = child as usize;
                if c >= n || c <= node || seen[c] {
                    return Err(model_err(
                        start,
                        &format!("bad child {child} at node {node}"),
                    ));
                }
                seen[c] = true;
            } else {
                let l = !child as usize;
                if l >= num_leaves || leaf_seen[l] {
                    return Err(model_err(
                        start,
                        &format!("bad leaf {child} at node {node}"),
                    ));
                }
                leaf_seen[l] = true;
            }
        }
    }
    let (cat_boundaries, cat_threshold) = if decision_type.iter().any(|d| d & 1 != 0) {
        (
            parse_list(fields, "cat_boundaries", start)?,
            parse_list(fields, "cat_threshold", start)?,
        )
    } else {
        (vec![], vec![])
    };
    let nodes = (0..n)
        .map(|i| Node {
            threshold: threshold[i],
            feature: split_feature[i] as u32,
            left: left[i],
            right: right[i],
            decision: decision_type[i],
        })
        .collect();
    Ok(Tree {
        nodes,
        split_feature,
        threshold,
        left,
        right,
        leaf_value,
        internal_value,
        cat_boundaries,
        cat_threshold,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two-class binary model by hand: one tree splitting feature 0 at 1.5
    // with NaN going left, one tree splitting feature 1 (zero as missing).
    const TINY: &str = "tree\nversion=v4\nnum_class=1\nnum_tree_per_iteration=1\nlabel_index=0\nmax_feature_idx=1\nobjective=binary sigmoid:1\nfeature_names=a b\n\nTree=0\nnum_leaves=2\nnum_cat=0\nsplit_feature=0\nthreshold=1.5\ndecision_type=10\nleft_child=-1\nright_child=-2\nleaf_value=-1 1\ninternal_value=0.2\nis_linear=0\nshrinkage=1\n\n\nTree=1\nnum_leaves=2\nnum_cat=0\nsplit_feature=1\nthreshold=0.5\ndecision_type=4\nleft_child=-1\nright_child=-2\nleaf_value=0.25 -0.25\ninternal_value=0\nis_linear=0\nshrinkage=1\n\n\nend of trees\n";

    #[test]
    fn numerical_splits_and_missing_types() {
        let m = LgbmModel::parse(TINY).unwrap();
        assert_eq!(m.num_trees(), 2);
        // a=1 ≤ 1.5 → -1; b=1 > 0.5 → -0.25
        assert_eq!(m.predict_raw(&[1.0, 1.0]), vec![-1.25]);
        // a=NaN, missing NaN, default_left → -1
        assert_eq!(m.predict_raw(&[f64::NAN, 1.0]), vec![-1.25]);
        // b=0 is missing (Zero type, default right) → -0.25 although 0 ≤ 0.5
        assert_eq!(m.predict_raw(&[2.0, 0.0]), vec![0.75]);
        // b=NaN with Zero type: NaN→0 → missing → right
        assert_eq!(m.predict_raw(&[2.0, f64::NAN]), vec![0.75]);
        let p = m.predict(&[2.0, 0.0]);
        assert!((p[0] - 1.0 / (1.0 + (-0.75f64).exp())).abs() < 1e-15);
    }

    #[test]
    fn saabas_contributions_sum_to_raw() {
        let m = LgbmModel::parse(TINY).unwrap();
        for x in [[1.0, 1.0], [2.0, 0.0], [f64::NAN, 0.2]] {
            let c = m.contributions(&x, 0);
            let sum: f64 = c.iter().sum();
            assert!((sum - m.predict_raw(&x)[0]).abs() < 1e-12, "{c:?}");
        }
        let c = m.contributions(&[1.0, 1.0], 0);
        assert!((c[0] - (-1.2)).abs() < 1e-12);
        assert!((c[2] - 0.2).abs() < 1e-12);
    }

    #[test]
    fn categorical_split() {
        let text = TINY.replace(
            "num_cat=0\nsplit_feature=0\nthreshold=1.5\ndecision_type=10",
            "num_cat=1\nsplit_feature=0\nthreshold=0\ndecision_type=1\ncat_boundaries=0 1\ncat_threshold=10",
        );
        let m = LgbmModel::parse(&text).unwrap();
        // bitset 0b1010: categories 1 and 3 go left.
        assert_eq!(m.predict_raw(&[1.0, 1.0])[0], -1.25);
        assert_eq!(m.predict_raw(&[3.0, 1.0])[0], -1.25);
        assert_eq!(m.predict_raw(&[2.0, 1.0])[0], 0.75);
        assert_eq!(m.predict_raw(&[-1.0, 1.0])[0], 0.75);
        assert_eq!(m.predict_raw(&[f64::NAN, 1.0])[0], 0.75);
        assert_eq!(m.predict_raw(&[1000.0, 1.0])[0], 0.75);
    }

    #[test]
    fn malformed_models_are_errors() {
        assert!(LgbmModel::parse("").is_err());
        assert!(LgbmModel::parse(&TINY.replace("left_child=-1", "left_child=0")).is_err());
        assert!(LgbmModel::parse(&TINY.replace("split_feature=0", "split_feature=9")).is_err());
        assert!(LgbmModel::parse(&TINY.replace("leaf_value=-1 1", "leaf_value=-1")).is_err());
        assert!(
            LgbmModel::parse(&TINY.replace("objective=binary", "objective=lambdarank")).is_err()
        );
        assert!(LgbmModel::parse(&TINY.replace("is_linear=0", "is_linear=1")).is_err());
    }

    /// Found by the `model` fuzz target: a header naming 700 billion
    /// features made the parser allocate a name for each and abort the
    /// process. Sizes from the file are bounded before anything is sized
    /// by them.
    #[test]
    fn huge_declared_sizes_are_errors_not_allocations() {
        let e =
            LgbmModel::parse("num_class=2\nmax_feature_idx=700000000001\n\nTree=0\n").unwrap_err();
        assert!(
            e.to_string().contains("max_feature_idx=700000000001"),
            "{e}"
        );
        let huge = format!("max_feature_idx={}", usize::MAX);
        assert!(LgbmModel::parse(&TINY.replace("max_feature_idx=1", &huge)).is_err());
        assert!(LgbmModel::parse(&TINY.replace("num_class=1", "num_class=99999999999")).is_err());
    }
}
