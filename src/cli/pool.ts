// Bounded concurrency for talking to many sockets at once: enough in flight that one
// slow target costs only its own slot, few enough to stay far under the open-file limit.

/** Runs fn over items with at most `limit` at once; results keep the items' order. */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

/**
 * Like mapLimit, for a queue that grows while it is worked: fn may hand back more items
 * (a remote glob becomes its sockets), which join the queue under the same limit.
 */
export function drain<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<readonly T[] | void>): Promise<void> {
  const queue = [...items];
  let active = 0;
  return new Promise((resolve, reject) => {
    const pump = () => {
      if (queue.length === 0 && active === 0) return resolve();
      while (active < limit && queue.length > 0) {
        const item = queue.shift()!;
        active++;
        fn(item).then(
          (more) => {
            active--;
            if (more) queue.push(...more);
            pump();
          },
          reject,
        );
      }
    };
    pump();
  });
}
