/**
 * The bench's public entry point: the commands `kpr bench`,
 * `kpr bench-maglev` and `kpr bench-ct`, which src/cli.ts imports only when one of them runs,
 * and the seeded PRNG the product's tests draw reproducible flows from.
 */
import type { CommandModule } from 'yargs';
import { benchCommand } from './command.js';
import { benchMaglevCommand } from './maglev.js';
import { benchCtCommand } from './ctlag.js';

export const commands = [benchCommand, benchMaglevCommand, benchCtCommand] as unknown as CommandModule[];
export { prng } from './model.js';
