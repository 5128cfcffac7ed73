/** The probe's bounds when a run does not set them; Lab.probe bounds the child by them too. */
export const PROBE_DEFAULTS = { durationMs: 10_000, timeoutMs: 2_000 } as const;

/** What the probe client (src/lab/probe.ts) prints, one JSON line per run. */
export interface ProbeResult {
  proto: string;
  ok: number;
  errors: Record<string, number>;
  /** pod name -> replies */
  pods: Record<string, number>;
  /** what getpeername / the reply source said -> count */
  peers: Record<string, number>;
  /** client address the pod saw -> count */
  seenAs: Record<string, number>;
  elapsedMs: number;
  /** with --trace: when each reply came, and from which pod */
  trace?: Array<[number, string]>;
  /** with --trace: when each error happened, and its code */
  errorTrace?: Array<[number, string]>;
  /** http mode: status codes and the last body */
  status?: Record<string, number>;
  body?: string;
}
