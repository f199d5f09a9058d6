/*
 * WebSocketTrainingVisualizer (seed/Training.md): streams every update to a
 * WebSocket server (`harmonics dashboard`, examples/training_dashboard) as
 * one frame of four float64 values: step, gradient norm, loss, learning
 * rate. Assign it to FitOptions::progress. It never blocks training: frames
 * queue while the server is away and go out when it is back (the C
 * visualizer, <harmonics/visualizer.h>). Copies share one connection; the
 * last copy to go waits up to the flush time for queued frames, then closes.
 */
#ifndef HARMONICS_TRAINING_VISUALIZER_HPP_
#define HARMONICS_TRAINING_VISUALIZER_HPP_

#include <cstddef>
#include <memory>
#include <string>

#include "harmonics/harmonics.hpp"

namespace harmonics {

class WebSocketTrainingVisualizer {
 public:
  /* ws://host:port/path; |path| may carry "?token=..." for a dashboard that
   * asks for one. Error UNIMPLEMENTED when this build has no libwebsockets. */
  WebSocketTrainingVisualizer(const std::string &host, int port, const std::string &path = "/metrics",
                              const hm_visualizer_options &options = hm_visualizer_options_default())
      : sink_(std::make_shared<Sink>()) {
    detail::check(hm_websocket_visualizer_create_ex(host.c_str(), port, path.c_str(), &options, &sink_->sink),
                  "WebSocketTrainingVisualizer");
  }

  void operator()(std::size_t step, float grad_norm, float loss, float lr) const {
    sink_->sink.fn(sink_->sink.user, step, grad_norm, loss, lr);
  }
  hm_visualizer_stats stats() const {
    hm_visualizer_stats s;
    hm_websocket_visualizer_stats(&sink_->sink, &s);
    return s;
  }
  /* Waits up to |seconds| for every queued frame to be written; false when
   * some are still queued. */
  bool flush(double seconds) const { return hm_websocket_visualizer_flush(&sink_->sink, seconds) == HM_OK; }
  const hm_progress_sink &c_sink() const noexcept { return sink_->sink; }

 private:
  struct Sink {
    hm_progress_sink sink{nullptr, nullptr};
    Sink() = default;
    Sink(const Sink &) = delete;
    Sink &operator=(const Sink &) = delete;
    ~Sink() {
      if (sink.fn) hm_websocket_visualizer_free(&sink);
    }
  };
  std::shared_ptr<Sink> sink_;
};

}  // namespace harmonics

#endif /* HARMONICS_TRAINING_VISUALIZER_HPP_ */
