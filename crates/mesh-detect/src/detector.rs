//! The pipeline: windows of flows → three engines → ensemble → anomalies.

use crate::error::DetectError;
use crate::flow::{Endpoints, FlowRecord, FlowTable};
use crate::lgbm::{LgbmModel, Objective};
use crate::math::{Baseline, MathConfig, MathEngine};
use crate::ratelimit::TokenBucket;
use crate::rules::{RuleHit, RuleSet};
use crate::window::{FlowColumns, SourceMetric, SourceStats};
use crate::wire::{AnomalyEvent, Contribution, Endpoint, EngineVote, EvidenceEvent, EvidenceFlow};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::IpAddr;

/// Ensemble weights (DESIGN §2: ML 0.5 · rules 0.3 · math 0.2).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Weights {
    /// LightGBM engine.
    pub ml: f64,
    /// Rules engine.
    pub rules: f64,
    /// Math engine.
    pub math: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Self {
            ml: 0.5,
            rules: 0.3,
            math: 0.2,
        }
    }
}

/// Detector settings. Every limit is named here.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Publish when the ensemble confidence is strictly above this.
    pub threshold: f64,
    /// Ensemble weights.
    pub weights: Weights,
    /// Aggregation window (seconds); also the window of per-source stats.
    pub window_secs: f64,
    /// Published anomalies per second (token bucket rate).
    pub rate_per_sec: f64,
    /// Token bucket burst.
    pub rate_burst: f64,
    /// Flow ids listed inside an anomaly (the rest go to evidence only).
    pub max_anomaly_flow_ids: usize,
    /// Flows listed in one evidence message.
    pub max_evidence_flows: usize,
    /// Saabas contributions and z-scores listed per anomaly (each).
    pub top_features: usize,
    /// Math engine settings.
    pub math: MathConfig,
    /// Seed mixed into anomaly ids (injected randomness, invariant 12).
    pub id_seed: u64,
    /// Also judge each flow against its source over the window half a
    /// window earlier or later (the one centred on the edge of its own
    /// window nearest to it) when its own window does not flag it. An
    /// attack's first or last seconds that fall into a window of their
    /// own are then judged together with the rest of the attack, not as a
    /// handful of flows (windows holding an attack's tail were most of
    /// what leave-one-family-out missed). Anomalies stay keyed by the
    /// flow's own window. Costs a second judgment for a flow its own
    /// window does not flag (only a rule check when, as with the seed's
    /// weights, nothing passes without a rule).
    pub straddle: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            threshold: 0.70,
            weights: Weights::default(),
            window_secs: 10.0,
            rate_per_sec: 100.0,
            rate_burst: 100.0,
            max_anomaly_flow_ids: 32,
            max_evidence_flows: 2000,
            top_features: 5,
            math: MathConfig::default(),
            id_seed: 0,
            straddle: true,
        }
    }
}

/// The verdict on one flow.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FlowVerdict {
    /// Class index; 0 (benign) when the flow was not flagged.
    pub class: usize,
    /// Best attack-class ensemble confidence (flagged or not).
    pub confidence: f64,
    /// The LightGBM engine's own arg-max class.
    pub ml_class: usize,
    /// The rules engine's class (highest-scoring hit), 0 when it abstained.
    pub rules_class: usize,
    /// The math engine's best attack class, 0 when it abstained.
    pub math_class: usize,
}

/// An aggregated detection: the anomaly, its evidence, and whether the rate
/// limiter let it through.
#[derive(Clone, Debug, PartialEq)]
pub struct Detection {
    /// The anomaly (`ai.anomalies.v1`).
    pub event: AnomalyEvent,
    /// Its flows (`ai.evidence.v1`).
    pub evidence: EvidenceEvent,
    /// False when the rate limiter held it back (counted in the report).
    pub published: bool,
}

/// Totals of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Flows processed.
    pub flows: u64,
    /// Flows flagged (confidence above threshold).
    pub flagged_flows: u64,
    /// Windows processed.
    pub windows: u64,
    /// Anomalies produced (published + rate limited).
    pub anomalies: u64,
    /// Anomalies published.
    pub published: u64,
    /// Anomalies held back by the rate limiter.
    pub rate_limited: u64,
}

/// Output of [`Detector::run`].
#[derive(Clone, Debug, Default)]
pub struct RunReport {
    /// One verdict per input flow, in input order.
    pub verdicts: Vec<FlowVerdict>,
    /// Detections in window order.
    pub detections: Vec<Detection>,
    /// Totals.
    pub summary: Summary,
}

/// The CyberMesh detector bound to one flow feature layout.
pub struct Detector {
    pub(crate) cfg: Config,
    classes: Vec<String>,
    feature_names: Vec<String>,
    model: LgbmModel,
    model_version: String,
    /// For each model column, what feeds it.
    model_columns: Vec<ModelInput>,
    pub(crate) rules: RuleSet,
    pub(crate) math: MathEngine,
    pub(crate) cols: FlowColumns,
    bucket: TokenBucket,
    pub(crate) summary: Summary,
    row: Vec<f64>,
    probs: Vec<f64>,
    hits: Vec<RuleHit>,
    rule_scores: Vec<f64>,
    math_scores: Vec<f64>,
}

/// Where a model column's value comes from: a flow feature, or a metric of
/// the flow's source over the current window (model feature `src_<metric>`).
#[derive(Clone, Copy, Debug, PartialEq)]
enum ModelInput {
    Flow(usize),
    Source(SourceMetric),
}

fn fill_row(row: &mut [f64], inputs: &[ModelInput], flow: &FlowRecord, stats: &SourceStats) {
    for (slot, input) in row.iter_mut().zip(inputs) {
        *slot = match *input {
            ModelInput::Flow(c) => flow.features.get(c).copied().unwrap_or(f64::NAN),
            ModelInput::Source(m) => stats.get(m),
        };
    }
}

/// A source's metrics over one window and the math engine's reading of
/// them: what a flow is judged against.
#[derive(Clone, Copy, Default)]
pub(crate) struct SourceView<'a> {
    pub(crate) stats: Option<&'a SourceStats>,
    pub(crate) score: Option<&'a crate::math::SourceScore>,
}

/// Every source's metrics over one window, and the math engine's reading
/// of them ([`Detector::window_state`]).
pub(crate) type WindowState = (
    HashMap<IpAddr, SourceStats>,
    HashMap<IpAddr, crate::math::SourceScore>,
);

impl<'a> SourceView<'a> {
    /// One source's metrics and score.
    pub(crate) fn of(stats: &'a SourceStats, score: &'a crate::math::SourceScore) -> Self {
        Self {
            stats: Some(stats),
            score: Some(score),
        }
    }

    /// `src`'s view of a window all of whose sources were measured.
    pub(crate) fn of_source(state: &'a WindowState, src: &IpAddr) -> Self {
        Self {
            stats: state.0.get(src),
            score: state.1.get(src),
        }
    }
}

/// Which window a flow was judged against: its own, or the straddling one
/// before (the first half of its window) or after (the second half).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Own = 0,
    Before = 1,
    After = 2,
}

impl Side {
    /// The straddling window a flow starting at `start_us` falls in, for
    /// its own window starting at `window_start_us` of `window_us`.
    pub(crate) fn of(start_us: i64, window_start_us: i64, window_us: i64) -> Side {
        if start_us < window_start_us.saturating_add(window_us / 2) {
            Side::Before
        } else {
            Side::After
        }
    }

    /// The straddling window's start (`Before`: half a window before the
    /// own window's start; `After`: its middle).
    pub(crate) fn straddle_start(self, window_start_us: i64, window_us: i64) -> i64 {
        match self {
            Side::After => window_start_us.saturating_add(window_us / 2),
            _ => window_start_us.saturating_sub(window_us - window_us / 2),
        }
    }
}

#[derive(Clone)]
pub(crate) struct Scored {
    pub(crate) flow: usize,
    pub(crate) class: usize,
    /// The window whose metrics gave the verdict.
    pub(crate) side: Side,
    confidence: f64,
    ml: f64,
    ml_class: usize,
    rules: Option<f64>,
    math: Option<f64>,
}

impl Detector {
    /// Builds a detector from the three engines' inputs and the feature
    /// names of the flows it will see (normalised).
    pub fn new(
        cfg: Config,
        model: LgbmModel,
        model_version: impl Into<String>,
        baseline: &Baseline,
        rules_text: &str,
        feature_names: &[String],
    ) -> Result<Self, DetectError> {
        let w = cfg.weights;
        if !(cfg.threshold >= 0.0 && cfg.threshold < 1.0) {
            return Err(DetectError::Setting {
                name: "threshold",
                message: format!("{} is not in [0, 1)", cfg.threshold),
            });
        }
        if !(w.ml > 0.0 && w.rules >= 0.0 && w.math >= 0.0) {
            return Err(DetectError::Setting {
                name: "weights",
                message: "ml must be > 0, rules and math ≥ 0".into(),
            });
        }
        if !(cfg.window_secs > 0.0 && cfg.window_secs.is_finite()) {
            return Err(DetectError::Setting {
                name: "window_secs",
                message: format!("{} is not a positive number", cfg.window_secs),
            });
        }
        let classes = baseline.classes.clone();
        let outputs_ok = match model.objective() {
            Objective::Binary { .. } => classes.len() == 2,
            _ => model.num_outputs() == classes.len(),
        };
        if !outputs_ok {
            return Err(DetectError::Setting {
                name: "model",
                message: format!(
                    "the model has {} outputs but the baseline names {} classes",
                    model.num_outputs(),
                    classes.len()
                ),
            });
        }
        let model_columns = model
            .feature_names()
            .iter()
            .map(|name| {
                let n = crate::flow::normalize_name(name);
                if let Some(m) = n.strip_prefix("src_").and_then(SourceMetric::from_name) {
                    return Ok(ModelInput::Source(m));
                }
                feature_names
                    .iter()
                    .position(|f| *f == n)
                    .map(ModelInput::Flow)
                    .ok_or_else(|| DetectError::MissingFeature {
                        name: n,
                        have: feature_names
                            .iter()
                            .take(8)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", "),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let rules = RuleSet::parse(rules_text, &classes, feature_names)?;
        let math = MathEngine::new(cfg.math.clone(), baseline, feature_names)?;
        let table = FlowTable {
            feature_names: feature_names.to_vec(),
            flows: vec![],
        };
        let cols = FlowColumns::resolve(&table);
        let bucket = TokenBucket::new(cfg.rate_per_sec, cfg.rate_burst);
        let n_out = model.num_outputs();
        Ok(Self {
            row: vec![0.0; model_columns.len()],
            probs: vec![0.0; classes.len().max(n_out)],
            hits: Vec::new(),
            rule_scores: vec![0.0; classes.len()],
            math_scores: vec![0.0; classes.len()],
            cfg,
            classes,
            feature_names: feature_names.to_vec(),
            model,
            model_version: model_version.into(),
            model_columns,
            rules,
            math,
            cols,
            bucket,
            summary: Summary::default(),
        })
    }

    /// Class names (index 0 is benign).
    pub fn classes(&self) -> &[String] {
        &self.classes
    }

    /// Sets the publish threshold (the feedback loop's calibration).
    pub fn set_threshold(&mut self, t: f64) {
        self.cfg.threshold = t;
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The compiled rules.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Totals so far.
    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    /// Class probabilities of the LightGBM engine for one flow whose source
    /// has `stats` in the current window.
    pub fn ml_probabilities(&mut self, flow: &FlowRecord, stats: &SourceStats) -> Vec<f64> {
        self.predict_ml(flow, stats);
        self.probs[..self.classes.len()].to_vec()
    }

    fn predict_ml(&mut self, flow: &FlowRecord, stats: &SourceStats) {
        fill_row(&mut self.row, &self.model_columns, flow, stats);
        match self.model.objective() {
            Objective::Binary { .. } => {
                let mut raw = [0.0];
                self.model.predict_raw_into(&self.row, &mut raw);
                self.model.transform(&mut raw);
                self.probs[0] = 1.0 - raw[0];
                self.probs[1] = raw[0];
            }
            _ => {
                let n = self.model.num_outputs();
                self.model.predict_raw_into(&self.row, &mut self.probs[..n]);
                self.model.transform(&mut self.probs[..n]);
            }
        }
    }

    /// Runs every flow of `table` (sorted by start time internally) through
    /// the pipeline, window by window. Time comes from the flows themselves
    /// (capture time), so a replay is deterministic.
    pub fn run(&mut self, table: &FlowTable) -> RunReport {
        let mut order: Vec<usize> = (0..table.flows.len()).collect();
        order.sort_by_key(|&i| table.flows[i].start_us);
        let window_us = (self.cfg.window_secs * 1e6).round().max(1.0) as i64;
        let mut verdicts = vec![
            FlowVerdict {
                class: 0,
                confidence: 0.0,
                ml_class: 0,
                rules_class: 0,
                math_class: 0,
            };
            table.flows.len()
        ];
        let mut detections = Vec::new();
        let sorted: Vec<&FlowRecord> = order.iter().map(|&i| &table.flows[i]).collect();
        // The flows starting in [from, to), all sources.
        let span = |from: i64, to: i64| {
            let a = sorted.partition_point(|f| f.start_us < from);
            let b = sorted.partition_point(|f| f.start_us < to);
            &sorted[a..b.max(a)]
        };
        let mut start = 0;
        while start < order.len() {
            let w = table.flows[order[start]].start_us.div_euclid(window_us);
            let mut end = start;
            while end < order.len() && table.flows[order[end]].start_us.div_euclid(window_us) == w {
                end += 1;
            }
            let ws = w * window_us;
            let straddling = self.cfg.straddle.then(|| {
                [Side::Before, Side::After].map(|side| {
                    let from = side.straddle_start(ws, window_us);
                    span(from, from.saturating_add(window_us))
                })
            });
            let (v, d) = self.process_window(&sorted[start..end], ws, window_us, straddling);
            for (k, verdict) in v.into_iter().enumerate() {
                verdicts[order[start + k]] = verdict;
            }
            detections.extend(d);
            start = end;
        }
        RunReport {
            verdicts,
            detections,
            summary: self.summary.clone(),
        }
    }

    /// The metrics of every source among `flows` (one window of
    /// `window_us`) and the math engine's reading of them.
    pub(crate) fn window_state(&self, flows: &[&FlowRecord], window_us: i64) -> WindowState {
        let stats = SourceStats::by_source(
            flows.iter().copied(),
            &self.cols,
            window_us as f64 / 1e6,
            &self.rules.auth_ports,
        );
        let scores = stats
            .iter()
            .map(|(ip, s)| (*ip, self.math.source_score(ip, s)))
            .collect();
        (stats, scores)
    }

    /// Processes one window of flows starting at `window_start_us`. Returns
    /// a verdict per flow (same order) and the window's detections; the rate
    /// limiter is charged at the window's end time. `straddling`, when
    /// given (and [`Config::straddle`] is set), holds every flow of the
    /// windows half a window before and after this one (see
    /// [`Config::straddle`]).
    pub fn process_window(
        &mut self,
        flows: &[&FlowRecord],
        window_start_us: i64,
        window_us: i64,
        straddling: Option<[&[&FlowRecord]; 2]>,
    ) -> (Vec<FlowVerdict>, Vec<Detection>) {
        let state = self.window_state(flows, window_us);
        let around = straddling
            .filter(|_| self.cfg.straddle)
            .map(|sides| sides.map(|fl| self.window_state(fl, window_us)));
        let views_of = |src: &IpAddr| {
            around
                .as_ref()
                .map(|a| [0, 1].map(|k| SourceView::of_source(&a[k], src)))
        };
        let mut verdicts = Vec::with_capacity(flows.len());
        let mut flagged: Vec<Scored> = Vec::new();
        for (fi, flow) in flows.iter().enumerate() {
            let src = &flow.endpoints.src_ip;
            let own = SourceView::of_source(&state, src);
            let (verdict, scored) =
                self.judge_both(flow, own, views_of(src), window_start_us, window_us);
            verdicts.push(verdict);
            if let Some(mut s) = scored {
                s.flow = fi;
                flagged.push(s);
            }
        }
        self.summary.flows += flows.len() as u64;
        self.summary.flagged_flows += flagged.len() as u64;
        self.summary.windows += 1;

        // Aggregate per (source, class); keep first-seen order.
        let mut groups: Vec<((IpAddr, usize), Vec<Scored>)> = Vec::new();
        for s in flagged {
            let key = (flows[s.flow].endpoints.src_ip, s.class);
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, v)) => v.push(s),
                None => groups.push((key, vec![s])),
            }
        }
        let window_end_us = window_start_us + window_us;
        let mut detections = Vec::with_capacity(groups.len());
        let mut flagged_sources: Vec<IpAddr> = Vec::new();
        for ((src, class), members) in groups {
            flagged_sources.push(src);
            let built = self.build_detection(
                flows,
                src,
                class,
                &members,
                SourceView::of_source(&state, &src),
                views_of(&src),
                window_start_us,
                window_end_us,
            );
            detections.push(self.emit(built, window_end_us));
        }
        // Flagged sources do not teach the baseline their traffic.
        let mut srcs: Vec<&IpAddr> = state.0.keys().collect();
        srcs.sort();
        for src in srcs {
            if !flagged_sources.contains(src) {
                if let Some(s) = state.0.get(src) {
                    self.math.update(*src, s);
                }
            }
        }
        (verdicts, detections)
    }

    /// Judges one flow against its source over its own window (starting
    /// at `window_start_us`, `window_us` long) and, when that does not flag
    /// it, [`Config::straddle`] is set and `around` is given (the source
    /// over the `Before` and `After` straddling windows), over the
    /// straddling window that holds the flow: its verdict is taken when it
    /// flags the flow or is the more confident.
    pub(crate) fn judge_both(
        &mut self,
        flow: &FlowRecord,
        own: SourceView<'_>,
        around: Option<[SourceView<'_>; 2]>,
        window_start_us: i64,
        window_us: i64,
    ) -> (FlowVerdict, Option<Scored>) {
        let empty = SourceStats::default();
        let a = self.judge(flow, own.stats.unwrap_or(&empty), own.score);
        // A flow its own window flags needs no second look.
        let Some(around) = around.filter(|_| self.cfg.straddle && a.1.is_none()) else {
            return a;
        };
        let side = Side::of(flow.start_us, window_start_us, window_us);
        let view = around[side as usize - 1];
        let other_stats = view.stats.unwrap_or(&empty);
        // With the weights such that nothing passes the threshold without
        // a rule (the seed's: 0.5 + 0.2 = 0.70, not above it), a second
        // judgment no rule hits cannot flag the flow: skip its model run,
        // which is nearly all of its cost (benign flows hit none).
        let w = self.cfg.weights;
        if (w.ml + w.math) / (w.ml + w.rules + w.math) <= self.cfg.threshold {
            self.hits.clear();
            self.rules.evaluate(flow, other_stats, &mut self.hits);
            if self.hits.is_empty() {
                return a;
            }
        }
        let mut b = self.judge(flow, other_stats, view.score);
        if let Some(s) = b.1.as_mut() {
            s.side = side;
        }
        if b.1.is_some() || b.0.confidence > a.0.confidence {
            b
        } else {
            a
        }
    }

    /// Judges one flow whose source has `st` in its window (and, from the
    /// math engine, `src_score`): the verdict, and what an anomaly needs
    /// when the flow is flagged (`flow` left 0 for the caller to set).
    pub(crate) fn judge(
        &mut self,
        flow: &FlowRecord,
        st: &SourceStats,
        src_score: Option<&crate::math::SourceScore>,
    ) -> (FlowVerdict, Option<Scored>) {
        let nc = self.classes.len();
        let w = self.cfg.weights;
        self.predict_ml(flow, st);
        let ml_class = argmax(&self.probs[..nc]);
        // The model's vote is its attack-vs-benign output, the same for
        // every attack class: a family it never saw still scores as an
        // attack when it looks like none of the benign traffic, though its
        // probability mass spreads over several attack classes. Rules and
        // math name the class (ties go to the model's own ranking).
        let p_attack = (1.0 - self.probs[0]).clamp(0.0, 1.0);
        self.hits.clear();
        self.rules.evaluate(flow, st, &mut self.hits);
        self.rule_scores.iter_mut().for_each(|x| *x = 0.0);
        for h in &self.hits {
            self.rule_scores[h.class] = self.rule_scores[h.class].max(h.score);
        }
        let rules_vote = !self.hits.is_empty();
        // Math votes from the source's window (class-specific EWMA
        // z-scores); the flow's own robust z-scores only strengthen a
        // source-level signal, never start one: benign flows are
        // multimodal (DNS, web, SSH, bulk) and their per-feature tails
        // are long, so flow z alone would vote on a quarter of them.
        let src_scores = src_score.map(|s| &s.per_class);
        let any_src = src_scores.is_some_and(|v| v.iter().any(|&x| x > 0.0));
        let flow_math = if any_src {
            self.math.flow_score(flow)
        } else {
            0.0
        };
        let mut math_best: f64 = 0.0;
        for (c, m) in self.math_scores.iter_mut().enumerate().skip(1) {
            let src_s = src_scores.and_then(|v| v.get(c)).copied().unwrap_or(0.0);
            *m = if src_s > 0.0 {
                0.7 * src_s + 0.3 * flow_math
            } else {
                0.0
            };
            math_best = math_best.max(*m);
        }
        let math_vote = math_best >= self.cfg.math.vote_min;
        // Fixed weights (an abstaining engine adds 0; no
        // renormalisation): ML alone cannot publish. See the crate doc.
        let denom = w.ml + w.rules + w.math;
        let conf_of = |c: usize, rules: &[f64], maths: &[f64]| {
            let mut s = w.ml * p_attack;
            if rules_vote {
                s += w.rules * rules[c];
            }
            if math_vote {
                s += w.math * maths[c];
            }
            s / denom
        };
        let mut best = (0usize, 0.0f64);
        if rules_vote {
            // The rules name the class: of the classes their best hit
            // names, the one the model ranks first (then math). Math
            // alone must not rename a rule's class: a password-guessing
            // storm is also many flows, which math reads as a flood.
            let top = self.rule_scores[1..].iter().copied().fold(0.0, f64::max);
            let key = |c: usize| (self.probs[c], self.math_scores[c]);
            for c in (1..nc).filter(|&c| self.rule_scores[c] == top) {
                if best.0 == 0 || key(c) > key(best.0) {
                    best = (c, conf_of(c, &self.rule_scores, &self.math_scores));
                }
            }
        } else {
            for c in 1..nc {
                let conf = conf_of(c, &self.rule_scores, &self.math_scores);
                let tie = (conf - best.1).abs() <= 1e-12;
                if (conf > best.1 && !tie) || (tie && self.probs[c] > self.probs[best.0]) {
                    best = (c, conf);
                }
            }
        }
        let is_flagged = best.0 != 0 && best.1 > self.cfg.threshold;
        let verdict = FlowVerdict {
            class: if is_flagged { best.0 } else { 0 },
            confidence: best.1,
            ml_class,
            rules_class: if rules_vote {
                argmax(&self.rule_scores)
            } else {
                0
            },
            math_class: if math_vote {
                argmax(&self.math_scores)
            } else {
                0
            },
        };
        let scored = is_flagged.then(|| Scored {
            flow: 0,
            class: best.0,
            side: Side::Own,
            confidence: best.1,
            ml: p_attack,
            ml_class,
            rules: rules_vote.then_some(self.rule_scores[best.0]),
            math: math_vote.then_some(self.math_scores[best.0]),
        });
        (verdict, scored)
    }

    /// Counts a built anomaly and passes it through the rate limiter at
    /// `at_us`.
    pub(crate) fn emit(&mut self, built: (AnomalyEvent, EvidenceEvent), at_us: i64) -> Detection {
        let published = self.bucket.try_take(at_us);
        self.summary.anomalies += 1;
        if published {
            self.summary.published += 1;
        } else {
            self.summary.rate_limited += 1;
        }
        Detection {
            event: built.0,
            evidence: built.1,
            published,
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn build_detection(
        &self,
        flows: &[&FlowRecord],
        src: IpAddr,
        class: usize,
        members: &[Scored],
        own: SourceView<'_>,
        around: Option<[SourceView<'_>; 2]>,
        window_start_us: i64,
        window_end_us: i64,
    ) -> (AnomalyEvent, EvidenceEvent) {
        let class_name = self.classes[class].clone();
        // Representative: the most confident flow (first on ties), shown
        // with the metrics of the window that judged it.
        let rep = members.iter().fold(
            &members[0],
            |a, b| if b.confidence > a.confidence { b } else { a },
        );
        let SourceView {
            stats: st,
            score: source_score,
        } = match (rep.side, around) {
            (Side::Own, _) | (_, None) => own,
            (side, Some(a)) => a[side as usize - 1],
        };
        let rep_flow = flows[rep.flow];
        let mut targets: HashMap<(IpAddr, u16, u8), u64> = HashMap::new();
        for m in members {
            let e = &flows[m.flow].endpoints;
            *targets
                .entry((e.dst_ip, e.dst_port, e.protocol))
                .or_default() += 1;
        }
        let target = targets
            .iter()
            .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(a.0)))
            .map(|(k, _)| *k)
            .unwrap_or((
                rep_flow.endpoints.dst_ip,
                rep_flow.endpoints.dst_port,
                rep_flow.endpoints.protocol,
            ));
        let src_port = {
            let first = flows[members[0].flow].endpoints.src_port;
            if members
                .iter()
                .all(|m| flows[m.flow].endpoints.src_port == first)
            {
                first
            } else {
                0
            }
        };
        let first_seen = members
            .iter()
            .map(|m| flows[m.flow].start_us)
            .min()
            .unwrap_or(window_start_us);
        let last_seen = members
            .iter()
            .map(|m| flows[m.flow].start_us)
            .max()
            .unwrap_or(window_start_us);
        let id = anomaly_id(self.cfg.id_seed, &src, window_start_us, &class_name);
        let w = self.cfg.weights;
        let name_of = |c: usize| self.classes.get(c).cloned().unwrap_or_default();
        let votes = vec![
            EngineVote {
                engine: "ml".into(),
                abstained: false,
                class: name_of(rep.ml_class),
                score: rep.ml,
                weight: w.ml,
            },
            EngineVote {
                engine: "rules".into(),
                abstained: rep.rules.is_none(),
                class: if rep.rules.is_some() {
                    class_name.clone()
                } else {
                    String::new()
                },
                score: rep.rules.unwrap_or(0.0),
                weight: w.rules,
            },
            EngineVote {
                engine: "math".into(),
                abstained: rep.math.is_none(),
                class: if rep.math.is_some() {
                    class_name.clone()
                } else {
                    String::new()
                },
                score: rep.math.unwrap_or(0.0),
                weight: w.math,
            },
        ];
        let mut top = Vec::new();
        // Rule hits on the representative flow.
        let mut hits = Vec::new();
        if let Some(st) = st {
            self.rules.evaluate(rep_flow, st, &mut hits);
        }
        for h in &hits {
            if let Some(r) = self.rules.rules.get(h.rule) {
                top.push(Contribution {
                    kind: "rule".into(),
                    name: r.name.clone(),
                    value: h.score,
                    weight: h.score,
                });
            }
        }
        // Source metrics far from the source's history.
        if let Some(s) = source_score {
            for (m, v, z) in s.zs.iter().filter(|(_, _, z)| *z >= self.cfg.math.z_low) {
                top.push(Contribution {
                    kind: "source_zscore".into(),
                    name: format!("src.{}", m.name()),
                    value: *v,
                    weight: *z,
                });
            }
        }
        // Saabas attribution for the class (one raw score per class; binary
        // models have one output for the attack class).
        let mut row = vec![0.0; self.model_columns.len()];
        let empty = SourceStats::default();
        fill_row(
            &mut row,
            &self.model_columns,
            rep_flow,
            st.unwrap_or(&empty),
        );
        let out = match self.model.objective() {
            Objective::Binary { .. } => 0,
            _ => class,
        };
        let contrib = self.model.contributions(&row, out);
        let mut saabas: Vec<(usize, f64)> = contrib[..contrib.len() - 1]
            .iter()
            .copied()
            .enumerate()
            .filter(|(_, v)| *v != 0.0)
            .collect();
        saabas.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        for (i, v) in saabas.into_iter().take(self.cfg.top_features) {
            top.push(Contribution {
                kind: "saabas".into(),
                name: self.model.feature_names()[i].clone(),
                value: row[i],
                weight: v,
            });
        }
        let mut zs = self.math.flow_zscores(rep_flow);
        zs.sort_by(|a, b| b.1.abs().total_cmp(&a.1.abs()).then(a.0.cmp(&b.0)));
        for (i, z) in zs.into_iter().take(self.cfg.top_features) {
            top.push(Contribution {
                kind: "zscore".into(),
                name: self.feature_names[i].clone(),
                value: rep_flow.features.get(i).copied().unwrap_or(f64::NAN),
                weight: z,
            });
        }
        let ids: Vec<String> = members
            .iter()
            .take(self.cfg.max_anomaly_flow_ids)
            .map(|m| flows[m.flow].id.clone())
            .collect();
        let event = AnomalyEvent {
            id: id.clone(),
            class: class_name.clone(),
            confidence: rep.confidence,
            source: Some(Endpoint {
                ip: src.to_string(),
                port: u32::from(src_port),
            }),
            target: Some(Endpoint {
                ip: target.0.to_string(),
                port: u32::from(target.1),
            }),
            protocol: u32::from(target.2),
            window_start_us,
            window_end_us,
            first_seen_us: first_seen,
            last_seen_us: last_seen,
            flow_count: members.len() as u64,
            distinct_targets: targets.len() as u32,
            votes,
            top_features: top,
            evidence_truncated: (members.len() - ids.len()) as u64,
            evidence_flow_ids: ids,
            model_version: self.model_version.clone(),
            rules_version: self.rules.version,
            threshold: self.cfg.threshold,
        };
        let evidence = self.evidence(flows, members, id, &class_name);
        (event, evidence)
    }

    /// The evidence of anomaly `id`: its flagged flows (at most
    /// `max_evidence_flows`, the rest counted).
    pub(crate) fn evidence(
        &self,
        flows: &[&FlowRecord],
        members: &[Scored],
        id: String,
        class_name: &str,
    ) -> EvidenceEvent {
        let ev_flows: Vec<EvidenceFlow> = members
            .iter()
            .take(self.cfg.max_evidence_flows)
            .map(|m| {
                let f = flows[m.flow];
                evidence_flow(f, &f.endpoints, m.confidence, class_name)
            })
            .collect();
        EvidenceEvent {
            anomaly_id: id,
            truncated: (members.len() - ev_flows.len()) as u64,
            flows: ev_flows,
        }
    }

    /// The id of the anomaly of `class` from `src` in the window starting
    /// at `window_start_us`.
    pub(crate) fn anomaly_id(&self, src: &IpAddr, window_start_us: i64, class: usize) -> String {
        anomaly_id(self.cfg.id_seed, src, window_start_us, &self.classes[class])
    }
}

fn evidence_flow(f: &FlowRecord, e: &Endpoints, confidence: f64, class: &str) -> EvidenceFlow {
    EvidenceFlow {
        id: f.id.clone(),
        source: Some(Endpoint {
            ip: e.src_ip.to_string(),
            port: u32::from(e.src_port),
        }),
        target: Some(Endpoint {
            ip: e.dst_ip.to_string(),
            port: u32::from(e.dst_port),
        }),
        protocol: u32::from(e.protocol),
        start_us: f.start_us,
        confidence,
        class: class.to_owned(),
    }
}

fn argmax(v: &[f64]) -> usize {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best
}

/// Deterministic anomaly id: FNV-1a (two lanes, 128 bits) over the seed,
/// source, window and class.
fn anomaly_id(seed: u64, src: &IpAddr, window_start_us: i64, class: &str) -> String {
    let mut data = Vec::with_capacity(64);
    data.extend_from_slice(&seed.to_le_bytes());
    data.extend_from_slice(src.to_string().as_bytes());
    data.push(0);
    data.extend_from_slice(&window_start_us.to_le_bytes());
    data.extend_from_slice(class.as_bytes());
    let lane = |basis: u64| {
        data.iter().fold(basis, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016x}{:016x}",
        lane(0xcbf2_9ce4_8422_2325),
        lane(0x6c62_272e_07bb_0142)
    )
}
