/*
 * libharmonics_mpi: hm_collectives over MPI (Open MPI 4.1 from Debian;
 * docs/distributed.md). Optional: built when CMake finds MPI; libharmonics
 * itself never links MPI.
 *
 *   hm_collectives *c = NULL;
 *   if (hm_mpi_open(NULL, &c) != HM_OK) ...   (calls MPI_Init unless done)
 *   opts.collectives = c;                     every rank calls fit alike
 *   hm_mpi_close(c);                          (MPI_Finalize if we initialised)
 *
 * No call waits forever: each polls a non-blocking MPI operation and gives
 * up after timeout_seconds with UNAVAILABLE naming the operation, so a rank
 * that died or stopped answering is an error on the others. After such a
 * failure hm_mpi_close aborts the job (MPI_Abort), so mpirun exits non-zero
 * instead of waiting for the lost rank.
 */
#ifndef HARMONICS_MPI_H_
#define HARMONICS_MPI_H_

#include "harmonics/collectives.h"
#include "harmonics/pipeline.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct hm_mpi_options {
  size_t struct_size;
  double timeout_seconds; /* 60; HARMONICS_MPI_TIMEOUT overrides it when set */
  void *reserved[4];
} hm_mpi_options;

HM_API hm_mpi_options hm_mpi_options_default(void);
/* The collectives of MPI_COMM_WORLD. */
HM_API HM_MUST_USE hm_status hm_mpi_open(const hm_mpi_options *options, hm_collectives **out);
/* Finalizes MPI when hm_mpi_open initialised it; aborts the job instead
 * when a collective failed (a peer is gone). Accepts NULL. */
HM_API void hm_mpi_close(hm_collectives *c);
/* The pipeline transport over MPI point-to-point (harmonics/pipeline.h):
 * stage k is rank k of MPI_COMM_WORLD; a receive waits at most the smaller
 * of its timeout and the collectives' (HARMONICS_MPI_TIMEOUT). Owned by
 * |c|: valid until hm_mpi_close, which first completes the sends still in
 * flight (and aborts the job instead after a failure). */
HM_API HM_MUST_USE hm_status hm_mpi_pipeline_transport(hm_collectives *c, const hm_pipeline_transport **out);
/* Nonzero when this process was started by an MPI launcher (mpirun sets
 * OMPI_COMM_WORLD_SIZE, PMIx/Hydra set PMIX_RANK or PMI_SIZE). */
HM_API int hm_mpi_launched(void);

#ifdef __cplusplus
}
#endif
#endif /* HARMONICS_MPI_H_ */
