/**
 * healthCheckNodePort on a dual-stack Service: a pod is one endpoint with
 * an address per family, so the count is the larger family's, not the sum.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ObjectStore } from '../../src/controller/store.js';
import { healthTarget } from '../../src/health/service-health.js';
import { service, slice } from '../../src/lab/objects.js';

test('dual-stack Service: local endpoints are counted per family, the larger count reported', () => {
  const store = new ObjectStore();
  store.upsert(
    'Service',
    service('web', {
      type: 'LoadBalancer',
      clusterIP: '198.18.0.10',
      extra: {
        clusterIPs: ['198.18.0.10', '2001:db8:f::10'],
        ipFamilies: ['IPv4', 'IPv6'],
        ipFamilyPolicy: 'RequireDualStack',
        externalTrafficPolicy: 'Local',
        healthCheckNodePort: 32000,
      },
    }),
  );
  // two local pods, each with both families; one of them not ready on IPv6 yet
  store.upsert('EndpointSlice', slice('web-4', 'web', [{ ip: '192.0.2.1', node: 'n1' }, { ip: '192.0.2.2', node: 'n1' }]));
  store.upsert(
    'EndpointSlice',
    slice('web-6', 'web', [{ ip: '2001:db8::1', node: 'n1' }, { ip: '2001:db8::2', node: 'n1', ready: false }], undefined, { addressType: 'IPv6' }),
  );
  const t = healthTarget(store, 'default/web', 'n1');
  assert.deepEqual(t, [32000, { namespace: 'default', name: 'web', localEndpoints: 2 }]);
});
