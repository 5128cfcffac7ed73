/**
 * Where a listener binds for a host flag. kube-proxy is written in Go,
 * whose "tcp" listener opens one dual-stack socket for an unspecified
 * address, 0.0.0.0 included: its default --healthz-bind-address
 * 0.0.0.0:10256 answers over IPv6 too. Node binds 0.0.0.0 to IPv4 only,
 * which a kubelet probe or a load balancer's health check cannot reach on
 * an IPv6-only node. So the IPv4 wildcard becomes "::" (dual-stack in
 * Node) wherever the kernel has IPv6; any other host is bound as given.
 */
import { existsSync } from 'node:fs';

/** The kernel has IPv6 (the file is absent when it is disabled at boot). */
export function kernelHasIpv6(): boolean {
  return existsSync('/proc/net/if_inet6');
}

export function listenHost(host: string, ipv6 = kernelHasIpv6()): string {
  return host === '0.0.0.0' && ipv6 ? '::' : host;
}
