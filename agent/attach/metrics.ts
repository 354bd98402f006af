// Self metrics of attach mode (prom-client), read from the attacher at scrape time.
import type { Registry } from 'prom-client';
import { selfMetrics } from '../export/self_metrics.js';
import type { Attacher } from './attacher.js';

export interface AttachInfo {
  version: string;
  pid: number;
  comm: string;
  records: string;
}

export function registerAttachMetrics(registry: Registry, a: Attacher, info: AttachInfo, extra: { eventsDropped?: () => number } = {}): void {
  const { counter, counterBy, gauge, eventsDropped, info: infoGauge } = selfMetrics(registry);
  const c = a.counters;
  gauge('tcp_chrono_attach_sockets', "Target connections with timestamping turned on by the agent now.", () => a.attachedCount);
  counter('tcp_chrono_attach_sockets_attached_total', 'Target connections the agent turned timestamping on for.', () => c.attached);
  counter('tcp_chrono_attach_sockets_released_total', 'Attached connections released because the target closed them.', () => c.released);
  counterBy(
    'tcp_chrono_attach_sockets_skipped_total',
    'Target connections left alone, by reason (timestamping / zerocopy: the application uses its error queue; error: timestamping could not be turned on; limit: --max-sockets).',
    'reason',
    () => ({ ...c.skipped }),
  );
  counter('tcp_chrono_attach_stale_sockets_total', 'Sockets found with timestamping left on by a killed agent (adopted, or turned off and drained).', () => c.staleAdopted + c.staleCleaned);
  counterBy('tcp_chrono_attach_records_total', 'Timestamp records read from the target connections, by kind (sched, ack).', 'kind', () => ({ ...c.records }));
  counter(
    'tcp_chrono_attach_records_lost_total',
    'Records missing: a key seen in one kind (SCHED/ACK) but skipped by the other (error queue overflow, or skbs merged on retransmission).',
    () => a.lostRecords,
  );
  counter('tcp_chrono_attach_records_malformed_total', 'Error-queue messages that could not be decoded.', () => c.malformed);
  counter('tcp_chrono_attach_records_dropped_total', 'Records drained from the target but thrown away because the agent fell behind.', () => a.drainerCounters().dropped);
  counter('tcp_chrono_attach_drains_total', "Error queues emptied by the drainer thread (one per signalled socket per wake-up).", () => a.drainerCounters().drains);
  counter('tcp_chrono_attach_drainer_wakeups_total', 'Wake-ups of the drainer thread.', () => a.drainerCounters().wakeups);
  counter('tcp_chrono_attach_batches_total', 'Batches of records handed from the drainer thread to the agent.', () => c.batches);
  counter('tcp_chrono_attach_chunks_unfinished_total', 'Chunks whose ACK was not seen because the target closed the connection first (not stalls).', () => c.unfinished);
  counter('tcp_chrono_attach_rescans_total', "Passes over the target's fd table and the socket dump.", () => c.rescans);
  counter('tcp_chrono_attach_rescan_dumps_skipped_total', "Rescans that skipped the sock_diag dump because the target's sockets had not changed.", () => c.dumpsSkipped);
  counter('tcp_chrono_attach_rescan_errors_total', 'Rescans that failed.', () => c.rescanErrors);
  gauge('tcp_chrono_attach_rescan_duration_seconds', 'Duration of the last rescan.', () => c.lastRescanSeconds);
  eventsDropped(extra.eventsDropped);
  infoGauge('tcp_chrono_attach_info', 'The attached target (value is always 1).', {
    version: info.version,
    pid: String(info.pid),
    comm: info.comm,
    records: info.records,
  });
}
