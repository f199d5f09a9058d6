/*
 * Harmonics for C++17: the API of seed/Training.md, header-only over the C
 * API (<harmonics/harmonics.h>; docs/cpp.md).
 *
 *   harmonics::HarmonicGraph g = harmonics::HarmonicGraph::from_file("model.hmx");
 *   g.bind("pixels", harmonics::Producer::open_idx("train-images-idx3-ubyte.gz"));
 *   harmonics::FitOptions opt;
 *   opt.optimizer = harmonics::Optimizer::Adam;
 *   auto final = g.fit(5, harmonics::make_auto_policy(), opt);
 *
 * Conventions: every handle is owned by one RAII object (movable; the value
 * types Weights and PrecisionPolicy also copy); a failing C call throws
 * harmonics::Error with the status and hm_last_error(). Callbacks (progress,
 * schedule, predicate, on_epoch, consumers) may throw: the exception is
 * caught before it reaches C, the fit stops after the current update, every
 * resource is freed, and the exception is rethrown from fit.
 */
#ifndef HARMONICS_HPP_
#define HARMONICS_HPP_

#if !defined(__cplusplus) || __cplusplus < 201703L
#error "harmonics.hpp needs C++17 or later"
#endif

#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "harmonics/harmonics.h"

namespace harmonics {

/* ===== Errors ===== */

/* A failed call: the status and the sentence hm_last_error() gave. */
class Error : public std::runtime_error {
 public:
  Error(hm_status status, const std::string &message) : std::runtime_error(message), status_(status) {}
  hm_status status() const noexcept { return status_; }
  const char *status_name() const noexcept { return hm_status_name(status_); }

 private:
  hm_status status_;
};

namespace detail {

/* Throws Error for a failed status, prefixing |what| ("fit: ..."). */
inline void check(hm_status status, const char *what = nullptr) {
  if (status == HM_OK) return;
  std::string message = what ? std::string(what) + ": " : std::string();
  message += hm_last_error();
  throw Error(status, message);
}

inline std::string str(const char *s) { return s ? std::string(s) : std::string(); }

/* For a rebinding in a destructor, which must not throw (it restores what
 * was bound before, so it cannot fail on a name). */
inline void ignore(hm_status) noexcept {}

struct GraphDeleter {
  void operator()(hm_graph *g) const noexcept { hm_graph_free(g); }
};
struct WeightsDeleter {
  void operator()(hm_weights *w) const noexcept { hm_weights_free(w); }
};
struct StateDeleter {
  void operator()(hm_cycle_state *s) const noexcept { hm_cycle_state_free(s); }
};
struct ProducerDeleter {
  void operator()(hm_producer *p) const noexcept { hm_producer_free(p); }
};
struct ConsumerDeleter {
  void operator()(hm_consumer *c) const noexcept { hm_consumer_free(c); }
};

using GraphPtr = std::unique_ptr<hm_graph, GraphDeleter>;
using WeightsPtr = std::unique_ptr<hm_weights, WeightsDeleter>;
using StatePtr = std::unique_ptr<hm_cycle_state, StateDeleter>;

/* The first exception a callback threw during one C call; callbacks stop
 * doing anything once it is set. */
struct PendingError {
  std::exception_ptr error;
  void capture() noexcept {
    if (!error) error = std::current_exception();
  }
  void rethrow() const {
    if (error) std::rethrow_exception(error);
  }
};

}  // namespace detail

/* ===== Precision policies ===== */

/* How the matmul of each connection with weights runs (docs/precision.md).
 * A plain value. */
class PrecisionPolicy {
 public:
  PrecisionPolicy() : p_(hm_make_hardware_policy()) {}
  explicit PrecisionPolicy(const hm_policy &p) : p_(p) {}
  /* "hardware", "auto", "bits:8", "connections:8,4,3". */
  static PrecisionPolicy parse(const std::string &text) {
    hm_policy p;
    detail::check(hm_policy_parse(text.c_str(), &p), "policy");
    return PrecisionPolicy(p);
  }
  hm_policy_kind kind() const noexcept { return p_.kind; }
  int bits() const noexcept { return p_.bits; }
  std::string to_string() const {
    char buf[512];
    hm_policy_format(&p_, buf, sizeof buf);
    return buf;
  }
  const hm_policy &c_policy() const noexcept { return p_; }
  /* User-provided, so a policy made and not used (the seed's
   * `auto bits3 = make_max_bits_policy(3);`) is not an unused-variable
   * warning. */
  ~PrecisionPolicy() {}
  PrecisionPolicy(const PrecisionPolicy &) = default;
  PrecisionPolicy &operator=(const PrecisionPolicy &) = default;

 private:
  hm_policy p_;
};

/* The device's native f32 (the default when no policy is given). */
inline PrecisionPolicy make_hardware_policy() { return PrecisionPolicy(hm_make_hardware_policy()); }
/* Mixed precision where the device declares fast 16-bit math. */
inline PrecisionPolicy make_auto_policy() { return PrecisionPolicy(hm_make_auto_policy()); }
/* Every matmul at |bits|: 8, 4 or 3 (int3_matmul). Other widths are refused
 * when the policy meets a graph. */
inline PrecisionPolicy make_max_bits_policy(int bits) { return PrecisionPolicy(hm_make_max_bits_policy(bits)); }
/* One width (32, 8, 4, 3) per connection with weights, in graph order. */
inline PrecisionPolicy make_connection_bits_policy(const std::vector<int> &bits) {
  return PrecisionPolicy(hm_make_connection_bits_policy(bits.data(), bits.size()));
}

/* ===== Optimizers and schedules ===== */

enum class Optimizer : int {
  SGD = HM_OPTIMIZER_SGD,
  Adam = HM_OPTIMIZER_ADAM,
  RMSProp = HM_OPTIMIZER_RMSPROP,
  AdamW = HM_OPTIMIZER_ADAMW,
  LAMB = HM_OPTIMIZER_LAMB
};

inline const char *to_string(Optimizer o) noexcept { return hm_optimizer_name(static_cast<uint32_t>(o)); }

/* lr = max(min_lr, initial * rate^floor(step / decay_steps)). Given to
 * FitOptions::lr_schedule_fp it runs as the C library's built-in schedule
 * (so checkpoints record and resume it); it is also callable. */
struct ExponentialDecaySchedule {
  float initial;
  float rate;
  std::size_t decay_steps;
  float min_lr = 0.0f;

  float operator()(std::size_t step) const {
    hm_lr_schedule s = c_schedule();
    return s.fn(step, &s);
  }
  hm_lr_schedule c_schedule() const { return hm_exponential_decay_schedule(initial, rate, decay_steps, min_lr); }
};

/* FitOptions::lr_schedule_fp: empty (a constant learning_rate), an
 * ExponentialDecaySchedule, or any callable float(std::size_t update_index). */
class LrSchedule {
 public:
  LrSchedule() = default;
  LrSchedule(const ExponentialDecaySchedule &s) : builtin_(s.c_schedule()), has_builtin_(true) {}  // NOLINT
  template <typename F,
            typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, LrSchedule> &&
                                        !std::is_same_v<std::decay_t<F>, ExponentialDecaySchedule> &&
                                        std::is_invocable_r_v<float, std::decay_t<F> &, std::size_t>>>
  LrSchedule(F &&f) : fn_(std::forward<F>(f)) {}  // NOLINT: implicit, as the seed assigns it

  explicit operator bool() const noexcept { return has_builtin_ || static_cast<bool>(fn_); }
  bool is_builtin() const noexcept { return has_builtin_; }
  const hm_lr_schedule &builtin() const noexcept { return builtin_; }
  const std::function<float(std::size_t)> &callable() const noexcept { return fn_; }

 private:
  hm_lr_schedule builtin_{};
  bool has_builtin_ = false;
  std::function<float(std::size_t)> fn_;
};

/* FitOptions::progress: empty, or any callable
 * void(std::size_t step, float grad_norm, float loss, float lr), such as a
 * WebSocketTrainingVisualizer (<harmonics/training_visualizer.hpp>). */
class ProgressCallback {
 public:
  ProgressCallback() = default;
  template <typename F, typename = std::enable_if_t<!std::is_same_v<std::decay_t<F>, ProgressCallback> &&
                                                    std::is_invocable_v<std::decay_t<F> &, std::size_t, float, float, float>>>
  ProgressCallback(F &&f) : fn_(std::forward<F>(f)) {}  // NOLINT: implicit, as the seed assigns it

  explicit operator bool() const noexcept { return static_cast<bool>(fn_); }
  void operator()(std::size_t step, float grad_norm, float loss, float lr) const { fn_(step, grad_norm, loss, lr); }

 private:
  std::function<void(std::size_t, float, float, float)> fn_;
};

/* ===== Named tensors ===== */

/* A view of one tensor of a Weights (valid while the Weights is unchanged). */
struct Tensor {
  std::string name;
  uint32_t dtype = 0; /* hm_abi_dtype */
  std::vector<uint64_t> shape;
  const void *data = nullptr;
  std::size_t bytes = 0;

  std::size_t elements() const {
    std::size_t n = 1;
    for (uint64_t d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
  /* The values of an f32 tensor (Error for another dtype). */
  std::vector<float> values() const {
    if (dtype != HM_ABI_DTYPE_F32) throw Error(HM_STATUS_INVALID_ARGUMENT, "tensor '" + name + "' is not f32");
    const float *f = static_cast<const float *>(data);
    return std::vector<float>(f, f + bytes / sizeof(float));
  }
};

/* A set of named tensors ("a->b.weight", "a->b.bias"): a model's weights or
 * an optimizer's state. A value: copying copies the tensors. */
class Weights {
 public:
  Weights() {
    hm_weights *w = nullptr;
    detail::check(hm_weights_create(&w), "weights");
    owned_.reset(w);
  }
  /* Takes ownership of |w|. */
  static Weights adopt(hm_weights *w) { return Weights(w, nullptr); }
  /* A copy of |w| (which stays the caller's). */
  static Weights copy_of(const hm_weights *w) {
    hm_weights *c = nullptr;
    detail::check(hm_weights_clone(w, &c), "weights");
    return adopt(c);
  }
  /* The weights of a cycle state, read from it on first use (during fit's
   * callbacks that is a download from the device). */
  static Weights of_state(const hm_cycle_state *s) { return Weights(nullptr, s); }

  Weights(const Weights &o) : owned_(clone(o.get())) {}
  Weights &operator=(const Weights &o) {
    if (this != &o) {
      owned_ = clone(o.get());
      state_ = nullptr;
    }
    return *this;
  }
  Weights(Weights &&) noexcept = default;
  Weights &operator=(Weights &&) noexcept = default;

  std::size_t size() const { return get() ? hm_weights_count(get()) : 0; }
  bool empty() const { return size() == 0; }
  bool contains(const std::string &name) const {
    hm_tensor t;
    return get() && hm_weights_find(get(), name.c_str(), &t) == HM_OK;
  }
  Tensor at(std::size_t i) const {
    hm_tensor t;
    detail::check(get() ? hm_weights_at(get(), i, &t) : HM_STATUS_OUT_OF_RANGE, "weights");
    return view(t);
  }
  Tensor find(const std::string &name) const {
    hm_tensor t;
    if (!get() || hm_weights_find(get(), name.c_str(), &t) != HM_OK)
      throw Error(HM_STATUS_NOT_FOUND, "weights: no tensor '" + name + "'");
    return view(t);
  }
  std::vector<float> values(const std::string &name) const { return find(name).values(); }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (std::size_t i = 0; i < size(); i++) out.push_back(at(i).name);
    return out;
  }
  /* Adds or replaces an f32 tensor of |shape|. */
  void set(const std::string &name, const std::vector<uint64_t> &shape, const std::vector<float> &values) {
    std::size_t n = 1;
    for (uint64_t d : shape) n *= static_cast<std::size_t>(d);
    if (n != values.size())
      throw Error(HM_STATUS_INVALID_ARGUMENT, "weights: tensor '" + name + "' has " + std::to_string(values.size()) +
                                                  " values for a shape of " + std::to_string(n));
    own();
    detail::check(hm_weights_set(owned_.get(), name.c_str(), HM_ABI_DTYPE_F32, static_cast<uint32_t>(shape.size()),
                                 shape.data(), values.data()),
                  "weights");
  }

  /* The C set (borrowed; NULL for the weights of a state that has none). */
  const hm_weights *c_weights() const { return get(); }

 private:
  Weights(hm_weights *w, const hm_cycle_state *s) : owned_(w), state_(s) {}
  static detail::WeightsPtr clone(const hm_weights *w) {
    hm_weights *c = nullptr;
    if (w) detail::check(hm_weights_clone(w, &c), "weights");
    else detail::check(hm_weights_create(&c), "weights");
    return detail::WeightsPtr(c);
  }
  const hm_weights *get() const { return owned_ ? owned_.get() : state_ ? hm_cycle_state_weights(state_) : nullptr; }
  void own() {
    if (!owned_) owned_ = clone(get());
    state_ = nullptr;
  }
  static Tensor view(const hm_tensor &t) {
    Tensor v;
    v.name = detail::str(t.name);
    v.dtype = t.dtype;
    v.shape.assign(t.shape, t.shape + t.rank);
    v.data = t.data;
    v.bytes = t.bytes;
    return v;
  }

  detail::WeightsPtr owned_;
  const hm_cycle_state *state_ = nullptr;
};

/* ===== Cycle state ===== */

/* The precision one connection ran at. */
struct LayerPrecision {
  std::string layer;     /* "pixels->hidden" */
  std::string precision; /* "f32", "bf16", "int8", "int4", "int3" */
  std::string kernel;    /* "gemm", ..., "int3_matmul" */
  std::string note;      /* why it differs from the policy; "" when as asked */
};

/* Where training stands: after fit, the final state (it owns its C state);
 * inside a callback, a view of the running one. Move-only. */
class CycleState {
 public:
  /* The learned weights: the final ones after fit; in a predicate, the
   * current ones (fetched from the device when first read). */
  Weights weights;

  /* Takes ownership of |s|. */
  explicit CycleState(hm_cycle_state *s) : weights(Weights::of_state(s)), owned_(s), s_(s) {}
  /* A view of |s| (borrowed) for a callback. */
  static CycleState view(const hm_cycle_state *s) { return CycleState(s, 0); }
  CycleState(CycleState &&) noexcept = default;
  CycleState &operator=(CycleState &&) noexcept = default;
  CycleState(const CycleState &) = delete;
  CycleState &operator=(const CycleState &) = delete;

  std::size_t step() const { return hm_cycle_state_step(s_); }
  std::size_t epoch() const { return hm_cycle_state_epoch(s_); }
  float loss() const { return hm_cycle_state_loss(s_); }
  float epoch_loss() const { return hm_cycle_state_epoch_loss(s_); }
  float grad_norm() const { return hm_cycle_state_grad_norm(s_); }
  float learning_rate() const { return hm_cycle_state_learning_rate(s_); }
  double elapsed() const { return hm_cycle_state_elapsed(s_); }
  double train_seconds() const { return hm_cycle_state_train_seconds(s_); }
  std::size_t samples() const { return hm_cycle_state_samples(s_); }
  float eval_loss() const { return hm_cycle_state_eval_loss(s_); }
  float eval_accuracy() const { return hm_cycle_state_eval_accuracy(s_); }
  hm_stop_reason stop() const { return hm_cycle_state_stop(s_); }
  std::string stop_reason() const { return detail::str(hm_cycle_state_stop_reason(s_)); }
  std::string backend() const { return detail::str(hm_cycle_state_backend(s_)); }
  std::size_t device_bytes() const { return hm_cycle_state_device_bytes(s_); }
  Weights optimizer_state() const {
    const hm_weights *w = hm_cycle_state_optimizer_state(s_);
    return w ? Weights::copy_of(w) : Weights();
  }
  std::vector<LayerPrecision> layers() const {
    std::vector<LayerPrecision> out;
    for (std::size_t i = 0; i < hm_cycle_state_layer_count(s_); i++) {
      const char *layer = nullptr, *precision = nullptr, *kernel = nullptr;
      detail::check(hm_cycle_state_layer_precision(s_, i, &layer, &precision, &kernel), "cycle state");
      out.push_back({detail::str(layer), detail::str(precision), detail::str(kernel),
                     detail::str(hm_cycle_state_layer_note(s_, i))});
    }
    return out;
  }

  const hm_cycle_state *c_state() const noexcept { return s_; }

 private:
  CycleState(const hm_cycle_state *s, int) : weights(Weights::of_state(s)), s_(s) {}
  detail::StatePtr owned_;
  const hm_cycle_state *s_ = nullptr;
};

/* ===== Fit options ===== */

/* seed/Training.md's FitOptions; the defaults are the C library's
 * (hm_fit_options_default; docs/training.md has the table). */
struct FitOptions {
  float learning_rate;
  Optimizer optimizer;
  float grad_clip;
  std::size_t early_stop_patience;
  float early_stop_delta;
  float weight_decay;
  std::size_t accumulate_steps;
  LrSchedule lr_schedule_fp;
  ProgressCallback progress;
  /* the loop */
  std::size_t batch_size;
  uint64_t seed;
  bool shuffle;
  /* optimizer hyper-parameters */
  float momentum, beta1, beta2, epsilon, rho;
  /* where it runs: a backend spec ("cpu", "cuda:1"; "" = the registry's
   * selection) and CPU threads (0 = default) */
  std::string backend;
  unsigned threads;
  std::size_t eval_batch_size;
  /* after every epoch (and its evaluation): return true to stop */
  std::function<bool(const CycleState &)> on_epoch;
  /* checkpoints (docs/training.md) */
  std::string checkpoint_path;
  std::size_t checkpoint_every;
  const CycleState *resume = nullptr;
  /* data parallel (docs/distributed.md): e.g. from hm_mpi_open; borrowed */
  const hm_collectives *collectives = nullptr;

  FitOptions() {
    hm_fit_options d = hm_fit_options_default();
    learning_rate = d.learning_rate;
    optimizer = static_cast<Optimizer>(d.optimizer);
    grad_clip = d.grad_clip;
    early_stop_patience = d.early_stop_patience;
    early_stop_delta = d.early_stop_delta;
    weight_decay = d.weight_decay;
    accumulate_steps = d.accumulate_steps;
    batch_size = d.batch_size;
    seed = d.seed;
    shuffle = d.shuffle != 0;
    momentum = d.momentum;
    beta1 = d.beta1;
    beta2 = d.beta2;
    epsilon = d.epsilon;
    rho = d.rho;
    threads = d.threads;
    eval_batch_size = d.eval_batch_size;
    checkpoint_every = d.checkpoint_every;
  }
};

/* ===== Data ===== */

/* A source of samples bound to a producer node. Copies share the producer
 * (a graph keeps the ones bound to it alive). */
class Producer {
 public:
  /* |values| holds rows x |width| floats (copied). */
  static Producer from_floats(const std::vector<float> &values, std::size_t width) {
    if (width == 0 || values.size() % width != 0)
      throw Error(HM_STATUS_INVALID_ARGUMENT, "producer: " + std::to_string(values.size()) +
                                                  " values are not whole rows of width " + std::to_string(width));
    hm_producer *p = nullptr;
    detail::check(hm_producer_from_floats(values.data(), values.size() / width, width, &p), "producer");
    return Producer(p);
  }
  /* Class indices in [0, num_classes) (copied). */
  static Producer from_labels(const std::vector<int32_t> &labels, std::size_t num_classes) {
    hm_producer *p = nullptr;
    detail::check(hm_producer_from_labels(labels.data(), labels.size(), num_classes, &p), "producer");
    return Producer(p);
  }
  /* An IDX file (MNIST layout, gzip'ed or raw). */
  static Producer open_idx(const std::string &path) {
    hm_producer *p = nullptr;
    detail::check(hm_producer_open_idx(path.c_str(), &p));
    return Producer(p);
  }
  /* A CSV file of numbers, one sample per line. */
  static Producer open_csv(const std::string &path) {
    hm_producer *p = nullptr;
    detail::check(hm_producer_open_csv(path.c_str(), &p));
    return Producer(p);
  }
  /* The first |n| samples of this one. */
  Producer limit(std::size_t n) const {
    hm_producer *p = nullptr;
    detail::check(hm_producer_limit(p_.get(), n, &p), "producer");
    Producer out(p);
    out.base_ = p_;
    return out;
  }
  hm_producer_info info() const {
    hm_producer_info i;
    detail::check(hm_producer_info_get(p_.get(), &i), "producer");
    return i;
  }
  std::size_t size() const { return info().count; }

  hm_producer *c_producer() const noexcept { return p_.get(); }

 private:
  explicit Producer(hm_producer *p) : p_(p, detail::ProducerDeleter()) {}
  std::shared_ptr<hm_producer> p_;
  std::shared_ptr<hm_producer> base_; /* what a limited producer reads */
};

/* What inference computed. */
struct InferenceResult {
  std::size_t samples = 0;
  float loss = 0.0f;     /* NaN without a loss tap and targets */
  float accuracy = 0.0f; /* NaN unless classification */
  std::string precision; /* "pixels->hidden int8/int8_matmul; ..." */
  std::string backend;
  std::size_t weight_bytes = 0, bias_bytes = 0, weight_count = 0;
  /* Every consumer node's output, row-major: outputs["out"].values holds
   * rows x width floats. */
  struct Output {
    std::size_t rows = 0, width = 0;
    std::vector<float> values;
  };
  std::map<std::string, Output> outputs;
};

/* One input of inference: floats (rows x the producer's width) or a
 * Producer. */
class Input {
 public:
  Input(std::vector<float> values) : values_(std::move(values)) {}  // NOLINT: implicit for map literals
  Input(Producer p) : producer_(std::make_shared<Producer>(std::move(p))) {}  // NOLINT
  Producer producer(std::size_t width) const {
    return producer_ ? *producer_ : Producer::from_floats(values_, width);
  }

 private:
  std::vector<float> values_;
  std::shared_ptr<Producer> producer_;
};

/* Inputs of inference by producer name. */
using Bindings = std::map<std::string, Input>;

/* ===== The graph ===== */

class HarmonicGraph {
 public:
  /* An empty graph for the builder methods. */
  explicit HarmonicGraph(const std::string &name = "graph") {
    hm_graph *g = nullptr;
    detail::check(hm_graph_create(name.c_str(), &g), "graph");
    g_.reset(g);
  }
  /* Takes ownership of |g|. */
  static HarmonicGraph adopt(hm_graph *g) { return HarmonicGraph(detail::GraphPtr(g)); }
  /* DSL text (docs/dsl.md); |filename| names it in messages. */
  static HarmonicGraph parse(const std::string &text, const std::string &filename = "<string>") {
    hm_graph *g = nullptr;
    detail::check(hm_graph_parse(text.data(), text.size(), filename.c_str(), &g));
    return adopt(g);
  }
  /* A .hmx DSL file, or a binary graph written by save_graph (told apart by
   * its first bytes). */
  static HarmonicGraph from_file(const std::string &path) {
    char magic[8] = {0};
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (!f) throw Error(HM_STATUS_IO_ERROR, path + ": " + std::strerror(errno));
    std::size_t n = std::fread(magic, 1, sizeof magic, f);
    std::fclose(f);
    hm_graph *g = nullptr;
    if (n == sizeof magic && std::memcmp(magic, "HMGRAPH1", 8) == 0) detail::check(hm_load_graph_file(path.c_str(), &g));
    else detail::check(hm_graph_load_dsl(path.c_str(), &g));
    return adopt(g);
  }

  HarmonicGraph(HarmonicGraph &&) noexcept = default;
  HarmonicGraph &operator=(HarmonicGraph &&) noexcept = default;
  HarmonicGraph(const HarmonicGraph &) = delete;
  HarmonicGraph &operator=(const HarmonicGraph &) = delete;

  /* ----- the builder (widths of 0: resolved later) ----- */
  HarmonicGraph &add_producer(const std::string &name, std::size_t width = 0) {
    detail::check(hm_graph_add_producer(g_.get(), name.c_str(), width));
    return *this;
  }
  HarmonicGraph &add_consumer(const std::string &name, std::size_t width = 0) {
    detail::check(hm_graph_add_consumer(g_.get(), name.c_str(), width));
    return *this;
  }
  HarmonicGraph &add_layer(const std::string &name, std::size_t width = 0) {
    detail::check(hm_graph_add_layer(g_.get(), name.c_str(), width));
    return *this;
  }
  /* A layer of width(ref) * num / den. */
  HarmonicGraph &add_layer(const std::string &name, int num, int den, const std::string &ref) {
    detail::check(hm_graph_add_layer_ratio(g_.get(), name.c_str(), num, den, ref.c_str()));
    return *this;
  }
  HarmonicGraph &connect(const std::string &from, const std::string &to, const std::string &activation = "id") {
    detail::check(hm_graph_connect(g_.get(), from.c_str(), to.c_str(), activation.c_str()));
    return *this;
  }
  HarmonicGraph &add_loss(const std::string &layer, const std::string &loss, const std::string &target) {
    detail::check(hm_graph_add_loss(g_.get(), layer.c_str(), loss.c_str(), target.c_str()));
    return *this;
  }

  /* ----- introspection ----- */
  struct Node {
    std::string name;
    hm_node_kind kind;
    std::size_t width; /* 0 while unresolved */
  };
  std::string name() const { return detail::str(hm_graph_name(g_.get())); }
  std::vector<Node> nodes() const {
    std::vector<Node> out;
    for (std::size_t i = 0; i < hm_graph_node_count(g_.get()); i++) {
      const char *name = nullptr;
      hm_node_kind kind;
      std::size_t width = 0;
      detail::check(hm_graph_node(g_.get(), i, &name, &kind, &width), "graph");
      out.push_back({detail::str(name), kind, width});
    }
    return out;
  }
  /* Resolves every width (fit and inference do it too). */
  void resolve() { detail::check(hm_graph_resolve(g_.get())); }
  std::size_t width(const std::string &node) {
    resolve();
    for (const Node &n : nodes())
      if (n.name == node) return n.width;
    throw Error(HM_STATUS_NOT_FOUND, "graph '" + name() + "' has no node '" + node + "'");
  }

  /* ----- data: the graph keeps what is bound to it alive ----- */
  HarmonicGraph &bind(const std::string &producer, const Producer &p) {
    detail::check(hm_graph_bind_producer(g_.get(), producer.c_str(), p.c_producer()));
    train_.insert_or_assign(producer, p);
    return *this;
  }
  /* Floats: rows x the producer's declared width. */
  HarmonicGraph &bind(const std::string &producer, const std::vector<float> &values) {
    return bind(producer, Producer::from_floats(values, declared_width(producer)));
  }
  /* Class indices for a target producer of width num_classes. */
  HarmonicGraph &bind(const std::string &producer, const std::vector<int32_t> &labels) {
    return bind(producer, Producer::from_labels(labels, declared_width(producer)));
  }
  HarmonicGraph &bind_eval(const std::string &producer, const Producer &p) {
    detail::check(hm_graph_bind_eval(g_.get(), producer.c_str(), p.c_producer()));
    eval_.insert_or_assign(producer, p);
    return *this;
  }
  HarmonicGraph &bind_eval(const std::string &producer, const std::vector<float> &values) {
    return bind_eval(producer, Producer::from_floats(values, declared_width(producer)));
  }
  HarmonicGraph &bind_eval(const std::string &producer, const std::vector<int32_t> &labels) {
    return bind_eval(producer, Producer::from_labels(labels, declared_width(producer)));
  }
  /* Inference output of a consumer node, rows at a time:
   * fn(values, rows, width). */
  HarmonicGraph &bind_consumer(const std::string &consumer,
                               std::function<void(const float *, std::size_t, std::size_t)> fn) {
    auto sink = std::make_shared<ConsumerSink>();
    sink->fn = std::move(fn);
    hm_consumer *c = nullptr;
    detail::check(hm_consumer_create(&ConsumerSink::vtable, sink.get(), &c), "consumer");
    sink->consumer.reset(c);
    hm_status st = hm_graph_bind_consumer(g_.get(), consumer.c_str(), c);
    detail::check(st);
    consumers_[consumer] = std::move(sink);
    return *this;
  }
  /* Appends every output row to |out| (which must outlive the graph's use). */
  HarmonicGraph &bind_consumer(const std::string &consumer, std::vector<float> &out) {
    std::vector<float> *target = &out;
    return bind_consumer(consumer, [target](const float *v, std::size_t rows, std::size_t width) {
      target->insert(target->end(), v, v + rows * width);
    });
  }

  /* ----- weights ----- */
  /* A copy of the current parameters (empty before the first fit or init). */
  Weights weights() const {
    const hm_weights *w = hm_graph_weights(g_.get());
    return w ? Weights::copy_of(w) : Weights();
  }
  void set_weights(const Weights &w) { detail::check(hm_graph_set_weights(g_.get(), w.c_weights())); }
  void init_weights(uint64_t seed) { detail::check(hm_graph_init_weights(g_.get(), seed)); }

  /* ----- training (seed/Training.md) ----- */
  CycleState fit(std::size_t epochs, const PrecisionPolicy &policy = make_hardware_policy(),
                 const FitOptions &opt = FitOptions()) {
    return run(opt, [&](const hm_fit_options &o, hm_cycle_state **out) {
      return hm_graph_fit(g_.get(), epochs, &policy.c_policy(), &o, out);
    });
  }
  /* Until |seconds| of wall time have passed (at least one update). */
  CycleState fit_for(double seconds, const PrecisionPolicy &policy = make_hardware_policy(),
                     const FitOptions &opt = FitOptions()) {
    return run(opt, [&](const hm_fit_options &o, hm_cycle_state **out) {
      return hm_graph_fit_for(g_.get(), seconds, &policy.c_policy(), &o, out);
    });
  }
  /* Until |done(state)| returns true; it runs after every update. */
  template <typename Predicate>
  CycleState fit_until(Predicate &&done, const PrecisionPolicy &policy = make_hardware_policy(),
                       const FitOptions &opt = FitOptions()) {
    static_assert(std::is_invocable_r_v<bool, Predicate &, const CycleState &>,
                  "fit_until needs a callable bool(const harmonics::CycleState&)");
    struct Until {
      Predicate &done;
      detail::PendingError *pending;
      static int call(const hm_cycle_state *s, void *user) {
        Until *u = static_cast<Until *>(user);
        if (u->pending->error) return 1;
        try {
          CycleState view = CycleState::view(s);
          return u->done(static_cast<const CycleState &>(view)) ? 1 : 0;
        } catch (...) {
          u->pending->capture();
          return 1;
        }
      }
    };
    return run(opt, [&](const hm_fit_options &o, hm_cycle_state **out, detail::PendingError &pending) {
      Until u{done, &pending};
      return hm_graph_fit_until(g_.get(), &Until::call, &u, &policy.c_policy(), &o, out);
    });
  }

  /* Runs the graph forward. With |inputs|, over those (by producer name;
   * the other producers keep their bindings, except loss targets, which are
   * left out unless given: loss and accuracy are then NaN); with none, over the bound
   * evaluation data when there is any, else the training data. Every
   * consumer node's output comes back in InferenceResult::outputs (and goes
   * to a consumer bound with bind_consumer as well). */
  InferenceResult inference(const Bindings &inputs = {}, const PrecisionPolicy &policy = make_hardware_policy(),
                            const FitOptions &opt = FitOptions()) {
    int use_eval = inputs.empty() && !eval_.empty();
    /* Temporary bindings, undone however this ends. */
    struct Restore {
      HarmonicGraph *g;
      std::vector<std::string> producers, consumers;
      ~Restore() {
        for (const std::string &p : producers) {
          auto it = g->train_.find(p);
          detail::ignore(hm_graph_bind_producer(g->g_.get(), p.c_str(),
                                                it != g->train_.end() ? it->second.c_producer() : nullptr));
        }
        for (const std::string &c : consumers) {
          auto it = g->consumers_.find(c);
          detail::ignore(hm_graph_bind_consumer(g->g_.get(), c.c_str(),
                                                it != g->consumers_.end() ? it->second->consumer.get() : nullptr));
        }
      }
    } restore{this, {}, {}};
    std::vector<Producer> temporaries;
    for (const auto &in : inputs) {
      temporaries.push_back(in.second.producer(declared_width(in.first)));
      detail::check(hm_graph_bind_producer(g_.get(), in.first.c_str(), temporaries.back().c_producer()), "inference");
      restore.producers.push_back(in.first);
    }
    /* New inputs come without the training targets: a loss target not
     * among them is left out of this call (loss and accuracy are NaN). */
    for (std::size_t i = 0; !inputs.empty() && i < hm_graph_loss_count(g_.get()); i++) {
      const char *layer = nullptr, *loss = nullptr, *target = nullptr;
      detail::check(hm_graph_loss(g_.get(), i, &layer, &loss, &target), "inference");
      if (!target || inputs.count(target)) continue;
      detail::check(hm_graph_bind_producer(g_.get(), target, nullptr), "inference");
      restore.producers.push_back(target);
    }
    /* Each consumer node collects into the result (and forwards to the
     * user's consumer, if any). */
    InferenceResult result;
    std::vector<std::shared_ptr<ConsumerSink>> collectors;
    for (const Node &n : nodes()) {
      if (n.kind != HM_NODE_CONSUMER) continue;
      auto sink = std::make_shared<ConsumerSink>();
      InferenceResult::Output *slot = &result.outputs[n.name];
      std::shared_ptr<ConsumerSink> user;
      auto it = consumers_.find(n.name);
      if (it != consumers_.end()) user = it->second;
      sink->fn = [slot, user](const float *v, std::size_t rows, std::size_t width) {
        slot->values.insert(slot->values.end(), v, v + rows * width);
        slot->rows += rows;
        slot->width = width;
        if (user) user->fn(v, rows, width);
      };
      hm_consumer *c = nullptr;
      detail::check(hm_consumer_create(&ConsumerSink::vtable, sink.get(), &c), "consumer");
      sink->consumer.reset(c);
      detail::check(hm_graph_bind_consumer(g_.get(), n.name.c_str(), c), "inference");
      restore.consumers.push_back(n.name);
      collectors.push_back(std::move(sink));
    }
    hm_fit_options o = c_options(opt);
    hm_eval_result r;
    hm_status st = hm_graph_inference(g_.get(), &policy.c_policy(), &o, use_eval, &r);
    for (const auto &c : collectors) c->pending.rethrow();
    detail::check(st, "inference");
    result.samples = r.samples;
    result.loss = r.loss;
    result.accuracy = r.accuracy;
    result.precision = r.precision;
    result.backend = r.backend;
    result.weight_bytes = r.weight_bytes;
    result.bias_bytes = r.bias_bytes;
    result.weight_count = r.weight_count;
    return result;
  }

  hm_graph *c_graph() const noexcept { return g_.get(); }

 private:
  friend class Trainer;
  explicit HarmonicGraph(detail::GraphPtr g) : g_(std::move(g)) {}

  /* A consumer whose output goes to a C++ callable; an exception stops the
   * inference and is rethrown after it. */
  struct ConsumerSink {
    std::function<void(const float *, std::size_t, std::size_t)> fn;
    detail::PendingError pending;
    std::unique_ptr<hm_consumer, detail::ConsumerDeleter> consumer;
    static hm_status push(void *self, const float *values, std::size_t rows, std::size_t width) {
      ConsumerSink *s = static_cast<ConsumerSink *>(self);
      if (s->pending.error) return HM_STATUS_CANCELLED;
      try {
        s->fn(values, rows, width);
        return HM_OK;
      } catch (...) {
        s->pending.capture();
        return HM_STATUS_CANCELLED;
      }
    }
    static constexpr hm_consumer_vtable vtable{sizeof(hm_consumer_vtable), &ConsumerSink::push, nullptr};
  };

  std::size_t declared_width(const std::string &producer) {
    std::size_t w = 0;
    for (const Node &n : nodes())
      if (n.name == producer) w = n.width;
    if (w == 0) w = width(producer);
    return w;
  }

  /* The C options of |opt|; callables are left to run(). */
  static hm_fit_options c_options(const FitOptions &opt) {
    hm_fit_options o = hm_fit_options_default();
    o.learning_rate = opt.learning_rate;
    o.optimizer = static_cast<hm_optimizer>(opt.optimizer);
    o.grad_clip = opt.grad_clip;
    o.early_stop_patience = opt.early_stop_patience;
    o.early_stop_delta = opt.early_stop_delta;
    o.weight_decay = opt.weight_decay;
    o.accumulate_steps = opt.accumulate_steps;
    o.batch_size = opt.batch_size;
    o.seed = opt.seed;
    o.shuffle = opt.shuffle ? 1 : 0;
    o.momentum = opt.momentum;
    o.beta1 = opt.beta1;
    o.beta2 = opt.beta2;
    o.epsilon = opt.epsilon;
    o.rho = opt.rho;
    o.backend = opt.backend.empty() ? nullptr : opt.backend.c_str();
    o.threads = opt.threads;
    o.eval_batch_size = opt.eval_batch_size;
    o.checkpoint_path = opt.checkpoint_path.empty() ? nullptr : opt.checkpoint_path.c_str();
    o.checkpoint_every = opt.checkpoint_every;
    o.resume = opt.resume ? opt.resume->c_state() : nullptr;
    o.collectives = opt.collectives;
    if (opt.lr_schedule_fp.is_builtin()) o.lr_schedule_fp = opt.lr_schedule_fp.builtin();
    return o;
  }

  /* The C callbacks of one fit: each forwards to the C++ callable and, if it
   * throws, keeps the exception and has the fit cancelled. */
  struct Callbacks {
    const FitOptions *opt;
    detail::PendingError pending;
    float fallback_lr;

    static void progress(void *user, std::size_t step, float norm, float loss, float lr) {
      Callbacks *c = static_cast<Callbacks *>(user);
      if (c->pending.error) return;
      try {
        c->opt->progress(step, norm, loss, lr);
      } catch (...) {
        c->pending.capture();
      }
    }
    static float schedule(std::size_t step, const hm_lr_schedule *self) {
      Callbacks *c = static_cast<Callbacks *>(self->user);
      if (c->pending.error) return c->fallback_lr;
      try {
        return c->opt->lr_schedule_fp.callable()(step);
      } catch (...) {
        c->pending.capture();
        return c->fallback_lr; /* this update still runs; cancel stops after it */
      }
    }
    static int on_epoch(void *user, const hm_cycle_state *s) {
      Callbacks *c = static_cast<Callbacks *>(user);
      if (c->pending.error) return 1;
      try {
        CycleState view = CycleState::view(s);
        return c->opt->on_epoch(static_cast<const CycleState &>(view)) ? 1 : 0;
      } catch (...) {
        c->pending.capture();
        return 1;
      }
    }
    static int cancel(void *user) { return static_cast<Callbacks *>(user)->pending.error ? 1 : 0; }
  };

  template <typename Call>
  CycleState run(const FitOptions &opt, Call &&call) {
    Callbacks cb{&opt, {}, opt.learning_rate};
    hm_fit_options o = c_options(opt);
    if (opt.progress) o.progress = hm_progress_sink{&Callbacks::progress, &cb};
    if (opt.lr_schedule_fp && !opt.lr_schedule_fp.is_builtin()) {
      o.lr_schedule_fp = hm_lr_schedule{};
      o.lr_schedule_fp.fn = &Callbacks::schedule;
      o.lr_schedule_fp.user = &cb;
    }
    if (opt.on_epoch) {
      o.on_epoch = &Callbacks::on_epoch;
      o.on_epoch_user = &cb;
    }
    o.cancel = &Callbacks::cancel;
    o.cancel_user = &cb;
    hm_cycle_state *out = nullptr;
    hm_status st;
    if constexpr (std::is_invocable_v<Call &, const hm_fit_options &, hm_cycle_state **, detail::PendingError &>)
      st = call(o, &out, cb.pending);
    else
      st = call(o, &out);
    detail::StatePtr owned(out); /* freed if anything below throws */
    cb.pending.rethrow();
    detail::check(st, "fit");
    return CycleState(owned.release());
  }

  detail::GraphPtr g_;
  std::map<std::string, Producer> train_, eval_;
  std::map<std::string, std::shared_ptr<ConsumerSink>> consumers_;
};

/* ===== A loop of your own (<harmonics/trainer.h>) ===== */

/* fit's steps one at a time: a loop of compute_gradients + apply over
 * epoch_order gives fit's weights bit for bit. The options' schedule (a
 * built-in or a callable) is used; progress, on_epoch and checkpoints are
 * the loop's business. The graph must outlive the trainer, which writes its
 * weights back into it when it goes. Move-only. */
class Trainer {
 public:
  Trainer(HarmonicGraph &g, const PrecisionPolicy &policy = make_hardware_policy(), const FitOptions &opt = FitOptions())
      : opt_(std::make_unique<FitOptions>(opt)), cb_(std::make_unique<HarmonicGraph::Callbacks>()) {
    cb_->opt = opt_.get();
    cb_->fallback_lr = opt_->learning_rate;
    hm_fit_options o = HarmonicGraph::c_options(*opt_);
    if (opt_->lr_schedule_fp && !opt_->lr_schedule_fp.is_builtin()) {
      o.lr_schedule_fp = hm_lr_schedule{};
      o.lr_schedule_fp.fn = &HarmonicGraph::Callbacks::schedule;
      o.lr_schedule_fp.user = cb_.get();
    }
    hm_trainer *t = nullptr;
    detail::check(hm_trainer_open(g.c_graph(), &policy.c_policy(), &o, &t), "trainer");
    t_.reset(t);
  }

  std::size_t sample_count() const { return hm_trainer_sample_count(t_.get()); }
  std::size_t step() const { return hm_trainer_step(t_.get()); }
  std::vector<int32_t> epoch_order(std::size_t epoch) const {
    std::vector<int32_t> order(sample_count());
    detail::check(hm_trainer_epoch_order(t_.get(), epoch, order.data(), order.size()), "trainer");
    return order;
  }
  /* The gradients of samples [first, first + n) of |order| are added. */
  float compute_gradients(const std::vector<int32_t> &order, std::size_t first, std::size_t n) {
    if (first > order.size() || n > order.size() - first)
      throw Error(HM_STATUS_OUT_OF_RANGE, "trainer: samples " + std::to_string(first) + " + " + std::to_string(n) +
                                              " are beyond the " + std::to_string(order.size()) + " given");
    float loss = 0;
    hm_status st = hm_trainer_compute_gradients(t_.get(), order.data() + first, n, &loss);
    cb_->pending.rethrow(); /* a schedule that threw */
    detail::check(st, "trainer");
    return loss;
  }
  float compute_gradients(const std::vector<int32_t> &indices) { return compute_gradients(indices, 0, indices.size()); }
  Weights gradients() const {
    hm_weights *w = nullptr;
    detail::check(hm_trainer_gradients(t_.get(), &w), "trainer");
    return Weights::adopt(w);
  }
  void set_gradients(const Weights &g) { detail::check(hm_trainer_set_gradients(t_.get(), g.c_weights()), "trainer"); }
  void scale_gradients(float factor) { detail::check(hm_trainer_scale_gradients(t_.get(), factor), "trainer"); }
  /* The next batch starts a new sum (the gradients went elsewhere). */
  void clear_gradients() noexcept { hm_trainer_clear_gradients(t_.get()); }
  /* One update; returns the gradient norm before clipping. */
  float apply() {
    float norm = 0;
    hm_status st = hm_trainer_apply(t_.get(), &norm);
    cb_->pending.rethrow(); /* a schedule that threw */
    detail::check(st, "trainer");
    return norm;
  }
  Weights weights() const {
    hm_weights *w = nullptr;
    detail::check(hm_trainer_weights(t_.get(), &w), "trainer");
    return Weights::adopt(w);
  }
  void set_weights(const Weights &w) { detail::check(hm_trainer_set_weights(t_.get(), w.c_weights()), "trainer"); }
  /* A checkpoint of the weights, the optimizer state and the update count
   * (fit's .hck); FitOptions::resume with it continues this trainer. */
  void save_checkpoint(const std::string &path) {
    detail::check(hm_trainer_save_checkpoint(t_.get(), path.c_str()), "trainer");
  }

  hm_trainer *c_trainer() const noexcept { return t_.get(); }

 private:
  struct Closer {
    void operator()(hm_trainer *t) const noexcept { hm_trainer_close(t); }
  };
  std::unique_ptr<FitOptions> opt_;                 /* the schedule the C trainer calls back */
  std::unique_ptr<HarmonicGraph::Callbacks> cb_;    /* stable addresses for the callbacks */
  std::unique_ptr<hm_trainer, Closer> t_;           /* closed first */
};

}  // namespace harmonics

#endif /* HARMONICS_HPP_ */
