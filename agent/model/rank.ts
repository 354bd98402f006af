// Ranking: the first k items of a stable sort by numeric keys, without
// sorting everything (a bounded heap when k is small against n), in steps
// that let the caller hand the event loop back (the API routes, through
// agent/export/query.ts's Slicer), or in one go (the /metrics cardinality cap).

/** Hands the event loop back now and then (agent/export/query.ts, Slicer). */
export interface Yielder {
  maybeYield(): Promise<void>;
}

/** Ranking keys of an item, compared in order, each larger first. */
export type RankKeys<T> = ReadonlyArray<(x: T) => number>;

/** Work between two chances to hand the loop back (a few hundred µs at most). */
const STEP = 2048;

/**
 * The first `limit` items in the order of a stable sort by `keys` (each
 * descending, ties in input order): exactly what
 * `[...items].sort((a, b) => k0(b) - k0(a) || k1(b) - k1(a) || …).slice(0, limit)`
 * returns for finite keys (NaN ranks last). A bounded heap when `limit` is
 * small against the table (O(n log limit)), a merge sort otherwise; keys are
 * read once per item. With a slicer, in slices: a poll in between may move
 * later items' keys on, and the ranking then mixes the two polls, as two
 * requests a moment apart would.
 */
export async function rankTop<T>(items: readonly T[], keys: RankKeys<T>, limit: number, slicer: Yielder): Promise<T[]> {
  const steps = ranking(items, keys, limit);
  for (let r = steps.next(); ; r = steps.next()) {
    if (r.done === true) return r.value;
    await slicer.maybeYield();
  }
}

/** rankTop in one go (for pages small against the table: the heap). */
export function rankTopSync<T>(items: readonly T[], keys: RankKeys<T>, limit: number): T[] {
  const steps = ranking(items, keys, limit);
  for (let r = steps.next(); ; r = steps.next()) if (r.done === true) return r.value;
}

// The ranking, yielding every STEP items of work (the caller decides whether to hand the loop back).
function* ranking<T>(items: readonly T[], keys: RankKeys<T>, limit: number): Generator<void, T[]> {
  const n = items.length;
  const k = Math.max(0, Math.min(limit, n));
  const cols = keys.map(() => new Float64Array(n));
  for (let lo = 0; lo < n; lo += STEP) {
    const hi = Math.min(n, lo + STEP);
    for (let j = 0; j < keys.length; j++) {
      const f = keys[j]!;
      const col = cols[j]!;
      for (let i = lo; i < hi; i++) {
        const v = f(items[i]!);
        col[i] = Number.isNaN(v) ? -Infinity : v;
      }
    }
    yield;
  }
  // before(x, y): item x ranks before item y (a strict total order on indices).
  const before = (x: number, y: number): boolean => {
    for (let j = 0; j < cols.length; j++) {
      const col = cols[j]!;
      const a = col[x]!;
      const b = col[y]!;
      if (a !== b) return a > b;
    }
    return x < y;
  };
  const order = k * 4 < n ? yield* heapTop(n, k, before) : yield* mergeSort(n, before);
  const out = new Array<T>(k);
  for (let i = 0; i < k; i++) out[i] = items[order[i]!]!;
  return out;
}

/** The k first indices of 0..n-1 by `before`, in order: a heap of the k best so far, its worst at the root. */
function* heapTop(n: number, k: number, before: (x: number, y: number) => boolean): Generator<void, ArrayLike<number>> {
  const heap: number[] = [];
  if (k === 0) return heap;
  const down = (i: number): void => {
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < heap.length && before(heap[m]!, heap[l]!)) m = l;
      if (r < heap.length && before(heap[m]!, heap[r]!)) m = r;
      if (m === i) return;
      const t = heap[i]!;
      heap[i] = heap[m]!;
      heap[m] = t;
      i = m;
    }
  };
  for (let i = 0; i < n; i++) {
    if (heap.length < k) {
      heap.push(i);
      for (let j = heap.length - 1; j > 0; ) {
        const p = (j - 1) >> 1;
        if (!before(heap[p]!, heap[j]!)) break;
        const t = heap[j]!;
        heap[j] = heap[p]!;
        heap[p] = t;
        j = p;
      }
    } else if (before(i, heap[0]!)) {
      heap[0] = i;
      down(0);
    }
    if (i % STEP === STEP - 1) yield;
  }
  return heap.sort((x, y) => (before(x, y) ? -1 : 1));
}

/** 0..n-1 ordered by `before`: runs of STEP sorted, then merged bottom-up. */
function* mergeSort(n: number, before: (x: number, y: number) => boolean): Generator<void, ArrayLike<number>> {
  let a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  const cmp = (x: number, y: number): number => (before(x, y) ? -1 : 1);
  for (let lo = 0; lo < n; lo += STEP) {
    a.subarray(lo, Math.min(n, lo + STEP)).sort(cmp);
    yield;
  }
  let b = new Uint32Array(n);
  let work = 0;
  for (let width = STEP; width < n; width *= 2) {
    for (let lo = 0; lo < n; lo += 2 * width) {
      const mid = Math.min(n, lo + width);
      const hi = Math.min(n, lo + 2 * width);
      let i = lo;
      let j = mid;
      for (let o = lo; o < hi; o++) {
        b[o] = i < mid && (j >= hi || before(a[i]!, a[j]!)) ? a[i++]! : a[j++]!;
        if (++work === STEP) {
          work = 0;
          yield;
        }
      }
    }
    const t = a;
    a = b;
    b = t;
  }
  return a;
}
