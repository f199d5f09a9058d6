/*
 * Whole programs: the training step of a small MLP (gather, two dense layers
 * with relu, cross-entropy, backward, gradient norm, clip, Adam) recorded as
 * one program, created once and run for several steps with dynamic scalars —
 * exactly how the runtime drives a plugin — and compared after every step
 * with the same program executed op by op on the scalar reference. A second
 * version puts an exact scale by 1 between the first GEMM and its bias, and
 * between the backward GEMM into the hidden layer and its activation's
 * gradient, so a plugin that fuses a GEMM with the bias and activation after
 * it (or a bias with its activation, or a GEMM with the activation gradient
 * after it) is checked on both paths. A third has 8 classes instead of 5,
 * so that the output layer's GEMMs are whole 8x8 blocks (the GPU plugins'
 * blocked kernels, fused epilogues included, rather than ragged edges).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conform.h"
#include "harmonics/names.h"
#include "hm_reference.h"

enum { N = 96, IN = 20, HID = 16, B = 32, STEPS = 6 };

/* A version of the step: the classes (5: ragged GEMM edges; 8: every
 * GEMM of the output layer a whole number of 8x8 blocks, the shapes the
 * GPU plugins' blocked kernels take) and whether an exact scale by 1 keeps
 * the GEMMs from fusing with what follows them. */
typedef struct mlp_version {
  int cls, scale_between;
} mlp_version;

/* Logical buffers of the program. */
enum {
  X, Y, IDX, XB, YB, W1, B1, Z1, A1, W2, B2, Z2, STATS, DZ2, DA1, DZ1, DW1, DB1, DW2, DB2,
  M_W1, V_W1, M_B1, V_B1, M_W2, V_W2, M_B2, V_B2, NBUF
};

static size_t nbytes(int b, int cls) {
  switch (b) {
    case X: return N * IN * 4;
    case Y: return N * 4;
    case IDX: return B * 4;
    case XB: return B * IN * 4;
    case YB: return B * 4;
    case W1: case DW1: case M_W1: case V_W1: return HID * IN * 4;
    case B1: case DB1: case M_B1: case V_B1: return HID * 4;
    case Z1: case A1: case DA1: case DZ1: return B * HID * 4;
    case W2: case DW2: case M_W2: case V_W2: return (size_t)cls * HID * 4;
    case B2: case DB2: case M_B2: case V_B2: return (size_t)cls * 4;
    case Z2: case DZ2: return (size_t)B * cls * 4;
    case STATS: return 8;
    default: return 0;
  }
}

typedef struct prog_ctx {
  hm_abi_buffer *dev[NBUF];
  unsigned char *host[NBUF];
} prog_ctx;

static void *resolve(void *ctx, const hm_abi_operand *o) {
  prog_ctx *p = ctx;
  if (!o->buffer) return NULL;
  for (int b = 0; b < NBUF; b++)
    if (p->dev[b] == o->buffer) return p->host[b] + o->offset;
  return NULL;
}

#define OPD(b) ((hm_abi_operand){pc->dev[(b)], 0})

static size_t build_ops(prog_ctx *pc, hm_abi_op *ops, const mlp_version *v) {
  const int cls = v->cls, scale_between = v->scale_between;
  size_t n = 0;
  hm_abi_op *op;
#define NEW(code) (op = &ops[n++], *op = hm_op_init(code))
  NEW(HM_ABI_OP_GATHER_ROWS);
  op->dims[0] = B, op->dims[1] = IN, op->dims[2] = N, op->params[0] = 1;
  op->in[0] = OPD(X), op->in[1] = OPD(IDX), op->out[0] = OPD(XB);
  NEW(HM_ABI_OP_GATHER_ROWS);
  op->dtype_in = op->dtype_out = op->dtype_acc = HM_ABI_DTYPE_I32;
  op->dims[0] = B, op->dims[1] = 1, op->dims[2] = N, op->params[0] = 1;
  op->in[0] = OPD(Y), op->in[1] = OPD(IDX), op->out[0] = OPD(YB);
  NEW(HM_ABI_OP_GEMM);
  op->flags = HM_ABI_OP_FLAG_TRANS_B, op->dims[0] = B, op->dims[1] = HID, op->dims[2] = IN, op->params[0] = 1;
  op->in[0] = OPD(XB), op->in[1] = OPD(W1), op->out[0] = OPD(Z1);
  if (scale_between) {
    NEW(HM_ABI_OP_SCALE);
    op->dims[0] = B * HID, op->params[0] = 1.0f, op->out[0] = OPD(Z1);
  }
  NEW(HM_ABI_OP_BIAS_ADD);
  op->dims[0] = B, op->dims[1] = HID, op->in[0] = OPD(B1), op->out[0] = OPD(Z1);
  NEW(HM_ABI_OP_ACT_FORWARD);
  op->variant = HM_ABI_ACT_RELU, op->dims[0] = B, op->dims[1] = HID, op->in[0] = OPD(Z1), op->out[0] = OPD(A1);
  NEW(HM_ABI_OP_GEMM);
  op->flags = HM_ABI_OP_FLAG_TRANS_B, op->dims[0] = B, op->dims[1] = cls, op->dims[2] = HID, op->params[0] = 1;
  op->in[0] = OPD(A1), op->in[1] = OPD(W2), op->out[0] = OPD(Z2);
  NEW(HM_ABI_OP_BIAS_ADD);
  op->dims[0] = B, op->dims[1] = cls, op->in[0] = OPD(B2), op->out[0] = OPD(Z2);
  NEW(HM_ABI_OP_LOSS);
  op->variant = HM_ABI_LOSS_CROSS_ENTROPY, op->flags = HM_ABI_OP_FLAG_CLASS_INDEX, op->dims[0] = B, op->dims[1] = cls;
  op->params[0] = 1, op->params[1] = 1;
  op->in[0] = OPD(Z2), op->in[1] = OPD(YB), op->out[0] = OPD(STATS), op->out[1] = OPD(DZ2);
  NEW(HM_ABI_OP_GEMM);
  op->flags = HM_ABI_OP_FLAG_TRANS_A, op->dims[0] = cls, op->dims[1] = HID, op->dims[2] = B, op->params[0] = 1;
  op->in[0] = OPD(DZ2), op->in[1] = OPD(A1), op->out[0] = OPD(DW2);
  NEW(HM_ABI_OP_REDUCE_ROWS);
  op->dims[0] = B, op->dims[1] = cls, op->params[0] = 1, op->in[0] = OPD(DZ2), op->out[0] = OPD(DB2);
  NEW(HM_ABI_OP_GEMM);
  op->dims[0] = B, op->dims[1] = HID, op->dims[2] = cls, op->params[0] = 1;
  op->in[0] = OPD(DZ2), op->in[1] = OPD(W2), op->out[0] = OPD(DA1);
  if (scale_between) {
    NEW(HM_ABI_OP_SCALE);
    op->dims[0] = B * HID, op->params[0] = 1.0f, op->out[0] = OPD(DA1);
  }
  NEW(HM_ABI_OP_ACT_BACKWARD);
  op->variant = HM_ABI_ACT_RELU, op->dims[0] = B, op->dims[1] = HID;
  op->in[0] = OPD(Z1), op->in[1] = OPD(A1), op->in[2] = OPD(DA1), op->out[0] = OPD(DZ1);
  NEW(HM_ABI_OP_GEMM);
  op->flags = HM_ABI_OP_FLAG_TRANS_A, op->dims[0] = HID, op->dims[1] = IN, op->dims[2] = B, op->params[0] = 1;
  op->in[0] = OPD(DZ1), op->in[1] = OPD(XB), op->out[0] = OPD(DW1);
  NEW(HM_ABI_OP_REDUCE_ROWS);
  op->dims[0] = B, op->dims[1] = HID, op->params[0] = 1, op->in[0] = OPD(DZ1), op->out[0] = OPD(DB1);
  const int grads[4] = {DW1, DB1, DW2, DB2}, params[4] = {W1, B1, W2, B2};
  const int ms[4] = {M_W1, M_B1, M_W2, M_B2}, vs[4] = {V_W1, V_B1, V_W2, V_B2};
  for (int i = 0; i < 4; i++) {
    NEW(HM_ABI_OP_SUM_SQUARES);
    op->dims[0] = nbytes(grads[i], cls) / 4, op->params[0] = 1, op->params[1] = i ? 1.0f : 0.0f;
    op->in[0] = OPD(grads[i]), op->out[0] = (hm_abi_operand){pc->dev[STATS], 4};
  }
  for (int i = 0; i < 4; i++) {
    NEW(HM_ABI_OP_CLIP);
    op->dims[0] = nbytes(grads[i], cls) / 4, op->params[0] = 0.05f, op->out[0] = OPD(grads[i]);
  }
  for (int i = 0; i < 4; i++) {
    NEW(HM_ABI_OP_ADAM);
    op->dims[0] = nbytes(grads[i], cls) / 4;
    op->dyn[0] = 0, op->dyn[1] = 1, op->dyn[2] = 2;
    op->params[3] = 0.9f, op->params[4] = 0.999f, op->params[5] = 1e-8f;
    op->in[0] = OPD(grads[i]), op->out[0] = OPD(params[i]), op->out[1] = OPD(ms[i]), op->out[2] = OPD(vs[i]);
  }
#undef NEW
  return n;
}

static void test_mlp_program(conform_ctx *c, const void *arg, conform_result *r) {
  const mlp_version *v = arg;
  const int cls = v->cls, scale_between = v->scale_between;
  const hm_abi_plugin *t = c->t;
  struct {
    uint32_t op, din, dout;
    int variant;
  } needed[] = {{HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {HM_ABI_OP_GATHER_ROWS, HM_ABI_DTYPE_I32, HM_ABI_DTYPE_I32, -1},
                {HM_ABI_OP_GEMM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {HM_ABI_OP_BIAS_ADD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {HM_ABI_OP_ACT_FORWARD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_ACT_RELU},
                {HM_ABI_OP_ACT_BACKWARD, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_ACT_RELU},
                {HM_ABI_OP_LOSS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, HM_ABI_LOSS_CROSS_ENTROPY},
                {HM_ABI_OP_REDUCE_ROWS, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {HM_ABI_OP_SUM_SQUARES, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {HM_ABI_OP_CLIP, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {HM_ABI_OP_ADAM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1},
                {scale_between ? HM_ABI_OP_SCALE : HM_ABI_OP_ADAM, HM_ABI_DTYPE_F32, HM_ABI_DTYPE_F32, -1}};
  for (size_t i = 0; i < sizeof needed / sizeof needed[0]; i++)
    if (!conform_declares(c, needed[i].op, needed[i].din, needed[i].dout, needed[i].variant)) {
      conform_not_supported(r, "the MLP step needs %s %s, which the device does not declare", hm_op_name(needed[i].op),
                            hm_dtype_name(needed[i].din));
      return;
    }
  prog_ctx pc;
  memset(&pc, 0, sizeof pc);
  uint64_t seed = c->seed + 424242;
  for (int b = 0; b < NBUF; b++) {
    pc.host[b] = calloc(1, nbytes(b, cls));
    if (t->buffer_alloc(c->dev, nbytes(b, cls), &pc.dev[b]) != HM_ABI_OK) {
      conform_fail(r, "buffer_alloc(%zu): %s", nbytes(b, cls), hm_plugin_last_message());
      goto done;
    }
  }
  conform_fill_uniform((float *)pc.host[X], N * IN, 0, 1, seed);
  for (int i = 0; i < N; i++) ((int32_t *)pc.host[Y])[i] = (int32_t)((i * 37 + seed) % cls);
  conform_fill_uniform((float *)pc.host[W1], HID * IN, -0.5f, 0.5f, seed + 1);
  conform_fill_uniform((float *)pc.host[B1], HID, -0.1f, 0.1f, seed + 2);
  conform_fill_uniform((float *)pc.host[W2], cls * HID, -0.5f, 0.5f, seed + 3);
  conform_fill_uniform((float *)pc.host[B2], cls, -0.1f, 0.1f, seed + 4);
  for (int b = 0; b < NBUF; b++)
    if (t->buffer_write(pc.dev[b], 0, pc.host[b], nbytes(b, cls)) != HM_ABI_OK) {
      conform_fail(r, "buffer_write: %s", hm_plugin_last_message());
      goto done;
    }
  hm_abi_op ops[64];
  size_t n_ops = build_ops(&pc, ops, v);
  hm_abi_program_desc d;
  memset(&d, 0, sizeof d);
  d.struct_size = sizeof d;
  d.abi_version = HM_ABI_VERSION;
  d.ops = ops;
  d.n_ops = (uint32_t)n_ops;
  d.n_scalars = 3;
  hm_abi_program *prog = NULL;
  if (t->program_create(c->dev, &d, &prog) != HM_ABI_OK) {
    conform_fail(r, "program_create of the %zu-op MLP step: %s", n_ops, hm_plugin_last_message());
    goto done;
  }
  const int params[4] = {W1, B1, W2, B2};
  float *got = malloc(HID * IN * 4);
  for (int step = 1; step <= STEPS && r->status == CONFORM_PASS; step++) {
    int32_t idx[B];
    for (int i = 0; i < B; i++) idx[i] = (int32_t)(((step - 1) * B + i * 5) % N);
    memcpy(pc.host[IDX], idx, sizeof idx);
    double scalars[3] = {0.01 / step, 1.0 - pow(0.9, step), 1.0 - pow(0.999, step)};
    if (t->buffer_write(pc.dev[IDX], 0, idx, sizeof idx) != HM_ABI_OK ||
        t->program_run(prog, scalars, 3) != HM_ABI_OK) {
      conform_fail(r, "step %d: %s", step, hm_plugin_last_message());
      break;
    }
    for (size_t k = 0; k < n_ops; k++)
      if (hm_ref_execute(&ops[k], resolve, &pc, scalars, 3) != HM_ABI_OK) {
        conform_fail(r, "the reference failed at op %zu", k);
        break;
      }
    float stats[2];
    if (t->buffer_read(pc.dev[STATS], 0, stats, 8) != HM_ABI_OK) {
      conform_fail(r, "buffer_read: %s", hm_plugin_last_message());
      break;
    }
    const float *rs = (const float *)pc.host[STATS];
    double e_loss = fabs(stats[0] - rs[0]) / (1e-6 + fabs(rs[0])), e_norm = fabs(stats[1] - rs[1]) / (1e-6 + fabs(rs[1]));
    if (e_loss > 1e-5 || e_norm > 1e-5) {
      conform_fail(r, "step %d, seed %llu: loss %.7g vs reference %.7g, squared norm %.7g vs %.7g", step,
                   (unsigned long long)seed, stats[0], rs[0], stats[1], rs[1]);
      break;
    }
    for (int p = 0; p < 4 && r->status == CONFORM_PASS; p++) {
      size_t cnt = nbytes(params[p], cls) / 4;
      if (t->buffer_read(pc.dev[params[p]], 0, got, cnt * 4) != HM_ABI_OK) {
        conform_fail(r, "buffer_read: %s", hm_plugin_last_message());
        break;
      }
      double e = conform_nmse((const float *)pc.host[params[p]], got, cnt);
      if (!(e <= 1e-8))
        conform_fail(r, "step %d, seed %llu: parameter %d NMSE %.3g > 1e-8 against the reference program", step,
                     (unsigned long long)seed, p, e);
      /* Continue both from the plugin's state so differences do not compound. */
      memcpy(pc.host[params[p]], got, cnt * 4);
    }
  }
  free(got);
  t->program_free(prog);
done:
  for (int b = 0; b < NBUF; b++) {
    if (pc.dev[b]) t->buffer_free(pc.dev[b]);
    free(pc.host[b]);
  }
}

void conform_add_program_tests(conform_suite *s) {
  static const mlp_version fused = {5, 0}, apart = {5, 1}, blocks = {8, 0};
  conform_add(s, "program", test_mlp_program, &fused, 1, "program.mlp_training_step");
  conform_add(s, "program", test_mlp_program, &apart, 1, "program.mlp_training_step.scale_before_bias");
  conform_add(s, "program", test_mlp_program, &blocks, 1, "program.mlp_training_step.classes_8");
}
