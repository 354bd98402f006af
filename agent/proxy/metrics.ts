// Self metrics of the proxy (prom-client), read from its counters at scrape time.
import type { Registry } from 'prom-client';
import { selfMetrics } from '../export/self_metrics.js';
import { errqueue } from '../sources/errqueue.js';
import { RAW_REASONS, UPSTREAM_ERROR_REASONS, type TcpProxy } from './relay.js';

export interface ProxyInfo {
  version: string;
  upstream: string;
  proxyProtocol: string;
  http: string;
}

/** Registers the proxy's self metrics in `registry`; values are read from `proxy` at each scrape. */
export function registerProxyMetrics(registry: Registry, proxy: TcpProxy, info: ProxyInfo, extra: { eventsDropped?: () => number } = {}): void {
  const { counter, counterBy, gauge, eventsDropped, info: infoGauge } = selfMetrics(registry);
  const c = proxy.counters;
  counter('tcp_chrono_proxy_connections_accepted_total', 'Client connections accepted.', () => c.accepted);
  counter('tcp_chrono_proxy_connections_rejected_total', 'Client connections closed at accept because --max-connections were open.', () => c.rejected);
  gauge('tcp_chrono_proxy_connections', 'Client connections open now.', () => c.open);
  counterBy(
    'tcp_chrono_proxy_upstream_errors_total',
    'Client connections closed because of the upstream, by reason (refused, timeout, unreachable, dns: no connection; reset, other: failed later; truncated: closed, FIN, in the middle of an HTTP response or with a request unanswered).',
    'reason',
    () => {
      const out: Record<string, number> = {};
      for (const r of UPSTREAM_ERROR_REASONS) out[r] = c.upstreamErrors[r];
      return out;
    },
  );
  counter('tcp_chrono_proxy_client_errors_total', 'Client connections that failed on the client side (mostly resets); the upstream connection was reset too.', () => c.clientErrors);
  counter('tcp_chrono_proxy_idle_timeouts_total', 'Connections closed by --idle-timeout.', () => c.idleTimeouts);
  counter(
    'tcp_chrono_proxy_half_close_timeouts_total',
    'Connections reset by --half-close-timeout: the client had closed its side and the upstream then relayed nothing (a client that gave up on a silent upstream).',
    () => c.halfCloseTimeouts,
  );
  counterBy('tcp_chrono_proxy_bytes_total', 'Bytes relayed, by direction (to_client, to_upstream; the PROXY protocol header is not counted).', 'direction', () => ({
    to_client: c.bytesToClient,
    to_upstream: c.bytesToUpstream,
  }));
  counterBy(
    'tcp_chrono_proxy_backpressure_pauses_total',
    "Times reading one side was paused because the other side's send buffer was full, by the direction that was full.",
    'direction',
    () => ({ to_client: c.pausesToClient, to_upstream: c.pausesToUpstream }),
  );
  gauge('tcp_chrono_proxy_max_buffered_bytes', 'Largest number of bytes one connection held in the proxy (both directions) since start.', () => c.maxBuffered);
  counter('tcp_chrono_proxy_uninstrumented_connections_total', 'Client connections relayed without chunk records (timestamping could not be enabled).', () => c.uninstrumented);
  counter('tcp_chrono_proxy_http_responses_total', 'HTTP/1.x responses framed (one chunk each).', () => c.httpResponses);
  counterBy(
    'tcp_chrono_proxy_http_fallbacks_total',
    'Connections whose responses stopped being framed as HTTP (one chunk per write from there on), by reason.',
    'reason',
    () => {
      const out: Record<string, number> = {};
      for (const r of RAW_REASONS) out[r] = c.rawFallbacks[r];
      return out;
    },
  );
  counter('tcp_chrono_agent_timestamp_records_total', 'Timestamp records read from the error queues of instrumented sockets.', () => errqueue.counters.records);
  counter('tcp_chrono_agent_timestamp_records_malformed_total', 'Error-queue messages that could not be decoded.', () => errqueue.counters.malformed);
  eventsDropped(extra.eventsDropped);
  infoGauge('tcp_chrono_proxy_info', 'Proxy configuration (value is always 1).', {
    version: info.version,
    upstream: info.upstream,
    proxy_protocol: info.proxyProtocol,
    http: info.http,
  });
}
