/** A dotted quad as a number, for ordering and normalising keys without a full parse. */
export function ipv4ToNumber(addr: string): number {
  let n = 0;
  for (const part of addr.split('.')) n = n * 256 + Number(part);
  return n;
}
