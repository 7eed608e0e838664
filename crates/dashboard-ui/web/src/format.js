// Pure helpers of the dashboard: formatting, charts, the security path and
// the deploy log. No DOM, no I/O: Vitest runs them in Node.

/** 12345 -> "12,345"; missing -> "–". */
export function count(n) {
  if (n === null || n === undefined || Number.isNaN(Number(n))) return '–';
  return Math.round(Number(n)).toLocaleString('en-US');
}

/** A rate per second, short: 0.4/s, 12/s, 1.2k/s, 3.4M/s. */
export function rate(x) {
  const v = Number(x) || 0;
  if (v >= 1e6) return `${(v / 1e6).toFixed(1)}M/s`;
  if (v >= 1e3) return `${(v / 1e3).toFixed(1)}k/s`;
  if (v >= 10) return `${Math.round(v)}/s`;
  return `${v.toFixed(1)}/s`;
}

/** Milliseconds as a short duration: 850 ms, 2.3 s, 4 min, 2 h. */
export function duration(ms) {
  const v = Math.max(0, Number(ms) || 0);
  if (v < 1000) return `${Math.round(v)} ms`;
  if (v < 60_000) return `${(v / 1000).toFixed(1)} s`;
  if (v < 3_600_000) return `${Math.round(v / 60_000)} min`;
  return `${Math.round(v / 3_600_000)} h`;
}

/** An id shortened for a table cell. */
export function short(id, n = 12) {
  const s = String(id ?? '');
  return s.length > n ? `${s.slice(0, n)}…` : s;
}

/** The SVG path of a line chart of `values` in a w×h box (0 at the bottom). */
export function sparkPath(values, w, h) {
  const vs = (values || []).map((v) => Number(v) || 0);
  if (vs.length === 0) return '';
  const max = Math.max(...vs, 1e-9);
  const step = vs.length > 1 ? w / (vs.length - 1) : 0;
  return vs
    .map((v, i) => {
      const x = (i * step).toFixed(1);
      const y = (h - (v / max) * h).toFixed(1);
      return `${i === 0 ? 'M' : 'L'}${x},${y}`;
    })
    .join(' ');
}

/** Timeline steps with their time after the first step. */
export function timelineRows(steps) {
  const list = (steps || []).filter((s) => s && Number.isFinite(Number(s.at_ms)));
  if (list.length === 0) return [];
  const t0 = Number(list[0].at_ms);
  return list.map((s) => ({
    step: s.step,
    at_ms: Number(s.at_ms),
    plus: duration(Number(s.at_ms) - t0),
    detail: s.detail || '',
  }));
}

/** The committed anomalies that led to a policy: who was blocked, with
 * what, and whether an agent applied it. */
export function blocked(anomalies) {
  return (anomalies || [])
    .filter((a) => (a.policies || []).length > 0)
    .map((a) => {
      const acks = Object.values(a.acks || {}).flat();
      return {
        id: a.id,
        height: a.height,
        time_ms: a.time_ms,
        targets: [...new Set(a.policies.map((p) => p.target))],
        actions: [...new Set(a.policies.map((p) => p.action))],
        applied: acks.filter((k) => k.status === 'applied').length,
        failed: acks.filter((k) => k.status === 'failed').length,
      };
    });
}

/** What changed between two deploy snapshots (`{active, deploy}`), as log
 * lines: the phase, and each component whose state moved. */
export function deployChanges(prev, next, at_ms) {
  const out = [];
  const d0 = prev?.deploy;
  const d1 = next?.deploy;
  if (!d1) return out;
  const same = d0 && d0.id === d1.id;
  if (!same || d0.phase !== d1.phase) {
    out.push({ at_ms, what: `${d1.version}: ${d1.phase}${d1.reason ? ` (${d1.reason})` : ''}` });
  }
  const before = new Map(same ? (d0.components || []).map((c) => [c.id, c.state]) : []);
  for (const c of d1.components || []) {
    if (before.get(c.id) !== c.state) {
      out.push({ at_ms, what: `${c.id} (${c.role}) ${before.get(c.id) ?? 'required'} → ${c.state}`, id: c.id, state: c.state });
    }
  }
  return out;
}
