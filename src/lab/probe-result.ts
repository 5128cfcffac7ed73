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
  /** http mode: status codes and the last body */
  status?: Record<string, number>;
  body?: string;
}
