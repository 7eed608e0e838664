import { describe, expect, it } from 'vitest';
import { blocked, count, deployChanges, duration, rate, sparkPath, timelineRows } from '../../src/format.js';

describe('formatting', () => {
  it('counts, rates and durations read as people write them', () => {
    expect(count(12345)).toBe('12,345');
    expect(count(undefined)).toBe('–');
    expect(rate(0.44)).toBe('0.4/s');
    expect(rate(12.4)).toBe('12/s');
    expect(rate(1234)).toBe('1.2k/s');
    expect(rate(3.4e6)).toBe('3.4M/s');
    expect(duration(850)).toBe('850 ms');
    expect(duration(2300)).toBe('2.3 s');
    expect(duration(240_000)).toBe('4 min');
  });
});

describe('charts', () => {
  it('draws the highest value at the top and zero at the bottom', () => {
    expect(sparkPath([0, 5, 10], 100, 20)).toBe('M0.0,20.0 L50.0,10.0 L100.0,0.0');
    expect(sparkPath([], 100, 20)).toBe('');
    // All zero: a flat line at the bottom, no division by zero.
    expect(sparkPath([0, 0], 10, 4)).toBe('M0.0,4.0 L10.0,4.0');
  });
});

describe('the security path', () => {
  it('times each step from the first', () => {
    const rows = timelineRows([
      { step: 'detected', at_ms: 1000, detail: 'scan' },
      { step: 'committed', at_ms: 1300 },
      { step: 'ack', at_ms: 3500, detail: 'enforcer-1 applied' },
    ]);
    expect(rows.map((r) => r.plus)).toEqual(['0 ms', '300 ms', '2.5 s']);
    expect(rows[1].detail).toBe('');
  });

  it('lists the blocked attackers with what the agents did', () => {
    const b = blocked([
      { id: 'a1', height: 3, policies: [], acks: {} },
      {
        id: 'a2', height: 4, time_ms: 9,
        policies: [{ id: 'p1', target: '203.0.113.66/32', action: 'drop' }],
        acks: { p1: [{ status: 'applied' }, { status: 'failed' }] },
      },
    ]);
    expect(b).toEqual([{ id: 'a2', height: 4, time_ms: 9, targets: ['203.0.113.66/32'], actions: ['drop'], applied: 1, failed: 1 }]);
  });
});

describe('the deploy log', () => {
  const snap = (phase, states) => ({
    deploy: { id: 7, version: 'v2', phase, components: Object.entries(states).map(([id, state]) => ({ id, role: 'spine', state })) },
  });
  it('says what moved, component by component', () => {
    const a = snap('preparing', { 'spine-1': 'preparing', 'spine-2': 'preparing' });
    const b = snap('preparing', { 'spine-1': 'prepared', 'spine-2': 'preparing' });
    expect(deployChanges(a, b, 5)).toEqual([{ at_ms: 5, what: 'spine-1 (spine) preparing → prepared', id: 'spine-1', state: 'prepared' }]);
    const c = snap('finalized', { 'spine-1': 'active', 'spine-2': 'active' });
    expect(deployChanges(b, c, 6).map((l) => l.what)).toEqual([
      'v2: finalized',
      'spine-1 (spine) prepared → active',
      'spine-2 (spine) preparing → active',
    ]);
    // A new deploy starts from "required".
    expect(deployChanges(null, a, 1)[1].what).toBe('spine-1 (spine) required → preparing');
    expect(deployChanges(a, { deploy: null }, 1)).toEqual([]);
  });
});
