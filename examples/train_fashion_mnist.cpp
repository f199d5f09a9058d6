// Trains the Fashion-MNIST classifier from C++, start to finish — the C++
// twin of train_fashion_mnist.c, over <harmonics/harmonics.hpp>: builds the
// graph with the builder (the same model as fashion_mnist.hmx), binds the
// IDX files, fits with a progress callback and per-epoch evaluation,
// evaluates on the test split, and saves the graph and the weights with the
// seed's stream helpers. A failure is a harmonics::Error saying what and
// where.
//
//   train_fashion_mnist_cpp [--epochs N] [--limit N] [--save PREFIX]
//     --save writes PREFIX.hgr (the graph) and PREFIX.hnwt (the weights)
//
// The data comes from $HARMONICS_FASHION_MNIST_DIR, else Debian's
// dataset-fashion-mnist (/usr/share/datasets/fashion-mnist).
//
// Build it against an installed Harmonics with either route:
//   c++ -std=c++17 train_fashion_mnist.cpp $(pkg-config --cflags --libs harmonics-cpp)
//   find_package(Harmonics) + target_link_libraries(app Harmonics::harmonics_cpp)
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>

#include <harmonics/harmonics.hpp>
#include <harmonics/serialization.hpp>

static std::size_t parse_size(const char *flag, const char *text) {
  char *end = nullptr;
  unsigned long long v = text ? std::strtoull(text, &end, 10) : 0;
  if (!text || !text[0] || *end || text[0] == '-') {
    std::fprintf(stderr, "train_fashion_mnist_cpp: %s needs a whole number, got '%s'\n", flag, text ? text : "");
    std::exit(2);
  }
  return static_cast<std::size_t>(v);
}

int main(int argc, char **argv) {
  std::size_t epochs = 5, limit = 0;
  std::string save;
  for (int i = 1; i < argc; i++) {
    const char *v = i + 1 < argc ? argv[i + 1] : nullptr;
    if (!std::strcmp(argv[i], "--epochs") && v) epochs = parse_size("--epochs", argv[++i]);
    else if (!std::strcmp(argv[i], "--limit") && v) limit = parse_size("--limit", argv[++i]);
    else if (!std::strcmp(argv[i], "--save") && v) save = argv[++i];
    else {
      std::fprintf(stderr, "usage: train_fashion_mnist_cpp [--epochs N] [--limit N] [--save PREFIX]\n");
      return 2;
    }
  }
  const char *env = std::getenv("HARMONICS_FASHION_MNIST_DIR");
  std::string dir = env && *env ? env : "/usr/share/datasets/fashion-mnist";
  try {
    // pixels -(relu)-> hidden {128} -> logits; logits <-(cross_entropy)- label
    harmonics::HarmonicGraph g("fashion_mnist");
    g.add_producer("pixels", 784).add_producer("label", 10).add_layer("hidden", 128).add_layer("logits");
    g.connect("pixels", "hidden", "relu").connect("hidden", "logits").add_loss("logits", "cross_entropy", "label");

    auto open = [&](const char *name) {
      auto p = harmonics::Producer::open_idx(dir + "/" + name);
      return limit ? p.limit(limit) : p;
    };
    g.bind("pixels", open("train-images-idx3-ubyte.gz")).bind("label", open("train-labels-idx1-ubyte.gz"));
    g.bind_eval("pixels", open("t10k-images-idx3-ubyte.gz")).bind_eval("label", open("t10k-labels-idx1-ubyte.gz"));

    harmonics::FitOptions opt;
    opt.optimizer = harmonics::Optimizer::Adam;
    opt.learning_rate = 0.001f;
    opt.batch_size = 64;
    opt.progress = [](std::size_t step, float grad_norm, float loss, float) {
      if (step % 200 == 0) std::printf("step %zu: loss %.4f, gradient norm %.3f\n", step, loss, grad_norm);
    };
    opt.on_epoch = [](const harmonics::CycleState &s) {
      std::printf("epoch %zu: test accuracy %.2f%%\n", s.epoch(), 100.0 * s.eval_accuracy());
      return false; // keep going
    };
    auto policy = harmonics::make_hardware_policy();
    auto state = g.fit(epochs, policy, opt);
    auto result = g.inference({}, policy);
    std::printf("trained %zu steps on %s; test accuracy %.2f%% over %zu samples, loss %.4f\n", state.step(),
                state.backend().c_str(), 100.0 * result.accuracy, result.samples, result.loss);
    if (!save.empty()) {
      std::ofstream gfile(save + ".hgr", std::ios::binary);
      save_graph(g, gfile);
      std::ofstream wfile(save + ".hnwt", std::ios::binary);
      save_weights(state.weights, wfile);
      if (!gfile.flush() || !wfile.flush()) throw harmonics::Error(HM_STATUS_IO_ERROR, "writing " + save + ".*");
      std::printf("saved the graph to %s.hgr and the weights to %s.hnwt\n", save.c_str(), save.c_str());
    }
  } catch (const harmonics::Error &e) {
    std::fprintf(stderr, "train_fashion_mnist_cpp: %s\n", e.what());
    return 1;
  }
  return 0;
}
