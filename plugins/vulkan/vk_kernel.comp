#version 450
#extension GL_GOOGLE_include_directive : require
// One kernel of hm_ops.kern per compilation: the build defines K_<name>.
#include "hm_abi_constants.h"
#include "dialect_glsl.h"
#include "hm_ops.kern"
