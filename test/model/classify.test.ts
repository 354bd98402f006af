import { describe, expect, it } from 'vitest';
import { classify, shares } from '../../agent/model/classify.js';

describe('classify', () => {
  it('names the dominant share', () => {
    expect(classify({ span: 1, busy: 0.9, rwndLimited: 0.7, sndbufLimited: 0 })).toBe('rwnd');
    expect(classify({ span: 1, busy: 0.9, rwndLimited: 0, sndbufLimited: 0.6 })).toBe('sndbuf');
    expect(classify({ span: 1, busy: 0.95, rwndLimited: 0.1, sndbufLimited: 0.1 })).toBe('network');
    expect(classify({ span: 1, busy: 0.2, rwndLimited: 0.1, sndbufLimited: 0 })).toBe('app');
  });

  it('says unknown for spans the jiffy-resolution chronographs cannot split', () => {
    expect(classify({ span: 0.002, busy: 0.004, rwndLimited: 0.004, sndbufLimited: 0 })).toBe('unknown');
    expect(classify({ span: 0.015, busy: 0, rwndLimited: 0, sndbufLimited: 0 })).toBe('unknown');
    expect(classify({ span: 0.016, busy: 0, rwndLimited: 0, sndbufLimited: 0 })).toBe('app');
    expect(classify({ span: 0.05, busy: 0.05, rwndLimited: 0, sndbufLimited: 0 }, { minSpan: 0.1 })).toBe('unknown');
  });

  it('breaks ties toward the more specific cause', () => {
    expect(classify({ span: 1, busy: 1, rwndLimited: 0.5, sndbufLimited: 0 })).toBe('rwnd');
    expect(classify({ span: 1, busy: 0.5, rwndLimited: 0, sndbufLimited: 0 })).toBe('network');
  });

  it('keeps shares in [0, 1] and summing to 1 despite jiffy rounding', () => {
    const s = shares({ span: 0.1, busy: 0.104, rwndLimited: 0.108, sndbufLimited: 0.004 });
    for (const v of Object.values(s)) expect(v).toBeGreaterThanOrEqual(0);
    expect(s.rwnd + s.sndbuf + s.network + s.app).toBeCloseTo(1, 9);
    expect(s.rwnd).toBe(1);
    expect(shares({ span: 0, busy: 1, rwndLimited: 1, sndbufLimited: 0 })).toEqual({ rwnd: 0, sndbuf: 0, network: 0, app: 0 });
  });
});
