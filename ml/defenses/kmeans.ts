// k-means with k-means++ seeding (Arthur and Vassilvitskii 2007) and the silhouette coefficient
// (Rousseeuw 1987), for activation clustering's 2-means on reduced features. Points are the rows
// of an m x d Float64Array. Deterministic given the Rng.
import type { Rng } from '../random.js';

/** Lloyd iterations per run (scikit-learn's default max_iter). */
const MAX_ITERATIONS = 300;

export interface KMeansResult {
  /** Cluster of each point, 0..k-1. */
  assignment: Int32Array;
  /** k x d. */
  centroids: Float64Array;
  /** Sum of squared distances of the points to their centroids. */
  inertia: number;
  /** Points per cluster. */
  sizes: Int32Array;
}

function sqDist(points: Float64Array, i: number, centroids: Float64Array, c: number, d: number): number {
  let s = 0;
  const o = i * d;
  const q = c * d;
  for (let t = 0; t < d; t++) {
    const e = points[o + t] - centroids[q + t];
    s += e * e;
  }
  return s;
}

/** k-means++: the first centre uniformly, each next one with probability proportional to D(x)^2. */
function seedCentroids(points: Float64Array, m: number, d: number, k: number, rng: Rng): Float64Array {
  const centroids = new Float64Array(k * d);
  const first = rng.int(m);
  centroids.set(points.subarray(first * d, first * d + d), 0);
  const near = new Float64Array(m).fill(Infinity);
  for (let c = 1; c < k; c++) {
    let total = 0;
    for (let i = 0; i < m; i++) {
      near[i] = Math.min(near[i], sqDist(points, i, centroids, c - 1, d));
      total += near[i];
    }
    // All points on the chosen centres: any point will do; take the next one in order.
    let pick = Math.min(m - 1, c);
    if (total > 0) {
      let r = rng.next() * total;
      for (let i = 0; i < m; i++) {
        r -= near[i];
        if (r < 0) {
          pick = i;
          break;
        }
      }
    }
    centroids.set(points.subarray(pick * d, pick * d + d), c * d);
  }
  return centroids;
}

/** One k-means run from k-means++ seeds: Lloyd's iterations until no point moves. */
function lloyd(points: Float64Array, m: number, d: number, k: number, rng: Rng): KMeansResult {
  const centroids = seedCentroids(points, m, d, k, rng);
  const assignment = new Int32Array(m).fill(-1);
  const sizes = new Int32Array(k);
  for (let iter = 0; iter < MAX_ITERATIONS; iter++) {
    let moved = false;
    for (let i = 0; i < m; i++) {
      let best = 0;
      let bestD = Infinity;
      for (let c = 0; c < k; c++) {
        const dist = sqDist(points, i, centroids, c, d);
        if (dist < bestD) {
          bestD = dist;
          best = c;
        }
      }
      if (assignment[i] !== best) {
        assignment[i] = best;
        moved = true;
      }
    }
    if (!moved) break;
    centroids.fill(0);
    sizes.fill(0);
    for (let i = 0; i < m; i++) {
      const c = assignment[i];
      sizes[c]++;
      for (let t = 0; t < d; t++) centroids[c * d + t] += points[i * d + t];
    }
    for (let c = 0; c < k; c++) if (sizes[c] > 0) for (let t = 0; t < d; t++) centroids[c * d + t] /= sizes[c];
    for (let c = 0; c < k; c++) {
      if (sizes[c] > 0) continue;
      // An emptied cluster restarts on the point farthest from its centroid (scikit-learn's rule).
      let far = 0;
      let farD = -1;
      for (let i = 0; i < m; i++) {
        const dist = sqDist(points, i, centroids, assignment[i], d);
        if (dist > farD) {
          farD = dist;
          far = i;
        }
      }
      centroids.set(points.subarray(far * d, far * d + d), c * d);
    }
  }
  sizes.fill(0);
  let inertia = 0;
  for (let i = 0; i < m; i++) {
    sizes[assignment[i]]++;
    inertia += sqDist(points, i, centroids, assignment[i], d);
  }
  return { assignment, centroids, inertia, sizes };
}

/**
 * k-means of the m x d `points`: the run of lowest inertia among `restarts` k-means++ starts
 * (the first on ties). Requires 1 <= k <= m.
 */
export function kMeans(points: Float64Array, m: number, d: number, k: number, rng: Rng, restarts: number): KMeansResult {
  if (points.length !== m * d) throw new Error(`kMeans: ${points.length} values for ${m} x ${d}`);
  if (!(Number.isInteger(k) && k >= 1 && k <= m)) throw new Error(`kMeans: k = ${k} for ${m} points`);
  let best: KMeansResult | undefined;
  for (let r = 0; r < Math.max(1, restarts); r++) {
    const run = lloyd(points, m, d, k, rng);
    if (!best || run.inertia < best.inertia) best = run;
  }
  return best as KMeansResult;
}

/**
 * Mean silhouette coefficient s(i) = (b - a) / max(a, b) over the points in `sample` (indices),
 * each against ALL m points (Euclidean distance): a = mean distance to its own cluster's other
 * points, b = the smallest mean distance to another cluster. s = 0 for a point alone in its
 * cluster (Rousseeuw's convention). O(|sample| m d): pass a subsample for large classes.
 */
export function meanSilhouette(
  points: Float64Array,
  m: number,
  d: number,
  assignment: Int32Array,
  k: number,
  sample: ArrayLike<number>,
): number {
  const sizes = new Int32Array(k);
  for (let i = 0; i < m; i++) sizes[assignment[i]]++;
  const sums = new Float64Array(k);
  let total = 0;
  for (let s = 0; s < sample.length; s++) {
    const i = sample[s];
    sums.fill(0);
    const o = i * d;
    for (let j = 0; j < m; j++) {
      let e = 0;
      const q = j * d;
      for (let t = 0; t < d; t++) {
        const diff = points[o + t] - points[q + t];
        e += diff * diff;
      }
      sums[assignment[j]] += Math.sqrt(e);
    }
    const own = assignment[i];
    if (sizes[own] <= 1) continue; // s(i) = 0
    const a = sums[own] / (sizes[own] - 1);
    let b = Infinity;
    for (let c = 0; c < k; c++) if (c !== own && sizes[c] > 0) b = Math.min(b, sums[c] / sizes[c]);
    if (!Number.isFinite(b)) continue; // one cluster only
    const scale = Math.max(a, b);
    if (scale > 0) total += (b - a) / scale;
  }
  return sample.length ? total / sample.length : 0;
}
