/**
 * The uplink counter: proof that nothing of the node leaves the machine. A chain on the host's
 * OUTPUT and FORWARD hooks whose rules match (and only count) packets that go out by any interface
 * other than loopback and the node's veth while addressed to one of the node's private ranges, or
 * coming from the pods' or the node link's range. The e2e tier asserts the count stays 0.
 */
import type { NodeNetwork } from './config.js';

/** `iptables` argument lists (after `iptables -w`) that create and hook the chain. */
export function uplinkChainRules(chain: string, hostVeth: string, net: NodeNetwork): string[][] {
  const privateRanges = [net.podCIDR, net.serviceCIDR, net.linkCIDR];
  return [
    ['-N', chain],
    // Traffic to the node is expected on its veth; loopback never leaves.
    ['-A', chain, '-o', 'lo', '-j', 'RETURN'],
    ['-A', chain, '-o', hostVeth, '-j', 'RETURN'],
    ...privateRanges.map((r) => ['-A', chain, '-d', r, '-j', 'RETURN']),
    ...[net.podCIDR, net.linkCIDR].map((r) => ['-A', chain, '-s', r, '-j', 'RETURN']),
    ['-I', 'OUTPUT', '1', '-j', chain],
    ['-I', 'FORWARD', '1', '-j', chain],
  ];
}

/** Sum of the packet counters of the chain's counting rules (`iptables -L CHAIN -v -x -n` output). */
export function uplinkPacketCount(listing: string): number {
  let total = 0;
  for (const line of listing.split('\n')) {
    const cols = line.trim().split(/\s+/);
    // pkts bytes target prot opt in out source destination
    if (cols.length < 9 || !/^\d+$/.test(cols[0] ?? '')) continue;
    const out = cols[6];
    if (out === 'lo' || (out?.startsWith('tbh') ?? false)) continue;
    total += Number(cols[0]);
  }
  return total;
}
