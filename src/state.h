/*-------------------------------------------------------------------------
 *
 * state.h
 *	  Every change of state of a run or a task instance, in one place: the
 *	  scheduler, the task workers and the SQL API call these, and these
 *	  call the pure decisions of rules.c.  Each runs inside the caller's
 *	  transaction, with SPI connected.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_STATE_H
#define ORCHESTRATOR_STATE_H

#include "datatype/timestamp.h"

/* a running run, locked by state_lock_run */
typedef struct RunRef
{
	int64		run_id;
	char	   *dag_id;
	int			max_active_tasks;
	bool		has_timeout;
	TimestampTz deadline;		/* started_at + dagrun_timeout */
	/* the scheduler's: a DAG row another transaction holds is not waited for */
	bool		skip_locked_dag;
} RunRef;

/* what an evaluation did */
typedef struct Advance
{
	int			queued;			/* task instances it queued */
	bool		held;			/* ready ones left for want of room */
	bool		undecided;		/* some it could not decide: the scheduler will */
	bool		ended;			/* the run ended */
	bool		dag_locked;		/* queueing skipped: the DAG's row was locked */
	TimestampTz retry_at;		/* the run's next retry time, 0: none */
} Advance;

/* queued runs start, up to each DAG's max_active_runs */
extern void state_start_runs(TimestampTz now);

/*
 * Locks a running run's row (FOR NO KEY UPDATE): everything that changes
 * its task instances' states holds it, so that two siblings finishing at
 * once decide their join one after the other.  False if the run is not
 * running, or (skip_locked) another transaction holds it.
 */
extern bool state_lock_run(int64 run_id, bool skip_locked, RunRef *run);

/* The whole run, decided: the scheduler, and a worker when a run may end. */
extern void state_evaluate_run(const RunRef *run, TimestampTz now, Advance *adv);

/*
 * After task_id reached a final state in its worker's transaction: its
 * downstream instances decided (skipped and upstream_failed propagate),
 * ready ones queued as max_active_tasks allows, ready instances of the DAG
 * held back earlier queued in the room it left, and the run ended if it
 * was the last.
 */
extern void state_advance_after(const RunRef *run, const char *task_id,
								TimestampTz now, Advance *adv);

/* claim, success and failure of a try */
/* (a task instance is (run_id, task_id, map_index); map_index -1: not mapped) */
extern void state_try_claimed(int64 run_id, const char *task_id, int map_index,
							  TimestampTz now);
extern bool state_try_succeeded(int64 run_id, const char *task_id, int map_index,
								int try_number, TimestampTz now, bool has_rows,
								int64 rows_loaded, bool cached);
extern bool state_try_failed(int64 run_id, const char *task_id, int map_index,
							 int pid, int try_number, const char *error,
							 TimestampTz now, bool only_state, bool *final);
extern void state_fail_unclaimable(int64 run_id, const char *task_id, int map_index,
								   const char *error, TimestampTz now);

/*
 * A run fails as a whole (cancel_run, dagrun_timeout): running instances
 * fail with error, the others not done are skipped.  With callback, the
 * DAG's on_failure_callback is queued.
 */
extern void state_fail_run(int64 run_id, const char *error, TimestampTz now,
						   bool callback);

/*
 * clear_task: the instances run again with their retries anew; map_index
 * -1: all instances of the task, else that one (and the same one of the
 * downstream tasks mapped alike).
 */
extern int	state_clear_tasks(int64 run_id, const char *dag_id,
							  const char *task_id, bool downstream, int map_index);

#endif							/* ORCHESTRATOR_STATE_H */
