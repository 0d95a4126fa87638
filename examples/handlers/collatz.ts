/**
 * Counts the Collatz steps of every number in a small window starting at the item's `i`
 * (a range TaskBatch's items are {"i": n}): a little CPU work per item.
 */
export default function collatz(item: { i: number }): { i: number; longest: number; steps: number } {
  let longest = item.i;
  let best = -1;
  for (let n = Math.max(1, item.i * 100); n < item.i * 100 + 100; n++) {
    let x = n;
    let steps = 0;
    while (x !== 1) {
      x = x % 2 === 0 ? x / 2 : 3 * x + 1;
      steps++;
    }
    if (steps > best) {
      best = steps;
      longest = n;
    }
  }
  return { i: item.i, longest, steps: best };
}
