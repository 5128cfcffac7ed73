import type { ObjectStore } from '../controller/store.js';

/** What readiness needs to know about a source. */
export interface SourceStatus {
  /** False while the source cannot reach what it reads from (an API server outage). */
  healthy: boolean;
  message?: string | undefined;
}

/**
 * A source of Service and EndpointSlice objects. It feeds the store and
 * calls store.markSynced() for each kind once its first complete view is in;
 * the controller writes nothing before that.
 */
export interface Source {
  readonly name: string;
  start(store: ObjectStore): Promise<void>;
  stop(): Promise<void>;
  status?(): SourceStatus;
  /** kube-proxy's node eligibility for /healthz (the Kubernetes source knows its Node); absent: eligible. */
  isNodeEligible?(): boolean;
}
