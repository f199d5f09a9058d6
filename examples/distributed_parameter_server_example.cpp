/*
 * A parameter server over gRPC (docs/distributed.md "The parameter server").
 * The server owns the weights and the optimizer — a Harmonics trainer, so
 * the same formulas and the same checkpoints as `harmonics train` — and
 * publishes the parameters on one stream; each worker computes the gradient
 * of its shard of every global batch and sends it back on another.
 *
 *   distributed_parameter_server_example server --port P --workers K --model M.hmx [training options]
 *   distributed_parameter_server_example worker --server 127.0.0.1:P --shard i/K --model M.hmx --data NAME=SPEC ...
 *
 * Synchronous (the default): update v waits for the gradient of every shard
 * computed from version v and averages them weighted by their rows — the
 * data-parallel update of the same global batch (one worker: bit-identical
 * to `harmonics train`). A worker that dies is noticed when its streams
 * close; the server waits for a worker to take its shard again (a restarted
 * worker re-registers, receives the current parameters and continues), or
 * with --worker-timeout S goes on without the shard after S seconds.
 * --async applies each gradient as it arrives and reports its staleness.
 * --checkpoint F writes the server's state (fit's .hck); --resume F
 * continues from it, and workers that lost the server reconnect.
 */
#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <functional>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

#include "harmonics/harmonics.hpp"
#include "harmonics/serialization.hpp"
#include "parameter_server.grpc.pb.h"

namespace ps = harmonics::ps;
using Clock = std::chrono::steady_clock;

namespace {

// ===== What both sides share =====

constexpr std::size_t kPieceFloats = std::size_t(1) << 18; // 1 MiB a piece
constexpr int kMaxMessage = 16 << 20;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// The parameter tensors in the order the trainer hands them out, and where
// each lies in one flat vector of floats.
struct Layout {
  struct Entry {
    std::string name;
    std::vector<uint64_t> shape;
    std::size_t offset = 0, count = 0;
  };
  std::vector<Entry> entries;
  std::map<std::string, std::size_t> index;
  std::size_t total = 0;

  explicit Layout(const harmonics::Weights &w) {
    for (std::size_t i = 0; i < w.size(); i++) {
      harmonics::Tensor t = w.at(i);
      index[t.name] = entries.size();
      entries.push_back({t.name, t.shape, total, t.elements()});
      total += t.elements();
    }
  }
  std::vector<float> flatten(const harmonics::Weights &w) const {
    std::vector<float> flat(total);
    for (const Entry &e : entries) {
      std::vector<float> v = w.values(e.name);
      std::copy(v.begin(), v.end(), flat.begin() + static_cast<std::ptrdiff_t>(e.offset));
    }
    return flat;
  }
  harmonics::Weights unflatten(const std::vector<float> &flat) const {
    harmonics::Weights w;
    for (const Entry &e : entries)
      w.set(e.name, e.shape,
            std::vector<float>(flat.begin() + static_cast<std::ptrdiff_t>(e.offset),
                               flat.begin() + static_cast<std::ptrdiff_t>(e.offset + e.count)));
    return w;
  }
  // Calls |emit| with each piece of |flat| (every tensor, at most 1 MiB a piece).
  void pieces(const std::vector<float> &flat, const std::function<void(const ps::Piece &, bool last)> &emit) const {
    for (std::size_t i = 0; i < entries.size(); i++) {
      const Entry &e = entries[i];
      for (std::size_t at = 0; at < e.count || (at == 0 && e.count == 0); at += kPieceFloats) {
        std::size_t n = std::min(kPieceFloats, e.count - at);
        ps::Piece p;
        p.set_name(e.name);
        for (uint64_t d : e.shape) p.add_shape(d);
        p.set_offset(at);
        p.set_count(e.count);
        p.set_data(reinterpret_cast<const char *>(flat.data() + e.offset + at), n * sizeof(float));
        emit(p, i + 1 == entries.size() && at + n >= e.count);
        if (e.count == 0) break;
      }
    }
  }
  // Places |p| into |flat|; "" or why it does not fit this layout.
  std::string place(const ps::Piece &p, std::vector<float> &flat) const {
    auto it = index.find(p.name());
    if (it == index.end()) return "an unknown tensor '" + p.name() + "'";
    const Entry &e = entries[it->second];
    std::size_t n = p.data().size() / sizeof(float);
    if (p.count() != e.count || p.data().size() % sizeof(float) || p.offset() > e.count || n > e.count - p.offset())
      return "a piece of '" + p.name() + "' outside its " + std::to_string(e.count) + " values";
    std::memcpy(flat.data() + e.offset + p.offset(), p.data().data(), p.data().size());
    return "";
  }
};

// A fingerprint of the model's structure (nodes, widths, connections,
// losses): server and workers must train the same one.
uint32_t model_fingerprint(harmonics::HarmonicGraph &g) {
  uint32_t h = 2166136261u;
  auto mix = [&h](const std::string &s) {
    for (unsigned char c : s + '\n') h = (h ^ c) * 16777619u;
  };
  const hm_graph *c = g.c_graph();
  for (std::size_t i = 0; i < hm_graph_node_count(c); i++) {
    const char *name = nullptr;
    hm_node_kind kind;
    std::size_t width = 0;
    if (hm_graph_node(c, i, &name, &kind, &width) == HM_OK)
      mix(std::string(name) + ":" + std::to_string(kind) + ":" + std::to_string(width));
  }
  for (std::size_t i = 0; i < hm_graph_connection_count(c); i++) {
    const char *from = nullptr, *to = nullptr, *act = nullptr;
    if (hm_graph_connection(c, i, &from, &to, &act) == HM_OK) mix(std::string(from) + ">" + to + ":" + act);
  }
  for (std::size_t i = 0; i < hm_graph_loss_count(c); i++) {
    const char *layer = nullptr, *loss = nullptr, *target = nullptr;
    if (hm_graph_loss(c, i, &layer, &loss, &target) == HM_OK) mix(std::string(layer) + "<" + loss + ":" + target);
  }
  return h;
}

void say(const std::string &who, const std::string &line) {
  std::printf("%s: %s\n", who.c_str(), line.c_str());
  std::fflush(stdout);
}

[[noreturn]] void usage_error(const std::string &why) {
  std::fprintf(stderr,
               "distributed_parameter_server_example: %s\n"
               "usage: distributed_parameter_server_example server --port P --workers K --model M.hmx\n"
               "         [--epochs E (1)] [--batch B (32)] [--lr X (0.01)] [--optimizer sgd|adam|rmsprop|adamw|lamb]\n"
               "         [--seed S (0)] [--no-shuffle] [--async] [--worker-timeout SECONDS (0: wait)]\n"
               "         [--checkpoint F.hck [--checkpoint-every N]] [--resume F.hck] [--save-weights W.safetensors]\n"
               "       distributed_parameter_server_example worker --server HOST:PORT --shard I/K --model M.hmx\n"
               "         --data NAME=csv:PATH|idx:PATH ... [--threads N] [--reconnect SECONDS (30)]\n",
               why.c_str());
  std::exit(2);
}

// ===== The server =====

struct ServerOptions {
  int port = -1;
  std::size_t workers = 0, epochs = 1, checkpoint_every = 0;
  std::string model, checkpoint, resume, save_weights;
  bool async = false;
  double worker_timeout = 0;
  harmonics::FitOptions fit;
};

class ParameterServer final : public ps::ParameterServer::Service {
 public:
  ParameterServer(const ServerOptions &o, harmonics::HarmonicGraph &g, harmonics::Trainer &trainer)
      : o_(o), fingerprint_(model_fingerprint(g)), trainer_(trainer), layout_(trainer.weights()),
        shards_(o.workers), version_(trainer.step()) {
    params_ = std::make_shared<const std::vector<float>>(layout_.flatten(trainer_.weights()));
    version_started_ = Clock::now();
  }

  grpc::Status Subscribe(grpc::ServerContext *ctx, const ps::Hello *hello,
                         grpc::ServerWriter<ps::Published> *out) override {
    std::string refused = admit(*hello);
    if (!refused.empty()) {
      say("server", "refused worker " + hello->worker() + ": " + refused);
      return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, refused);
    }
    ps::Published config;
    {
      std::lock_guard<std::mutex> lock(mu_);
      ps::Config *c = config.mutable_config();
      c->set_batch(o_.fit.batch_size);
      c->set_seed(o_.fit.seed);
      c->set_shuffle(o_.fit.shuffle);
      c->set_updates(total_updates_);
      c->set_sync(!o_.async);
    }
    if (!out->Write(config)) return left(*hello, "its parameter stream closed");
    uint64_t sent = UINT64_MAX;
    for (;;) {
      std::shared_ptr<const std::vector<float>> params;
      uint64_t version = 0;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait_for(lock, std::chrono::milliseconds(200), [&] {
          return finished_ || version_ != sent || shards_[hello->shard()].worker != hello->worker();
        });
        if (shards_[hello->shard()].worker != hello->worker())
          return grpc::Status(grpc::StatusCode::ABORTED, "another worker took shard " + std::to_string(hello->shard()));
        if (finished_) {
          ps::Published done;
          done.mutable_finished()->set_updates(version_);
          done.mutable_finished()->set_reason(finish_reason_);
          out->Write(done);
          return grpc::Status::OK;
        }
        if (ctx->IsCancelled()) return left(*hello, "it hung up");
        if (version_ == sent) continue;
        params = params_;
        version = version_;
      }
      bool ok = true;
      layout_.pieces(*params, [&](const ps::Piece &piece, bool last) {
        if (!ok) return;
        ps::Published m;
        ps::Parameters *p = m.mutable_parameters();
        p->set_version(version);
        *p->mutable_piece() = piece;
        p->set_last(last);
        ok = out->Write(m);
      });
      if (!ok) return left(*hello, "its parameter stream closed");
      sent = version;
    }
  }

  grpc::Status Push(grpc::ServerContext *, grpc::ServerReader<ps::Gradient> *in, ps::Summary *summary) override {
    ps::Gradient g;
    std::vector<float> flat(layout_.total);
    std::string worker;
    uint32_t shard = 0;
    uint64_t count = 0;
    while (in->Read(&g)) {
      worker = g.worker();
      shard = g.shard();
      if (g.rows() > 0) {
        std::string why = layout_.place(g.piece(), flat);
        if (!why.empty()) return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "gradient of " + worker + ": " + why);
      }
      if (!g.last()) continue;
      deliver(g, flat);
      count++;
    }
    summary->set_gradients(count);
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_ && shard < shards_.size() && shards_[shard].worker == worker) forget(shard, "its gradient stream closed");
    return grpc::Status::OK;
  }

  // The main thread: waits for the end, moving on without late shards when
  // --worker-timeout says so. Returns the reason.
  std::string wait_until_done() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!finished_) {
      cv_.wait_for(lock, std::chrono::milliseconds(100));
      if (finished_ || o_.async || o_.worker_timeout <= 0 || total_updates_ == 0) continue;
      if (seconds_since(version_started_) < o_.worker_timeout) continue;
      std::size_t delivered = 0;
      for (const Shard &s : shards_) delivered += s.delivered;
      if (delivered == 0) continue; /* nobody to go on with */
      for (std::size_t i = 0; i < shards_.size(); i++)
        if (!shards_[i].delivered && !shards_[i].absent) {
          shards_[i].absent = true;
          say("server", "shard " + std::to_string(i) + " gave no gradient for version " + std::to_string(version_) +
                            " within " + std::to_string(o_.worker_timeout) + " s: going on without it");
        }
      apply_sync();
    }
    return finish_reason_;
  }

  harmonics::Weights weights() {
    std::lock_guard<std::mutex> lock(mu_);
    return trainer_.weights();
  }
  uint64_t version() {
    std::lock_guard<std::mutex> lock(mu_);
    return version_;
  }
  std::string staleness() {
    std::lock_guard<std::mutex> lock(mu_);
    if (!o_.async || gradients_ == 0) return "";
    char buf[96];
    std::snprintf(buf, sizeof buf, "staleness: mean %.2f, max %llu versions over %llu gradients",
                  double(staleness_sum_) / double(gradients_), (unsigned long long)staleness_max_,
                  (unsigned long long)gradients_);
    return buf;
  }

 private:
  struct Shard {
    std::string worker;
    bool delivered = false;
    bool absent = false;  /* --worker-timeout passed: updates go on without it until it delivers again */
    uint64_t rows = 0;
    double loss = 0;
    std::vector<float> grad;
  };

  // Whether every shard has delivered this version's gradient or is absent (mu_ held).
  bool version_complete() const {
    for (const Shard &x : shards_)
      if (!x.delivered && !x.absent) return false;
    return true;
  }

  // Checks a worker's hello and gives it its shard ("" when admitted).
  std::string admit(const ps::Hello &h) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_) return "training has finished";
    if (h.shards() != shards_.size())
      return "this worker splits batches in " + std::to_string(h.shards()) + " shards but the server expects " +
             std::to_string(shards_.size()) + " workers";
    if (h.shard() >= shards_.size()) return "shard " + std::to_string(h.shard()) + " of " + std::to_string(h.shards());
    if (h.model() != fingerprint_)
      return "model mismatch: this worker's model differs from the server's " + o_.model +
             " (layers, widths, connections or losses)";
    if (h.samples() == 0) return "the worker holds no training samples";
    if (samples_ && h.samples() != samples_)
      return "this worker holds " + std::to_string(h.samples()) + " training samples, the others " +
             std::to_string(samples_);
    if (!samples_) {
      samples_ = h.samples();
      uint64_t per_epoch = (samples_ + o_.fit.batch_size - 1) / o_.fit.batch_size;
      total_updates_ = per_epoch * o_.epochs;
      say("server", std::to_string(samples_) + " samples in batches of " + std::to_string(o_.fit.batch_size) +
                        ": " + std::to_string(total_updates_) + " updates");
      if (version_ >= total_updates_) finish("the checkpoint is already at the end");
    }
    Shard &s = shards_[h.shard()];
    if (!s.worker.empty()) say("server", "worker " + h.worker() + " replaces " + s.worker + " on shard " + std::to_string(h.shard()));
    s.worker = h.worker();
    s.delivered = false; /* it delivers the current version's gradient (an absent shard stays absent until then) */
    say("server", "worker " + h.worker() + " joined as shard " + std::to_string(h.shard()) + "/" +
                      std::to_string(shards_.size()) + " at version " + std::to_string(version_));
    cv_.notify_all();
    return "";
  }

  grpc::Status left(const ps::Hello &h, const std::string &why) {
    std::lock_guard<std::mutex> lock(mu_);
    if (!finished_ && shards_[h.shard()].worker == h.worker()) forget(h.shard(), why);
    return grpc::Status(grpc::StatusCode::CANCELLED, why);
  }

  // A worker is gone: its shard waits for another (mu_ held).
  void forget(std::size_t shard, const std::string &why) {
    say("server", "worker " + shards_[shard].worker + " (shard " + std::to_string(shard) + ") left: " + why);
    shards_[shard].worker.clear();
    shards_[shard].delivered = false;
    cv_.notify_all();
  }

  void deliver(const ps::Gradient &g, const std::vector<float> &flat) {
    std::lock_guard<std::mutex> lock(mu_);
    if (finished_ || g.shard() >= shards_.size() || shards_[g.shard()].worker != g.worker()) return;
    if (o_.async) {
      uint64_t stale = version_ - std::min<uint64_t>(g.version(), version_);
      staleness_sum_ += stale;
      staleness_max_ = std::max(staleness_max_, stale);
      gradients_++;
      if (g.rows() == 0) return;
      trainer_.set_gradients(layout_.unflatten(flat));
      update(g.loss(), 1, "staleness " + std::to_string(stale));
      return;
    }
    if (g.version() != version_) return; /* computed from an older version: the update was made without it */
    Shard &s = shards_[g.shard()];
    if (s.absent) say("server", "shard " + std::to_string(g.shard()) + " is back at version " + std::to_string(version_));
    s.delivered = true;
    s.absent = false;
    s.rows = g.rows();
    s.loss = g.loss();
    s.grad = flat;
    if (version_complete()) apply_sync();
  }

  // The update of the gradients delivered for this version, weighted by
  // rows: the mean gradient of the global batch (mu_ held).
  void apply_sync() {
    uint64_t rows = 0;
    std::size_t workers = 0;
    for (const Shard &s : shards_)
      if (s.delivered) rows += s.rows, workers++;
    std::vector<float> sum(layout_.total, 0.0f);
    double loss = 0;
    bool first = true;
    for (const Shard &s : shards_) {
      if (!s.delivered || s.rows == 0) continue;
      float w = float(double(s.rows) / double(rows)); /* exactly 1 for one worker: bit-identical to a plain fit */
      for (std::size_t i = 0; i < sum.size(); i++) sum[i] = first ? w * s.grad[i] : sum[i] + w * s.grad[i];
      loss += s.loss * double(s.rows) / double(rows);
      first = false;
    }
    for (Shard &s : shards_) s.delivered = false;
    if (rows == 0) return;
    trainer_.set_gradients(layout_.unflatten(sum));
    update(loss, workers, "");
  }

  // Applies the gradients set, publishes the new version (mu_ held).
  void update(double loss, std::size_t workers, const std::string &note) {
    float norm = trainer_.apply();
    version_ = trainer_.step();
    params_ = std::make_shared<const std::vector<float>>(layout_.flatten(trainer_.weights()));
    version_started_ = Clock::now();
    char line[160];
    std::snprintf(line, sizeof line, "update %llu/%llu: loss %.6f, gradient norm %.4f, %zu worker%s%s%s",
                  (unsigned long long)version_, (unsigned long long)total_updates_, loss, double(norm), workers,
                  workers == 1 ? "" : "s", note.empty() ? "" : ", ", note.c_str());
    say("server", line);
    if (!o_.checkpoint.empty() && (version_ == total_updates_ || !o_.checkpoint_every ||
                                   version_ % o_.checkpoint_every == 0))
      trainer_.save_checkpoint(o_.checkpoint);
    if (version_ >= total_updates_) finish("all " + std::to_string(total_updates_) + " updates done");
    cv_.notify_all();
  }

  void finish(const std::string &why) {
    finished_ = true;
    finish_reason_ = why;
    cv_.notify_all();
  }

  const ServerOptions &o_;
  const uint32_t fingerprint_;
  harmonics::Trainer &trainer_;
  const Layout layout_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<Shard> shards_;
  uint64_t version_, samples_ = 0, total_updates_ = 0;
  std::shared_ptr<const std::vector<float>> params_;
  Clock::time_point version_started_;
  bool finished_ = false;
  std::string finish_reason_;
  uint64_t staleness_sum_ = 0, staleness_max_ = 0, gradients_ = 0;
};

int run_server(const ServerOptions &o) {
  harmonics::HarmonicGraph g = harmonics::HarmonicGraph::from_file(o.model);
  if (hm_graph_resolve(g.c_graph()) != HM_OK)
    throw std::runtime_error(std::string("the server binds no data, so its model declares every width: ") +
                             hm_last_error());
  std::unique_ptr<harmonics::CycleState> resume;
  harmonics::FitOptions fit = o.fit;
  if (!o.resume.empty()) {
    hm_cycle_state *s = nullptr;
    if (hm_cycle_state_load(o.resume.c_str(), &s) != HM_OK) throw std::runtime_error(hm_last_error());
    resume = std::make_unique<harmonics::CycleState>(s);
    fit.resume = resume.get();
  }
  harmonics::Trainer trainer(g, harmonics::make_hardware_policy(), fit);
  ParameterServer service(o, g, trainer);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:" + std::to_string(o.port), grpc::InsecureServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(kMaxMessage);
  builder.SetMaxSendMessageSize(kMaxMessage);
  /* A worker that hangs stops answering keepalive pings: its streams end
   * after 20 s. Workers ping too, which the server must allow. */
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 5000);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.SetSyncServerOption(grpc::ServerBuilder::SyncServerOption::MIN_POLLERS, 4);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) throw std::runtime_error("cannot listen on 127.0.0.1:" + std::to_string(o.port));
  say("server", "listening on 127.0.0.1:" + std::to_string(port) + ", " + std::to_string(o.workers) + " worker" +
                    (o.workers == 1 ? "" : "s") + (o.async ? ", asynchronous" : ", synchronous") +
                    (resume ? ", resumed at update " + std::to_string(trainer.step()) : ""));
  std::string why = service.wait_until_done();
  /* The workers hear of the end on their streams; then the server stops. */
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!o.save_weights.empty() &&
      hm_weights_save_safetensors(service.weights().c_weights(), o.save_weights.c_str()) != HM_OK)
    throw std::runtime_error(hm_last_error());
  say("server", "finished: " + why);
  std::string stale = service.staleness();
  if (!stale.empty()) say("server", stale);
  return 0;
}

// ===== A worker =====

struct WorkerOptions {
  std::string server, model;
  uint32_t shard = 0, shards = 0;
  std::vector<std::pair<std::string, std::string>> data; /* producer, spec */
  unsigned threads = 0;
  double reconnect = 30;
};

class Worker {
 public:
  explicit Worker(const WorkerOptions &o) : o_(o), g_(harmonics::HarmonicGraph::from_file(o.model)) {
    for (const auto &d : o.data) {
      const std::string &spec = d.second;
      if (spec.rfind("csv:", 0) == 0) producers_.push_back(harmonics::Producer::open_csv(spec.substr(4)));
      else if (spec.rfind("idx:", 0) == 0) producers_.push_back(harmonics::Producer::open_idx(spec.substr(4)));
      else usage_error("--data " + d.first + "=" + spec + ": give csv:PATH or idx:PATH");
      g_.bind(d.first, producers_.back());
    }
    if (hm_graph_resolve(g_.c_graph()) != HM_OK) throw std::runtime_error(hm_last_error());
    hm_producer_info info{};
    if (producers_.empty() || hm_producer_info_get(producers_.front().c_producer(), &info) != HM_OK)
      usage_error("a worker needs its training data (--data NAME=SPEC)");
    samples_ = info.count;
    id_ = "shard" + std::to_string(o.shard) + "-pid" + std::to_string(getpid());
  }

  int run() {
    Clock::time_point lost = Clock::now();
    bool ever_connected = false;
    for (;;) {
      double budget = o_.reconnect - seconds_since(lost);
      grpc::ChannelArguments args;
      args.SetMaxReceiveMessageSize(kMaxMessage);
      args.SetMaxSendMessageSize(kMaxMessage);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, 10000);
      args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
      auto channel = grpc::CreateCustomChannel(o_.server, grpc::InsecureChannelCredentials(), args);
      auto deadline = std::chrono::system_clock::now() + std::chrono::milliseconds(long(std::max(budget, 0.0) * 1000));
      if (budget <= 0 || !channel->WaitForConnected(deadline)) {
        std::fprintf(stderr, "worker %s: %s the parameter server at %s within %g s\n", id_.c_str(),
                     ever_connected ? "lost" : "cannot reach", o_.server.c_str(), o_.reconnect);
        return 1;
      }
      ever_connected = true;
      int rc = session(channel);
      if (rc >= 0) return rc;
      lost = Clock::now(); /* the server went away: try again */
      say("worker " + id_, "lost the server; reconnecting for up to " + std::to_string(int(o_.reconnect)) + " s");
    }
  }

 private:
  // One connection: 0 or 1 when the run is over, -1 when the server went away.
  int session(const std::shared_ptr<grpc::Channel> &channel) {
    auto stub = ps::ParameterServer::NewStub(channel);
    ps::Hello hello;
    hello.set_worker(id_);
    hello.set_shard(o_.shard);
    hello.set_shards(o_.shards);
    hello.set_model(model_fingerprint(g_));
    hello.set_samples(samples_);
    grpc::ClientContext sub_ctx, push_ctx;
    ps::Summary summary;
    auto params = stub->Subscribe(&sub_ctx, hello);
    auto grads = stub->Push(&push_ctx, &summary);
    ps::Published m;
    std::unique_ptr<Layout> layout;
    std::vector<float> flat;
    bool pushing = true;
    while (params->Read(&m)) {
      if (m.has_config()) {
        config_ = m.config();
        open_trainer();
        layout = std::make_unique<Layout>(trainer_->weights());
        flat.assign(layout->total, 0.0f);
      } else if (m.has_parameters() && layout) {
        std::string why = layout->place(m.parameters().piece(), flat);
        if (!why.empty()) {
          std::fprintf(stderr, "worker %s: the server sent %s\n", id_.c_str(), why.c_str());
          return 1;
        }
        if (m.parameters().last() && pushing) pushing = compute_and_send(m.parameters().version(), *layout, flat, *grads);
      } else if (m.has_finished()) {
        grads->WritesDone();
        grads->Finish();
        say("worker " + id_, "done after " + std::to_string(m.finished().updates()) + " updates (" +
                                 m.finished().reason() + "), " + std::to_string(sent_) + " gradients sent");
        return 0;
      }
    }
    grpc::Status st = params->Finish();
    push_ctx.TryCancel();
    grads->Finish();
    if (st.error_code() == grpc::StatusCode::FAILED_PRECONDITION || st.error_code() == grpc::StatusCode::ABORTED) {
      std::fprintf(stderr, "worker %s: the parameter server %s: %s\n", id_.c_str(),
                   st.error_code() == grpc::StatusCode::ABORTED ? "dropped this worker" : "refused this worker",
                   st.error_message().c_str());
      return 1;
    }
    return -1; /* the server went away */
  }

  void open_trainer() {
    if (trainer_ && batch_ == config_.batch()) return;
    harmonics::FitOptions fit;
    fit.batch_size = config_.batch();
    fit.seed = config_.seed();
    fit.shuffle = config_.shuffle();
    fit.threads = o_.threads;
    trainer_ = std::make_unique<harmonics::Trainer>(g_, harmonics::make_hardware_policy(), fit);
    batch_ = config_.batch();
    order_epoch_ = SIZE_MAX;
  }

  // The gradient of this shard's rows of global batch |version| (as
  // data-parallel ranks split it), sent in pieces.
  bool compute_and_send(uint64_t version, const Layout &layout, const std::vector<float> &flat,
                        grpc::ClientWriter<ps::Gradient> &out) {
    trainer_->set_weights(layout.unflatten(flat));
    trainer_->clear_gradients();
    std::size_t per_epoch = (samples_ + batch_ - 1) / batch_;
    std::size_t epoch = std::size_t(version) / per_epoch, pos = std::size_t(version) % per_epoch * batch_;
    if (order_epoch_ != epoch) {
      order_ = trainer_->epoch_order(epoch);
      order_epoch_ = epoch;
    }
    std::size_t b = std::min<std::size_t>(batch_, samples_ - pos);
    std::size_t lo = b * o_.shard / o_.shards, hi = b * (o_.shard + 1) / o_.shards;
    ps::Gradient g;
    g.set_version(version);
    g.set_worker(id_);
    g.set_shard(o_.shard);
    g.set_rows(hi - lo);
    if (hi == lo) {
      g.set_last(true);
      return out.Write(g) && ++sent_;
    }
    g.set_loss(trainer_->compute_gradients(order_, pos + lo, hi - lo));
    std::vector<float> grads = layout.flatten(trainer_->gradients());
    bool ok = true;
    layout.pieces(grads, [&](const ps::Piece &piece, bool last) {
      if (!ok) return;
      *g.mutable_piece() = piece;
      g.set_last(last);
      ok = out.Write(g);
    });
    sent_ += ok;
    uint64_t every = std::max<uint64_t>(1, config_.updates() / 10);
    if (ok && sent_ % every == 0)
      say("worker " + id_, "version " + std::to_string(version) + ": loss " + std::to_string(g.loss()) + ", " +
                               std::to_string(sent_) + " gradients sent");
    return ok;
  }

  const WorkerOptions &o_;
  harmonics::HarmonicGraph g_;
  std::vector<harmonics::Producer> producers_;
  std::size_t samples_ = 0, batch_ = 0, order_epoch_ = SIZE_MAX;
  std::string id_;
  ps::Config config_;
  std::unique_ptr<harmonics::Trainer> trainer_;
  std::vector<int32_t> order_;
  uint64_t sent_ = 0;
};

// ===== Command lines =====

std::size_t count_arg(const std::string &opt, const std::string &v) {
  char *end = nullptr;
  unsigned long long n = std::strtoull(v.c_str(), &end, 10);
  if (v.empty() || *end || v[0] == '-') usage_error(opt + " expects a non-negative integer, got '" + v + "'");
  return std::size_t(n);
}

double number_arg(const std::string &opt, const std::string &v) {
  char *end = nullptr;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end || !std::isfinite(x) || x < 0) usage_error(opt + " expects a number >= 0, got '" + v + "'");
  return x;
}

ServerOptions parse_server(int argc, char **argv) {
  ServerOptions o;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--async") {
      o.async = true;
      continue;
    }
    if (a == "--no-shuffle") {
      o.fit.shuffle = false;
      continue;
    }
    if (i + 1 >= argc) usage_error(a + " needs a value (or is not an option)");
    std::string v = argv[++i];
    if (a == "--port") o.port = int(count_arg(a, v));
    else if (a == "--workers") o.workers = count_arg(a, v);
    else if (a == "--model") o.model = v;
    else if (a == "--epochs") o.epochs = count_arg(a, v);
    else if (a == "--batch") o.fit.batch_size = count_arg(a, v);
    else if (a == "--lr") o.fit.learning_rate = float(number_arg(a, v));
    else if (a == "--seed") o.fit.seed = count_arg(a, v);
    else if (a == "--worker-timeout") o.worker_timeout = number_arg(a, v);
    else if (a == "--checkpoint") o.checkpoint = v;
    else if (a == "--checkpoint-every") o.checkpoint_every = count_arg(a, v);
    else if (a == "--resume") o.resume = v;
    else if (a == "--save-weights") o.save_weights = v;
    else if (a == "--optimizer") {
      uint32_t found = 0;
      if (hm_optimizer_from_name(v.c_str(), &found) != 0) usage_error("unknown optimizer '" + v + "'");
      o.fit.optimizer = harmonics::Optimizer(found);
    } else
      usage_error("unknown server option '" + a + "'");
  }
  if (o.port < 0 || o.port > 65535) usage_error("server: --port P (0 picks a free one)");
  if (o.workers == 0) usage_error("server: --workers K (at least 1)");
  if (o.model.empty()) usage_error("server: --model M.hmx");
  if (o.fit.batch_size == 0 || o.epochs == 0) usage_error("server: --batch and --epochs must be at least 1");
  return o;
}

WorkerOptions parse_worker(int argc, char **argv) {
  WorkerOptions o;
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    if (i + 1 >= argc) usage_error(a + " needs a value (or is not an option)");
    std::string v = argv[++i];
    if (a == "--server") o.server = v;
    else if (a == "--model") o.model = v;
    else if (a == "--threads") o.threads = unsigned(count_arg(a, v));
    else if (a == "--reconnect") o.reconnect = number_arg(a, v);
    else if (a == "--shard") {
      std::size_t slash = v.find('/');
      if (slash == std::string::npos) usage_error("--shard expects I/K, got '" + v + "'");
      o.shard = uint32_t(count_arg(a, v.substr(0, slash)));
      o.shards = uint32_t(count_arg(a, v.substr(slash + 1)));
      if (o.shards == 0 || o.shard >= o.shards) usage_error("--shard " + v + ": I must be in 0 .. K-1");
    } else if (a == "--data") {
      std::size_t eq = v.find('=');
      if (eq == std::string::npos || eq == 0) usage_error("--data expects NAME=SPEC, got '" + v + "'");
      o.data.emplace_back(v.substr(0, eq), v.substr(eq + 1));
    } else
      usage_error("unknown worker option '" + a + "'");
  }
  if (o.server.empty() || o.model.empty() || o.shards == 0) usage_error("worker: --server, --shard and --model");
  return o;
}

}  // namespace

int main(int argc, char **argv) {
  std::string role = argc > 1 ? argv[1] : "";
  try {
    if (role == "server") return run_server(parse_server(argc, argv));
    if (role == "worker") {
      WorkerOptions o = parse_worker(argc, argv);
      return Worker(o).run();
    }
    usage_error("the first argument is server or worker");
  } catch (const std::exception &e) {
    std::fprintf(stderr, "distributed_parameter_server_example %s: %s\n", role.c_str(), e.what());
    return 1;
  }
}
