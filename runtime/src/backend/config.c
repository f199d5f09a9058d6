/*
 * harmonics.conf: one "key = value" per line, '#' starts a comment.
 *   backend = cuda,vulkan,cpu       preference list (as HARMONICS_BACKEND)
 *   plugin_path = /opt/a:/opt/b     directories searched before the defaults
 *   plugin = /opt/x/hm_foo.so       one plugin file (repeatable)
 *   debug = loader,plugin           as HARMONICS_DEBUG
 *   cpu.threads = 2                 a device option for one backend
 * Unknown keys are errors, so a typo never goes unnoticed.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "backend/config.h"

static char *trim(char *s) {
  while (*s && isspace((unsigned char)*s)) s++;
  char *e = s + strlen(s);
  while (e > s && isspace((unsigned char)e[-1])) *--e = '\0';
  return s;
}

static int valid_key_char(char c) {
  return isalnum((unsigned char)c) || c == '_' || c == '.' || c == '-';
}

static hm_status push_copy(hm_ptrvec *v, const char *s, const char *path, int line) {
  char *d = hm__strdup(s);
  if (!d || hm__ptrvec_push(v, d)) {
    hm__free(d);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s:%d: out of memory", path, line);
  }
  return HM_OK;
}

/* "<backend>.<key>" = value; the key has a '.' that is neither first nor last. */
static hm_status push_device_option(hm_config *cfg, const char *key, const char *value, const char *path, int line) {
  hm_config_option *grown = hm__realloc(cfg->device_options, (cfg->n_device_options + 1) * sizeof *grown);
  if (!grown) return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s:%d: out of memory", path, line);
  cfg->device_options = grown;
  const char *dot = strchr(key, '.');
  hm_config_option o = {hm__strndup(key, (size_t)(dot - key)), hm__strdup(dot + 1), hm__strdup(value)};
  if (!o.backend || !o.key || !o.value) {
    hm__free(o.backend);
    hm__free(o.key);
    hm__free(o.value);
    return hm__fail(HM_STATUS_RESOURCE_EXHAUSTED, "%s:%d: out of memory", path, line);
  }
  cfg->device_options[cfg->n_device_options++] = o;
  return HM_OK;
}

hm_status hm__config_load(const char *path, hm_config *cfg) {
  FILE *f = fopen(path, "r");
  if (!f)
    return hm__fail(errno == ENOENT ? HM_STATUS_NOT_FOUND : HM_STATUS_IO_ERROR,
                    "cannot open configuration file %s: %s", path, strerror(errno));
  char buf[4096];
  int line = 0;
  hm_status st = HM_OK;
  while (st == HM_OK && fgets(buf, sizeof buf, f)) {
    line++;
    size_t len = strlen(buf);
    if (len == sizeof buf - 1 && buf[len - 1] != '\n') {
      st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: line longer than %zu characters", path, line, sizeof buf - 2);
      break;
    }
    char *hash = strchr(buf, '#');
    if (hash) *hash = '\0';
    char *s = trim(buf);
    if (!*s) continue;
    char *eq = strchr(s, '=');
    if (!eq) {
      st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: expected 'key = value'", path, line);
      break;
    }
    *eq = '\0';
    char *key = trim(s), *value = trim(eq + 1);
    for (char *k = key; *k; k++)
      if (!valid_key_char(*k)) {
        st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: invalid character '%c' in key '%s'", path, line, *k, key);
        break;
      }
    if (st) break;
    if (!*key) {
      st = hm__fail(HM_STATUS_PARSE_ERROR, "%s:%d: empty key", path, line);
    } else if (strcmp(key, "backend") == 0) {
      hm__free(cfg->backend);
      cfg->backend = hm__strdup(value);
    } else if (strcmp(key, "debug") == 0) {
      hm__free(cfg->debug);
      cfg->debug = hm__strdup(value);
    } else if (strcmp(key, "plugin") == 0) {
      st = push_copy(&cfg->plugin_paths, value, path, line);
    } else if (strcmp(key, "plugin_path") == 0) {
      char *copy = hm__strdup(value);
      for (char *tok = copy ? strtok(copy, ":") : NULL; tok && st == HM_OK; tok = strtok(NULL, ":"))
        st = push_copy(&cfg->plugin_paths, tok, path, line);
      hm__free(copy);
    } else if (strchr(key, '.') && key[0] != '.' && strchr(key, '.')[1] != '\0') {
      st = push_device_option(cfg, key, value, path, line);
    } else {
      st = hm__fail(HM_STATUS_PARSE_ERROR,
                    "%s:%d: unknown key '%s' (known: backend, plugin, plugin_path, debug, <backend>.<option>)",
                    path, line, key);
    }
  }
  if (st == HM_OK && ferror(f)) st = hm__fail(HM_STATUS_IO_ERROR, "%s: read error", path);
  fclose(f);
  return st;
}

void hm__config_free(hm_config *cfg) {
  hm__free(cfg->backend);
  hm__free(cfg->debug);
  for (size_t i = 0; i < cfg->plugin_paths.len; i++) hm__free(cfg->plugin_paths.items[i]);
  for (size_t i = 0; i < cfg->n_device_options; i++) {
    hm__free(cfg->device_options[i].backend);
    hm__free(cfg->device_options[i].key);
    hm__free(cfg->device_options[i].value);
  }
  hm__free(cfg->device_options);
  hm__ptrvec_free(&cfg->plugin_paths);
  memset(cfg, 0, sizeof *cfg);
}
