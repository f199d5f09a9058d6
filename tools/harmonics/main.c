/*
 * harmonics — entry point and subcommand dispatch.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

static void usage(FILE *f) {
  fprintf(f,
          "usage: harmonics <command> [options]\n"
          "\n"
          "commands:\n"
          "  train MODEL.hmx ...  train a model (harmonics train --help)\n"
          "  infer MODEL.hmx ...  evaluate a trained model (harmonics infer --help)\n"
          "  compile MODEL.hmx [-o MODEL.hgr]   write the binary graph\n"
          "  convert IN OUT       weights between .safetensors and .hnwt\n"
          "  conform PLUGIN.so    check a backend plugin against the ABI (harmonics conform --help)\n"
          "  dashboard [--port N] serve the live training dashboard (train with --dashboard)\n"
          "  plugins [--json]     list every plugin considered: path, ABI, devices,\n"
          "                       capabilities and GEMM path, or why it was skipped\n"
          "  help                 this text\n"
          "  --version            version and build\n"
          "\n"
          "environment: HARMONICS_PLUGIN_PATH, HARMONICS_BACKEND, HARMONICS_CONFIG,\n"
          "HARMONICS_DEBUG=1 (see docs/plugins.md); HARMONICS_FASHION_MNIST_DIR (where\n"
          "--dataset fashion-mnist reads its IDX files; default /usr/share/datasets/fashion-mnist)\n");
}

int cli_fail(const char *what) {
  fprintf(stderr, "harmonics: %s%s%s\n", what ? what : "", what ? ": " : "", hm_last_error());
  return CLI_FAILED;
}

int cli_registry_init(const char *config, const char *backend) {
  hm_registry_options o = hm_registry_options_default();
  o.config_file = config;
  o.backend = backend;
  if (hm_registry_init(&o) != HM_OK) return cli_fail("cannot initialise the plugin registry");
  return CLI_OK;
}

void json_number(FILE *f, double v) {
  if (isfinite(v)) fprintf(f, "%.9g", v);
  else fputs("null", f);
}

int cli_parse_size(const char *opt, const char *text, size_t *out) {
  char *end = NULL;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text || *end || text[0] == '-') {
    fprintf(stderr, "harmonics: %s expects a non-negative integer, got '%s'\n", opt, text);
    return 1;
  }
  *out = (size_t)v;
  return 0;
}

int cli_parse_float(const char *opt, const char *text, float *out) {
  char *end = NULL;
  errno = 0;
  double v = strtod(text, &end);
  if (errno || end == text || *end || !isfinite(v)) {
    fprintf(stderr, "harmonics: %s expects a number, got '%s'\n", opt, text);
    return 1;
  }
  *out = (float)v;
  return 0;
}

void json_string(FILE *f, const char *s) {
  fputc('"', f);
  for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) {
    if (*p == '"' || *p == '\\') fprintf(f, "\\%c", *p);
    else if (*p == '\n') fputs("\\n", f);
    else if (*p < 0x20) fprintf(f, "\\u%04x", *p);
    else fputc(*p, f);
  }
  fputc('"', f);
}

typedef int (*command_fn)(int argc, char **argv);

static command_fn find_command(const char *name) {
  static const struct {
    const char *name;
    command_fn fn;
  } commands[] = {{"plugins", cmd_plugins}, {"train", cmd_train},         {"infer", cmd_infer},
                  {"conform", cmd_conform}, {"dashboard", cmd_dashboard}, {"compile", cmd_compile},
                  {"convert", cmd_convert}};
  for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
    if (strcmp(commands[i].name, name) == 0) return commands[i].fn;
  return NULL;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return CLI_USAGE;
  }
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("harmonics %s (plugin ABI %d.%d, build %s)\n", hm_version(), HM_ABI_VERSION_MAJOR,
           HM_ABI_VERSION_MINOR, hm_build_id());
    return CLI_OK;
  }
  if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
    if (argc < 3) {
      usage(stdout);
      return CLI_OK;
    }
    /* harmonics help COMMAND is COMMAND --help. */
    command_fn fn = find_command(argv[2]);
    if (fn) {
      char help[] = "--help";
      char *args[] = {help, NULL};
      return fn(1, args);
    }
    fprintf(stderr, "harmonics: no command '%s' to help with\n\n", argv[2]);
    usage(stderr);
    return CLI_USAGE;
  }
  command_fn fn = find_command(cmd);
  if (fn) return fn(argc - 2, argv + 2);
  fprintf(stderr, "harmonics: unknown command '%s'\n\n", cmd);
  usage(stderr);
  return CLI_USAGE;
}
