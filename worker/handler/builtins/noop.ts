import type { Handler } from '../api.js';

/** Does nothing; measures the runtime's own overhead per item. */
export const noop: Handler = () => undefined;
