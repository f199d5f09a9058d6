// The C++ layer (harmonics.hpp, serialization.hpp) over the C API: errors
// carry the status and hm_last_error(), options map field for field (a C++
// fit equals the C fit bit for bit), callables run as schedules, progress,
// predicates, epoch callbacks and consumers, an exception thrown in any of
// them stops the work and comes out of the call with nothing leaked (the
// sanitizer build checks that), weights are values, streams round-trip.
#include <cmath>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include <harmonics/harmonics.hpp>
#include <harmonics/serialization.hpp>

#include "hm_test.h"

using harmonics::CycleState;
using harmonics::FitOptions;
using harmonics::HarmonicGraph;
using harmonics::Producer;

// y = x0 + 2 x1 over eight samples, learnt by one linear layer.
static const char linear_text[] = "producer x {2}; producer y {1}; layer l {1}; cycle { x -> l; l <-(mse)- y; }";
static const std::vector<float> xs = {0, 1, 1, 0, 1, 1, 2, 1, 1, 2, 0, 2, 2, 0, 2, 2};
static const std::vector<float> ys = {2, 1, 3, 4, 5, 4, 2, 6};

static HarmonicGraph linear_graph() {
  HarmonicGraph g = HarmonicGraph::parse(linear_text, "linear.hmx");
  g.bind("x", xs).bind("y", ys);
  return g;
}

static FitOptions small_options() {
  FitOptions opt;
  opt.batch_size = 4;
  opt.threads = 1;
  return opt;
}

// hm_status of the harmonics::Error |fn| throws (HM_OK when none).
template <typename F>
static hm_status status_thrown(F &&fn, std::string *message = nullptr) {
  try {
    fn();
  } catch (const harmonics::Error &e) {
    if (message) *message = e.what();
    return e.status();
  }
  return HM_OK;
}

static void errors_carry_the_status_and_the_message() {
  std::string msg;
  HM_CHECK_EQ(status_thrown([] { HarmonicGraph::parse("layer {", "bad.hmx"); }, &msg), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "bad.hmx:1:");
  HM_CHECK_EQ(status_thrown([] { harmonics::PrecisionPolicy::parse("bits:5x"); }, &msg), HM_STATUS_PARSE_ERROR);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "policy");
  HarmonicGraph g = linear_graph();
  FitOptions opt = small_options();
  opt.backend = "no_such_backend";
  hm_status s = status_thrown([&] { g.fit(1, harmonics::make_hardware_policy(), opt); }, &msg);
  HM_CHECK(s == HM_STATUS_NOT_FOUND || s == HM_STATUS_UNAVAILABLE);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "fit: ");
  HM_CHECK_STR_CONTAINS(msg.c_str(), "no_such_backend");
  // An option out of range is the C library's message, named.
  opt = small_options();
  opt.batch_size = 0;
  HM_CHECK_EQ(status_thrown([&] { g.fit(1, harmonics::make_hardware_policy(), opt); }, &msg),
              HM_STATUS_INVALID_ARGUMENT);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "batch_size");
  HM_CHECK_EQ(status_thrown([] { Producer::from_floats({1, 2, 3}, 2); }, &msg), HM_STATUS_INVALID_ARGUMENT);
}

// The same fit through C and through C++: identical weights, bit for bit.
static void fit_equals_the_c_fit_with_the_same_options() {
  FitOptions opt = small_options();
  opt.optimizer = harmonics::Optimizer::AdamW;
  opt.learning_rate = 0.05f;
  opt.weight_decay = 0.01f;
  opt.grad_clip = 0.5f;
  opt.accumulate_steps = 2;
  opt.seed = 9;
  opt.lr_schedule_fp = harmonics::ExponentialDecaySchedule{0.05f, 0.5f, 3};
  HarmonicGraph g = linear_graph();
  CycleState cpp = g.fit(6, harmonics::make_hardware_policy(), opt);

  hm_graph *cg = nullptr;
  hm_producer *px = nullptr, *py = nullptr;
  HM_CHECK_OK(hm_graph_parse(linear_text, std::strlen(linear_text), "linear.hmx", &cg));
  HM_CHECK_OK(hm_producer_from_floats(xs.data(), 8, 2, &px));
  HM_CHECK_OK(hm_producer_from_floats(ys.data(), 8, 1, &py));
  HM_CHECK_OK(hm_graph_bind_producer(cg, "x", px));
  HM_CHECK_OK(hm_graph_bind_producer(cg, "y", py));
  hm_fit_options o = hm_fit_options_default();
  o.batch_size = 4;
  o.threads = 1;
  o.optimizer = HM_OPTIMIZER_ADAMW;
  o.learning_rate = 0.05f;
  o.weight_decay = 0.01f;
  o.grad_clip = 0.5f;
  o.accumulate_steps = 2;
  o.seed = 9;
  o.lr_schedule_fp = hm_exponential_decay_schedule(0.05f, 0.5f, 3, 0.0f);
  hm_policy p = hm_make_hardware_policy();
  hm_cycle_state *cs = nullptr;
  HM_CHECK_OK(hm_graph_fit(cg, 6, &p, &o, &cs));
  HM_CHECK_EQ(cpp.step(), hm_cycle_state_step(cs));
  HM_CHECK(cpp.learning_rate() == hm_cycle_state_learning_rate(cs));
  hm_tensor w;
  HM_CHECK_OK(hm_weights_find(hm_cycle_state_weights(cs), "x->l.weight", &w));
  std::vector<float> c_weight(static_cast<float *>(w.data), static_cast<float *>(w.data) + 2);
  HM_CHECK(cpp.weights.values("x->l.weight") == c_weight);
  HM_CHECK(g.weights().values("x->l.weight") == c_weight);
  hm_cycle_state_free(cs);
  hm_graph_free(cg);
  hm_producer_free(px);
  hm_producer_free(py);
}

static void callables_run_as_schedule_progress_predicate_and_epoch_callback() {
  HarmonicGraph g = linear_graph();
  FitOptions opt = small_options();
  std::vector<std::size_t> steps;
  std::vector<float> rates;
  opt.lr_schedule_fp = [](std::size_t step) { return 0.01f / static_cast<float>(step + 1); };
  opt.progress = [&](std::size_t step, float, float, float lr) {
    steps.push_back(step);
    rates.push_back(lr);
  };
  std::size_t epochs_seen = 0;
  opt.on_epoch = [&](const CycleState &s) {
    epochs_seen = s.epoch();
    return false;
  };
  std::size_t predicate_calls = 0;
  CycleState st = g.fit_until(
      [&](const CycleState &s) {
        predicate_calls++;
        return s.step() == 5 && s.weights.contains("x->l.weight");
      },
      harmonics::make_hardware_policy(), opt);
  HM_CHECK_EQ(st.step(), 5);
  HM_CHECK(st.stop_reason() == "predicate");
  HM_CHECK_EQ(predicate_calls, 5);
  HM_CHECK_EQ(epochs_seen, 2); // two batches an epoch: epochs end after updates 2 and 4
  HM_CHECK_EQ(steps.size(), 5);
  for (std::size_t i = 0; i < steps.size(); i++) {
    HM_CHECK_EQ(steps[i], i + 1);
    HM_CHECK_NEAR(rates[i], 0.01 / static_cast<double>(i + 1), 1e-9);
  }
  // The built-in schedule is callable too, with the C formula.
  harmonics::ExponentialDecaySchedule decay{0.001f, 0.9f, 10};
  HM_CHECK_NEAR(decay(25), 0.001 * 0.81, 1e-9);
}

struct Boom : std::runtime_error {
  Boom() : std::runtime_error("boom") {}
};

// Runs |fit| expecting Boom out of it; the graph must then train again.
template <typename F>
static void expect_boom(const char *what, HarmonicGraph &g, F &&fit) {
  bool caught = false;
  try {
    fit();
  } catch (const Boom &) {
    caught = true;
  }
  HM_CHECK_MSG(caught, "%s: the callback's exception did not come out of the call", what);
  CycleState again = g.fit(1, harmonics::make_hardware_policy(), small_options());
  HM_CHECK_EQ(again.step(), 2);
}

static void an_exception_in_any_callback_stops_the_fit_and_comes_out() {
  HarmonicGraph g = linear_graph();
  std::size_t progress_calls = 0;
  expect_boom("progress", g, [&] {
    FitOptions opt = small_options();
    opt.progress = [&](std::size_t step, float, float, float) {
      progress_calls++;
      if (step == 3) throw Boom();
    };
    g.fit(100, harmonics::make_hardware_policy(), opt);
  });
  HM_CHECK_EQ(progress_calls, 3); // stopped after the update that threw
  expect_boom("schedule", g, [&] {
    FitOptions opt = small_options();
    opt.lr_schedule_fp = [](std::size_t step) -> float {
      if (step == 2) throw Boom();
      return 0.01f;
    };
    g.fit(100, harmonics::make_hardware_policy(), opt);
  });
  expect_boom("predicate", g, [&] {
    g.fit_until([](const CycleState &s) -> bool {
      if (s.step() == 4) throw Boom();
      return false;
    });
  });
  expect_boom("on_epoch", g, [&] {
    FitOptions opt = small_options();
    opt.on_epoch = [](const CycleState &) -> bool { throw Boom(); };
    g.fit(100, harmonics::make_hardware_policy(), opt);
  });
  expect_boom("fit_for's progress", g, [&] {
    FitOptions opt = small_options();
    opt.progress = [](std::size_t, float, float, float) { throw Boom(); };
    g.fit_for(30.0, harmonics::make_hardware_policy(), opt);
  });
}

static void inference_takes_inputs_and_returns_every_consumer() {
  HarmonicGraph g = HarmonicGraph::parse("producer x {2}; consumer out; layer l {1}; cycle { x -> l -> out; }");
  harmonics::Weights w;
  w.set("x->l.weight", {1, 2}, {2, 3});
  w.set("x->l.bias", {1}, {1});
  g.set_weights(w);
  auto r = g.inference({{"x", std::vector<float>{1, 1, 0, 2}}});
  HM_CHECK_EQ(r.samples, 2);
  HM_CHECK_EQ(r.outputs.count("out"), 1);
  HM_CHECK_EQ(r.outputs["out"].rows, 2);
  HM_CHECK_EQ(r.outputs["out"].width, 1);
  HM_CHECK(r.outputs["out"].values == std::vector<float>({6, 7}));
  // A bound consumer receives the rows too; the bound data serves an empty call.
  std::vector<float> seen;
  g.bind("x", std::vector<float>{1, 0});
  g.bind_consumer("out", seen);
  auto bound = g.inference({}, harmonics::make_hardware_policy());
  HM_CHECK(bound.outputs["out"].values == std::vector<float>({3}));
  HM_CHECK(seen == std::vector<float>({3}));
  // The temporary inputs of the first call did not replace the binding.
  HM_CHECK_EQ(bound.samples, 1);
  // A consumer that throws: the exception comes out of inference.
  g.bind_consumer("out", [](const float *, std::size_t, std::size_t) { throw Boom(); });
  bool caught = false;
  try {
    g.inference();
  } catch (const Boom &) {
    caught = true;
  }
  HM_CHECK(caught);
}

static void weights_are_values_and_streams_round_trip() {
  harmonics::Weights a;
  a.set("t", {2, 2}, {1, 2, 3, 4});
  harmonics::Weights b = a;
  b.set("t", {2, 2}, {5, 6, 7, 8});
  HM_CHECK(a.values("t") == std::vector<float>({1, 2, 3, 4}));
  HM_CHECK(b.values("t") == std::vector<float>({5, 6, 7, 8}));
  HM_CHECK(a.find("t").shape == std::vector<uint64_t>({2, 2}));
  HM_CHECK_EQ(status_thrown([&] { a.find("missing"); }), HM_STATUS_NOT_FOUND);
  HM_CHECK_EQ(status_thrown([&] { a.set("u", {3}, {1, 2}); }), HM_STATUS_INVALID_ARGUMENT);

  std::stringstream ws;
  save_weights(b, ws);
  harmonics::Weights back = harmonics::load_weights(ws);
  HM_CHECK(back.values("t") == b.values("t"));

  HarmonicGraph g = linear_graph();
  std::stringstream gs;
  save_graph(g, gs);
  HarmonicGraph loaded = harmonics::load_graph(gs);
  HM_CHECK_EQ(loaded.nodes().size(), 3);
  HM_CHECK(loaded.nodes()[2].name == "l");

  std::stringstream empty, garbage("not a graph at all, but long enough to have a header");
  std::string msg;
  HM_CHECK_EQ(status_thrown([&] { harmonics::load_graph(empty); }, &msg), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "empty");
  HM_CHECK_EQ(status_thrown([&] { harmonics::load_weights(garbage); }, &msg), HM_STATUS_DATA_LOSS);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "load_weights: ");
}

static void the_builder_makes_the_dsl_graph() {
  HarmonicGraph b("built");
  b.add_producer("x", 2).add_producer("y", 1).add_layer("h", 4).add_layer("l").connect("x", "h", "relu").connect("h", "l");
  b.add_loss("l", "mse", "y");
  b.resolve();
  auto nodes = b.nodes();
  HM_CHECK_EQ(nodes.size(), 4);
  HM_CHECK(b.name() == "built");
  HM_CHECK_EQ(b.width("l"), 1); // from the loss target
  b.bind("x", xs).bind("y", ys);
  CycleState s = b.fit(2, harmonics::make_max_bits_policy(8), small_options());
  HM_CHECK_EQ(s.step(), 4);
  auto layers = s.layers();
  HM_CHECK_EQ(layers.size(), 2);
  HM_CHECK(layers[0].layer == "x->h" && layers[0].precision == "int8");
}

// A loop of your own: the Trainer's steps give fit's weights bit for bit,
// with a callable schedule and accumulation written out.
static void a_trainer_loop_gives_fits_weights() {
  FitOptions opt = small_options();
  opt.optimizer = harmonics::Optimizer::Adam;
  opt.accumulate_steps = 2;
  opt.lr_schedule_fp = [](std::size_t step) { return 0.02f / static_cast<float>(1 + step); };
  HarmonicGraph a = linear_graph(), b = linear_graph();
  a.fit(3, harmonics::make_hardware_policy(), opt);
  {
    harmonics::Trainer t(b, harmonics::make_hardware_policy(), opt);
    HM_CHECK_EQ(t.sample_count(), 8);
    for (std::size_t epoch = 0; epoch < 3; epoch++) {
      std::vector<int32_t> order = t.epoch_order(epoch);
      t.compute_gradients(order, 0, 4);
      t.compute_gradients(order, 4, 4);
      HM_CHECK(t.apply() > 0.0f);
    }
    HM_CHECK_EQ(t.step(), 3);
    HM_CHECK(t.weights().values("x->l.weight") == a.weights().values("x->l.weight"));
  }
  HM_CHECK(b.weights().values("x->l.weight") == a.weights().values("x->l.weight"));
  HM_CHECK(b.weights().values("x->l.bias") == a.weights().values("x->l.bias"));
}

static void a_trainer_reports_misuse_and_a_throwing_schedule() {
  HarmonicGraph g = linear_graph();
  FitOptions opt = small_options();
  opt.lr_schedule_fp = [](std::size_t) -> float { throw Boom(); };
  harmonics::Trainer t(g, harmonics::make_hardware_policy(), opt);
  std::string msg;
  HM_CHECK_EQ(status_thrown([&] { t.apply(); }, &msg), HM_STATUS_FAILED_PRECONDITION);
  HM_CHECK_STR_CONTAINS(msg.c_str(), "trainer: ");
  HM_CHECK_EQ(status_thrown([&] { t.gradients(); }), HM_STATUS_FAILED_PRECONDITION);
  std::vector<int32_t> idx = {0, 1};
  HM_CHECK_EQ(status_thrown([&] { t.compute_gradients(idx, 1, 2); }), HM_STATUS_OUT_OF_RANGE);
  bool caught = false;
  try {
    t.compute_gradients(idx); /* the first call of the schedule throws */
  } catch (const Boom &) {
    caught = true;
  }
  HM_CHECK(caught);
}

static const hm_test_case cases[] = {
    HM_TEST_CASE(errors_carry_the_status_and_the_message),
    HM_TEST_CASE(fit_equals_the_c_fit_with_the_same_options),
    HM_TEST_CASE(callables_run_as_schedule_progress_predicate_and_epoch_callback),
    HM_TEST_CASE(an_exception_in_any_callback_stops_the_fit_and_comes_out),
    HM_TEST_CASE(inference_takes_inputs_and_returns_every_consumer),
    HM_TEST_CASE(weights_are_values_and_streams_round_trip),
    HM_TEST_CASE(the_builder_makes_the_dsl_graph),
    HM_TEST_CASE(a_trainer_loop_gives_fits_weights),
    HM_TEST_CASE(a_trainer_reports_misuse_and_a_throwing_schedule),
};

HM_TEST_MAIN(cases)
