/*
 * The `harmonics` command-line program: one binary, one subcommand per file.
 */
#ifndef HM_CLI_H_
#define HM_CLI_H_

#include <stdio.h>

#include "harmonics/harmonics.h"

/* Each subcommand gets argv after its own name; returns the exit status. */
int cmd_plugins(int argc, char **argv);

/* Exit statuses shared by subcommands. */
enum { CLI_OK = 0, CLI_FAILED = 1, CLI_USAGE = 2 };

/* Registry initialisation shared by every subcommand that loads plugins:
 * applies --config FILE and --backend NAME if given (NULL otherwise). */
int cli_registry_init(const char *config, const char *backend);

/* Prints "harmonics: <message>" for the last error and returns CLI_FAILED. */
int cli_fail(const char *what);

/* Minimal JSON output on a FILE. */
void json_string(FILE *f, const char *s);

#endif /* HM_CLI_H_ */
