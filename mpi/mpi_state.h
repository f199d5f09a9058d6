/*
 * libharmonics_mpi's shared state (not installed): the collectives
 * (collectives_mpi.c) and the pipeline transport (pipeline_mpi.c) poll the
 * same way and share the failed flag that makes hm_mpi_close abort the job.
 */
#ifndef HM_MPI_STATE_H_
#define HM_MPI_STATE_H_

#include <mpi.h>

#include "harmonics/mpi.h"

typedef struct mpi_pipeline mpi_pipeline;

typedef struct mpi_state {
  hm_collectives table;
  double timeout;
  int we_initialised;
  int failed;             /* an operation timed out or failed: the job is broken */
  mpi_pipeline *pipeline; /* the pipeline transport, once asked for */
} mpi_state;

double hm_mpi__now(void);
/* Marks the job broken and returns UNAVAILABLE with MPI's message. */
hm_status hm_mpi__error(mpi_state *m, int rc, const char *what);
/* Polls |req| until it completes or m->timeout passes. */
hm_status hm_mpi__wait(mpi_state *m, MPI_Request *req, const char *what);
/* One pause between polls of a wait that began at |since|: yields the core
 * for the first 200 ms (Open MPI progresses only inside MPI calls), then
 * sleeps 50 us. */
void hm_mpi__pause(double since);
/* Completes the pipeline's sends still in flight (within the timeout). */
void hm_mpi__pipeline_drain(mpi_state *m);
void hm_mpi__pipeline_free(mpi_state *m);

#endif /* HM_MPI_STATE_H_ */
