// What the chunk modes (proxy, attach, trace) share around their records:
// the chunk metrics (mode label), the event stream (--events FILE and
// /api/chunks?follow=1), and, where the kernel allows, watch's connection
// view of their ports (per-port and per-connection chronographs, and
// /api/connections). A mode feeds records to record() and hands routes(),
// metrics and healthFields() to serveMode (runtime.ts).
import type express from 'express';
import { Registry } from 'prom-client';
import { ChunkEvents } from '../export/chunk_events.js';
import { ChunkMetrics, type ChunkLabels } from '../export/chunk_metrics.js';
import { connectionRoutes } from '../export/http.js';
import type { ChunkRecord } from '../model/chunks.js';
import type { PortRange } from '../parse/inet_diag.js';
import { startPortWatch, type PortWatch } from './port_watch.js';

export interface ChunkOutputOptions {
  /** --events FILE. */
  events?: string;
  /** The ports of the connection view (--diag on), or undefined for none. */
  diag?: { ports: PortRange[]; intervalSeconds: number; maxSeries: number };
}

export class ChunkOutputs {
  readonly events = new ChunkEvents();
  readonly registry: Registry;
  readonly chunkMetrics: ChunkMetrics;
  /** Sentences for the start line's degraded features. */
  readonly degraded: string[] = [];

  private constructor(readonly portWatch: PortWatch | undefined) {
    this.registry = portWatch?.metrics.registry ?? new Registry();
    this.chunkMetrics = new ChunkMetrics(this.registry);
  }

  /** Opens the event file (rejects with a sentence) and starts the connection view (a failure is degraded, not fatal). */
  static async open(o: ChunkOutputOptions): Promise<ChunkOutputs> {
    let portWatch: PortWatch | undefined;
    let diagProblem: string | undefined;
    if (o.diag !== undefined && o.diag.ports.length > 0) {
      try {
        portWatch = startPortWatch(o.diag.ports, { intervalSeconds: o.diag.intervalSeconds, maxSeries: o.diag.maxSeries });
      } catch (e) {
        diagProblem = `connection metrics off: the sock_diag dump failed (${e instanceof Error ? e.message : String(e)})`;
      }
    }
    const out = new ChunkOutputs(portWatch);
    if (diagProblem !== undefined) out.degraded.push(diagProblem);
    if (o.events !== undefined) {
      try {
        await out.events.openFile(o.events);
      } catch (e) {
        portWatch?.stop();
        throw new Error(`cannot open --events ${o.events}: ${e instanceof Error ? e.message : String(e)}`);
      }
    }
    return out;
  }

  /** Counts the record in the chunk metrics and pushes it (with `extra` fields set on it: the record is the mode's own) to the event stream. */
  record(c: ChunkRecord, labels: ChunkLabels, extra: Record<string, unknown>): void {
    this.chunkMetrics.observe(c, labels);
    this.events.push(Object.assign(c, extra));
  }

  get metrics(): { render(): Promise<string>; contentType: string; registry: Registry } {
    const pw = this.portWatch;
    const registry = this.registry;
    return { render: () => (pw !== undefined ? pw.metrics.render() : registry.metrics()), contentType: registry.contentType, registry };
  }

  /** The paths routes() serves, for the 404 answer. */
  get paths(): string[] {
    return this.portWatch !== undefined ? ['/api/chunks', '/api/connections', '/api/overview', '/'] : ['/api/chunks'];
  }

  /** /api/chunks, and with the connection view watch's /api/connections, /api/overview and the live page. */
  routes(app: express.Express): void {
    app.get('/api/chunks', this.events.handler);
    const pw = this.portWatch;
    if (pw !== undefined) app.use(connectionRoutes({ table: pw.table }));
  }

  /** Health fields: an event file that failed makes the mode unhealthy. */
  healthFields(): { ok: boolean; eventsError?: string } {
    const f = this.events.fileFailure;
    return f === undefined ? { ok: true } : { ok: false, eventsError: f.message };
  }

  async close(): Promise<void> {
    this.portWatch?.stop();
    await this.events.close();
  }
}
