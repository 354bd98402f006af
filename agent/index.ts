// Library entry point: `import { instrument } from 'tcp-chronograph'`.
export { instrument } from './instrument.js';
export type { InstrumentOptions, Probe, ProbeStats, ChunkRecord } from './instrument.js';
export { instrumentHttp } from './instrument_http.js';
export type { HttpInstrumentOptions, HttpProbe, HttpChunkRecord } from './instrument_http.js';
export { classify, shares } from './model/classify.js';
export type { Limit, Shares, ChronoDelta } from './model/classify.js';
export { ChunkMetrics } from './export/chunk_metrics.js';
export type { ChunkLabels, ChunkMetricsOptions } from './export/chunk_metrics.js';
