import { describe, expect, it } from 'vitest';
import { boundSeconds, classify, sendBufferBound, shares } from '../../agent/model/classify.js';

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

  it('names rwnd or sndbuf when the kernel counted it for a third of busy time', () => {
    // A slow reader under BBR: half the time rwnd-limited, half pacing at its rate.
    expect(classify({ span: 1, busy: 1, rwndLimited: 0.5, sndbufLimited: 0 })).toBe('rwnd');
    expect(classify({ span: 1, busy: 0.9, rwndLimited: 0.3, sndbufLimited: 0 })).toBe('rwnd');
    expect(classify({ span: 1, busy: 0.9, rwndLimited: 0.29, sndbufLimited: 0 })).toBe('network');
    expect(classify({ span: 1, busy: 1, rwndLimited: 0.35, sndbufLimited: 0.4 })).toBe('sndbuf');
    // A healthy reader behind a bottleneck: the window seldom binds.
    expect(classify({ span: 1, busy: 1, rwndLimited: 0.08, sndbufLimited: 0.02 })).toBe('network');
  });

  it('says app when the sender was idle for more than half the span', () => {
    expect(classify({ span: 1, busy: 0.5, rwndLimited: 0, sndbufLimited: 0 })).toBe('network');
    expect(classify({ span: 1, busy: 0.49, rwndLimited: 0.4, sndbufLimited: 0 })).toBe('app');
    expect(classify({ span: 1, busy: 0.6, rwndLimited: 0.3, sndbufLimited: 0 })).toBe('rwnd');
  });

  it('keeps shares in [0, 1] and summing to 1 despite jiffy rounding', () => {
    const s = shares({ span: 0.1, busy: 0.104, rwndLimited: 0.108, sndbufLimited: 0.004 });
    for (const v of Object.values(s)) expect(v).toBeGreaterThanOrEqual(0);
    expect(s.rwnd + s.sndbuf + s.network + s.app).toBeCloseTo(1, 9);
    expect(s.rwnd).toBe(1);
    expect(shares({ span: 0, busy: 1, rwndLimited: 1, sndbufLimited: 0 })).toEqual({ rwnd: 0, sndbuf: 0, network: 0, app: 0 });
  });

  it('counts unnamed busy time as sndbuf-limited when the send buffer was bound', () => {
    // Lab figures (mixed-sndbuf, BBR behind 20 Mbit/s): 32 KiB buffer, 100-segment window.
    const capped = { sndbuf: 32768, cwnd: 100, mss: 1448, full: true };
    expect(sendBufferBound(capped)).toBe(true);
    expect(sendBufferBound({ ...capped, full: false })).toBe(false); // the writer never filled it
    // Autotuned (network scenario): 1.4 MiB against 146 segments.
    expect(sendBufferBound({ sndbuf: 1451520, cwnd: 146, mss: 1448, full: true })).toBe(false);
    expect(sendBufferBound({ ...capped, cwnd: 0 })).toBe(false);
    expect(sendBufferBound({ ...capped, mss: 0 })).toBe(false);
    // A window that fits the buffer exactly does not bind it.
    expect(sendBufferBound({ sndbuf: 1448 * 20, cwnd: 20, mss: 1448, full: true })).toBe(false);

    const d = { span: 0.45, busy: 0.45, rwndLimited: 0, sndbufLimited: 0.1 };
    expect(classify(d)).toBe('network');
    const bound = boundSeconds(d.busy, d.rwndLimited, d.sndbufLimited, capped);
    expect(bound).toBeCloseTo(0.35);
    expect(boundSeconds(d.busy, d.rwndLimited, d.sndbufLimited, { ...capped, full: false })).toBe(0);
    expect(boundSeconds(d.busy, d.rwndLimited, d.sndbufLimited, undefined)).toBe(0);
    expect(classify({ ...d, sndbufBound: bound })).toBe('sndbuf');
    const s = shares({ ...d, sndbufBound: bound });
    expect(s.sndbuf).toBeCloseTo(1);
    expect(s.network).toBeCloseTo(0);
    // rwnd named by the kernel still wins when it is the larger share.
    expect(classify({ span: 1, busy: 1, rwndLimited: 0.7, sndbufLimited: 0, sndbufBound: 0.3 })).toBe('rwnd');
    // Idle time is still app.
    expect(classify({ span: 1, busy: 0.3, rwndLimited: 0, sndbufLimited: 0, sndbufBound: 0.3 })).toBe('app');
  });
});
