/**
 * `kpr inspect endpoints`: for each Service port, which endpoints this node
 * puts in the cluster set and in the local set, and why each one is in or
 * out: the verdicts of src/model/endpoints.ts, from the same objects the
 * controller reads.
 */
import { ObjectStore } from '../controller/store.js';
import { createLogger } from '../log.js';
import { ManifestSource } from '../sources/manifest.js';
import type { Source } from '../sources/source.js';
import { selectEndpoints, type EndpointVerdict, type NodeTopology } from '../model/endpoints.js';
import { serviceFamilies, serviceSkipReason } from '../model/translate.js';
import { servicePortName, type IPFamily } from '../model/types.js';
import { hostPort } from '../util/ip.js';

export interface EndpointReportRow {
  servicePort: string;
  /** Each family is selected on its own: a dual-stack Service port has a row per family. */
  family: IPFamily;
  policies: { internal: 'Cluster' | 'Local'; external: 'Cluster' | 'Local' };
  topology: string;
  topologyReason: string;
  endpoints: EndpointVerdict[];
}

export function endpointReport(store: ObjectStore, nodeName: string | undefined): { node: NodeTopology; rows: EndpointReportRow[] } {
  const node = { name: nodeName, zone: nodeName === undefined ? undefined : store.node(nodeName)?.zone };
  const rows: EndpointReportRow[] = [];
  for (const key of store.serviceKeys().sort()) {
    const svc = store.service(key);
    if (!svc || serviceSkipReason(svc)) continue;
    const slices = store.slicesFor(key);
    for (const sp of svc.ports) for (const family of serviceFamilies(svc)) {
      const sel = selectEndpoints(svc, sp, slices, node, family);
      rows.push({
        servicePort: servicePortName(svc.namespace, svc.name, sp.name, sp.protocol),
        family,
        policies: { internal: svc.internalTrafficPolicy, external: svc.externalTrafficPolicy },
        topology: sel.topology || 'none',
        topologyReason: sel.topologyReason,
        endpoints: sel.endpoints,
      });
    }
  }
  return { node, rows };
}

export function formatEndpointReport(r: { node: NodeTopology; rows: EndpointReportRow[] }): string {
  const out = [`node ${r.node.name ?? '(none)'}, zone ${r.node.zone ?? '(none)'}`];
  for (const row of r.rows) {
    // IPv4 rows read as they did before dual-stack; IPv6 rows say so.
    out.push('', `${row.servicePort}${row.family === 6 ? ' IPv6' : ''}  iTP=${row.policies.internal} eTP=${row.policies.external}  topology: ${row.topology} (${row.topologyReason})`);
    if (row.endpoints.length === 0) out.push('  no endpoints');
    for (const e of row.endpoints) {
      const sets = [e.inCluster ? 'cluster' : '', e.inLocal ? 'local' : ''].filter(Boolean).join('+') || 'out';
      out.push(`  ${hostPort(e.addr, e.port).padEnd(21)} ${(e.nodeName ?? '?').padEnd(12)} ${sets.padEnd(13)} ${e.reason}`);
    }
  }
  return out.join('\n') + '\n';
}

/** Read the objects once from the source `kpr run` would use, then report. */
export async function inspectEndpoints(opts: { manifests?: string | undefined; kubeconfig?: string | undefined; nodeName: string }) {
  const log = createLogger('error');
  let source: Source;
  if (opts.manifests) source = new ManifestSource({ path: opts.manifests, log });
  else if (opts.kubeconfig) {
    // Loaded only when used (the Kubernetes client is large), as in kpr run.
    const { KubeSource, loadKubeConfig } = await import('../sources/kube.js');
    source = new KubeSource({ kubeConfig: loadKubeConfig({ kubeconfig: opts.kubeconfig }), log, nodeName: opts.nodeName });
  }
  else throw new Error('give --manifests PATH or --kubeconfig PATH');
  const store = new ObjectStore();
  try {
    await source.start(store);
  } finally {
    await source.stop();
  }
  return endpointReport(store, opts.nodeName);
}
