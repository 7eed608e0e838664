//! Detection quality: confusion matrix, per-class precision/recall/F1,
//! macro-F1 and the false-alarm rate on benign flows.

use serde::Serialize;

/// Per-class scores.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassScore {
    /// Class name.
    pub class: String,
    /// Flows truly of this class.
    pub support: u64,
    /// Precision.
    pub precision: f64,
    /// Recall.
    pub recall: f64,
    /// F1.
    pub f1: f64,
}

/// A confusion matrix over class indices (0 = benign).
#[derive(Clone, Debug, PartialEq)]
pub struct Confusion {
    classes: Vec<String>,
    /// `m[truth][predicted]`.
    m: Vec<Vec<u64>>,
}

impl Confusion {
    /// An empty matrix.
    pub fn new(classes: &[String]) -> Self {
        Self {
            classes: classes.to_vec(),
            m: vec![vec![0; classes.len()]; classes.len()],
        }
    }

    /// Records one (truth, prediction) pair; out-of-range indices are ignored.
    pub fn add(&mut self, truth: usize, predicted: usize) {
        if let Some(row) = self.m.get_mut(truth) {
            if let Some(c) = row.get_mut(predicted) {
                *c += 1;
            }
        }
    }

    /// The counts, `[truth][predicted]`.
    pub fn matrix(&self) -> &[Vec<u64>] {
        &self.m
    }

    /// Precision, recall and F1 for every class.
    pub fn per_class(&self) -> Vec<ClassScore> {
        let n = self.classes.len();
        (0..n)
            .map(|c| {
                let tp = self.m[c][c] as f64;
                let support: u64 = self.m[c].iter().sum();
                let predicted: u64 = (0..n).map(|t| self.m[t][c]).sum();
                let precision = if predicted > 0 {
                    tp / predicted as f64
                } else {
                    0.0
                };
                let recall = if support > 0 {
                    tp / support as f64
                } else {
                    0.0
                };
                let f1 = if precision + recall > 0.0 {
                    2.0 * precision * recall / (precision + recall)
                } else {
                    0.0
                };
                ClassScore {
                    class: self.classes[c].clone(),
                    support,
                    precision,
                    recall,
                    f1,
                }
            })
            .collect()
    }

    /// Mean F1 over the classes that occur in the truth.
    pub fn macro_f1(&self) -> f64 {
        let scores: Vec<f64> = self
            .per_class()
            .into_iter()
            .filter(|s| s.support > 0)
            .map(|s| s.f1)
            .collect();
        if scores.is_empty() {
            0.0
        } else {
            scores.iter().sum::<f64>() / scores.len() as f64
        }
    }

    /// Share of benign flows (class 0) predicted as any attack.
    pub fn false_alarm_rate(&self) -> f64 {
        let benign: u64 = self.m[0].iter().sum();
        if benign == 0 {
            return 0.0;
        }
        (benign - self.m[0][0]) as f64 / benign as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_from_a_known_matrix() {
        let classes: Vec<String> = ["benign", "scan"].iter().map(|s| s.to_string()).collect();
        let mut c = Confusion::new(&classes);
        for _ in 0..98 {
            c.add(0, 0);
        }
        c.add(0, 1);
        c.add(0, 1);
        for _ in 0..8 {
            c.add(1, 1);
        }
        c.add(1, 0);
        c.add(1, 0);
        let s = c.per_class();
        assert_eq!(s[1].support, 10);
        assert!((s[1].precision - 0.8).abs() < 1e-12);
        assert!((s[1].recall - 0.8).abs() < 1e-12);
        assert!((c.false_alarm_rate() - 0.02).abs() < 1e-12);
        let f0 = 2.0 * (98.0 / 100.0) * (98.0 / 100.0) / (2.0 * 98.0 / 100.0);
        assert!((c.macro_f1() - (f0 + 0.8) / 2.0).abs() < 1e-12);
    }
}
