/*
 * The `harmonics` command-line program: one binary, one subcommand per file.
 */
#ifndef HM_CLI_H_
#define HM_CLI_H_

#include <stdio.h>

#include "harmonics/harmonics.h"

/* Each subcommand gets argv after its own name; returns the exit status. */
int cmd_plugins(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_infer(int argc, char **argv);
int cmd_conform(int argc, char **argv);
int cmd_compile(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_dashboard(int argc, char **argv);

/* Exit statuses shared by subcommands. */
/* CLI_DIVERGED: training stopped at a non-finite loss or gradient norm. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2, CLI_DIVERGED = 3 };

/* Registry initialisation shared by every subcommand that loads plugins:
 * applies --config FILE and --backend NAME if given (NULL otherwise). */
int cli_registry_init(const char *config, const char *backend);

/* Prints "harmonics: <message>" for the last error and returns CLI_FAILED. */
int cli_fail(const char *what);

/* Minimal JSON output on a FILE. */
void json_string(FILE *f, const char *s);
/* Prints a float as JSON (null for NaN/Inf). */
void json_number(FILE *f, double v);

/* ===== Data (cli_data.c) ===== */

/* Producers opened by the command, freed at exit. */
typedef struct cli_sources {
  hm_producer *items[32];
  size_t n;
  size_t train_samples; /* samples of the largest training binding */
} cli_sources;

void cli_sources_keep(cli_sources *s, hm_producer *p);
void cli_sources_free(cli_sources *s);
/* idx:PATH, csv:PATH (floats) or labels:PATH (CSV of class indices); prints
 * what is wrong and returns CLI_USAGE / CLI_FAILED otherwise. */
int cli_open_source(const char *spec, hm_producer **out);
/* --data NAME=SPEC (eval = --eval-data), keeping the first |limit| samples if set. */
int cli_bind_spec(hm_graph *g, const char *spec, int eval, size_t limit, cli_sources *src);
/* --dataset fashion-mnist: the first input producer gets the pixels (scaled to
 * [0, 1]), the first loss target the labels; the 10k test split is the
 * evaluation set. */
int cli_bind_dataset(hm_graph *g, const char *dataset, size_t limit_train, size_t limit_eval, cli_sources *src);

/* ===== Files (cli_files.c): formats recognised by their first bytes ===== */

typedef enum cli_file_kind {
  CLI_FILE_TEXT,        /* anything else: a .hmx model is text */
  CLI_FILE_GRAPH,       /* .hgr */
  CLI_FILE_WEIGHTS,     /* .hnwt */
  CLI_FILE_CHECKPOINT,  /* .hck */
  CLI_FILE_SAFETENSORS,
  CLI_FILE_UNREADABLE
} cli_file_kind;

cli_file_kind cli_file_kind_of(const char *path);
const char *cli_file_kind_name(cli_file_kind kind);
/* A model from DSL text or a binary graph; prints the error and returns CLI_FAILED otherwise. */
int cli_load_model(const char *path, hm_graph **out);
/* Weights from safetensors, .hnwt or a checkpoint (its weights). */
int cli_load_weights(const char *path, hm_weights **out);

/* Parses an unsigned integer option value; prints an error and returns nonzero on failure. */
int cli_parse_size(const char *opt, const char *text, size_t *out);
int cli_parse_float(const char *opt, const char *text, float *out);

#endif /* HM_CLI_H_ */
