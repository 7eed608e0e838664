//! Streaming detection: flows judged as they arrive, windows kept open
//! across arrivals.
//!
//! [`Detector::run`] judges a finished file window by window. A live AI
//! service cannot wait for a window to end: an anomaly must be out within
//! a second of the flow that makes it, while the engines that need windows
//! (per-source metrics, the math engine's baselines) still see whole
//! windows. [`Stream`] does both:
//!
//! * **Arrival.** [`Stream::push`] files each flow in the window its start
//!   falls in (tumbling windows of `window_secs`, as in [`Detector::run`]);
//!   [`Stream::step`] then judges the flows that arrived since the last
//!   step, each against its source's metrics over *everything of that
//!   window so far*. The first time a (source, window, class) has a flagged
//!   flow, its anomaly is emitted — once; later flagged flows of it only
//!   add to its evidence. Rates are per window length, so a window's
//!   metrics only grow towards their final value: what is flagged early
//!   would be flagged at the end too, in all but contrived cases.
//! * **Straddling windows** (`Config::straddle`): each flow is judged
//!   against its own window and, when that does not flag it, against the
//!   window offset by half a window that holds it (its window's first half
//!   with the previous window's second, or its second half with the next
//!   window's first). So a window keeps the flows it needs from its
//!   neighbours: the previous window's second half is kept after that
//!   window closes, and a window closes half a window later than it would
//!   alone, when the window straddling its end is complete.
//! * **Close.** A window closes when the flow clock passes its end (plus
//!   half a window when straddling) plus `lateness_secs`. Every flow of it
//!   is judged again against the
//!   complete window, exactly as [`Detector::run`] would: an anomaly
//!   only that pass finds is emitted then, and an emitted anomaly whose
//!   flows grew gets its complete evidence (same anomaly id; the last
//!   evidence for an id is the whole). Sources with no anomaly teach the
//!   math engine's baselines, in window order.
//! * **Flow clock.** Time is the flows' own (capture time), never compared
//!   with the caller's clock: the newest flow end seen, advanced by the
//!   caller's time elapsed since it arrived. So a live sensor's windows
//!   close on time when traffic stops, and a replayed capture from last
//!   year behaves the same as live traffic.
//! * **Flows from far ahead** of the clock (more than ten minutes) are
//!   judged but do not move it (counted): one bad time stamp would
//!   otherwise close every window and make all later flows late.
//! * **Late flows.** A flow whose window has closed (a long flow exported
//!   at its end) goes to the window its end falls in, or the first one not
//!   yet closed; counted in [`StreamCounts::late`]. Flows over `max_open_flows`
//!   are counted in [`StreamCounts::dropped`], never silently lost.
//!
//! Pure: time is an argument, nothing is read from a clock.

use crate::detector::{Detection, Detector, Scored, SourceView};
use crate::flow::FlowRecord;
use crate::math::SourceScore;
use crate::window::SourceStats;
use crate::wire::EvidenceEvent;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Streaming settings.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StreamConfig {
    /// How long after its end (flow clock) a window waits for flows that
    /// started in it before it closes.
    pub lateness_secs: f64,
    /// Flows held in open windows at most; more are dropped and counted.
    pub max_open_flows: usize,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            lateness_secs: 2.0,
            max_open_flows: 500_000,
        }
    }
}

/// What the stream counted besides the detector's [`crate::Summary`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct StreamCounts {
    /// Flows that arrived after their window had closed (filed in a later
    /// window).
    pub late: u64,
    /// Flows refused because `max_open_flows` were held.
    pub dropped: u64,
    /// Anomalies emitted when their window closed (not on arrival).
    pub at_close: u64,
    /// Evidence messages completed at close.
    pub evidence_updates: u64,
    /// Flows that ended more than [`MAX_JUMP_US`] ahead of the flow clock
    /// (judged, but the clock did not follow them).
    pub clock_refused: u64,
}

/// How far ahead of the flow clock a flow may end and still move it: ten
/// minutes. Live flows arrive as they end, a replay's within its span.
pub const MAX_JUMP_US: i64 = 600_000_000;

/// What one step produced.
#[derive(Debug, Default)]
pub struct Step {
    /// New anomalies (each (source, window, class) at most once).
    pub detections: Vec<Detection>,
    /// Complete evidence of anomalies emitted earlier whose flows grew.
    pub evidence: Vec<EvidenceEvent>,
}

#[derive(Default)]
struct Source {
    flows: Vec<FlowRecord>,
    /// Flows judged on arrival so far.
    judged: usize,
    flagged: Vec<Scored>,
    /// (class, its flagged flows when it was emitted).
    emitted: Vec<(usize, Vec<usize>)>,
}

/// A [`Detector`] fed flow by flow.
pub struct Stream {
    det: Detector,
    cfg: StreamConfig,
    window_us: i64,
    windows: BTreeMap<i64, BTreeMap<IpAddr, Source>>,
    /// Windows below this index have closed.
    floor: i64,
    /// (flow time, caller time) where the flow clock was last set.
    clock: Option<(i64, i64)>,
    open_flows: usize,
    counts: StreamCounts,
    /// The second half of the last closed window's flows, by source: the
    /// first half of the next window's `Before` straddling window.
    tail: Option<(i64, BTreeMap<IpAddr, Vec<FlowRecord>>)>,
}

/// A source's metrics over the two straddling windows of one of its
/// windows (`Before`, `After`), and the math engine's reading of them.
type Around = [(SourceStats, SourceScore); 2];

impl Stream {
    pub fn new(det: Detector, cfg: StreamConfig) -> Stream {
        let window_us = (det.config().window_secs * 1e6).round().max(1.0) as i64;
        Stream {
            det,
            cfg,
            window_us,
            windows: BTreeMap::new(),
            floor: i64::MIN,
            clock: None,
            open_flows: 0,
            counts: StreamCounts::default(),
            tail: None,
        }
    }

    pub fn detector(&self) -> &Detector {
        &self.det
    }

    /// The detector, to change its threshold (the feedback loop).
    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.det
    }

    pub fn counts(&self) -> &StreamCounts {
        &self.counts
    }

    /// Flows held: in open windows, and the second half of the last
    /// closed one (kept for straddling).
    pub fn open_flows(&self) -> usize {
        self.open_flows
    }

    /// The flow clock at caller time `now_us`: the newest flow end seen,
    /// plus the caller's time since it arrived. None before any flow.
    pub fn flow_now(&self, now_us: i64) -> Option<i64> {
        self.clock
            .map(|(flow, at)| flow.saturating_add(now_us.saturating_sub(at).max(0)))
    }

    /// Where `f` ends: its start plus its duration.
    fn end_us(&self, f: &FlowRecord) -> i64 {
        let d = self
            .det
            .cols
            .duration
            .and_then(|i| f.features.get(i))
            .copied()
            .filter(|d| d.is_finite() && *d > 0.0)
            .unwrap_or(0.0);
        f.start_us.saturating_add(d.min(1e15) as i64)
    }

    /// Files flows that arrived at caller time `now_us`; they are judged
    /// at the next [`Stream::step`].
    pub fn push(&mut self, flows: impl IntoIterator<Item = FlowRecord>, now_us: i64) {
        for f in flows {
            if self.open_flows >= self.cfg.max_open_flows {
                self.counts.dropped += 1;
                continue;
            }
            let end = self.end_us(&f);
            match self.flow_now(now_us) {
                None => self.clock = Some((end, now_us)),
                // A record from far ahead of the clock (a sensor's clock
                // gone wrong, a duration of years) would close every open
                // window and make every flow after it late: it is judged,
                // but does not move the clock.
                Some(t) if end > t.saturating_add(MAX_JUMP_US) => self.counts.clock_refused += 1,
                Some(t) if end > t => self.clock = Some((end, now_us)),
                Some(_) => {}
            }
            let mut w = f.start_us.div_euclid(self.window_us);
            if w < self.floor {
                self.counts.late += 1;
                w = end.div_euclid(self.window_us).max(self.floor);
            }
            self.open_flows += 1;
            self.windows
                .entry(w)
                .or_default()
                .entry(f.endpoints.src_ip)
                .or_default()
                .flows
                .push(f);
        }
    }

    /// Judges what arrived since the last step, emits new anomalies, and
    /// closes the windows the flow clock has passed (caller time `now_us`).
    pub fn step(&mut self, now_us: i64) -> Step {
        let mut out = Step::default();
        let Some(t) = self.flow_now(now_us) else {
            return out;
        };
        let mut windows = std::mem::take(&mut self.windows);
        let todo: Vec<(i64, IpAddr)> = windows
            .iter()
            .flat_map(|(&w, m)| {
                m.iter()
                    .filter(|(_, s)| s.judged < s.flows.len())
                    .map(move |(&src, _)| (w, src))
            })
            .collect();
        for (w, src) in todo {
            let cur = windows
                .get(&w)
                .and_then(|m| m.get(&src))
                .map_or(&[][..], |s| &s.flows[..]);
            let around = self.around_in(&windows, w, src, cur);
            let Some(s) = windows.get_mut(&w).and_then(|m| m.get_mut(&src)) else {
                continue;
            };
            let (st, score) = self.source_state(src, &s.flows);
            let flagged = self.judge_from(w, s, s.judged, &st, &score, around.as_ref());
            self.det.summary.flows += (s.flows.len() - s.judged) as u64;
            self.det.summary.flagged_flows += flagged as u64;
            s.judged = s.flows.len();
            self.emit_new(w, src, s, &st, &score, around.as_ref(), t, &mut out);
        }
        self.windows = windows;
        let lateness = (self.cfg.lateness_secs.max(0.0) * 1e6) as i64;
        // With straddling windows a window is complete only when the one
        // straddling its end is: half a window later.
        let wait = if self.det.config().straddle {
            self.window_us / 2
        } else {
            0
        };
        while let Some((&w, _)) = self.windows.iter().next() {
            let end = (w + 1).saturating_mul(self.window_us).saturating_add(wait);
            if end.saturating_add(lateness) > t {
                break;
            }
            let sources = self.windows.remove(&w).unwrap_or_default();
            self.floor = self.floor.max(w + 1);
            self.close(w, sources, t, &mut out);
        }
        // The kept half of a closed window is dropped once the window after
        // it would have closed too: no window left needs it.
        if let Some((k, _)) = self.tail {
            let next_end = (k + 2).saturating_mul(self.window_us).saturating_add(wait);
            if next_end.saturating_add(lateness) <= t {
                self.drop_tail();
            }
        }
        out
    }

    /// Closes every open window now (the end of a replay).
    pub fn finish(&mut self) -> Step {
        let mut out = Step::default();
        let t = self.clock.map_or(0, |c| c.0);
        // One at a time: closing a window reads the next one's flows.
        while let Some((w, sources)) = self.windows.pop_first() {
            self.floor = self.floor.max(w + 1);
            self.close(w, sources, t, &mut out);
        }
        self.drop_tail();
        out
    }

    fn drop_tail(&mut self) {
        if let Some((_, old)) = self.tail.take() {
            let n: usize = old.values().map(Vec::len).sum();
            self.open_flows = self.open_flows.saturating_sub(n);
        }
    }

    /// `src`'s metrics over the straddling windows of window `w`, from its
    /// flows in the window before (`prev`), in `w` (`cur`) and in the one
    /// after (`next`). None when straddling is off.
    fn around(
        &self,
        w: i64,
        src: IpAddr,
        prev: &[FlowRecord],
        cur: &[FlowRecord],
        next: &[FlowRecord],
    ) -> Option<Around> {
        if !self.det.config().straddle {
            return None;
        }
        let mid = |k: i64| {
            k.saturating_mul(self.window_us)
                .saturating_add(self.window_us / 2)
        };
        // Position, not time, decides the half a flow is in: a late flow
        // filed in a window counts in it.
        let before = prev
            .iter()
            .filter(|f| f.start_us >= mid(w - 1))
            .chain(cur.iter().filter(|f| f.start_us < mid(w)));
        let after = cur
            .iter()
            .filter(|f| f.start_us >= mid(w))
            .chain(next.iter().filter(|f| f.start_us < mid(w + 1)));
        Some([
            self.source_state(src, before),
            self.source_state(src, after),
        ])
    }

    /// [`Stream::around`] for window `w`, whose flows of `src` are `cur`:
    /// the window before is the kept half of a closed one or still open in
    /// `windows`, the window after is open in `windows`.
    fn around_in(
        &self,
        windows: &BTreeMap<i64, BTreeMap<IpAddr, Source>>,
        w: i64,
        src: IpAddr,
        cur: &[FlowRecord],
    ) -> Option<Around> {
        let flows = |k: i64| {
            windows
                .get(&k)
                .and_then(|m| m.get(&src))
                .map_or(&[][..], |s| &s.flows[..])
        };
        let prev = match &self.tail {
            Some((k, t)) if *k == w - 1 => t.get(&src).map_or(&[][..], |v| &v[..]),
            _ => flows(w - 1),
        };
        self.around(w, src, prev, cur, flows(w + 1))
    }

    fn source_state<'a>(
        &self,
        src: IpAddr,
        flows: impl IntoIterator<Item = &'a FlowRecord>,
    ) -> (SourceStats, SourceScore) {
        let st = SourceStats::by_source(
            flows,
            &self.det.cols,
            self.window_us as f64 / 1e6,
            &self.det.rules.auth_ports,
        )
        .remove(&src)
        .unwrap_or_default();
        let score = self.det.math.source_score(&src, &st);
        (st, score)
    }

    /// Emits the classes of `s` flagged but not yet emitted.
    #[allow(clippy::too_many_arguments)]
    fn emit_new(
        &mut self,
        w: i64,
        src: IpAddr,
        s: &mut Source,
        st: &SourceStats,
        score: &SourceScore,
        around: Option<&Around>,
        at_us: i64,
        out: &mut Step,
    ) -> usize {
        let mut classes: Vec<usize> = s.flagged.iter().map(|f| f.class).collect();
        classes.sort_unstable();
        classes.dedup();
        let mut n = 0;
        for class in classes {
            if s.emitted.iter().any(|(c, _)| *c == class) {
                continue;
            }
            let built = self.build(w, src, s, class, st, score, around);
            s.emitted.push((class, members_of(s, class)));
            out.detections.push(self.det.emit(built, at_us));
            n += 1;
        }
        n
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        &self,
        w: i64,
        src: IpAddr,
        s: &Source,
        class: usize,
        st: &SourceStats,
        score: &SourceScore,
        around: Option<&Around>,
    ) -> (crate::wire::AnomalyEvent, EvidenceEvent) {
        let refs: Vec<&FlowRecord> = s.flows.iter().collect();
        let start = w.saturating_mul(self.window_us);
        self.det.build_detection(
            &refs,
            src,
            class,
            &class_members(s, class),
            SourceView::of(st, score),
            views(around),
            start,
            start.saturating_add(self.window_us),
        )
    }

    /// The complete evidence of an anomaly emitted earlier (the anomaly
    /// itself is not built again).
    fn evidence(&self, w: i64, src: IpAddr, s: &Source, class: usize) -> EvidenceEvent {
        let refs: Vec<&FlowRecord> = s.flows.iter().collect();
        let id = self
            .det
            .anomaly_id(&src, w.saturating_mul(self.window_us), class);
        let name = &self.det.classes()[class];
        self.det.evidence(&refs, &class_members(s, class), id, name)
    }

    /// Judges `s`'s flows (window `w`) from index `from` against `st` and
    /// `score` and, when straddling, the straddling windows' `around`; the
    /// flagged ones join `s.flagged`. Returns how many were flagged.
    fn judge_from(
        &mut self,
        w: i64,
        s: &mut Source,
        from: usize,
        st: &SourceStats,
        score: &SourceScore,
        around: Option<&Around>,
    ) -> usize {
        let before = s.flagged.len();
        let start = w.saturating_mul(self.window_us);
        let own = SourceView::of(st, score);
        for i in from..s.flows.len() {
            let judged =
                self.det
                    .judge_both(&s.flows[i], own, views(around), start, self.window_us);
            if let (_, Some(mut sc)) = judged {
                sc.flow = i;
                s.flagged.push(sc);
            }
        }
        s.flagged.len() - before
    }

    /// The whole window judged again, as [`Detector::run`] judges it.
    fn close(&mut self, w: i64, mut sources: BTreeMap<IpAddr, Source>, t: i64, out: &mut Step) {
        let mut quiet = Vec::new();
        let arounds: Vec<Option<Around>> = sources
            .iter()
            .map(|(&src, s)| self.around_in(&self.windows, w, src, &s.flows))
            .collect();
        for ((&src, s), around) in sources.iter_mut().zip(&arounds) {
            self.open_flows = self.open_flows.saturating_sub(s.flows.len());
            let (st, score) = self.source_state(src, &s.flows);
            // Flows that arrived after the last step are judged here first.
            self.det.summary.flows += (s.flows.len() - s.judged) as u64;
            s.judged = s.flows.len();
            let before = s.flagged.len();
            s.flagged.clear();
            let flagged = self.judge_from(w, s, 0, &st, &score, around.as_ref());
            self.det.summary.flagged_flows += flagged.saturating_sub(before) as u64;
            let emitted_before = s.emitted.len();
            self.counts.at_close +=
                self.emit_new(w, src, s, &st, &score, around.as_ref(), t, out) as u64;
            for k in 0..emitted_before {
                let class = s.emitted[k].0;
                let now = members_of(s, class);
                if !now.is_empty() && now != s.emitted[k].1 {
                    out.evidence.push(self.evidence(w, src, s, class));
                    self.counts.evidence_updates += 1;
                }
            }
            if s.emitted.is_empty() {
                quiet.push((src, st));
            }
        }
        // Sources with no anomaly teach the baselines (flagged ones do not
        // teach them their attack).
        for (src, st) in quiet {
            self.det.math.update(src, &st);
        }
        self.det.summary.windows += 1;
        // Keep the second half of this window for the next one's `Before`
        // straddling window (held flows: they count in `open_flows`).
        self.drop_tail();
        if self.det.config().straddle {
            let mid = w
                .saturating_mul(self.window_us)
                .saturating_add(self.window_us / 2);
            let mut tail = BTreeMap::new();
            for (src, s) in sources {
                let half: Vec<FlowRecord> =
                    s.flows.into_iter().filter(|f| f.start_us >= mid).collect();
                if !half.is_empty() {
                    self.open_flows += half.len();
                    tail.insert(src, half);
                }
            }
            self.tail = Some((w, tail));
        }
    }
}

/// The straddling windows' views of [`Around`].
fn views(around: Option<&Around>) -> Option<[SourceView<'_>; 2]> {
    around.map(|a| [0, 1].map(|k| SourceView::of(&a[k].0, &a[k].1)))
}

fn class_members(s: &Source, class: usize) -> Vec<Scored> {
    s.flagged
        .iter()
        .filter(|f| f.class == class)
        .cloned()
        .collect()
}

fn members_of(s: &Source, class: usize) -> Vec<usize> {
    s.flagged
        .iter()
        .filter(|f| f.class == class)
        .map(|f| f.flow)
        .collect()
}
