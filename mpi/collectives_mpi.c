/*
 * hm_collectives over MPI (harmonics/mpi.h). Beyond two ranks the all-reduce
 * is a reduce to rank 0 followed by a broadcast, so every rank gets the very
 * same bits (an MPI all-reduce may sum in a different order on each rank). Every
 * operation is non-blocking and polled against a deadline.
 */
#include <mpi.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "mpi_state.h"


hm_mpi_options hm_mpi_options_default(void) {
  hm_mpi_options o;
  memset(&o, 0, sizeof o);
  o.struct_size = sizeof o;
  o.timeout_seconds = 60.0;
  return o;
}

int hm_mpi_launched(void) {
  return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

double hm_mpi__now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

hm_status hm_mpi__error(mpi_state *m, int rc, const char *what) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) strcpy(text, "unknown MPI error");
  m->failed = 1;
  return hm_set_error(HM_STATUS_UNAVAILABLE, "MPI %s failed on rank %d: %s", what, m->table.rank, text);
}

/* Polls |req| until it completes or the timeout passes. Open MPI moves a
 * non-blocking collective forward only inside MPI calls, so the first
 * 200 ms poll back to back (yielding the core between polls, for
 * oversubscribed ranks); a longer wait sleeps 50 us between polls. */
hm_status hm_mpi__wait(mpi_state *m, MPI_Request *req, const char *what) {
  double start = hm_mpi__now(), deadline = start + m->timeout;
  for (;;) {
    int done = 0;
    int rc = MPI_Test(req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, what);
    if (done) return HM_OK;
    if (hm_mpi__now() > deadline) {
      m->failed = 1;
      return hm_set_error(HM_STATUS_UNAVAILABLE,
                          "rank %d of %d: %s: no answer from the other ranks within %g s (a rank died or stopped "
                          "answering; HARMONICS_MPI_TIMEOUT sets the limit)",
                          m->table.rank, m->table.size, what, m->timeout);
    }
    hm_mpi__pause(start);
  }
}

void hm_mpi__pause(double since) {
  if (hm_mpi__now() - since < 0.2) {
    sched_yield();
  } else {
    struct timespec pause = {0, 50000};
    nanosleep(&pause, NULL);
  }
}

static hm_status mpi_broadcast(void *self, void *data, size_t bytes, int root) {
  mpi_state *m = self;
  if (bytes > (size_t)0x7fffffff) return hm_set_error(HM_STATUS_OUT_OF_RANGE, "MPI broadcast of %zu bytes", bytes);
  MPI_Request req;
  int rc = MPI_Ibcast(data, (int)bytes, MPI_BYTE, root, MPI_COMM_WORLD, &req);
  if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "broadcast");
  return hm_mpi__wait(m, &req, "broadcast");
}

static hm_status mpi_allreduce(void *self, float *data, size_t n) {
  mpi_state *m = self;
  if (n > (size_t)0x7fffffff) return hm_set_error(HM_STATUS_OUT_OF_RANGE, "MPI all-reduce of %zu floats", n);
  MPI_Request req;
  if (m->table.size == 2) {
    /* Two ranks: each element is one addition a + b, and IEEE addition
     * commutes, so MPI's own all-reduce gives both ranks the same bits. */
    int rc = MPI_Iallreduce(MPI_IN_PLACE, data, (int)n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD, &req);
    if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "all-reduce");
    return hm_mpi__wait(m, &req, "all-reduce (sum of the gradients)");
  }
  int root = m->table.rank == 0;
  int rc = MPI_Ireduce(root ? MPI_IN_PLACE : data, root ? data : NULL, (int)n, MPI_FLOAT, MPI_SUM, 0, MPI_COMM_WORLD,
                       &req);
  if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "reduce");
  hm_status st = hm_mpi__wait(m, &req, "all-reduce (sum of the gradients at rank 0)");
  if (st != HM_OK) return st;
  rc = MPI_Ibcast(data, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD, &req);
  if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "broadcast");
  return hm_mpi__wait(m, &req, "all-reduce (broadcast of the sum)");
}

static hm_status mpi_barrier(void *self) {
  mpi_state *m = self;
  MPI_Request req;
  int rc = MPI_Ibarrier(MPI_COMM_WORLD, &req);
  if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "barrier");
  return hm_mpi__wait(m, &req, "barrier");
}

hm_status hm_mpi_open(const hm_mpi_options *options, hm_collectives **out) {
  if (!out) return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "hm_mpi_open: NULL output");
  hm_mpi_options o = options ? *options : hm_mpi_options_default();
  if (o.struct_size != sizeof o)
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "hm_mpi_options.struct_size is %zu, expected %zu", o.struct_size,
                        sizeof o);
  const char *env = getenv("HARMONICS_MPI_TIMEOUT");
  if (env && *env) {
    char *end = NULL;
    double t = strtod(env, &end);
    if (!end || *end || !(t > 0))
      return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "HARMONICS_MPI_TIMEOUT is '%s', not a positive number of seconds",
                          env);
    o.timeout_seconds = t;
  }
  if (!(o.timeout_seconds > 0))
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "hm_mpi_options.timeout_seconds must be positive");
  mpi_state *m = calloc(1, sizeof *m);
  if (!m) return hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
  int initialised = 0;
  MPI_Initialized(&initialised);
  if (!initialised) {
    int provided = 0;
    if (MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
      free(m);
      return hm_set_error(HM_STATUS_UNAVAILABLE, "MPI_Init failed");
    }
    m->we_initialised = 1;
  }
  /* Errors come back as codes (then a message), not as an abort inside MPI. */
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &m->table.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &m->table.size);
  m->table.struct_size = sizeof m->table;
  m->table.self = m;
  m->table.allreduce_sum_f32 = mpi_allreduce;
  m->table.broadcast = mpi_broadcast;
  m->table.barrier = mpi_barrier;
  m->timeout = o.timeout_seconds;
  *out = &m->table;
  return HM_OK;
}

void hm_mpi_close(hm_collectives *c) {
  if (!c) return;
  mpi_state *m = c->self;
  if (!m->failed) hm_mpi__pipeline_drain(m); /* sends still in flight complete first */
  if (m->failed) MPI_Abort(MPI_COMM_WORLD, 1); /* a peer is gone: finalize would wait for it */
  hm_mpi__pipeline_free(m);
  if (m->we_initialised) MPI_Finalize();
  free(m);
}
