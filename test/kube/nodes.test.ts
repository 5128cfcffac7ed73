/**
 * The Kubernetes source watches every Node: all of them land in the store
 * (zones, InternalIPs), and this node's zone drives topology hints.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { harness, natView, waitFor } from '../helpers/kubeharness.js';
import { node, service, slice } from '../../src/lab/objects.js';

test('every Node is listed and watched into the store; this node\'s zone selects hinted endpoints', async () => {
  const zonal = service('web', { clusterIP: '198.18.0.1' }) as { metadata: Record<string, unknown> };
  zonal.metadata.annotations = { 'service.kubernetes.io/topology-mode': 'Auto' };
  const h = await harness({
    nodeName: 'node-1',
    seed: [
      node('node-1', { zone: 'zone-a', ip: '198.51.100.11' }),
      node('node-2', { zone: 'zone-b', ip: '198.51.100.12' }),
      zonal,
      slice('web-1', 'web', [
        { ip: '203.0.113.1', node: 'node-1', zones: ['zone-a'] },
        { ip: '203.0.113.2', node: 'node-2', zones: ['zone-b'] },
      ]),
    ],
  });
  try {
    await waitFor('both nodes', () => h.store.nodes().length === 2);
    assert.deepEqual(h.store.nodeInternalIPs(), ['198.51.100.11', '198.51.100.12']);
    await waitFor('zone-a endpoint only', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.1:8080');
    // a third node joins: stored, nothing else changes
    h.api.apply(node('node-3', { zone: 'zone-a', ip: '198.51.100.13' }));
    await waitFor('third node', () => h.store.nodes().length === 3);
    // this node moves to zone-b: the hinted endpoint changes
    h.api.apply(node('node-1', { zone: 'zone-b', ip: '198.51.100.11' }));
    await waitFor('zone-b endpoint only', () => natView(h.maps)['198.18.0.1:80']?.join() === '203.0.113.2:8080');
    h.api.delete('Node', '', 'node-3');
    await waitFor('node-3 gone', () => h.store.nodes().map((n) => n.name).join() === 'node-1,node-2');
  } finally {
    await h.close();
  }
});
