import type { Source } from '../../src/sources/source.js';

/** A source that fails to start: the last step of a start, after every hook is attached. */
export const failingSource: Source = {
  name: 'broken',
  start: () => Promise.reject(new Error('source failed to start')),
  stop: () => Promise.resolve(),
};
