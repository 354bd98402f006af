// The lab's interval truth (lab/truth.ts) on hand-made timelines: which
// intervals are scored, and as what. Pure functions, no network.
import { describe, expect, it } from 'vitest';
import { intervalTruth, type Span } from '../../lab/truth.js';
import type { Truth } from '../../lab/scenarios.js';

// One 1 s interval [0, 1] made of consecutive spans of the given shares.
function interval(...parts: [Truth, number][]): ReturnType<typeof intervalTruth> {
  const spans: Span[] = [];
  let t = 0;
  for (const [cause, share] of parts) {
    spans.push({ from: t, to: t + share, cause });
    t += share;
  }
  return intervalTruth(spans, 1, 1);
}

describe('lab interval truth', () => {
  it('scores an interval with one clear cause', () => {
    expect(interval(['network', 1])).toEqual({ truth: 'network' });
    expect(interval(['rwnd', 1])).toEqual({ truth: 'rwnd' });
    expect(interval(['app', 0.85], ['network', 0.15])).toEqual({ truth: 'app' });
    expect(interval(['network', 0.9], ['rwnd', 0.1])).toEqual({ truth: 'network' });
  });

  it('does not score a cause switch near a threshold of the verdict', () => {
    // A third of busy time named rwnd is the classifier's rwnd; 62 % is the dominant rule's network.
    expect(interval(['network', 0.62], ['rwnd', 0.38])).toEqual({ excluded: 'cause switch near a threshold of the verdict' });
    expect(interval(['sndbuf', 0.3], ['network', 0.7])).toEqual({ excluded: 'cause switch near a threshold of the verdict' });
    // Idle for more than half the span is app: 62 % app is too close to call.
    expect(interval(['network', 0.38], ['app', 0.62])).toEqual({ excluded: 'cause switch near a threshold of the verdict' });
  });

  it('keeps the older exclusions', () => {
    expect(interval(['network', 0.5], ['rwnd', 0.5])).toEqual({ excluded: 'cause switch inside the interval' });
    expect(interval(['warmup', 0.8], ['network', 0.2])).toEqual({ excluded: 'warm-up' });
    expect(intervalTruth([{ from: 0.8, to: 1, cause: 'network' }], 1, 1)).toEqual({ excluded: 'outside the connection' });
  });
});
