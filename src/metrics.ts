/**
 * Prometheus metrics. Names follow kube-proxy's where the meaning is the
 * same, with a kpr_ prefix instead of kubeproxy_.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class Metrics {
  readonly registry = new Registry();

  readonly syncDuration = new Histogram({
    name: 'kpr_sync_proxy_rules_duration_seconds',
    help: 'Time to translate changed Services and write them to the BPF maps',
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });

  readonly programmingDuration = new Histogram({
    name: 'kpr_network_programming_duration_seconds',
    help: 'From the EndpointSlice last-change-trigger-time annotation to the maps being written',
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });

  readonly lastSync = new Gauge({
    name: 'kpr_sync_proxy_rules_last_timestamp_seconds',
    help: 'Unix time of the last successful write of all pending changes',
    registers: [this.registry],
  });

  readonly skipped = new Counter({
    name: 'kpr_skipped_objects_total',
    help: 'Services, ports and EndpointSlices that were not programmed, by reason',
    labelNames: ['kind', 'reason'] as const,
    registers: [this.registry],
  });

  readonly nodeAddresses = new Gauge({
    name: 'kpr_node_addresses',
    help: "This node's addresses per family (--node-ip, else --devices'); 0: that family has no NodePorts and no SNAT",
    labelNames: ['family'] as const,
    registers: [this.registry],
  });

  readonly mapEntries = new Gauge({
    name: 'kpr_bpf_map_entries',
    help: 'Entries in each BPF map',
    labelNames: ['map'] as const,
    registers: [this.registry],
  });

  readonly mapCapacity = new Gauge({
    name: 'kpr_bpf_map_capacity',
    help: 'max_entries of each BPF map',
    labelNames: ['map'] as const,
    registers: [this.registry],
  });

  readonly mapWriteErrors = new Counter({
    name: 'kpr_bpf_map_write_errors_total',
    help: 'Failed map writes by map and errno name; E2BIG/ENOSPC mean the map is full',
    labelNames: ['map', 'code'] as const,
    registers: [this.registry],
  });

  readonly mapFull = new Gauge({
    name: 'kpr_bpf_map_full_service_ports',
    help: 'Service ports not programmed because this map is full (degraded, retried); 0 once they fit',
    labelNames: ['map'] as const,
    registers: [this.registry],
  });

  readonly pendingRetries = new Gauge({
    name: 'kpr_sync_pending_retries',
    help: 'Service ports whose last write failed and wait for a retry',
    registers: [this.registry],
  });

  readonly frontendConflicts = new Gauge({
    name: 'kpr_frontend_conflicts',
    help: 'Frontends (address:port/proto) claimed by more than one Service port',
    registers: [this.registry],
  });

  readonly datapathStats = new Gauge({
    name: 'kpr_datapath_events',
    help: 'Data-path counters from the kpr_stats map, summed over CPUs',
    labelNames: ['event'] as const,
    registers: [this.registry],
  });

  readonly watchErrors = new Counter({
    name: 'kpr_watch_errors_total',
    help: 'Failed Kubernetes API lists and watches (refused, reset, non-200, stalled), by resource',
    labelNames: ['resource'] as const,
    registers: [this.registry],
  });

  readonly watchRestarts = new Counter({
    name: 'kpr_watch_restarts_total',
    help: 'Restarts of a Kubernetes API list/watch loop after an error, by resource',
    labelNames: ['resource'] as const,
    registers: [this.registry],
  });

  readonly watchLists = new Counter({
    name: 'kpr_watch_lists_total',
    help: 'Complete lists received from the Kubernetes API (start-up, restarts, re-lists after 410 Gone), by resource',
    labelNames: ['resource'] as const,
    registers: [this.registry],
  });

  readonly apiReachable = new Gauge({
    name: 'kpr_api_server_reachable',
    help: '1 when the last list or watch of every resource succeeded, 0 during an API server outage',
    registers: [this.registry],
  });

  readonly healthzTotal = new Counter({
    name: 'kpr_proxy_healthz_total',
    help: 'Responses of /healthz by status code, as kubeproxy_proxy_healthz_total',
    labelNames: ['code'] as const,
    registers: [this.registry],
  });

  readonly conntrackEntries = new Gauge({
    name: 'kpr_conntrack_entries',
    help: 'Conntrack entries by type (fwd: client to frontend, rev: client to backend, one per NATed flow)',
    labelNames: ['type'] as const,
    registers: [this.registry],
  });

  readonly socketsDestroyed = new Counter({
    name: 'kpr_sockets_destroyed_total',
    help: 'Connected sockets aborted because kpr had sent them to a backend that left its Service',
    labelNames: ['proto'] as const,
    registers: [this.registry],
  });

  readonly socketDestroyErrors = new Counter({
    name: 'kpr_socket_destroy_errors_total',
    help: 'Failures of the socket-destroy step (reason=unsupported: the kernel cannot load the socket iterators)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly conntrackExpired = new Counter({
    name: 'kpr_conntrack_expired_total',
    help: 'Conntrack entries removed by the expiry scan',
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'kpr_' });
  }
}
