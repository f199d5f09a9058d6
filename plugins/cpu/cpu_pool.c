/*
 * A small fork-join thread pool. The calling thread takes part in every run,
 * so `threads` = 1 starts no thread at all. Workers spin briefly between runs
 * (training issues many small ops back to back) and then sleep on a condition
 * variable. Each worker runs with FTZ+DAZ set: subnormal floats cost ~3x on
 * the CPUs we target and carry no information for training (SPEC.md §8).
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
unsigned cpu_fp_enter(void) {
  unsigned saved = _mm_getcsr();
  _mm_setcsr(saved | 0x8040u); /* FTZ (bit 15) | DAZ (bit 6) */
  return saved;
}
void cpu_fp_leave(unsigned saved) { _mm_setcsr(saved); }
#else
unsigned cpu_fp_enter(void) { return 0; }
void cpu_fp_leave(unsigned saved) { (void)saved; }
#endif

#define SPIN_ITERATIONS 20000

struct cpu_pool {
  unsigned threads;
  pthread_t *workers;
  pthread_mutex_t lock;
  pthread_cond_t wake;
  atomic_uint generation;
  atomic_uint sleepers;
  atomic_int stop;
  /* The current run. */
  cpu_task_fn fn;
  void *ctx;
  size_t n_tasks;
  atomic_size_t next_task;
  atomic_uint finished_workers;
};

static void run_tasks(cpu_pool *p) {
  for (;;) {
    size_t t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_relaxed);
    if (t >= p->n_tasks) break;
    p->fn(p->ctx, t);
  }
}

static void *worker_main(void *arg) {
  cpu_pool *p = arg;
  (void)cpu_fp_enter();
  unsigned seen = 0; /* the generation at creation: a run may start before this thread does */
  for (;;) {
    unsigned gen;
    int spins = 0;
    while ((gen = atomic_load_explicit(&p->generation, memory_order_acquire)) == seen &&
           !atomic_load_explicit(&p->stop, memory_order_relaxed)) {
      if (++spins < SPIN_ITERATIONS) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        continue;
      }
      pthread_mutex_lock(&p->lock);
      atomic_fetch_add(&p->sleepers, 1);
      while (atomic_load(&p->generation) == seen && !atomic_load(&p->stop))
        pthread_cond_wait(&p->wake, &p->lock);
      atomic_fetch_sub(&p->sleepers, 1);
      pthread_mutex_unlock(&p->lock);
      spins = 0;
    }
    if (atomic_load(&p->stop)) break;
    seen = gen;
    run_tasks(p);
    atomic_fetch_add_explicit(&p->finished_workers, 1, memory_order_release);
  }
  return NULL;
}

cpu_pool *cpu_pool_create(unsigned threads) {
  if (threads == 0) threads = 1;
  cpu_pool *p = calloc(1, sizeof *p);
  if (!p) return NULL;
  p->threads = threads;
  pthread_mutex_init(&p->lock, NULL);
  pthread_cond_init(&p->wake, NULL);
  if (threads > 1) {
    p->workers = calloc(threads - 1, sizeof *p->workers);
    if (!p->workers) {
      cpu_pool_free(p);
      return NULL;
    }
    for (unsigned i = 0; i + 1 < threads; i++) {
      if (pthread_create(&p->workers[i], NULL, worker_main, p) != 0) {
        p->threads = i + 1; /* only these were started */
        cpu_pool_free(p);
        return NULL;
      }
    }
  }
  return p;
}

void cpu_pool_free(cpu_pool *p) {
  if (!p) return;
  if (p->workers) {
    pthread_mutex_lock(&p->lock);
    atomic_store(&p->stop, 1);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
    for (unsigned i = 0; i + 1 < p->threads; i++) pthread_join(p->workers[i], NULL);
    free(p->workers);
  }
  pthread_cond_destroy(&p->wake);
  pthread_mutex_destroy(&p->lock);
  free(p);
}

unsigned cpu_pool_threads(const cpu_pool *p) { return p->threads; }

void cpu_pool_run(cpu_pool *p, size_t n_tasks, cpu_task_fn fn, void *ctx) {
  if (n_tasks == 0) return;
  if (p->threads == 1 || n_tasks == 1) {
    for (size_t t = 0; t < n_tasks; t++) fn(ctx, t);
    return;
  }
  p->fn = fn;
  p->ctx = ctx;
  p->n_tasks = n_tasks;
  atomic_store_explicit(&p->next_task, 0, memory_order_relaxed);
  atomic_store_explicit(&p->finished_workers, 0, memory_order_relaxed);
  atomic_fetch_add(&p->generation, 1); /* seq_cst: pairs with the sleepers check */
  if (atomic_load(&p->sleepers) > 0) {
    pthread_mutex_lock(&p->lock);
    pthread_cond_broadcast(&p->wake);
    pthread_mutex_unlock(&p->lock);
  }
  run_tasks(p);
  unsigned want = p->threads - 1;
  int spins = 0;
  while (atomic_load_explicit(&p->finished_workers, memory_order_acquire) < want) {
    if (++spins > SPIN_ITERATIONS) sched_yield();
#if defined(__x86_64__) || defined(__i386__)
    else __builtin_ia32_pause();
#endif
  }
}
