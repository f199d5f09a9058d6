/*
 * One stage of a pipeline fit (pipeline.h). Per update, GPipe:
 *
 *   a stage before the last: for each micro-batch m, receive its boundary
 *     inputs, run the forward program in activation slot m and send its
 *     boundary outputs; then for each m, receive the gradients of its
 *     outputs, run the backward program in slot m (the first writes the
 *     parameter gradients, the others add) and send its inputs' gradients;
 *   the last stage: for each m, receive, run forward + loss + backward (the
 *     micro-batch program of a single process) and send the gradients back.
 *
 * Every op is the one a single process with batch_size rows and
 * accumulate_steps micro-batches runs, in the same order, so the update is
 * bit-identical to it. Messages carry a header the receiver checks field by
 * field; the last stage sums the stages' squared gradient norms and sends
 * its loss and stop decisions to the others.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "lower/precision.h"
#include "train/cycle_state.h"
#include "train/pipeline.h"
#include "train/trajectory.h"

typedef struct stage_in { /* a boundary this stage reads */
  size_t boundary, from, node, width;
} stage_in;

typedef struct stage_out { /* a boundary this stage writes */
  size_t boundary, to, source, width; /* source: the layer whose value crosses */
} stage_out;

struct hm_pipe {
  const hm_pipeline_stage *ps;
  const hm_partition *part;
  size_t stage, last;
  hm_session *s;
  stage_in *ins;
  size_t n_ins;
  stage_out *outs;
  size_t n_outs;
  float *buf, *acc; /* host staging of one boundary tensor */
  size_t buf_floats;
  double timeout;
  double waited; /* seconds inside the transport's receive */
};

/* Subjects of control messages (the header's boundary field). */
enum { CTRL_START = 0, CTRL_SUMSQ = 1, CTRL_DECISION = 2, CTRL_EVAL = 3 };

static hm_status oom(void) { return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "out of memory"); }

/* ===== Set-up ===== */

hm_status hm__pipe_check(const hm_pipeline_stage *ps, const hm_graph *g, const hm_fit_options *o) {
  if (ps->struct_size != sizeof *ps)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_pipeline_stage.struct_size is %zu, expected %zu", ps->struct_size,
                    sizeof *ps);
  const hm_partition *p = ps->partition;
  if (!p) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "pipeline: no partition");
  if (ps->stage >= p->n_stages)
    return hm__fail(HM_STATUS_OUT_OF_RANGE, "pipeline: stage %zu, but the partition has %zu stages", ps->stage,
                    p->n_stages);
  const hm_pipeline_transport *t = ps->transport;
  if (!t || t->struct_size != sizeof *t || !t->send || !t->recv)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "pipeline: the transport needs struct_size, send and recv");
  if (!(ps->timeout_seconds > 0) || !isfinite(ps->timeout_seconds))
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "pipeline: timeout_seconds must be positive and finite");
  if (g != p->stages[ps->stage])
    return hm__fail(HM_STATUS_INVALID_ARGUMENT,
                    "pipeline: fit trains stage %zu's graph (hm_partition_stage(p, %zu)), not graph '%s'", ps->stage,
                    ps->stage, g->name);
  if (o->collectives)
    return hm__fail(HM_STATUS_UNIMPLEMENTED,
                    "pipeline: data parallel stages (collectives and a pipeline in one fit) are not supported");
  if (!hm_graph_has_training_taps(p->whole))
    return hm__fail(HM_STATUS_FAILED_PRECONDITION, "graph '%s' has no loss tap: it can only run inference",
                    p->whole->name);
  return HM_OK;
}

hm_status hm__pipe_init_weights(const hm_pipeline_stage *ps, hm_graph *g, uint64_t seed) {
  if (g->weights) return HM_OK;
  hm_weights *w = NULL;
  HM_RETURN_IF_ERROR(hm__partition_init_stage_weights(ps->partition, ps->stage, seed, &w));
  hm_status st = hm_graph_set_weights(g, w);
  hm_weights_free(w);
  return st;
}

hm_status hm__pipe_open_session(const hm_pipeline_stage *ps, hm_graph *g, const hm_fit_options *o,
                                const hm_policy *policy, int eval, hm_session **out) {
  const hm_partition *p = ps->partition;
  char *marks = hm__calloc(2 * (g->n_nodes ? g->n_nodes : 1), 1);
  if (!marks) return oom();
  hm_plan_boundaries bounds = {marks, marks + g->n_nodes};
  for (size_t b = 0; b < p->n_bounds; b++) {
    if (p->bounds[b].to == ps->stage) marks[p->bounds[b].in_node] = 1;
    if (p->bounds[b].from == ps->stage) marks[g->n_nodes + p->bounds[b].out_node] = 1;
  }
  /* Stages before the last keep every micro-batch's activations until its backward pass. */
  size_t slots = ps->stage + 1 < p->n_stages ? o->accumulate_steps : 1;
  hm_session_spec spec = {1, eval, &bounds, slots, 0};
  hm_status st = hm__session_open(g, o, policy, &spec, out);
  hm__free(marks);
  return st;
}

hm_status hm__pipe_create(const hm_pipeline_stage *ps, hm_session *s, hm_pipe **out) {
  const hm_partition *part = ps->partition;
  hm_pipe *p = hm__calloc(1, sizeof *p);
  if (!p) return oom();
  p->ps = ps;
  p->part = part;
  p->stage = ps->stage;
  p->last = part->n_stages - 1;
  p->s = s;
  p->timeout = ps->timeout_seconds;
  p->ins = hm__calloc(part->n_bounds ? part->n_bounds : 1, sizeof *p->ins);
  p->outs = hm__calloc(part->n_bounds ? part->n_bounds : 1, sizeof *p->outs);
  if (!p->ins || !p->outs) {
    hm__pipe_free(p);
    return oom();
  }
  const hm_graph *g = s->g;
  size_t widest = 1;
  for (size_t b = 0; b < part->n_bounds; b++) {
    const hm_boundary *bd = &part->bounds[b];
    if (bd->to == p->stage) p->ins[p->n_ins++] = (stage_in){b, bd->from, bd->in_node, bd->width};
    if (bd->from != p->stage) continue;
    size_t source = HM_NO_INDEX;
    for (size_t e = 0; e < g->n_edges && source == HM_NO_INDEX; e++)
      if (g->edges[e].dst == bd->out_node) source = g->edges[e].src;
    p->outs[p->n_outs++] = (stage_out){b, bd->to, source, bd->width};
    widest = bd->width > widest ? bd->width : widest;
  }
  for (size_t i = 0; i < p->n_ins; i++) widest = p->ins[i].width > widest ? p->ins[i].width : widest;
  size_t floats;
  if (hm__mul_size(widest, s->max_batch, &floats) || !(p->buf = hm__malloc(floats * sizeof *p->buf)) ||
      !(p->acc = hm__malloc(floats * sizeof *p->acc))) {
    hm__pipe_free(p);
    return oom();
  }
  p->buf_floats = floats;
  *out = p;
  return HM_OK;
}

void hm__pipe_free(hm_pipe *p) {
  if (!p) return;
  hm__free(p->ins);
  hm__free(p->outs);
  hm__free(p->buf);
  hm__free(p->acc);
  hm__free(p);
}

int hm__pipe_is_root(const hm_pipe *p) { return !p || p->stage == p->last; }
double hm__pipe_waited(const hm_pipe *p) { return p->waited; }

void hm__pipe_fail(const hm_pipeline_stage *ps, const char *message) {
  if (ps && ps->transport && ps->transport->fail) ps->transport->fail(ps->transport->self, message);
}

/* ===== Messages ===== */

static hm_boundary_header tensor_header(uint32_t kind, size_t boundary, size_t step, size_t micro, size_t rows,
                                        size_t width) {
  hm_boundary_header h = {kind, (uint32_t)boundary, step, (uint32_t)micro, HM_ABI_DTYPE_F32, rows, width,
                          (uint64_t)rows * width * 4};
  return h;
}

static hm_boundary_header control_header(size_t subject, size_t step, size_t bytes) {
  hm_boundary_header h = {HM_PIPE_CONTROL, (uint32_t)subject, step, 0, HM_ABI_DTYPE_U8, 1, bytes, bytes};
  return h;
}

static hm_status send_to(hm_pipe *p, size_t to, const hm_boundary_header *h, const void *payload) {
  const hm_pipeline_transport *t = p->ps->transport;
  hm_status st = t->send(t->self, to, h, payload, p->timeout);
  if (st != HM_OK) {
    char what[160];
    hm_boundary_header_format(h, what, sizeof what);
    hm__error_prefix("pipeline stage %zu: sending %s to stage %zu: ", p->stage, what, to);
  }
  return st;
}

/* Receives the next message from stage |from| and checks that it is |want|. */
static hm_status recv_from(hm_pipe *p, size_t from, const hm_boundary_header *want, void *payload) {
  const hm_pipeline_transport *t = p->ps->transport;
  hm_boundary_header got;
  memset(&got, 0xff, sizeof got); /* a transport that failed before reading a header leaves this */
  double t0 = hm__now();
  hm_status st = t->recv(t->self, from, &got, payload, (size_t)want->bytes, p->timeout);
  p->waited += hm__now() - t0;
  char expected[160], received[160];
  hm_boundary_header_format(want, expected, sizeof expected);
  int have_header = got.kind != UINT32_MAX;
  if (have_header && (got.kind != want->kind || got.boundary != want->boundary || got.step != want->step ||
                      got.micro_batch != want->micro_batch || got.dtype != want->dtype || got.rows != want->rows ||
                      got.width != want->width || got.bytes != want->bytes)) {
    hm_boundary_header_format(&got, received, sizeof received);
    return hm__fail(HM_STATUS_DATA_LOSS, "pipeline stage %zu: from stage %zu expected %s but received %s", p->stage,
                    from, expected, received);
  }
  if (st != HM_OK) hm__error_prefix("pipeline stage %zu: waiting for %s from stage %zu: ", p->stage, expected, from);
  return st;
}

/* ===== The start ===== */

typedef struct start_record {
  uint32_t partition;
  uint32_t n_stages;
  uint64_t train_count, eval_count;
  uint64_t step, epoch, position;
  int32_t schedule_kind;
  hm_policy policy;
  hm_fit_options opts; /* only the value fields are compared */
} start_record;

static int reads_data(const hm_session *s) {
  for (size_t i = 0; i < s->g->n_nodes; i++)
    if (s->g->nodes[i].kind == HM_NODE_PRODUCER && hm__plan_reads_data(s->plan, i)) return 1;
  return 0;
}

/* Why this stage's |mine| cannot run with stage 0's |root| ("" when it can). */
static void start_difference(const start_record *mine, const start_record *root, char *why, size_t cap) {
  const char *field = NULL;
  char here[96], there[96];
  why[0] = '\0';
  if (mine->partition != root->partition || mine->n_stages != root->n_stages)
    snprintf(why, cap, "its partition (%u stages, fingerprint %08x) differs from stage 0's (%u stages, %08x)",
             mine->n_stages, mine->partition, root->n_stages, root->partition);
  else if (!hm__policy_same(&mine->policy, &root->policy)) {
    hm_policy_format(&mine->policy, here, sizeof here);
    hm_policy_format(&root->policy, there, sizeof there);
    snprintf(why, cap, "the policy is %s here but %s on stage 0", here, there);
  } else if (hm__trajectory_difference(&mine->opts, mine->schedule_kind, &root->opts, root->schedule_kind, &field,
                                       here, there, sizeof here))
    snprintf(why, cap, "%s is %s here but %s on stage 0", field, here, there);
  else if (mine->opts.eval_batch_size != root->opts.eval_batch_size)
    snprintf(why, cap, "eval_batch_size is %zu here but %zu on stage 0", mine->opts.eval_batch_size,
             root->opts.eval_batch_size);
  else if (mine->train_count && mine->train_count != root->train_count)
    snprintf(why, cap, "it holds %llu training samples but stage 0 holds %llu", (unsigned long long)mine->train_count,
             (unsigned long long)root->train_count);
  else if (mine->eval_count && mine->eval_count != root->eval_count)
    snprintf(why, cap, "it holds %llu evaluation samples but stage 0 holds %llu",
             (unsigned long long)mine->eval_count, (unsigned long long)root->eval_count);
  else if (mine->step != root->step || mine->epoch != root->epoch || mine->position != root->position)
    snprintf(why, cap,
             "it starts at step %llu (epoch %llu, sample %llu) but stage 0 at step %llu (epoch %llu, sample %llu): "
             "resume every stage from the same checkpoint",
             (unsigned long long)mine->step, (unsigned long long)mine->epoch, (unsigned long long)mine->position,
             (unsigned long long)root->step, (unsigned long long)root->epoch, (unsigned long long)root->position);
}

hm_status hm__pipe_check_start(hm_pipe *p, const hm_policy *policy, const hm_fit_options *o, int schedule_kind,
                               const hm_cycle_state *progress) {
  hm_session *s = p->s;
  int has_data = reads_data(s);
  start_record mine, root;
  memset(&mine, 0, sizeof mine);
  mine.partition = p->part->fingerprint;
  mine.n_stages = (uint32_t)p->part->n_stages;
  mine.train_count = has_data ? s->train_count : 0;
  mine.eval_count = has_data ? s->eval_count : 0;
  mine.step = progress->step;
  mine.epoch = progress->epoch;
  mine.position = progress->position;
  mine.schedule_kind = schedule_kind;
  mine.policy = policy ? *policy : hm_make_hardware_policy();
  mine.opts = *o;
  if (p->stage == 0) {
    if (!s->train_count)
      return hm__fail(HM_STATUS_FAILED_PRECONDITION, "pipeline stage 0 reads no training data");
    hm_boundary_header h = control_header(CTRL_START, mine.step, sizeof mine);
    for (size_t k = 1; k <= p->last; k++) HM_RETURN_IF_ERROR(send_to(p, k, &h, &mine));
    return HM_OK;
  }
  const hm_pipeline_transport *t = p->ps->transport;
  hm_boundary_header got;
  memset(&got, 0, sizeof got);
  hm_status st = t->recv(t->self, 0, &got, &root, sizeof root, p->timeout);
  if (st != HM_OK) {
    hm__error_prefix("pipeline stage %zu: waiting for stage 0's start message: ", p->stage);
    return st;
  }
  if (got.kind != HM_PIPE_CONTROL || got.boundary != CTRL_START || got.bytes != sizeof root) {
    char received[160];
    hm_boundary_header_format(&got, received, sizeof received);
    return hm__fail(HM_STATUS_DATA_LOSS, "pipeline stage %zu: expected stage 0's start message, received %s",
                    p->stage, received);
  }
  char why[512];
  start_difference(&mine, &root, why, sizeof why);
  if (why[0]) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "pipeline stage %zu: %s", p->stage, why);
  if (!has_data) { /* a stage between others learns how much data flows through it */
    s->train_count = (size_t)root.train_count;
    s->eval_count = (size_t)root.eval_count;
  }
  /* Every stage takes part in stage 0's evaluation; one without evaluation
   * data of its own then runs without targets (no loss, as one process
   * would) or, when a producer it reads lacks them, says which. */
  if (!s->eval_count) s->eval_count = (size_t)root.eval_count;
  return HM_OK;
}

/* ===== An update ===== */

static hm_status write_tensor(hm_pipe *p, hm_abi_buffer *buf, const float *data, size_t floats) {
  return hm_device_buffer_write(p->s->dev, buf, 0, data, floats * sizeof *data);
}

static hm_status read_tensor(hm_pipe *p, hm_abi_buffer *buf, float *data, size_t floats) {
  return hm_device_buffer_read(p->s->dev, buf, 0, data, floats * sizeof *data);
}

/* Receives this stage's boundary inputs of one batch into slot |slot|. */
static hm_status receive_inputs(hm_pipe *p, uint32_t kind, size_t step, size_t micro, size_t slot, size_t rows) {
  for (size_t i = 0; i < p->n_ins; i++) {
    const stage_in *in = &p->ins[i];
    hm_boundary_header want = tensor_header(kind, in->boundary, step, micro, rows, in->width);
    HM_RETURN_IF_ERROR(recv_from(p, in->from, &want, p->buf));
    HM_RETURN_IF_ERROR(write_tensor(p, p->s->slot_bufs[slot].nodes[in->node].batch, p->buf, rows * in->width));
  }
  return HM_OK;
}

/* Sends this stage's boundary outputs of one batch from slot |slot|. */
static hm_status send_outputs(hm_pipe *p, uint32_t kind, size_t step, size_t micro, size_t slot, size_t rows) {
  for (size_t i = 0; i < p->n_outs; i++) {
    const stage_out *out = &p->outs[i];
    HM_RETURN_IF_ERROR(read_tensor(p, hm__session_slot_value(p->s, slot, out->source), p->buf, rows * out->width));
    hm_boundary_header h = tensor_header(kind, out->boundary, step, micro, rows, out->width);
    HM_RETURN_IF_ERROR(send_to(p, out->to, &h, p->buf));
  }
  return HM_OK;
}

/* The gradients of the boundary inputs go back where the inputs came from
 * (zeros for an input no loss depends on, so every stage knows what to wait for). */
static hm_status send_input_gradients(hm_pipe *p, size_t step, size_t micro, size_t rows) {
  for (size_t i = 0; i < p->n_ins; i++) {
    const stage_in *in = &p->ins[i];
    size_t n = rows * in->width;
    hm_abi_buffer *grad = p->s->bufs.nodes[in->node].grad;
    if (grad) HM_RETURN_IF_ERROR(read_tensor(p, grad, p->buf, n));
    else memset(p->buf, 0, n * sizeof *p->buf);
    hm_boundary_header h = tensor_header(HM_PIPE_BACKWARD, in->boundary, step, micro, rows, in->width);
    HM_RETURN_IF_ERROR(send_to(p, in->from, &h, p->buf));
  }
  return HM_OK;
}

/* The gradients of the boundary outputs of one micro-batch become their
 * source layers' gradients: a layer read by several stages gets their sum. */
static hm_status receive_output_gradients(hm_pipe *p, size_t step, size_t micro, size_t rows) {
  for (size_t i = 0; i < p->n_outs; i++) {
    const stage_out *out = &p->outs[i];
    int first = 1;
    for (size_t j = 0; j < i && first; j++) first = p->outs[j].source != out->source;
    if (!first) continue; /* summed with the first output of its layer */
    size_t n = rows * out->width, parts = 0;
    for (size_t j = i; j < p->n_outs; j++) {
      if (p->outs[j].source != out->source) continue;
      hm_boundary_header want = tensor_header(HM_PIPE_BACKWARD, p->outs[j].boundary, step, micro, rows, out->width);
      HM_RETURN_IF_ERROR(recv_from(p, p->outs[j].to, &want, parts ? p->buf : p->acc));
      for (size_t k = 0; parts && k < n; k++) p->acc[k] += p->buf[k];
      parts++;
    }
    HM_RETURN_IF_ERROR(write_tensor(p, p->s->bufs.nodes[out->source].grad, p->acc, n));
  }
  return HM_OK;
}

hm_status hm__pipe_update(hm_pipe *p, size_t step, const int32_t *const *idx, const size_t *rows, size_t n,
                          double *loss_sum, double *loss_rows) {
  hm_session *s = p->s;
  double scalars[N_SLOTS];
  HM_RETURN_IF_ERROR(hm__step_scalars(&s->opts, step, 1.0, scalars));
  double first_batch = scalars[SLOT_STEP]; /* micro-batch m is batch first_batch + m, as in one process */
  *loss_sum = 0;
  *loss_rows = 0;
  if (n > s->n_slots && p->stage != p->last)
    return hm__fail(HM_STATUS_INTERNAL, "pipeline: %zu micro-batches but %zu activation slots", n, s->n_slots);
  if (p->stage == p->last) {
    for (size_t m = 0; m < n; m++) {
      float loss = 0;
      HM_RETURN_IF_ERROR(receive_inputs(p, HM_PIPE_FORWARD, step, m, 0, rows[m]));
      scalars[SLOT_STEP] = hm__dropout_step(first_batch, m);
      HM_RETURN_IF_ERROR(hm__session_step_slot(s, m == 0 ? PROG_MICRO_FIRST : PROG_MICRO_ACC, 0, idx[m], rows[m],
                                               scalars, &loss, NULL));
      *loss_sum += loss;
      *loss_rows += (double)loss * (double)rows[m];
      HM_RETURN_IF_ERROR(send_input_gradients(p, step, m, rows[m]));
    }
    return HM_OK;
  }
  for (size_t m = 0; m < n; m++) {
    HM_RETURN_IF_ERROR(receive_inputs(p, HM_PIPE_FORWARD, step, m, m, rows[m]));
    scalars[SLOT_STEP] = hm__dropout_step(first_batch, m);
    HM_RETURN_IF_ERROR(hm__session_step_slot(s, PROG_STAGE_FORWARD, m, idx[m], rows[m], scalars, NULL, NULL));
    HM_RETURN_IF_ERROR(send_outputs(p, HM_PIPE_FORWARD, step, m, m, rows[m]));
  }
  for (size_t m = 0; m < n; m++) {
    HM_RETURN_IF_ERROR(receive_output_gradients(p, step, m, rows[m]));
    program_kind kind = m == 0 ? PROG_STAGE_BACKWARD_FIRST : PROG_STAGE_BACKWARD_ACC;
    scalars[SLOT_STEP] = hm__dropout_step(first_batch, m);
    HM_RETURN_IF_ERROR(hm__session_step_slot(s, kind, m, NULL, rows[m], scalars, NULL, NULL));
    HM_RETURN_IF_ERROR(send_input_gradients(p, step, m, rows[m]));
  }
  return HM_OK;
}

/* ===== Agreement ===== */

hm_status hm__pipe_sum_squares(hm_pipe *p, size_t step, float *sumsq) {
  double mine = *sumsq;
  if (p->stage != p->last) {
    hm_boundary_header h = control_header(CTRL_SUMSQ, step, sizeof mine);
    return send_to(p, p->last, &h, &mine);
  }
  /* sqrt(sum of every stage's sum of squares), added in stage order. */
  double total = 0;
  for (size_t k = 0; k < p->last; k++) {
    double theirs = 0;
    hm_boundary_header want = control_header(CTRL_SUMSQ, step, sizeof theirs);
    HM_RETURN_IF_ERROR(recv_from(p, k, &want, &theirs));
    total += theirs;
  }
  *sumsq = (float)(total + mine);
  return HM_OK;
}

hm_status hm__pipe_decide(hm_pipe *p, size_t step, hm_pipe_decision *d) {
  hm_boundary_header h = control_header(CTRL_DECISION, step, sizeof *d);
  if (p->stage != p->last) return recv_from(p, p->last, &h, d);
  for (size_t k = 0; k < p->last; k++) HM_RETURN_IF_ERROR(send_to(p, k, &h, d));
  return HM_OK;
}

typedef struct eval_ctx {
  hm_pipe *p;
  size_t step;
} eval_ctx;

static hm_status eval_hook(void *ctx, int after, size_t batch_index, size_t rows) {
  eval_ctx *e = ctx;
  if (!after) return receive_inputs(e->p, HM_PIPE_EVAL, e->step, batch_index, 0, rows);
  return send_outputs(e->p, HM_PIPE_EVAL, e->step, batch_index, 0, rows);
}

hm_status hm__pipe_evaluate(hm_pipe *p, size_t step, float *loss, float *accuracy) {
  hm_session *s = p->s;
  eval_ctx ctx = {p, step};
  hm_eval_sums sums;
  HM_RETURN_IF_ERROR(hm__session_evaluate_hooked(s, 1, 0, 0, s->eval_count, eval_hook, &ctx, &sums));
  float result[2] = {NAN, NAN};
  hm_boundary_header h = control_header(CTRL_EVAL, step, sizeof result);
  if (p->stage == p->last) {
    if (sums.has_loss) result[0] = (float)(sums.loss_sum / (double)s->eval_count);
    if (sums.has_accuracy) result[1] = (float)((double)sums.correct / (double)s->eval_count);
    for (size_t k = 0; k < p->last; k++) HM_RETURN_IF_ERROR(send_to(p, k, &h, result));
  } else {
    HM_RETURN_IF_ERROR(recv_from(p, p->last, &h, result));
  }
  *loss = result[0];
  *accuracy = result[1];
  return HM_OK;
}

/* ===== After training ===== */

/* Stage |k|'s tensors in their canonical order: per weighted connection,
 * the weight, the bias (when it has one), then its state (batch norm). */
static size_t stage_tensor_count(const hm_graph *g) {
  size_t n = 0;
  hm_param_desc pd[4];
  for (size_t e = 0; e < g->n_edges; e++) n += hm__edge_tensors(g, e, pd);
  return n;
}

/* Tensor |i|; it travels as rows = its first dimension, cols = the rest. */
static void stage_tensor(const hm_graph *g, size_t i, hm_param_desc *out, uint64_t rows_cols[2]) {
  memset(out, 0, sizeof *out); /* i < stage_tensor_count(g): always found */
  rows_cols[0] = rows_cols[1] = 0;
  for (size_t e = 0; e < g->n_edges; e++) {
    hm_param_desc pd[4];
    size_t n = hm__edge_tensors(g, e, pd);
    if (i < n) {
      *out = pd[i];
      rows_cols[0] = pd[i].shape[0];
      rows_cols[1] = pd[i].count / pd[i].shape[0];
      return;
    }
    i -= n;
  }
}

hm_status hm_pipeline_gather_weights(const hm_pipeline_stage *ps, const hm_weights *stage_weights, hm_weights **whole) {
  if (!ps || !stage_weights || !whole) return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_pipeline_gather_weights: NULL argument");
  if (ps->struct_size != sizeof *ps || !ps->partition || ps->stage >= ps->partition->n_stages || !ps->transport)
    return hm__fail(HM_STATUS_INVALID_ARGUMENT, "hm_pipeline_gather_weights: an invalid hm_pipeline_stage");
  *whole = NULL;
  const hm_partition *part = ps->partition;
  hm_pipe p;
  memset(&p, 0, sizeof p);
  p.ps = ps;
  p.part = part;
  p.stage = ps->stage;
  p.last = part->n_stages - 1;
  p.timeout = ps->timeout_seconds > 0 ? ps->timeout_seconds : 60.0;
  hm_param_desc pd;
  const char *name = pd.name;
  uint64_t shape[2];
  if (p.stage != p.last) {
    const hm_graph *g = part->stages[p.stage];
    for (size_t i = 0; i < stage_tensor_count(g); i++) {
      stage_tensor(g, i, &pd, shape);
      hm_tensor t;
      if (hm_weights_find(stage_weights, name, &t) != HM_OK || t.dtype != HM_ABI_DTYPE_F32 ||
          t.bytes != shape[0] * shape[1] * 4)
        return hm__fail(HM_STATUS_INVALID_ARGUMENT, "pipeline stage %zu: its weights lack '%s' (f32, %llux%llu)",
                        p.stage, name, (unsigned long long)shape[0], (unsigned long long)shape[1]);
      hm_boundary_header h = {HM_PIPE_WEIGHTS, (uint32_t)i, 0, 0, HM_ABI_DTYPE_F32, shape[0], shape[1], t.bytes};
      HM_RETURN_IF_ERROR(send_to(&p, p.last, &h, t.data));
    }
    return HM_OK;
  }
  const hm_weights **sets = hm__calloc(part->n_stages, sizeof *sets);
  if (!sets) return oom();
  hm_status st = HM_OK;
  float *data = NULL;
  for (size_t k = 0; k < p.last && st == HM_OK; k++) {
    hm_weights *w = NULL;
    st = hm_weights_create(&w);
    sets[k] = w;
    const hm_graph *g = part->stages[k];
    for (size_t i = 0; i < stage_tensor_count(g) && st == HM_OK; i++) {
      stage_tensor(g, i, &pd, shape);
      size_t bytes = (size_t)(shape[0] * shape[1] * 4);
      float *grown = hm__realloc(data, bytes);
      if (!grown) {
        st = oom();
        break;
      }
      data = grown;
      hm_boundary_header want = {HM_PIPE_WEIGHTS, (uint32_t)i, 0, 0, HM_ABI_DTYPE_F32, shape[0], shape[1], bytes};
      st = recv_from(&p, k, &want, data);
      if (st == HM_OK) st = hm_weights_set(w, name, HM_ABI_DTYPE_F32, pd.rank, pd.shape, data);
    }
  }
  sets[p.last] = stage_weights;
  if (st == HM_OK) st = hm_partition_merge_weights(part, sets, whole);
  for (size_t k = 0; k < p.last; k++) hm_weights_free((hm_weights *)sets[k]);
  hm__free(sets);
  hm__free(data);
  return st;
}

void hm_pipeline_checkpoint_path(const char *path, size_t stage, char *buf, size_t cap) {
  snprintf(buf, cap, "%s.stage%zu", path ? path : "", stage);
}

hm_pipeline_stage hm_pipeline_stage_default(void) {
  hm_pipeline_stage ps;
  memset(&ps, 0, sizeof ps);
  ps.struct_size = sizeof ps;
  ps.timeout_seconds = 60.0;
  return ps;
}
