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
#include "nodes/pg_list.h"

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
	/* state_lock_runs': no task instance yet (a run to decide as it is created) */
	bool		fresh;

	/*
	 * the scheduler's, of a fresh run: no other run of its DAG was queued or
	 * running when it was created, as read under the DAG's KEY SHARE lock
	 * (which every API call that makes or reopens runs conflicts with; only
	 * the scheduler starts runs, and workers queue only in running ones), so
	 * no instance of the DAG is active to count
	 */
	bool		dag_idle;
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
	/* the pool of the task instance that ended ("": none), for pool.c */
	char		pool[251];
} Advance;

/* queued runs start, up to each DAG's max_active_runs */
extern void state_start_runs(TimestampTz now);

/*
 * A RunRef from row "row" of SPI_tuptable, whose columns are run_id,
 * dag_id, max_active_tasks, started_at + dagrun_timeout and, optionally,
 * fresh (the run has no task instance yet)
 */
extern void state_read_run_ref(uint64 row, RunRef *run);

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
 * The scheduler's: a batch of runs it locked (state_lock_runs), decided
 * with a few statements for them all, in the common case (ready instances
 * queued, or nothing to do); done[i] false leaves runs[i] to
 * state_evaluate_run.  advs[i] tells what happened to runs[i].
 */
extern void state_evaluate_batch(const RunRef *runs, int n, TimestampTz now,
								 Advance *advs, bool *done);

/*
 * Locks the rows of the runs of ids[0..n) that are running and that no
 * other transaction holds (SKIP LOCKED), as state_lock_run does one;
 * locked[i] says which, and runs[i] is filled for those.
 */
extern void state_lock_runs(const int64 *ids, int n, RunRef *runs, bool *locked);

/*
 * After task_id (its instance map_index) reached a final state in its worker's transaction: its
 * downstream instances decided (skipped and upstream_failed propagate),
 * ready ones queued as max_active_tasks allows, ready instances of the DAG
 * held back earlier queued in the room it left, and the run ended if it
 * was the last.
 */
extern void state_advance_after(const RunRef *run, const char *task_id,
								int map_index, TimestampTz now, Advance *adv);

/*
 * One waiter of pool (ready, held back) queued, in claim order, within the
 * caller's transaction: the first whose DAG is not in excluded (a List of
 * dag ids).  HAND_NEXT_DAG: its DAG had no room (or, with skip_locked, was
 * locked: *locked set), its id is copied to dag_out (ORCH_MAX_ID_LEN + 1),
 * and the caller tries again without it; HAND_DONE: no waiter, or no room
 * in the pool for the first.
 */
typedef enum PoolHandOut
{
	HAND_QUEUED,
	HAND_NEXT_DAG,
	HAND_AGAIN,					/* the waiter went meanwhile */
	HAND_DONE
} PoolHandOut;

extern PoolHandOut state_pool_hand_out(const char *pool, List *excluded,
									   bool skip_locked, TimestampTz now,
									   char *dag_out, bool *locked);

/* claim, success and failure of a try */
/* (a task instance is (run_id, task_id, map_index); map_index -1: not mapped) */
extern void state_try_claimed(int64 run_id, const char *task_id, int map_index,
							  TimestampTz now);
extern bool state_try_succeeded(int64 run_id, const char *task_id, int map_index,
								int try_number, TimestampTz now, bool has_rows,
								int64 rows_loaded, bool cached);
extern bool state_try_rescheduled(int64 run_id, const char *task_id, int map_index,
								  int try_number, TimestampTz next_poke_at,
								  TimestampTz first_poke_at);
extern bool state_try_skipped(int64 run_id, const char *task_id, int map_index,
							  int try_number, TimestampTz now, const char *why);
extern bool state_try_failed(int64 run_id, const char *task_id, int map_index,
							 int pid, int try_number, const char *error,
							 TimestampTz now, bool only_state, bool no_retry,
							 bool *final);
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
