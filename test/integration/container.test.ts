/**
 * kpr's least-privilege deployment, run for real with runc (no engine, no
 * image: the host's /usr read-only and this checkout): the capabilities of
 * deploy/no-sys-admin (BPF, NET_ADMIN, PERFMON) under deploy/seccomp-kpr.json.
 * The checks are test/helpers/least-privilege.ts's; the image's own root
 * filesystem gets the same ones in test/image/container-image.test.ts.
 */
import { test } from 'node:test';
import { hostInstall, leastPrivilegeChecks } from '../helpers/least-privilege.js';

test('least privilege for real under runc: no SYS_ADMIN, kpr seccomp profile; kpr loads, pins, attaches and serves', async (t) => {
  await leastPrivilegeChecks(t, hostInstall(), `rc${process.pid % 100000}`);
});
