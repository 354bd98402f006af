// ChunkMetrics: what one delivered and one stalled record add, with and without a route.
import { execFileSync } from 'node:child_process';
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { ChunkMetrics } from '../../agent/export/chunk_metrics.js';
import type { ChunkRecord } from '../../agent/model/chunks.js';

function record(over: Partial<ChunkRecord>): ChunkRecord {
  return {
    id: 0,
    bytes: 1000,
    offset: 0,
    writeTime: 100,
    lastWriteTime: 100.001,
    schedTime: 100.003,
    queueDelay: 0.002,
    ackTime: 100.5,
    deliveryTime: 0.5,
    busy: 0.4,
    rwndLimited: 0.3,
    sndbufLimited: 0,
    appLimited: 0.1,
    retransmits: 2,
    limit: 'rwnd',
    shares: { rwnd: 0.6, sndbuf: 0, network: 0.2, app: 0.2 },
    stalled: false,
    exact: true,
    ...over,
  };
}

describe('ChunkMetrics', () => {
  it('counts delivered chunks in every series and stalls only in the stall counter', async () => {
    const registry = new Registry();
    const m = new ChunkMetrics(registry);
    m.observe(record({}), { port: 8080, mode: 'proxy', route: 'segment' });
    m.observe(record({ limit: 'app', exact: false, bytes: 10 }), { port: 8080, mode: 'proxy' });
    m.observe(record({ stalled: true, ackTime: undefined, limit: 'rwnd' }), { port: 8080, mode: 'proxy', route: 'segment' });
    const text = await registry.metrics();
    expect(text).toContain('tcp_chrono_chunks_total{port="8080",mode="proxy",route="segment",limit="rwnd"} 1');
    // No route: the label is absent, never a raw path.
    expect(text).toContain('tcp_chrono_chunks_total{port="8080",mode="proxy",limit="app"} 1');
    expect(text).toContain('tcp_chrono_chunk_stalls_total{port="8080",mode="proxy",route="segment",limit="rwnd"} 1');
    expect(text).toContain('tcp_chrono_chunk_bytes_total{port="8080",mode="proxy",route="segment",limit="rwnd"} 1000');
    expect(text).toContain('tcp_chrono_chunk_rwnd_limited_seconds_total{port="8080",mode="proxy",route="segment"} 0.3');
    expect(text).toContain('tcp_chrono_chunk_delivery_seconds_bucket{le="0.5",port="8080",mode="proxy",route="segment",limit="rwnd"} 1');
    expect(text).toContain('tcp_chrono_chunk_queue_seconds_bucket{le="0.0025",port="8080",mode="proxy",route="segment"} 1');
    expect(text).toContain('tcp_chrono_chunk_retransmitted_segments_total{port="8080",mode="proxy",route="segment"} 2');
    expect(text).toContain('tcp_chrono_chunk_inexact_total{port="8080",mode="proxy"} 1');
    // The stalled record added nothing to the delivered series.
    expect(text).toContain('tcp_chrono_chunk_delivery_seconds_count{port="8080",mode="proxy",route="segment",limit="rwnd"} 1');
    expect(execFileSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' })).toBe('');
  });
});
