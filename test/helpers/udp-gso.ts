/**
 * A Python client that sends argv[4] UDP datagrams of argv[3] bytes to
 * argv[1]:argv[2] in one sendto() with UDP_SEGMENT, so they leave as one
 * GSO packet, and prints the replies: [line, source address] each. The
 * destination's family picks the socket's.
 */
export const UDP_GSO_PY = `
import json, socket, sys
dst, port, seg, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
s = socket.socket(socket.AF_INET6 if ':' in dst else socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(17, 103, seg)  # SOL_UDP, UDP_SEGMENT
s.settimeout(2)
s.sendto(b'a' * (seg * n), (dst, port))
out = []
try:
    while len(out) < n:
        d, a = s.recvfrom(4096)
        out.append([d.decode().strip(), a[0]])
except socket.timeout:
    pass
print(json.dumps(out))
`;
