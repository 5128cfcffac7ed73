#!/usr/bin/env node
/**
 * Stand-alone entry for the benchmark until `kpr bench` is registered in
 * src/cli.ts: `node --import tsx src/bench/main.ts [flags]` takes the same
 * flags as `kpr bench`.
 */
import yargs from 'yargs';
import { hideBin } from 'yargs/helpers';
import { benchCommand } from './command.js';

await yargs(['bench', ...hideBin(process.argv)])
  .scriptName('kpr')
  .command(benchCommand)
  .demandCommand(1)
  .strict()
  .help()
  .fail((msg, err) => {
    throw err ?? new Error(msg);
  })
  .parseAsync()
  .catch((err: unknown) => {
    process.stderr.write(`kpr bench: ${(err as Error).message}\n`);
    process.exit(1);
  });
