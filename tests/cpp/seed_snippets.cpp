// Every ```cpp block of seed/Training.md, verbatim (tests/cpp/seed/*.inc,
// compared byte for byte with the document by check_seed_copies.sh), each
// compiled inside one function here. A function gives its block only what
// the document assumes around it: a graph `g` (examples/fashion_mnist.hmx
// with the first 2000 Fashion-MNIST training images bound, and 1000 test
// images for evaluation), an `opt` or a `state` where the block uses one
// without declaring it, and some_condition(). After the block it checks what
// the block did.
//
//   seed_snippets NAME      NAME: fit advanced_options schedule fit_until
//                           fixed_precision serialization visualizer
// Exit 0 when the checks pass, 1 when one fails, 77 without Fashion-MNIST.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <harmonics/harmonics.hpp>
#include <harmonics/serialization.hpp>
#include <harmonics/training_visualizer.hpp>

static int failures = 0;

#define CHECK(cond)                                                        \
  do {                                                                     \
    if (!(cond)) {                                                         \
      std::fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
      failures++;                                                          \
    }                                                                      \
  } while (0)

static std::string data_dir() {
  const char *dir = std::getenv("HARMONICS_FASHION_MNIST_DIR");
  return dir && *dir ? dir : "/usr/share/datasets/fashion-mnist";
}

// g: the Fashion-MNIST classifier with a subset of the data bound.
static harmonics::HarmonicGraph fashion_mnist() {
  std::string dir = data_dir();
  if (!std::ifstream(dir + "/train-images-idx3-ubyte.gz")) {
    std::fprintf(stderr, "skipped: no Fashion-MNIST in %s (apt-get install dataset-fashion-mnist)\n", dir.c_str());
    std::exit(77);
  }
  auto g = harmonics::HarmonicGraph::from_file(HM_SOURCE_DIR "/examples/fashion_mnist.hmx");
  using harmonics::Producer;
  g.bind("pixels", Producer::open_idx(dir + "/train-images-idx3-ubyte.gz").limit(2000));
  g.bind("label", Producer::open_idx(dir + "/train-labels-idx1-ubyte.gz").limit(2000));
  g.bind_eval("pixels", Producer::open_idx(dir + "/t10k-images-idx3-ubyte.gz").limit(1000));
  g.bind_eval("label", Producer::open_idx(dir + "/t10k-labels-idx1-ubyte.gz").limit(1000));
  return g;
}

// The fit_until block's condition: true on its 40th call.
static bool some_condition() {
  static int calls = 0;
  return ++calls == 40;
}

static void fit() {
  auto g = fashion_mnist();
#include "seed/1_fit.inc"
  // 5 epochs of 63 batches (2000 samples, batch 32).
  CHECK(final.epoch() == 5);
  CHECK(final.step() == 315);
  CHECK(final.stop_reason() == "epochs");
  CHECK(final.eval_accuracy() > 0.6f);
  std::printf("fit: %zu steps, test accuracy %.3f\n", final.step(), final.eval_accuracy());
}

static void advanced_options() {
  auto g = fashion_mnist();
#include "seed/2_advanced_options.inc"
  // Early stopping on the gradient norm ends it long before 100 epochs.
  CHECK(state.stop_reason() == "early_stop");
  CHECK(state.step() < 6300);
  std::printf("advanced_options: stopped by %s after %zu steps\n", state.stop_reason().c_str(), state.step());
}

static void schedule() {
  auto g = fashion_mnist();
  harmonics::FitOptions opt;
#include "seed/3_schedule.inc"
  auto state = g.fit(1, harmonics::make_hardware_policy(), opt);
  // The last of 63 updates has index 62: 0.001 * 0.9^6.
  CHECK(state.step() == 63);
  CHECK(std::fabs(state.learning_rate() - 0.001f * std::pow(0.9f, 6.0f)) < 1e-9f);
  std::printf("schedule: learning rate %.9g at update 63\n", state.learning_rate());
}

static void fit_until() {
  auto g = fashion_mnist();
  harmonics::FitOptions opt;
#include "seed/4_fit_until.inc"
  CHECK(state.step() == 40);
  CHECK(state.stop_reason() == "predicate");
  std::printf("fit_until: %zu steps\n", state.step());
}

static void fixed_precision() {
  auto g = fashion_mnist();
  harmonics::FitOptions opt;
#include "seed/5_fixed_precision.inc"
  CHECK(final.epoch() == 5);
  CHECK(out.samples == 1000); // the evaluation data
  CHECK(out.precision.find("int8") != std::string::npos);
  CHECK(out.accuracy > 0.5f);
  CHECK(bits4.bits() == 4 && bits3.bits() == 3);
  std::printf("fixed_precision: %s, test accuracy %.3f\n", out.precision.c_str(), out.accuracy);
}

static void serialization() {
  auto g = fashion_mnist();
  auto state = g.fit(1, harmonics::make_hardware_policy(), harmonics::FitOptions());
  {
#include "seed/6_serialization.inc"
  }
  std::ifstream gin("model.hgr", std::ios::binary), win("weights.hnwt", std::ios::binary);
  auto loaded = harmonics::load_graph(gin);
  auto weights = harmonics::load_weights(win);
  CHECK(loaded.name() == "fashion_mnist");
  CHECK(loaded.nodes().size() == 4);
  CHECK(weights.size() == 4);
  CHECK(weights.values("pixels->hidden.weight") == state.weights.values("pixels->hidden.weight"));
  CHECK(weights.values("hidden->logits.bias") == state.weights.values("hidden->logits.bias"));
  std::printf("serialization: %zu tensors back\n", weights.size());
}

static void visualizer() {
  auto g = fashion_mnist();
  std::size_t steps = 0;
  {
#include "seed/7_visualizer.inc"
    steps = final.step();
  } // the visualizer sends what is queued before it closes
  CHECK(steps == 315);
  std::printf("steps %zu\n", steps);
}

int main(int argc, char **argv) {
  static const struct {
    const char *name;
    void (*fn)();
  } blocks[] = {{"fit", fit},
                {"advanced_options", advanced_options},
                {"schedule", schedule},
                {"fit_until", fit_until},
                {"fixed_precision", fixed_precision},
                {"serialization", serialization},
                {"visualizer", visualizer}};
  if (argc != 2) {
    std::fprintf(stderr, "usage: seed_snippets NAME\n");
    return 2;
  }
  for (const auto &b : blocks) {
    if (std::strcmp(argv[1], b.name) != 0) continue;
    try {
      b.fn();
    } catch (const harmonics::Error &e) {
      std::fprintf(stderr, "%s: %s: %s\n", b.name, e.status_name(), e.what());
      return 1;
    }
    return failures ? 1 : 0;
  }
  std::fprintf(stderr, "seed_snippets: no block named '%s'\n", argv[1]);
  return 2;
}
