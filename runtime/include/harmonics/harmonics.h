/*
 * Harmonics: a neural-network training runtime with backend plugins.
 *
 * The umbrella header. Conventions for the whole API:
 *   - Every fallible call returns hm_status (HM_OK = 0); hm_last_error() then
 *     holds a sentence naming what failed and where. Outputs are untouched on
 *     failure.
 *   - Ownership: whoever creates frees. Every _create/_open/_load has a
 *     matching _free/_close; every free accepts NULL. A function comment says
 *     who owns a returned pointer and how long a borrowed one stays valid.
 *   - Option structs start with struct_size and are filled by their
 *     _default() function; set the fields you need after that.
 *   - Thread safety: the plugin registry is thread-safe. Other objects (graph,
 *     device, cycle state) may be used from any thread but not concurrently.
 */
#ifndef HARMONICS_H_
#define HARMONICS_H_

#include "harmonics/collectives.h"
#include "harmonics/data.h"
#include "harmonics/graph.h"
#include "harmonics/names.h"
#include "harmonics/pipeline.h"
#include "harmonics/plugins.h"
#include "harmonics/policy.h"
#include "harmonics/serialization.h"
#include "harmonics/status.h"
#include "harmonics/trainer.h"
#include "harmonics/training.h"
#include "harmonics/version.h"
#include "harmonics/visualizer.h"
#include "harmonics/weights.h"

#endif /* HARMONICS_H_ */
