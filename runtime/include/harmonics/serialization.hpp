/*
 * Saving and loading graphs and weights through C++ streams
 * (seed/Training.md, "Saving graphs and weights"): save_graph, load_graph,
 * save_weights, load_weights, found by the seed's unqualified calls through
 * their harmonics:: arguments. The bytes are the C library's formats
 * (docs/formats.md): a binary graph (.hgr) and native weights (.hnwt).
 */
#ifndef HARMONICS_SERIALIZATION_HPP_
#define HARMONICS_SERIALIZATION_HPP_

#include <cstdio>
#include <cstdlib>
#include <istream>
#include <iterator>
#include <ostream>
#include <string>

#include "harmonics/harmonics.hpp"

namespace harmonics {
namespace detail {

/* Runs |write| on a memory FILE and copies what it wrote to |os|. */
template <typename Write>
void write_to_stream(std::ostream &os, const char *what, Write &&write) {
  char *buf = nullptr;
  std::size_t len = 0;
  std::FILE *f = open_memstream(&buf, &len);
  if (!f) throw Error(HM_STATUS_RESOURCE_EXHAUSTED, std::string(what) + ": out of memory");
  hm_status st = write(f);
  if (std::fclose(f) != 0 && st == HM_OK) st = HM_STATUS_RESOURCE_EXHAUSTED;
  struct Free {
    char *p;
    ~Free() { std::free(p); }
  } freed{buf};
  check(st, what);
  os.write(buf, static_cast<std::streamsize>(len));
  if (!os) throw Error(HM_STATUS_IO_ERROR, std::string(what) + ": the stream refused the bytes");
}

/* Reads all of |is| and runs |read| on a memory FILE over it. */
template <typename Read>
void read_from_stream(std::istream &is, const char *what, Read &&read) {
  std::string bytes((std::istreambuf_iterator<char>(is)), std::istreambuf_iterator<char>());
  if (is.bad()) throw Error(HM_STATUS_IO_ERROR, std::string(what) + ": reading the stream failed");
  if (bytes.empty()) throw Error(HM_STATUS_DATA_LOSS, std::string(what) + ": the stream is empty");
  std::FILE *f = fmemopen(&bytes[0], bytes.size(), "rb");
  if (!f) throw Error(HM_STATUS_RESOURCE_EXHAUSTED, std::string(what) + ": out of memory");
  hm_status st = read(f);
  std::fclose(f);
  check(st, what);
}

}  // namespace detail

/* The graph's structure (not its data bindings); load_graph reads it back. */
inline void save_graph(const HarmonicGraph &g, std::ostream &os) {
  detail::write_to_stream(os, "save_graph", [&](std::FILE *f) { return hm_save_graph(g.c_graph(), f); });
}
inline void save_graph(const HarmonicGraph &g, const std::string &path) {
  detail::check(hm_save_graph_file(g.c_graph(), path.c_str()), "save_graph");
}
inline HarmonicGraph load_graph(std::istream &is) {
  hm_graph *g = nullptr;
  detail::read_from_stream(is, "load_graph", [&](std::FILE *f) { return hm_load_graph(f, &g); });
  return HarmonicGraph::adopt(g);
}
inline HarmonicGraph load_graph(const std::string &path) {
  hm_graph *g = nullptr;
  detail::check(hm_load_graph_file(path.c_str(), &g), "load_graph");
  return HarmonicGraph::adopt(g);
}

inline void save_weights(const Weights &w, std::ostream &os) {
  detail::write_to_stream(os, "save_weights", [&](std::FILE *f) { return hm_save_weights(w.c_weights(), f); });
}
inline void save_weights(const Weights &w, const std::string &path) {
  detail::check(hm_save_weights_file(w.c_weights(), path.c_str()), "save_weights");
}
inline Weights load_weights(std::istream &is) {
  hm_weights *w = nullptr;
  detail::read_from_stream(is, "load_weights", [&](std::FILE *f) { return hm_load_weights(f, &w); });
  return Weights::adopt(w);
}
inline Weights load_weights(const std::string &path) {
  hm_weights *w = nullptr;
  detail::check(hm_load_weights_file(path.c_str(), &w), "load_weights");
  return Weights::adopt(w);
}

}  // namespace harmonics

#endif /* HARMONICS_SERIALIZATION_HPP_ */
