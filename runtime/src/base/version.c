/* The library's version and build identity. */
#include "harmonics/version.h"

#ifndef HM_BUILD_ID
#define HM_BUILD_ID "unknown"
#endif

const char *hm_version(void) { return HM_VERSION_STRING; }
const char *hm_build_id(void) { return HM_BUILD_ID; }
