// Shared by the benches (a folder, so bench/index.ts does not list it as a benchmark).

/** Wall and CPU seconds of `f` (CPU: all threads of this process). */
export async function timed<T>(f: () => Promise<T> | T): Promise<{ value: T; s: number; cpuS: number }> {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const value = await f();
  const c = process.cpuUsage(c0);
  return { value, s: (performance.now() - t0) / 1000, cpuS: (c.user + c.system) / 1e6 };
}
