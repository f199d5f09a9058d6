/*
 * OpenBLAS, loaded at plugin init rather than linked.
 *
 * Why: Debian's OpenBLAS 0.3.21 is a DYNAMIC_ARCH build that picks its kernels
 * in a library constructor from OPENBLAS_CORETYPE or, when that is unset, from
 * CPUID. On CPUs newer than its tables (e.g. Sapphire Rapids Xeons) it falls
 * back to "Prescott" kernels that run sgemm 4-5x slower. A linked library would
 * initialise before any of our code runs, so instead we choose the core type
 * from the CPU features we detect, put it in the environment only for the
 * duration of dlopen (the loader calls plugin init single-threaded), and
 * restore the previous value. An OPENBLAS_CORETYPE already in the environment
 * is NOT used for our instance: shells and CI images set it globally for other
 * programs (we have seen Haswell forced on an AVX-512 machine, halving sgemm
 * speed). To force a core type for Harmonics, set the plugin option
 * openblas_core (harmonics.conf: cpu.openblas_core = SkylakeX).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_internal.h"

typedef char *(*corename_fn)(void);
typedef void (*set_threads_fn)(int);

/* POSIX guarantees dlsym results convert to function pointers; ISO C does not
 * allow the cast, so copy the bits. */
static void *sym(void *h, const char *name, void *fn_out, size_t fn_size) {
  void *p = dlsym(h, name);
  memcpy(fn_out, &p, fn_size);
  return p;
}

static const char *choose_core(const cpu_features *f) {
  if (f->avx512f && f->avx512bw && f->avx512vl && f->avx512dq)
    return f->avx512_bf16 ? "Cooperlake" : "SkylakeX";
  if (f->avx2 && f->fma) return "Haswell";
  if (f->avx) return "SandyBridge";
  return NULL;
}

int cpu_blas_load(cpu_blas *blas, const char *library, const char *forced_core,
                  const cpu_features *features, char *err, size_t err_cap) {
  memset(blas, 0, sizeof *blas);
  const char *names[] = {library, "libopenblas.so.0", "libopenblasp.so.0", "libopenblas.so"};
  const char *env = getenv("OPENBLAS_CORETYPE");
  char *saved = env ? strdup(env) : NULL;
  const char *core = forced_core && *forced_core ? forced_core : choose_core(features);
  if (core) setenv("OPENBLAS_CORETYPE", core, 1);
  else unsetenv("OPENBLAS_CORETYPE");
  /* We never let OpenBLAS thread (see below); without this its pool of idle
   * workers would start anyway and spin against ours for a while. */
  const char *nt_env = getenv("OPENBLAS_NUM_THREADS");
  char *nt_saved = nt_env ? strdup(nt_env) : NULL;
  setenv("OPENBLAS_NUM_THREADS", "1", 1);
  void *h = NULL;
  const char *tried = NULL;
  char last_error[256] = "";
  for (size_t i = 0; i < sizeof names / sizeof names[0] && !h; i++) {
    if (!names[i]) continue;
    tried = names[i];
    h = dlopen(names[i], RTLD_NOW | RTLD_LOCAL);
    if (!h) {
      const char *e = dlerror();
      snprintf(last_error, sizeof last_error, "%s", e ? e : "unknown dlopen error");
    }
    if (library) break; /* an explicit library is the only candidate */
  }
  if (saved) setenv("OPENBLAS_CORETYPE", saved, 1);
  else unsetenv("OPENBLAS_CORETYPE");
  if (nt_saved) setenv("OPENBLAS_NUM_THREADS", nt_saved, 1);
  else unsetenv("OPENBLAS_NUM_THREADS");
  free(nt_saved);
  if (!h) {
    free(saved);
    snprintf(err, err_cap, "cannot load OpenBLAS (%s): %s", tried ? tried : "?", last_error);
    return 1;
  }
  corename_fn corename = NULL, config = NULL;
  set_threads_fn set_threads = NULL;
  sym(h, "cblas_sgemm", &blas->sgemm, sizeof blas->sgemm);
  sym(h, "cblas_sgemv", &blas->sgemv, sizeof blas->sgemv);
  sym(h, "openblas_get_corename", &corename, sizeof corename);
  sym(h, "openblas_get_config", &config, sizeof config);
  sym(h, "openblas_set_num_threads", &set_threads, sizeof set_threads);
  if (!blas->sgemm || !blas->sgemv || !corename || !set_threads) {
    snprintf(err, err_cap, "%s lacks cblas_sgemm/cblas_sgemv/openblas_get_corename/openblas_set_num_threads", tried);
    dlclose(h);
    memset(blas, 0, sizeof *blas);
    free(saved);
    return 1;
  }
  /* We split GEMMs across our own pool; OpenBLAS runs single-threaded in each
   * caller, so its threads never compete with ours for the cores. */
  set_threads(1);
  const char *cfg = config ? config() : "OpenBLAS";
  char version[32] = "";
  const char *v = strstr(cfg, "OpenBLAS ");
  if (v) sscanf(v + 9, "%31s", version);
  const char *got = corename();
  snprintf(blas->description, sizeof blas->description, "openblas-%s/%s%s%s", version[0] ? version : "?",
           got ? got : "?", forced_core && *forced_core ? "(forced)" : "",
           core && got && strcmp(core, got) != 0 ? "(OpenBLAS was already loaded by the host)" : "");
  free(saved);
  blas->handle = h;
  return 0;
}

void cpu_blas_unload(cpu_blas *blas) {
  if (blas->handle) dlclose(blas->handle);
  memset(blas, 0, sizeof *blas);
}
