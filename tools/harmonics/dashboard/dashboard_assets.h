/* The dashboard page's files, embedded at build time (cmake/embed_assets.cmake). */
#ifndef HM_DASHBOARD_ASSETS_H_
#define HM_DASHBOARD_ASSETS_H_

#include <stddef.h>

typedef struct dash_asset {
  const char *path; /* "/index.html" */
  const char *type; /* Content-Type */
  const unsigned char *data;
  size_t size;
} dash_asset;

extern const dash_asset dash_assets[];
extern const size_t dash_n_assets;

#endif /* HM_DASHBOARD_ASSETS_H_ */
