/**
 * The image deploy/Dockerfile builds, run as a kubelet would run it with
 * deploy/no-sys-admin: its own root filesystem (node, libbpf, iproute2 and
 * kpr under /opt/kpr, through its /usr/local/bin/kpr entry point), read-only,
 * under runc with BPF, NET_ADMIN and PERFMON and the seccomp profile the
 * image ships (/opt/kpr/seccomp-kpr.json). The checks are the ones
 * test/integration/container.test.ts runs on the host's /usr.
 *
 * Not in `npm test`: it needs the image built first, which downloads a
 * Debian base, packages and npm modules (docs/deploy.md, "Building the image
 * without Docker"). Run with `npm run test:image`, or on an image already
 * built: KPR_IMAGE=localhost/kpr:dev node --import tsx --test test/image/*.test.ts
 * KPR_BUILDAH_ROOT and KPR_BUILDAH_RUNROOT name buildah's store, as for
 * deploy/build-image.sh.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { leastPrivilegeChecks } from '../helpers/least-privilege.js';

const execFileP = promisify(execFile);

function buildah(args: string[]): Promise<string> {
  const store = [
    ...(process.env.KPR_BUILDAH_ROOT ? ['--root', process.env.KPR_BUILDAH_ROOT] : []),
    ...(process.env.KPR_BUILDAH_RUNROOT ? ['--runroot', process.env.KPR_BUILDAH_RUNROOT] : []),
  ];
  return execFileP('buildah', [...store, ...args], { timeout: 120_000 }).then((r) => r.stdout.trim());
}

test('the built image under runc: no SYS_ADMIN, its own seccomp profile; kpr loads, pins, attaches and serves', async (t) => {
  const image = process.env.KPR_IMAGE ?? 'localhost/kpr:dev';
  // A working container of the image, for its root filesystem only: runc runs it.
  const ctr = await buildah(['from', '--pull=never', '--name', `kpr-image-test-${process.pid}`, image]).catch((err: unknown) => {
    throw new Error(`no image ${image} (build it with deploy/build-image.sh): ${String(err)}`);
  });
  try {
    const rootfs = await buildah(['mount', ctr]);
    t.diagnostic(`image ${image}, root filesystem ${rootfs}`);
    await leastPrivilegeChecks(
      t,
      {
        rootfs,
        kpr: ['/usr/local/bin/kpr'],
        addon: '/opt/kpr/addon/build/Release/kpr_bpf.node',
        seccompFile: join(rootfs, 'opt/kpr/seccomp-kpr.json'),
        cwd: '/opt/kpr',
        binds: [],
      },
      `ops${process.pid % 100000}`,
    );
  } finally {
    await buildah(['umount', ctr]).catch(() => undefined);
    await buildah(['rm', ctr]);
  }
});
