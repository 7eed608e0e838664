//! The rules engine: declared thresholds from a versioned TOML file.
//!
//! ```toml
//! version = 3
//! auth_ports = [21, 22, 23, 80, 8080]
//!
//! [[rule]]
//! name = "port_scan"
//! class = "portscan"
//! score = 1.0
//! when = [
//!   { metric = "src.distinct_dst_ports", ge = 40.0 },
//!   { metric = "src.empty_ratio", ge = 0.6 },
//! ]
//! ```
//!
//! A condition reads either a per-source window metric (`src.<name>`, see
//! [`SourceMetric`]) or a feature of the flow itself (`flow.<name>`, by
//! normalised column name) and compares it with `ge`, `gt`, `le` or `lt`
//! (several bounds in one condition must all hold). A rule **hits** a flow
//! when all its conditions hold; the engine then votes the rule's class with
//! the rule's score (the highest score per class wins). With no hit the
//! engine abstains. Unknown metrics, classes or features are load errors,
//! never silently false conditions.

use crate::error::DetectError;
use crate::flow::{normalize_name, FlowRecord};
use crate::window::{SourceMetric, SourceStats};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    version: u32,
    #[serde(default)]
    auth_ports: Vec<u16>,
    #[serde(default, rename = "rule")]
    rules: Vec<RuleDecl>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleDecl {
    name: String,
    class: String,
    #[serde(default = "one")]
    score: f64,
    #[serde(default)]
    description: String,
    when: Vec<CondDecl>,
}

fn one() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CondDecl {
    metric: String,
    ge: Option<f64>,
    gt: Option<f64>,
    le: Option<f64>,
    lt: Option<f64>,
}

/// What a condition reads.
#[derive(Clone, Debug, PartialEq)]
enum Operand {
    Source(SourceMetric),
    Flow(usize),
}

#[derive(Clone, Debug, PartialEq)]
struct Condition {
    metric: String,
    operand: Operand,
    ge: Option<f64>,
    gt: Option<f64>,
    le: Option<f64>,
    lt: Option<f64>,
}

impl Condition {
    #[inline]
    fn holds(&self, v: f64) -> bool {
        // NaN fails every bound: a missing value never fires a rule.
        self.ge.is_none_or(|b| v >= b)
            && self.gt.is_none_or(|b| v > b)
            && self.le.is_none_or(|b| v <= b)
            && self.lt.is_none_or(|b| v < b)
            && !v.is_nan()
    }
}

/// One compiled rule.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    /// The rule's name, as evidence shows it.
    pub name: String,
    /// Index of the class it votes for.
    pub class: usize,
    /// Vote strength in (0, 1].
    pub score: f64,
    /// Free text from the file.
    pub description: String,
    conditions: Vec<Condition>,
}

/// A rule that fired on a flow.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleHit {
    /// Index of the rule in [`RuleSet::rules`].
    pub rule: usize,
    /// The class it votes for.
    pub class: usize,
    /// Its score.
    pub score: f64,
}

/// A compiled, versioned rule file.
#[derive(Clone, Debug, PartialEq)]
pub struct RuleSet {
    /// The file's `version`.
    pub version: u32,
    /// Ports whose connections count as authentication attempts.
    pub auth_ports: Vec<u16>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

fn rules_err(message: String) -> DetectError {
    DetectError::Rules { message }
}

impl RuleSet {
    /// Parses and compiles a rule file against the class names and the
    /// flow feature names (normalised) the detector will see.
    pub fn parse(text: &str, classes: &[String], features: &[String]) -> Result<Self, DetectError> {
        let file: RuleFile = toml::from_str(text).map_err(|e| rules_err(e.to_string()))?;
        let mut rules = Vec::with_capacity(file.rules.len());
        for decl in file.rules {
            let class = classes
                .iter()
                .position(|c| *c == decl.class)
                .ok_or_else(|| {
                    rules_err(format!(
                        "rule `{}`: unknown class `{}` (classes: {})",
                        decl.name,
                        decl.class,
                        classes.join(", ")
                    ))
                })?;
            if !(decl.score > 0.0 && decl.score <= 1.0) {
                return Err(rules_err(format!(
                    "rule `{}`: score {} is not in (0, 1]",
                    decl.name, decl.score
                )));
            }
            if decl.when.is_empty() {
                return Err(rules_err(format!("rule `{}` has no conditions", decl.name)));
            }
            let mut conditions = Vec::new();
            for c in decl.when {
                let operand = if let Some(m) = c.metric.strip_prefix("src.") {
                    Operand::Source(SourceMetric::from_name(m).ok_or_else(|| {
                        let known: Vec<&str> = SourceMetric::ALL.iter().map(|m| m.name()).collect();
                        rules_err(format!(
                            "rule `{}`: unknown source metric `{}` (known: {})",
                            decl.name,
                            c.metric,
                            known.join(", ")
                        ))
                    })?)
                } else if let Some(f) = c.metric.strip_prefix("flow.") {
                    let n = normalize_name(f);
                    Operand::Flow(features.iter().position(|x| *x == n).ok_or_else(|| {
                        rules_err(format!(
                            "rule `{}`: the flow records have no feature `{n}`",
                            decl.name
                        ))
                    })?)
                } else {
                    return Err(rules_err(format!(
                        "rule `{}`: metric `{}` must start with `src.` or `flow.`",
                        decl.name, c.metric
                    )));
                };
                if [c.ge, c.gt, c.le, c.lt]
                    .iter()
                    .flatten()
                    .any(|b| b.is_nan())
                {
                    return Err(rules_err(format!(
                        "rule `{}`: condition on `{}` has a NaN bound",
                        decl.name, c.metric
                    )));
                }
                if c.ge.is_none() && c.gt.is_none() && c.le.is_none() && c.lt.is_none() {
                    return Err(rules_err(format!(
                        "rule `{}`: condition on `{}` has no bound (ge, gt, le, lt)",
                        decl.name, c.metric
                    )));
                }
                conditions.push(Condition {
                    metric: c.metric,
                    operand,
                    ge: c.ge,
                    gt: c.gt,
                    le: c.le,
                    lt: c.lt,
                });
            }
            rules.push(Rule {
                name: decl.name,
                class,
                score: decl.score,
                description: decl.description,
                conditions,
            });
        }
        Ok(Self {
            version: file.version,
            auth_ports: file.auth_ports,
            rules,
        })
    }

    /// Appends every rule that hits `flow` (whose source has `stats` in this
    /// window) to `hits`.
    pub fn evaluate(&self, flow: &FlowRecord, stats: &SourceStats, hits: &mut Vec<RuleHit>) {
        for (i, rule) in self.rules.iter().enumerate() {
            let all = rule.conditions.iter().all(|c| {
                let v = match c.operand {
                    Operand::Source(m) => stats.get(m),
                    Operand::Flow(k) => flow.features.get(k).copied().unwrap_or(f64::NAN),
                };
                c.holds(v)
            });
            if all {
                hits.push(RuleHit {
                    rule: i,
                    class: rule.class,
                    score: rule.score,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::FlowTable;
    use crate::window::FlowColumns;

    fn classes() -> Vec<String> {
        ["benign", "portscan", "exfiltration"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    const RULES: &str = r#"
version = 2
auth_ports = [22]
[[rule]]
name = "scan"
class = "portscan"
score = 0.9
when = [ { metric = "src.distinct_dst_ports", ge = 3.0 }, { metric = "src.empty_ratio", gt = 0.5 } ]
[[rule]]
name = "big_upload"
class = "exfiltration"
when = [ { metric = "flow.total_length_of_fwd_packets", ge = 1000.0 } ]
"#;

    #[test]
    fn rules_hit_on_source_and_flow_conditions() {
        let t = FlowTable::from_csv(
            "src_ip,dst_ip,dst_port,ts,total_length_of_fwd_packets,total_length_of_bwd_packets\n\
             10.0.0.1,10.0.0.9,1,1,0,0\n10.0.0.1,10.0.0.9,2,1,0,0\n10.0.0.1,10.0.0.9,3,1,5000,0\n\
             10.0.0.2,10.0.0.9,1,1,10,10\n",
        )
        .unwrap();
        let rs = RuleSet::parse(RULES, &classes(), &t.feature_names).unwrap();
        assert_eq!(rs.version, 2);
        let cols = FlowColumns::resolve(&t);
        let stats = SourceStats::by_source(&t.flows, &cols, 10.0, &rs.auth_ports);
        let mut hits = Vec::new();
        rs.evaluate(&t.flows[2], &stats[&t.flows[2].endpoints.src_ip], &mut hits);
        assert_eq!(hits.len(), 2);
        assert_eq!((hits[0].class, hits[0].score), (1, 0.9));
        assert_eq!((hits[1].class, hits[1].score), (2, 1.0));
        hits.clear();
        rs.evaluate(&t.flows[3], &stats[&t.flows[3].endpoints.src_ip], &mut hits);
        assert!(hits.is_empty());
    }

    #[test]
    fn bad_rule_files_are_errors() {
        let f = vec!["x".to_string()];
        let bad = [
            "version = 1\n[[rule]]\nname='a'\nclass='nope'\nwhen=[{metric='src.flows', ge=1.0}]",
            "version = 1\n[[rule]]\nname='a'\nclass='portscan'\nwhen=[{metric='src.nope', ge=1.0}]",
            "version = 1\n[[rule]]\nname='a'\nclass='portscan'\nwhen=[{metric='flow.nope', ge=1.0}]",
            "version = 1\n[[rule]]\nname='a'\nclass='portscan'\nwhen=[{metric='flows', ge=1.0}]",
            "version = 1\n[[rule]]\nname='a'\nclass='portscan'\nwhen=[{metric='src.flows'}]",
            "version = 1\n[[rule]]\nname='a'\nclass='portscan'\nscore=2.0\nwhen=[{metric='src.flows', ge=1.0}]",
            "version = 1\n[[rule]]\nname='a'\nclass='portscan'\nwhen=[]",
            "[[rule]]\nname='a'\nclass='portscan'\nwhen=[{metric='src.flows', ge=1.0}]",
        ];
        for b in bad {
            assert!(RuleSet::parse(b, &classes(), &f).is_err(), "{b}");
        }
        let nan = Condition {
            metric: "x".into(),
            operand: Operand::Flow(0),
            ge: None,
            gt: None,
            le: Some(1.0),
            lt: None,
        };
        assert!(!nan.holds(f64::NAN));
        assert!(nan.holds(0.5));
    }
}
