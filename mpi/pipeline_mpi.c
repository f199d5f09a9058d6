/*
 * The pipeline transport over MPI point-to-point (harmonics/mpi.h): stage k
 * is rank k. A message is the 64-byte header (hm_boundary_header_encode)
 * followed by the payload, sent as one MPI message with tag HM_PIPE_TAG;
 * MPI keeps the messages from one rank to another in order. Sends are
 * non-blocking on a copy (stages send ahead of what their peers receive);
 * receives probe, then poll, against the timeout.
 */
#include <stdlib.h>
#include <string.h>

#include "harmonics/pipeline.h"
#include "mpi_state.h"

#define HM_PIPE_TAG 0x484d /* "HM" */

typedef struct pending {
  MPI_Request req;
  unsigned char *bytes;
} pending;

struct mpi_pipeline {
  hm_pipeline_transport table;
  mpi_state *m;
  pending *sends;
  size_t n_sends, cap_sends;
  unsigned char *scratch;
  size_t scratch_cap;
};

/* Frees the sends MPI has completed. */
static hm_status progress_sends(mpi_pipeline *p) {
  size_t kept = 0;
  for (size_t i = 0; i < p->n_sends; i++) {
    int done = 0;
    int rc = MPI_Test(&p->sends[i].req, &done, MPI_STATUS_IGNORE);
    if (rc != MPI_SUCCESS) return hm_mpi__error(p->m, rc, "pipeline send");
    if (done) free(p->sends[i].bytes);
    else p->sends[kept++] = p->sends[i];
  }
  p->n_sends = kept;
  return HM_OK;
}

static double limit(const mpi_pipeline *p, double timeout) {
  return timeout > 0 && timeout < p->m->timeout ? timeout : p->m->timeout;
}

static hm_status pipe_send(void *self, size_t to, const hm_boundary_header *h, const void *payload, double timeout) {
  (void)timeout; /* a send only starts here */
  mpi_pipeline *p = self;
  mpi_state *m = p->m;
  if (to >= (size_t)m->table.size || (int)to == m->table.rank)
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "MPI pipeline: rank %d cannot send to stage %zu of %d ranks",
                        m->table.rank, to, m->table.size);
  if (h->bytes > (uint64_t)0x7fffffff - HM_BOUNDARY_HEADER_BYTES)
    return hm_set_error(HM_STATUS_OUT_OF_RANGE, "MPI pipeline: a message of %llu bytes (at most 2 GiB)",
                        (unsigned long long)h->bytes);
  size_t len = HM_BOUNDARY_HEADER_BYTES + (size_t)h->bytes;
  if (p->n_sends == p->cap_sends) {
    size_t cap = p->cap_sends ? 2 * p->cap_sends : 16;
    pending *grown = realloc(p->sends, cap * sizeof *grown);
    if (!grown) return hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    p->sends = grown;
    p->cap_sends = cap;
  }
  unsigned char *bytes = malloc(len);
  if (!bytes) return hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %zu-byte message", len);
  hm_boundary_header_encode(h, bytes);
  if (h->bytes) memcpy(bytes + HM_BOUNDARY_HEADER_BYTES, payload, (size_t)h->bytes);
  pending *s = &p->sends[p->n_sends];
  int rc = MPI_Isend(bytes, (int)len, MPI_BYTE, (int)to, HM_PIPE_TAG, MPI_COMM_WORLD, &s->req);
  if (rc != MPI_SUCCESS) {
    free(bytes);
    return hm_mpi__error(m, rc, "pipeline send");
  }
  s->bytes = bytes;
  p->n_sends++;
  return progress_sends(p);
}

static hm_status pipe_recv(void *self, size_t from, hm_boundary_header *h, void *payload, size_t capacity,
                           double timeout) {
  mpi_pipeline *p = self;
  mpi_state *m = p->m;
  if (from >= (size_t)m->table.size || (int)from == m->table.rank)
    return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "MPI pipeline: rank %d cannot receive from stage %zu of %d ranks",
                        m->table.rank, from, m->table.size);
  double wait = limit(p, timeout), start = hm_mpi__now();
  MPI_Message msg;
  MPI_Status status;
  for (;;) {
    int found = 0;
    int rc = MPI_Improbe((int)from, HM_PIPE_TAG, MPI_COMM_WORLD, &found, &msg, &status);
    if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "pipeline receive");
    if (found) break;
    hm_status st = progress_sends(p);
    if (st != HM_OK) return st;
    if (hm_mpi__now() - start > wait) {
      m->failed = 1;
      return hm_set_error(HM_STATUS_UNAVAILABLE,
                          "no message from stage %zu (rank %zu) within %g s (it died or stopped answering; "
                          "HARMONICS_MPI_TIMEOUT sets the limit)",
                          from, from, wait);
    }
    hm_mpi__pause(start);
  }
  int count = 0;
  MPI_Get_count(&status, MPI_BYTE, &count);
  if ((size_t)count > p->scratch_cap) {
    unsigned char *grown = realloc(p->scratch, (size_t)count);
    if (!grown) return hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory for a %d-byte message", count);
    p->scratch = grown;
    p->scratch_cap = (size_t)count;
  }
  MPI_Request req;
  int rc = MPI_Imrecv(p->scratch, count, MPI_BYTE, &msg, &req);
  if (rc != MPI_SUCCESS) return hm_mpi__error(m, rc, "pipeline receive");
  hm_status st = hm_mpi__wait(m, &req, "pipeline receive");
  if (st != HM_OK) return st;
  if (count < HM_BOUNDARY_HEADER_BYTES) {
    m->failed = 1;
    return hm_set_error(HM_STATUS_DATA_LOSS, "MPI pipeline: a %d-byte message from stage %zu, shorter than a header",
                        count, from);
  }
  st = hm_boundary_header_decode(p->scratch, h);
  if (st != HM_OK) return st;
  size_t carried = (size_t)count - HM_BOUNDARY_HEADER_BYTES;
  if (h->bytes != carried)
    return hm_set_error(HM_STATUS_DATA_LOSS, "MPI pipeline: the header from stage %zu says %llu bytes but %zu came",
                        from, (unsigned long long)h->bytes, carried);
  if (carried > capacity)
    return hm_set_error(HM_STATUS_OUT_OF_RANGE, "a message of %zu bytes, more than the %zu expected", carried,
                        capacity);
  if (carried) memcpy(payload, p->scratch + HM_BOUNDARY_HEADER_BYTES, carried);
  return HM_OK;
}

static void pipe_fail(void *self, const char *message) {
  (void)message;
  mpi_pipeline *p = self;
  p->m->failed = 1; /* hm_mpi_close aborts the job, so every stage stops */
}

hm_status hm_mpi_pipeline_transport(hm_collectives *c, const hm_pipeline_transport **out) {
  if (!c || !out) return hm_set_error(HM_STATUS_INVALID_ARGUMENT, "hm_mpi_pipeline_transport: NULL argument");
  mpi_state *m = c->self;
  if (!m->pipeline) {
    mpi_pipeline *p = calloc(1, sizeof *p);
    if (!p) return hm_set_error(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    p->m = m;
    p->table.struct_size = sizeof p->table;
    p->table.self = p;
    p->table.send = pipe_send;
    p->table.recv = pipe_recv;
    p->table.fail = pipe_fail;
    m->pipeline = p;
  }
  *out = &m->pipeline->table;
  return HM_OK;
}

void hm_mpi__pipeline_drain(mpi_state *m) {
  mpi_pipeline *p = m->pipeline;
  double start = hm_mpi__now();
  while (p && p->n_sends && !m->failed) {
    if (progress_sends(p) != HM_OK) break;
    if (hm_mpi__now() - start > m->timeout) {
      m->failed = 1; /* a peer never took them */
      break;
    }
    if (p->n_sends) hm_mpi__pause(start);
  }
}

void hm_mpi__pipeline_free(mpi_state *m) {
  mpi_pipeline *p = m->pipeline;
  if (!p) return;
  for (size_t i = 0; i < p->n_sends; i++) free(p->sends[i].bytes); /* after MPI_Abort or a completed drain */
  free(p->sends);
  free(p->scratch);
  free(p);
  m->pipeline = NULL;
}
