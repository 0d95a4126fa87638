// BullMQ sandboxed processor for bench/worker-modes.ts: a no-op job (ESM default export).
export default async function noop(): Promise<void> {}
