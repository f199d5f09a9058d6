/*
 * Deterministic work splitting: chunk boundaries depend only on the problem
 * size and the device's thread count, so a reduction combined in chunk order
 * gives the same bits on every run with the same thread count.
 */
#include "cpu_internal.h"

size_t cpu_parallel_chunks(const cpu_device *dev, size_t n, size_t min_parallel) {
  size_t t = dev->threads;
  if (t <= 1 || n < 2 * (min_parallel ? min_parallel : 1)) return 1;
  size_t max_chunks = n / (min_parallel ? min_parallel : 1);
  return t < max_chunks ? t : max_chunks;
}

typedef struct range_job {
  cpu_range_fn fn;
  void *ctx;
  size_t n, chunks;
} range_job;

static size_t chunk_begin(size_t n, size_t chunks, size_t i) {
  if (i == 0) return 0;
  if (i >= chunks) return n;
  size_t b = (size_t)((double)n * (double)i / (double)chunks); /* exact enough: n < 2^52 */
  b &= ~(size_t)15; /* keep chunk starts on 64-byte boundaries for floats */
  return b;
}

static void range_task(void *arg, size_t t) {
  range_job *job = arg;
  size_t b = chunk_begin(job->n, job->chunks, t), e = chunk_begin(job->n, job->chunks, t + 1);
  if (e > b) job->fn(job->ctx, b, e, t);
}

size_t cpu_parallel_range(cpu_device *dev, size_t n, size_t min_parallel, cpu_range_fn fn, void *ctx) {
  if (n == 0) return 0;
  size_t chunks = cpu_parallel_chunks(dev, n, min_parallel);
  if (chunks == 1) {
    fn(ctx, 0, n, 0);
    return 1;
  }
  range_job job = {fn, ctx, n, chunks};
  cpu_pool_run(dev->pool, chunks, range_task, &job);
  return chunks;
}
