/**
 * The lab's entry point for tools outside the product (kpr/lab): network
 * namespaces laid out as nodes and pods, the commands that run in them, and
 * the builders of the Kubernetes objects they serve.
 */
export { Lab, LAB_CLUSTER_CIDR, type LabNode } from './cluster.js';
export { ip, nodeArgv, run, runIn, spawnIn, wrapArgv } from './exec.js';
export { node, service, slice, type SliceEndpoint, type SvcOpts } from './objects.js';
export { Teardown } from './teardown.js';
export { NODE_IP, NODE_IP6, NodeTopology, type Pod, type TopologyFamily } from './topology.js';
export { cgroup2Mount, createChildCgroup, removeCgroup } from '../util/cgroup.js';
