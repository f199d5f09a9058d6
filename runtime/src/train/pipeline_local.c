/*
 * A pipeline in one process (harmonics/pipeline.h): the in-process
 * transport (a queue per ordered pair of stages under one lock) and
 * hm_partition_fit, which trains every stage on its own thread over it.
 *
 * A stage that fails tells the transport; every wait of the other stages
 * then ends at once with that stage's message, so one failure never leaves
 * the others waiting for their timeout. A wait also knows whether the stage
 * it waits for is itself waiting: then that stage is alive, and the one
 * that times out is the one next to the stage that stopped, which it names.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "data/data.h"
#include "train/pipeline.h"
#include "weights/weights.h"

/* ===== The in-process transport ===== */

typedef struct message {
  hm_boundary_header h;
  unsigned char *payload;
  struct message *next;
} message;

typedef struct queue {
  message *head, *tail;
} queue;

typedef struct endpoint {
  hm_pipeline_transport t;
  struct hm_pipeline_local *l;
  size_t stage;
  int waiting;       /* inside recv (under the lock) */
  size_t waiting_on; /* ... for this stage */
} endpoint;

struct hm_pipeline_local {
  size_t n;
  pthread_mutex_t lock;
  pthread_cond_t arrived;
  queue *queues; /* [from * n + to] */
  endpoint *ends;
  int failed;
  size_t failed_stage;
  char failure[1024];
};

static hm_status local_send(void *self, size_t to, const hm_boundary_header *h, const void *payload, double timeout) {
  (void)timeout; /* queues are unbounded: a send never waits */
  endpoint *e = self;
  hm_pipeline_local *l = e->l;
  if (to >= l->n || to == e->stage)
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "in-process transport: stage %zu cannot send to stage %zu", e->stage,
                        to);
  message *m = hm__calloc(1, sizeof *m);
  unsigned char *copy = h->bytes ? hm__malloc((size_t)h->bytes) : NULL;
  if (!m || (h->bytes && !copy)) {
    hm__free(m);
    hm__free(copy);
    return hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "in-process transport: out of memory for %llu bytes",
                        (unsigned long long)h->bytes);
  }
  if (h->bytes) memcpy(copy, payload, (size_t)h->bytes);
  m->h = *h;
  m->payload = copy;
  pthread_mutex_lock(&l->lock);
  if (l->failed && l->failed_stage != e->stage) {
    pthread_mutex_unlock(&l->lock);
    hm__free(copy);
    hm__free(m);
    return hm_set_error(HM_STATUS_UNAVAILABLE, "stage %zu failed: %s", l->failed_stage, l->failure);
  }
  queue *q = &l->queues[e->stage * l->n + to];
  if (q->tail) q->tail->next = m;
  else q->head = m;
  q->tail = m;
  pthread_cond_broadcast(&l->arrived);
  pthread_mutex_unlock(&l->lock);
  return HM_OK;
}

static void add_seconds(struct timespec *t, double seconds) {
  double whole = (double)(time_t)seconds;
  t->tv_sec += (time_t)whole;
  t->tv_nsec += (long)((seconds - whole) * 1e9);
  if (t->tv_nsec >= 1000000000L) {
    t->tv_sec++;
    t->tv_nsec -= 1000000000L;
  }
}

static hm_status local_recv(void *self, size_t from, hm_boundary_header *h, void *payload, size_t capacity,
                            double timeout) {
  endpoint *e = self;
  hm_pipeline_local *l = e->l;
  if (from >= l->n || from == e->stage)
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "in-process transport: stage %zu cannot receive from stage %zu",
                        e->stage, from);
  struct timespec deadline;
  clock_gettime(CLOCK_REALTIME, &deadline);
  add_seconds(&deadline, timeout);
  queue *q = &l->queues[from * l->n + e->stage];
  pthread_mutex_lock(&l->lock);
  e->waiting = 1;
  e->waiting_on = from;
  int rc = 0;
  /* While |from| waits for a third stage it is alive: wait longer (at most
   * one timeout per other stage, so a cycle of waits still ends). */
  for (size_t extended = 0;;) {
    while (!q->head && !(l->failed && l->failed_stage != e->stage) && rc != ETIMEDOUT)
      rc = pthread_cond_timedwait(&l->arrived, &l->lock, &deadline);
    const endpoint *peer = &l->ends[from];
    if (q->head || rc != ETIMEDOUT || !peer->waiting || peer->waiting_on == e->stage || ++extended >= l->n) break;
    add_seconds(&deadline, timeout);
    rc = 0;
  }
  e->waiting = 0;
  if (l->failed && l->failed_stage != e->stage) {
    hm_status st = hm_set_error(HM_STATUS_UNAVAILABLE, "stage %zu failed: %s", l->failed_stage, l->failure);
    pthread_mutex_unlock(&l->lock);
    return st;
  }
  message *m = q->head;
  if (!m) {
    pthread_mutex_unlock(&l->lock);
    return hm_set_error(HM_STATUS_UNAVAILABLE, "no message from stage %zu within %g s (it stopped or is stuck)", from,
                        timeout);
  }
  q->head = m->next;
  if (!q->head) q->tail = NULL;
  pthread_mutex_unlock(&l->lock);
  *h = m->h;
  hm_status st = HM_OK;
  if (m->h.bytes > capacity)
    st = hm_set_error(HM_STATUS_OUT_OF_RANGE, "a message of %llu bytes, more than the %zu expected",
                      (unsigned long long)m->h.bytes, capacity);
  else if (m->h.bytes)
    memcpy(payload, m->payload, (size_t)m->h.bytes);
  hm__free(m->payload);
  hm__free(m);
  return st;
}

static void local_fail(void *self, const char *text) {
  endpoint *e = self;
  hm_pipeline_local *l = e->l;
  pthread_mutex_lock(&l->lock);
  if (!l->failed) {
    l->failed = 1;
    l->failed_stage = e->stage;
    snprintf(l->failure, sizeof l->failure, "%s", text ? text : "");
  }
  pthread_cond_broadcast(&l->arrived);
  pthread_mutex_unlock(&l->lock);
}

hm_status hm_pipeline_local_open(size_t n_stages, hm_pipeline_local **out) {
  if (!out || n_stages < 2 || n_stages > HM_MAX_STAGES)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_pipeline_local_open: %zu stages (2 to %d)", n_stages,
                    HM_MAX_STAGES);
  hm_pipeline_local *l = hm__calloc(1, sizeof *l);
  if (!l) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  l->n = n_stages;
  l->queues = hm__calloc(n_stages * n_stages, sizeof *l->queues);
  l->ends = hm__calloc(n_stages, sizeof *l->ends);
  if (!l->queues || !l->ends) {
    hm__free(l->queues);
    hm__free(l->ends);
    hm__free(l);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  }
  pthread_mutex_init(&l->lock, NULL);
  pthread_cond_init(&l->arrived, NULL);
  for (size_t k = 0; k < n_stages; k++) {
    endpoint *e = &l->ends[k];
    e->t.struct_size = sizeof e->t;
    e->t.self = e;
    e->t.send = local_send;
    e->t.recv = local_recv;
    e->t.fail = local_fail;
    e->l = l;
    e->stage = k;
  }
  *out = l;
  return HM_OK;
}

const hm_pipeline_transport *hm_pipeline_local_transport(hm_pipeline_local *l, size_t stage) {
  return l && stage < l->n ? &l->ends[stage].t : NULL;
}

void hm_pipeline_local_close(hm_pipeline_local *l) {
  if (!l) return;
  for (size_t q = 0; q < l->n * l->n; q++)
    for (message *m = l->queues[q].head, *next; m; m = next) {
      next = m->next;
      hm__free(m->payload);
      hm__free(m);
    }
  pthread_mutex_destroy(&l->lock);
  pthread_cond_destroy(&l->arrived);
  hm__free(l->queues);
  hm__free(l->ends);
  hm__free(l);
}

/* ===== Producers read by several stages ===== */

/* Stages on threads read their data at the same time; a producer bound on
 * two stages is read once, under a lock, and each stage gets its own cursor
 * over the copy (same storage type and scale: the same bits on the device). */
typedef struct shared_data {
  hm_producer *base;
  const char *name;
  pthread_mutex_t lock;
  int filled;
  hm_status status;
  char error[512];
  hm_bound_data data;
} shared_data;

typedef struct shared_cursor {
  shared_data *d;
  size_t pos;
} shared_cursor;

static hm_status shared_fill(shared_data *d) {
  pthread_mutex_lock(&d->lock);
  if (!d->filled) {
    d->status = hm__producer_read_all(d->base, d->name, &d->data);
    if (d->status != HM_OK) snprintf(d->error, sizeof d->error, "%s", hm_last_error());
    d->filled = 1;
  }
  hm_status st = d->status;
  pthread_mutex_unlock(&d->lock);
  return st == HM_OK ? HM_OK : hm__fail(st, "%s", d->error);
}

static hm_status shared_info(void *self, hm_producer_info *out) {
  shared_cursor *c = self;
  HM_RETURN_IF_ERROR(shared_fill(c->d));
  *out = c->d->data.info;
  return HM_OK;
}

static hm_status shared_next(void *self, size_t max_rows, void *out, size_t *rows) {
  shared_cursor *c = self;
  HM_RETURN_IF_ERROR(shared_fill(c->d));
  const hm_producer_info *info = &c->d->data.info;
  size_t left = info->count - c->pos, n = max_rows < left ? max_rows : left;
  size_t row_bytes = info->width * hm__dtype_size(info->dtype);
  memcpy(out, (const unsigned char *)c->d->data.values + c->pos * row_bytes, n * row_bytes);
  c->pos += n;
  *rows = n;
  return HM_OK;
}

static hm_status shared_reset(void *self) {
  ((shared_cursor *)self)->pos = 0;
  return HM_OK;
}

static const hm_producer_vtable shared_vtable = {sizeof(hm_producer_vtable), shared_info, shared_next, shared_reset,
                                                 hm__free};

typedef struct sharing {
  shared_data *data;   /* one per producer bound on several stages */
  size_t n_data;
  hm_producer **made;  /* the cursors bound in their place */
  size_t n_made;
  hm_producer ***slots; /* the stage bindings replaced, and what they held */
  hm_producer **saved;
} sharing;

/* Every binding of |p| to a producer that another stage binds too. */
static hm_status share_producers(hm_partition *p, sharing *sh) {
  size_t cap = 0;
  for (size_t k = 0; k < p->n_stages; k++) cap += 2 * p->stages[k]->n_nodes;
  sh->data = hm__calloc(cap ? cap : 1, sizeof *sh->data);
  sh->made = hm__calloc(cap ? cap : 1, sizeof *sh->made);
  sh->slots = hm__calloc(cap ? cap : 1, sizeof *sh->slots);
  sh->saved = hm__calloc(cap ? cap : 1, sizeof *sh->saved);
  if (!sh->data || !sh->made || !sh->slots || !sh->saved) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  for (size_t k = 0; k < p->n_stages; k++) {
    hm_graph *g = p->stages[k];
    for (size_t i = 0; i < g->n_nodes; i++)
      for (int which = 0; which < 2; which++) {
        hm_producer **slot = which ? &g->nodes[i].eval : &g->nodes[i].train;
        if (!*slot) continue;
        size_t uses = 0;
        for (size_t j = 0; j < p->n_stages; j++)
          for (size_t m = 0; m < p->stages[j]->n_nodes; m++)
            uses += p->stages[j]->nodes[m].train == *slot || p->stages[j]->nodes[m].eval == *slot;
        if (uses < 2) continue;
        shared_data *d = NULL;
        for (size_t s = 0; s < sh->n_data && !d; s++)
          if (sh->data[s].base == *slot) d = &sh->data[s];
        if (!d) {
          d = &sh->data[sh->n_data++];
          d->base = *slot;
          d->name = g->nodes[i].name;
          pthread_mutex_init(&d->lock, NULL);
        }
        shared_cursor *c = hm__calloc(1, sizeof *c);
        if (!c) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        c->d = d;
        hm_producer *made = NULL;
        if (hm_producer_create(&shared_vtable, c, &made) != HM_OK) {
          hm__free(c);
          return HM_STATUS_RESOURCE_EXHAUSTED;
        }
        sh->made[sh->n_made] = made;
        sh->slots[sh->n_made] = slot;
        sh->saved[sh->n_made] = *slot;
        sh->n_made++;
      }
  }
  for (size_t i = 0; i < sh->n_made; i++) *sh->slots[i] = sh->made[i];
  return HM_OK;
}

static void unshare_producers(sharing *sh) {
  for (size_t i = 0; i < sh->n_made; i++) {
    *sh->slots[i] = sh->saved[i];
    hm_producer_free(sh->made[i]);
  }
  for (size_t s = 0; s < sh->n_data; s++) {
    hm__free(sh->data[s].data.values);
    pthread_mutex_destroy(&sh->data[s].lock);
  }
  hm__free(sh->data);
  hm__free(sh->made);
  hm__free(sh->slots);
  hm__free(sh->saved);
}

/* ===== hm_partition_fit ===== */

hm_partition_run_options hm_partition_run_options_default(void) {
  hm_partition_run_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.timeout_seconds = 60.0;
  return o;
}

typedef struct stage_run {
  hm_graph *g;
  size_t epochs;
  const hm_policy *policy;
  hm_fit_options opts;
  hm_pipeline_stage ps;
  hm_cycle_state *state;
  hm_status status;
  char error[1024];
} stage_run;

static void *stage_main(void *arg) {
  stage_run *r = arg;
  r->status = hm_graph_fit(r->g, r->epochs, r->policy, &r->opts, &r->state);
  if (r->status != HM_OK) snprintf(r->error, sizeof r->error, "%s", hm_last_error());
  return NULL;
}

static unsigned cores_available(void) {
  cpu_set_t allowed;
  CPU_ZERO(&allowed);
  if (sched_getaffinity(0, sizeof allowed, &allowed) == 0 && CPU_COUNT(&allowed) > 0)
    return (unsigned)CPU_COUNT(&allowed);
  return 1;
}

hm_status hm_partition_fit(hm_partition *p, size_t epochs, const hm_policy *policy, const hm_fit_options *opts,
                           const hm_partition_run_options *run, hm_cycle_state **states) {
  if (!p || !states) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_partition_fit: NULL partition or states");
  hm_partition_run_options ro = run ? *run : hm_partition_run_options_default();
  if (ro.struct_size != sizeof ro)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_partition_run_options.struct_size is %zu, expected %zu",
                    ro.struct_size, sizeof ro);
  hm_fit_options base = opts ? *opts : hm_fit_options_default();
  size_t K = p->n_stages;
  stage_run *runs = hm__calloc(K, sizeof *runs);
  pthread_t *threads = hm__calloc(K, sizeof *threads);
  hm_pipeline_local *local = NULL;
  sharing sh;
  memset(&sh, 0, sizeof sh);
  hm_status st = runs && threads ? HM_OK : hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  /* The plugins initialise here, not in a stage thread that then exits:
   * some leave per-thread state behind (PoCL's LLVM installs an alternate
   * signal stack from the heap, which a sanitizer's thread exit trips on). */
  (void)hm_plugin_count();
  if (st == HM_OK) st = hm_pipeline_local_open(K, &local);
  if (st == HM_OK) st = share_producers(p, &sh);
  unsigned share = cores_available() / (unsigned)K;
  size_t started = 0;
  for (size_t k = 0; k < K && st == HM_OK; k++) {
    stage_run *r = &runs[k];
    r->g = p->stages[k];
    r->epochs = epochs;
    r->policy = policy;
    r->opts = base;
    r->ps = hm_pipeline_stage_default();
    r->ps.partition = p;
    r->ps.stage = k;
    r->ps.transport = hm_pipeline_local_transport(local, k);
    r->ps.timeout_seconds = ro.timeout_seconds;
    r->opts.pipeline = &r->ps;
    if (ro.stage_backends && ro.stage_backends[k]) r->opts.backend = ro.stage_backends[k];
    if (ro.stage_threads && ro.stage_threads[k]) r->opts.threads = ro.stage_threads[k];
    else if (!r->opts.threads) r->opts.threads = share ? share : 1;
    if (ro.resume) r->opts.resume = ro.resume[k];
  }
  for (size_t k = 0; k < K && st == HM_OK; k++, started++)
    if (pthread_create(&threads[k], NULL, stage_main, &runs[k]) != 0) {
      st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "cannot start the thread of pipeline stage %zu", k);
      hm_pipeline_local_transport(local, k)->fail(hm_pipeline_local_transport(local, k)->self, hm_last_error());
    }
  for (size_t k = 0; k < started; k++) pthread_join(threads[k], NULL);
  /* Every stage diverged at the same update (they share the loss and norm):
   * the whole graph keeps the stages' last finite weights. */
  int diverged = st == HM_OK && started == K;
  for (size_t k = 0; k < started && diverged; k++) diverged = runs[k].status == HM_STATUS_DIVERGED;
  if (diverged) {
    const hm_weights **sets = hm__calloc(K, sizeof *sets);
    hm_weights *merged = NULL;
    st = sets ? HM_OK : hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t k = 0; sets && k < K; k++) sets[k] = hm_graph_weights(p->stages[k]);
    if (st == HM_OK) st = hm_partition_merge_weights(p, sets, &merged);
    if (st == HM_OK) st = hm_graph_set_weights(p->whole, merged);
    hm_weights_free(merged);
    hm__free(sets);
    if (st == HM_OK) st = hm__fail(HM_STATUS_DIVERGED, "%s", runs[K - 1].error);
  }
  /* The stage that failed first says why; the others failed because of it. */
  if (st == HM_OK && local->failed) {
    stage_run *r = &runs[local->failed_stage];
    st = hm__fail(r->status != HM_OK ? r->status : HM_STATUS_INTERNAL, "%s", r->status != HM_OK ? r->error : local->failure);
  }
  for (size_t k = 0; k < started && st == HM_OK; k++)
    if (runs[k].status != HM_OK) st = hm__fail(runs[k].status, "%s", runs[k].error);
  if (st == HM_OK) {
    const hm_weights **sets = hm__calloc(K, sizeof *sets);
    hm_weights *merged = NULL;
    if (!sets) st = hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t k = 0; sets && k < K; k++) sets[k] = hm_cycle_state_weights(runs[k].state);
    if (st == HM_OK) st = hm_partition_merge_weights(p, sets, &merged);
    if (st == HM_OK) st = hm_graph_set_weights(p->whole, merged);
    hm_weights_free(merged);
    hm__free(sets);
  }
  for (size_t k = 0; runs && k < K; k++) {
    if (st == HM_OK) states[k] = runs[k].state;
    else hm_cycle_state_free(runs[k].state);
  }
  if (sh.data) unshare_producers(&sh);
  hm_pipeline_local_close(local);
  hm__free(runs);
  hm__free(threads);
  return st;
}
