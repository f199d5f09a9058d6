/*
 * Optimizer steps (SPEC.md §7.4). Element-wise optimizers split the tensor
 * across threads; LAMB needs the tensor's norms before it can step, so it
 * runs two passes with per-chunk partial norms combined in chunk order.
 */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

#define MIN_PARALLEL 16384
#define MAX_CHUNKS 256

typedef struct opt_job {
  const cpu_exec *ex;
  const cpu_op *op;
  float lr, bc1, bc2, b1, b2, eps, wd, step;
  double p2[MAX_CHUNKS], u2[MAX_CHUNKS];
} opt_job;

static void opt_range(void *arg, size_t b, size_t e, size_t chunk) {
  opt_job *j = arg;
  const cpu_op *op = j->op;
  const cpu_vec_ops *vec = j->ex->device->vec;
  const float *g = (const float *)op->in[0] + b;
  float *p = (float *)op->out[0] + b;
  float *s1 = op->out[1] ? (float *)op->out[1] + b : NULL;
  float *s2 = op->out[2] ? (float *)op->out[2] + b : NULL;
  size_t n = e - b;
  switch (op->op.code) {
    case HM_ABI_OP_SGD: vec->sgd(n, j->lr, j->b1, g, p, s1); break;
    case HM_ABI_OP_RMSPROP: vec->rmsprop(n, j->lr, j->b1, j->b2, g, p, s1); break;
    case HM_ABI_OP_ADAM:
      vec->adam(n, j->lr, j->b1, j->b2, j->eps, 1.0f / j->bc1, 1.0f / j->bc2, 0.0f, g, p, s1, s2);
      break;
    case HM_ABI_OP_ADAMW:
      vec->adam(n, j->lr, j->b1, j->b2, j->eps, 1.0f / j->bc1, 1.0f / j->bc2, j->wd, g, p, s1, s2);
      break;
    default: break;
  }
  (void)chunk;
}

static void lamb_moments_range(void *arg, size_t b, size_t e, size_t chunk) {
  opt_job *j = arg;
  const cpu_op *op = j->op;
  j->ex->device->vec->lamb_moments(e - b, j->b1, j->b2, j->eps, 1.0f / j->bc1, 1.0f / j->bc2, j->wd,
                                   (const float *)op->in[0] + b, (const float *)op->out[0] + b,
                                   (float *)op->out[1] + b, (float *)op->out[2] + b, &j->p2[chunk],
                                   &j->u2[chunk]);
}

static void lamb_apply_range(void *arg, size_t b, size_t e, size_t chunk) {
  (void)chunk;
  opt_job *j = arg;
  const cpu_op *op = j->op;
  j->ex->device->vec->lamb_apply(e - b, j->step, j->eps, 1.0f / j->bc1, 1.0f / j->bc2, j->wd,
                                 (const float *)op->out[1] + b, (const float *)op->out[2] + b,
                                 (float *)op->out[0] + b);
}

void cpu_kernel_optimizer(const cpu_exec *ex, const cpu_op *op) {
  opt_job j;
  j.ex = ex;
  j.op = op;
  j.lr = cpu_param(ex, op, 0);
  size_t n = (size_t)op->op.dims[0];
  switch (op->op.code) {
    case HM_ABI_OP_SGD:
      j.b1 = cpu_param(ex, op, 1); /* momentum */
      cpu_parallel_range(ex->device, n, MIN_PARALLEL, opt_range, &j);
      return;
    case HM_ABI_OP_RMSPROP:
      j.b1 = op->op.params[1]; /* rho */
      j.b2 = op->op.params[2]; /* eps */
      cpu_parallel_range(ex->device, n, MIN_PARALLEL, opt_range, &j);
      return;
    case HM_ABI_OP_ADAM:
    case HM_ABI_OP_ADAMW:
    case HM_ABI_OP_LAMB:
      j.bc1 = cpu_param(ex, op, 1);
      j.bc2 = cpu_param(ex, op, 2);
      j.b1 = op->op.params[3];
      j.b2 = op->op.params[4];
      j.eps = op->op.params[5];
      j.wd = op->op.code == HM_ABI_OP_ADAM ? 0.0f : op->op.params[6];
      break;
    default: return;
  }
  if (op->op.code != HM_ABI_OP_LAMB) {
    cpu_parallel_range(ex->device, n, MIN_PARALLEL, opt_range, &j);
    return;
  }
  memset(j.p2, 0, sizeof j.p2);
  memset(j.u2, 0, sizeof j.u2);
  size_t chunks = cpu_parallel_range(ex->device, n, MIN_PARALLEL, lamb_moments_range, &j);
  double p2 = 0.0, u2 = 0.0;
  for (size_t c = 0; c < chunks; c++) {
    p2 += j.p2[c];
    u2 += j.u2[c];
  }
  double pn = sqrt(p2), un = sqrt(u2);
  double trust = (pn == 0.0 || un == 0.0) ? 1.0 : pn / un;
  j.step = (float)((double)j.lr * trust);
  cpu_parallel_range(ex->device, n, MIN_PARALLEL, lamb_apply_range, &j);
}
