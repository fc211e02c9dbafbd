/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler: one background worker for orchestrator.database.
 *
 * It sleeps on its latch until the earliest of the next schedule time, the
 * next retry time and the next run timeout, or until something changes what
 * is due: an API call that commits (create_dag, trigger_dag, clear_task,
 * ...), a worker that finishes a task, a worker that starts or stops, a
 * configuration reload.  Each wake-up is one "tick", in one transaction:
 *
 * 1. recover lost work: running task instances whose worker is gone count
 *	  as a failed try;
 * 3. create the runs that schedules make due (Airflow's data intervals);
 * 4. start queued runs, up to each DAG's max_active_runs;
 * 5. in each running run, decide which task instances are ready (trigger
 *	  rules, retries), which are upstream_failed or skipped, and queue the
 *	  ready ones up to max_active_tasks; end runs whose tasks are all done,
 *	  their state decided by the leaf tasks; fail runs past dagrun_timeout;
 *
 * and, after the commit, 2. stop workers whose task instance was cancelled
 * or timed out under them, and start task workers for the queued instances,
 * at most orchestrator.max_workers at once.  The scheduler never waits on a
 * task and never touches the network.
 *
 * Each DAG and each run is handled in a subtransaction of its own, so that
 * one that raises an error (a schedule made invalid behind the API's back,
 * say) is reported and skipped while the others go on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "cron.h"
#include "orchestrator.h"

/* the longest the scheduler sleeps with nothing due */
#define MAX_SLEEP_MS		(3600 * 1000L)
/* at most this many runs created for one DAG in one tick */
#define MAX_RUNS_PER_TICK	1000

/* task workers started and not yet seen stopped */
static List *worker_handles = NIL;
static bool start_failure_logged = false;

/*
 * Worker starts in the current second: workers that keep exiting without a
 * task (a broken catalog, say) must not make the scheduler spin.
 */
#define MAX_STARTS_PER_SECOND	(4 * orch_max_workers)
static TimestampTz start_window = 0;
static int	starts_in_window = 0;

/* when the scheduler last applied orchestrator.history_retention */
static TimestampTz last_purge = DT_NOBEGIN;

/* the tick's time and its earliest next due time */
static TimestampTz tick_now;
static TimestampTz tick_wake;

static void
wake_by(TimestampTz when)
{
	if (when < tick_wake)
		tick_wake = when;
}

static void
scheduler_detach(int code, Datum arg)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	if (orch_shared->scheduler_pid == MyProcPid)
	{
		orch_shared->scheduler_pid = 0;
		orch_shared->scheduler_latch = NULL;
	}
	LWLockRelease(orch_shared->lock);
}

/*
 * Runs fn(arg) in a subtransaction; an error in it is logged and rolled
 * back, and the caller goes on.
 */
static bool
in_subxact(void (*fn) (void *), void *arg, const char *what)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	bool		ok = true;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
		ereport(WARNING,
				(errmsg("orchestrator scheduler: %s: %s", what, edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0));
		FreeErrorData(edata);
		ok = false;
	}
	PG_END_TRY();
	return ok;
}

static char *
col_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static Datum
col_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* A copy of the worker slots, taken under the lock. */
static OrchWorkerSlot *
copy_slots(void)
{
	OrchWorkerSlot *slots = palloc(sizeof(OrchWorkerSlot) * orch_shared->nslots);

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	memcpy(slots, orch_shared->slots, sizeof(OrchWorkerSlot) * orch_shared->nslots);
	LWLockRelease(orch_shared->lock);
	return slots;
}

/*
 * 1. A running task instance whose worker holds no slot for it is lost: its
 * worker died (SIGKILL, a crash, a restart) without recording an outcome.
 * Its work rolled back with it, so the try counts as failed and is retried
 * if tries remain.
 */
static void
recover_lost(void)
{
	OrchWorkerSlot *slots;
	SPITupleTable *tuptable;
	uint64		n;

	/*
	 * The instances first, then the slots: a claim committed before this
	 * snapshot had its slot set before it committed, so the slots copied
	 * next show it.
	 */
	run_query("SELECT run_id, task_id, worker_pid, try_number "
			  "FROM orchestrator.task_instance WHERE state = 'running'",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	n = SPI_processed;
	if (n == 0)
		return;
	tuptable = SPI_tuptable;
	slots = copy_slots();

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		int64		run_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		char	   *task_id = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
		Datum		pidd = SPI_getbinval(tuple, desc, 3, &isnull);
		int			pid = isnull ? 0 : DatumGetInt32(pidd);
		int			try_number = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		bool		alive = false;

		for (int s = 0; s < orch_shared->nslots && !alive; s++)
			alive = (slots[s].pid == pid && slots[s].phase != SLOT_IDLE &&
					 slots[s].run_id == run_id &&
					 strcmp(slots[s].task_id, task_id) == 0);
		if (alive)
			continue;

		/* applies only if it is still that running try */
		if (orch_record_failure(run_id, task_id, pid, try_number,
								psprintf("the worker (pid %d) stopped without recording an outcome (killed, crashed, or the server restarted)",
										 pid),
								tick_now))
		{
			StringInfoData live;

			/* which workers there were, should a loss ever be questioned */
			initStringInfo(&live);
			for (int s = 0; s < orch_shared->nslots; s++)
				if (slots[s].pid != 0)
					appendStringInfo(&live, "%s%d (%s " INT64_FORMAT ")", live.len ? ", " : "",
									 slots[s].pid, slots[s].task_id, slots[s].run_id);
			ereport(LOG,
					(errmsg("orchestrator: task \"%s\" of run " INT64_FORMAT " lost its worker (pid %d); counting try %d as failed",
							task_id, run_id, pid, try_number),
					 errdetail("Live workers: %s.", live.len ? live.data : "none")));
		}
	}
}

/* Whether some worker is running a task (no transaction needed to tell). */
static bool
any_worker_running(void)
{
	bool		running = false;

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	for (int s = 0; s < orch_shared->nslots && !running; s++)
		running = (orch_shared->slots[s].pid != 0 &&
				   orch_shared->slots[s].phase == SLOT_RUNNING);
	LWLockRelease(orch_shared->lock);
	return running;
}

/*
 * 2. A worker whose task instance is no longer its running try (the run was
 * cancelled or timed out, or the DAG dropped) is told to stop: SIGINT
 * cancels what it runs, and its work rolls back.
 */
static void
stop_orphaned_workers(void)
{
	OrchWorkerSlot *slots = copy_slots();

	for (int s = 0; s < orch_shared->nslots; s++)
	{
		Oid			types[3] = {INT8OID, TEXTOID, INT4OID};
		Datum		values[3];

		if (slots[s].pid == 0 || slots[s].phase != SLOT_RUNNING)
			continue;
		values[0] = Int64GetDatum(slots[s].run_id);
		values[1] = CStringGetTextDatum(slots[s].task_id);
		values[2] = Int32GetDatum(slots[s].pid);
		run_query("SELECT 1 FROM orchestrator.task_instance "
				  "WHERE run_id = $1 AND task_id = $2 AND state = 'running' AND worker_pid = $3",
				  3, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			continue;

		/* still running that task? (a worker that is finishing is left be) */
		LWLockAcquire(orch_shared->lock, LW_SHARED);
		if (orch_shared->slots[s].pid == slots[s].pid &&
			orch_shared->slots[s].phase == SLOT_RUNNING &&
			orch_shared->slots[s].run_id == slots[s].run_id &&
			strcmp(orch_shared->slots[s].task_id, slots[s].task_id) == 0)
		{
			ereport(LOG,
					(errmsg("orchestrator: stopping worker %d: task \"%s\" of run " INT64_FORMAT " was cancelled",
							slots[s].pid, slots[s].task_id, slots[s].run_id)));
			kill(slots[s].pid, SIGINT);
		}
		LWLockRelease(orch_shared->lock);
	}
}

/*
 * The last two times the schedule fired at or before "now": the latest
 * complete data interval [*start, *end].
 */
static bool
latest_interval(const CronSchedule *sched, pg_tz *tz, TimestampTz now,
				TimestampTz *start, TimestampTz *end)
{
	for (int64 window = USECS_PER_HOUR; window < 40 * 366 * USECS_PER_DAY; window *= 4)
	{
		TimestampTz t = now - window;
		TimestampTz x;
		bool		have_last = false,
					have_prev = false;
		int			steps = 0;

		while (cron_next_time(sched, tz, t, &x) && x <= now && steps++ < 100000)
		{
			*start = *end;
			have_prev = have_last;
			*end = x;
			have_last = true;
			t = x;
		}
		if (have_prev)
			return true;
	}
	return false;
}

typedef struct DagRow
{
	char	   *dag_id;
	char	   *schedule;
	TimestampTz start;			/* start_date, or created_at */
	bool		has_end;
	TimestampTz end_date;
	bool		catchup;
	int			max_active_runs;
	char	   *timezone;
} DagRow;

static void
insert_run(const char *dag_id, const char *run_type, TimestampTz logical,
		   TimestampTz interval_end)
{
	Oid			types[5] = {TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[5];

	values[0] = CStringGetTextDatum(dag_id);
	values[1] = CStringGetTextDatum(run_type);
	values[2] = TimestampTzGetDatum(logical);
	values[3] = TimestampTzGetDatum(interval_end);
	values[4] = TimestampTzGetDatum(tick_now);
	run_query("INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, "
			  " data_interval_start, data_interval_end, state, queued_at) "
			  "VALUES ($1, $2, $3, $3, $4, 'queued', $5) "
			  "ON CONFLICT (dag_id, logical_date) DO NOTHING",
			  5, types, values, NULL, SPI_OK_INSERT);
}

/*
 * 3. The runs a DAG's schedule makes due.  A run's logical date is the
 * start of its data interval, and it is created once the interval has
 * ended.  With catchup, every interval from start_date on gets a run;
 * without, only the latest complete one.  No run starts after end_date, and
 * no more are created than max_active_runs allows.
 */
static void
schedule_dag(void *arg)
{
	DagRow	   *dag = arg;
	CronSchedule sched;
	pg_tz	   *tz;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int64		active;
	bool		have_last = false;
	TimestampTz last_end = 0;
	bool		isnull;

	cron_parse(dag->schedule, &sched);
	tz = orch_lookup_timezone(dag->timezone);

	values[0] = CStringGetTextDatum(dag->dag_id);
	run_query("SELECT count(*) FROM orchestrator.dag_run "
			  "WHERE dag_id = $1 AND state IN ('queued', 'running')",
			  1, types, values, NULL, SPI_OK_SELECT);
	active = DatumGetInt64(col_datum(0, 1, &isnull));

	run_query("SELECT data_interval_end FROM orchestrator.dag_run "
			  "WHERE dag_id = $1 AND run_type = 'scheduled' "
			  "ORDER BY logical_date DESC LIMIT 1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
	{
		Datum		d = col_datum(0, 1, &isnull);

		have_last = true;
		last_end = isnull ? 0 : DatumGetTimestampTz(d);
	}

	if (sched.once)
	{
		if (have_last)
			return;
		if (dag->start > tick_now)
		{
			wake_by(dag->start);
			return;
		}
		insert_run(dag->dag_id, "scheduled", dag->start, dag->start);
		return;
	}

	for (int created = 0; active < dag->max_active_runs; created++)
	{
		TimestampTz start;
		TimestampTz end;
		TimestampTz latest_start;
		TimestampTz latest_end;

		if (created >= MAX_RUNS_PER_TICK)
		{
			/* more next tick, at once */
			wake_by(tick_now);
			return;
		}
		if (have_last)
			start = last_end;
		else if (!cron_next_time(&sched, tz, dag->start - 1, &start))
			return;
		if (!cron_next_time(&sched, tz, start, &end))
			return;
		if (end > tick_now)
		{
			/* the next interval has not ended: nothing to skip either */
			if (!dag->has_end || start <= dag->end_date)
				wake_by(end);
			return;
		}
		/* without catchup, only the latest complete interval */
		if (!dag->catchup &&
			latest_interval(&sched, tz, tick_now, &latest_start, &latest_end) &&
			latest_start > start && latest_start >= dag->start)
		{
			start = latest_start;
			end = latest_end;
		}
		if (dag->has_end && start > dag->end_date)
			return;
		insert_run(dag->dag_id, "scheduled", start, end);
		have_last = true;
		last_end = end;
		active++;
	}
}

static void
schedule_dags(void)
{
	List	   *dags = NIL;
	ListCell   *lc;

	run_query("SELECT dag_id, schedule, coalesce(start_date, created_at), end_date, "
			  "       catchup, max_active_runs, timezone "
			  "FROM orchestrator.dag WHERE NOT paused AND schedule IS NOT NULL "
			  "AND EXISTS (SELECT 1 FROM orchestrator.task t WHERE t.dag_id = dag.dag_id) "
			  "ORDER BY dag_id",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		DagRow	   *dag = palloc0(sizeof(DagRow));
		bool		isnull;
		Datum		d;

		dag->dag_id = col_text(i, 1);
		dag->schedule = col_text(i, 2);
		dag->start = DatumGetTimestampTz(col_datum(i, 3, &isnull));
		d = col_datum(i, 4, &isnull);
		dag->has_end = !isnull;
		if (!isnull)
			dag->end_date = DatumGetTimestampTz(d);
		dag->catchup = DatumGetBool(col_datum(i, 5, &isnull));
		dag->max_active_runs = DatumGetInt32(col_datum(i, 6, &isnull));
		dag->timezone = col_text(i, 7);
		dags = lappend(dags, dag);
	}
	foreach(lc, dags)
	{
		DagRow	   *dag = lfirst(lc);

		in_subxact(schedule_dag, dag,
				   psprintf("cannot schedule DAG \"%s\"", dag->dag_id));
	}
}

/* 4. Queued runs start, oldest logical date first, up to max_active_runs. */
static void
start_runs(void)
{
	run_query("WITH free AS ( "
			  "  SELECT d.dag_id, d.max_active_runs - "
			  "         (SELECT count(*) FROM orchestrator.dag_run x "
			  "          WHERE x.dag_id = d.dag_id AND x.state = 'running') AS n "
			  "  FROM orchestrator.dag d WHERE NOT d.paused), "
			  "ranked AS ( "
			  "  SELECT r.run_id, row_number() OVER (PARTITION BY r.dag_id "
			  "                                      ORDER BY r.logical_date, r.run_id) AS k, f.n "
			  "  FROM orchestrator.dag_run r JOIN free f ON f.dag_id = r.dag_id "
			  "  WHERE r.state = 'queued') "
			  "UPDATE orchestrator.dag_run r SET state = 'running', started_at = $1, finished_at = NULL "
			  "FROM ranked WHERE ranked.run_id = r.run_id AND ranked.k <= ranked.n",
			  1, (Oid[]) {TIMESTAMPTZOID}, (Datum[]) {TimestampTzGetDatum(tick_now)},
			  NULL, SPI_OK_UPDATE);
}

typedef struct RunRow
{
	int64		run_id;
	char	   *dag_id;
	TimestampTz started_at;
	bool		has_timeout;
	TimestampTz deadline;
	int			max_active_tasks;
} RunRow;

typedef struct TiState
{
	char	   *task_id;
	char	   *state;
	bool		has_next_try;
	TimestampTz next_try_at;
	char	   *trigger_rule;
	bool		removed;		/* no longer in the DAG's definition */
	int			nupstream;
	int		   *upstream;		/* indexes into the run's array */
	bool		is_leaf;
} TiState;

static bool
state_is(const TiState *ti, const char *state)
{
	return strcmp(ti->state, state) == 0;
}

static bool
state_done(const TiState *ti)
{
	return state_is(ti, "success") || state_is(ti, "failed") ||
		state_is(ti, "upstream_failed") || state_is(ti, "skipped");
}

/*
 * What a scheduled task instance's trigger rule says, given its upstream
 * instances' states: "ready", "upstream_failed", "skipped", or NULL (wait).
 */
static const char *
trigger_rule_decision(TiState *tis, TiState *ti)
{
	int			n = ti->nupstream;
	int			succ = 0,
				skip = 0,
				fail = 0,
				done = 0;
	const char *rule = ti->trigger_rule;

	if (n == 0 || strcmp(rule, "always") == 0)
		return "ready";
	for (int i = 0; i < n; i++)
	{
		TiState    *up = &tis[ti->upstream[i]];

		if (state_is(up, "success"))
			succ++;
		else if (state_is(up, "skipped"))
			skip++;
		else if (state_is(up, "failed") || state_is(up, "upstream_failed"))
			fail++;
		done += state_done(up);
	}

	if (strcmp(rule, "all_success") == 0)
		return fail > 0 ? "upstream_failed" : skip > 0 ? "skipped" :
			succ == n ? "ready" : NULL;
	if (strcmp(rule, "all_failed") == 0)
		return succ + skip > 0 ? "skipped" : fail == n ? "ready" : NULL;
	if (strcmp(rule, "all_done") == 0)
		return done == n ? "ready" : NULL;
	if (strcmp(rule, "one_success") == 0)
		return succ > 0 ? "ready" : done < n ? NULL :
			skip == n ? "skipped" : "upstream_failed";
	if (strcmp(rule, "one_failed") == 0)
		return fail > 0 ? "ready" : done == n ? "skipped" : NULL;
	if (strcmp(rule, "none_failed") == 0)
		return fail > 0 ? "upstream_failed" : done == n ? "ready" : NULL;
	if (strcmp(rule, "none_skipped") == 0)
		return skip > 0 ? "skipped" : done == n ? "ready" : NULL;
	if (strcmp(rule, "none_failed_min_one_success") == 0)
		return fail > 0 ? "upstream_failed" : done < n ? NULL :
			succ > 0 ? "ready" : "skipped";
	elog(ERROR, "unknown trigger rule \"%s\"", rule);
	return NULL;
}

static void
set_ti_state(int64 run_id, TiState *ti, const char *state)
{
	Oid			types[4] = {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[4];

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(ti->task_id);
	values[2] = CStringGetTextDatum(state);
	values[3] = TimestampTzGetDatum(tick_now);
	run_query("UPDATE orchestrator.task_instance SET state = $3, "
			  " queued_at = CASE WHEN $3 = 'queued' THEN $4 ELSE queued_at END, "
			  " finished_at = CASE WHEN $3 IN ('skipped', 'upstream_failed') THEN $4 ELSE finished_at END, "
			  " next_try_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2",
			  4, types, values, NULL, SPI_OK_UPDATE);
	ti->state = pstrdup(state);
}

/* The DAG's callback for a run that ended, if it has one. */
static void
enqueue_run_callback(RunRow *run, const char *state, const char *error)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];
	char		nulls[3] = "   ";

	values[0] = Int64GetDatum(run->run_id);
	values[1] = CStringGetTextDatum(state);
	if (error)
		values[2] = CStringGetTextDatum(error);
	else
		nulls[2] = 'n';
	run_query("INSERT INTO orchestrator.callback (run_id, kind, spec, error) "
			  "SELECT r.run_id, c.kind, c.spec, $3 "
			  "FROM orchestrator.dag_run r JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "CROSS JOIN LATERAL (SELECT CASE WHEN $2 = 'failed' THEN 'on_failure_callback' ELSE 'on_success_callback' END, "
			  "                           CASE WHEN $2 = 'failed' THEN d.on_failure_callback ELSE d.on_success_callback END) c(kind, spec) "
			  "WHERE r.run_id = $1 AND c.spec IS NOT NULL",
			  3, types, values, nulls, SPI_OK_INSERT);
}

/*
 * 5. One running run: its timeout, its task instances, its end.
 */
static void
evaluate_run(void *arg)
{
	RunRow	   *run = arg;
	Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3];
	TiState    *tis;
	int			n;
	int64		active_tasks;
	bool		changed;
	bool		all_done = true;
	bool		failed = false;
	bool		isnull;

	values[0] = Int64GetDatum(run->run_id);
	values[1] = CStringGetTextDatum(run->dag_id);
	values[2] = TimestampTzGetDatum(tick_now);

	/* every task of the definition has an instance (also tasks added later) */
	run_query("INSERT INTO orchestrator.task_instance (run_id, task_id, state, max_tries) "
			  "SELECT $1, t.task_id, 'scheduled', t.retries + 1 "
			  "FROM orchestrator.task t WHERE t.dag_id = $2 "
			  "ON CONFLICT (run_id, task_id) DO NOTHING",
			  2, types, values, NULL, SPI_OK_INSERT);

	if (run->has_timeout)
	{
		if (run->deadline <= tick_now)
		{
			ereport(LOG,
					(errmsg("orchestrator: run " INT64_FORMAT " of DAG \"%s\" exceeded its dagrun_timeout",
							run->run_id, run->dag_id)));
			run_query("UPDATE orchestrator.task_instance SET "
					  " state = CASE WHEN state = 'running' THEN 'failed' ELSE 'skipped' END, "
					  " error = CASE WHEN state = 'running' THEN 'dagrun_timeout exceeded' ELSE error END, "
					  " finished_at = $3, next_try_at = NULL "
					  "WHERE run_id = $1 AND state IN ('scheduled', 'queued', 'running', 'up_for_retry')",
					  3, types, values, NULL, SPI_OK_UPDATE);
			run_query("UPDATE orchestrator.dag_run SET state = 'failed', finished_at = $3 WHERE run_id = $1",
					  3, types, values, NULL, SPI_OK_UPDATE);
			enqueue_run_callback(run, "failed", "dagrun_timeout exceeded");
			/* a run slot is free: schedule again at once */
			wake_by(tick_now);
			return;
		}
		wake_by(run->deadline);
	}

	run_query("SELECT count(*) FROM orchestrator.task_instance ti "
			  "JOIN orchestrator.dag_run r ON r.run_id = ti.run_id "
			  "WHERE r.dag_id = $2 AND ti.state IN ('queued', 'running')",
			  2, types, values, NULL, SPI_OK_SELECT);
	active_tasks = DatumGetInt64(col_datum(0, 1, &isnull));

	run_query("SELECT ti.task_id, ti.state, ti.next_try_at, t.trigger_rule, t.upstream, "
			  "       t.task_id IS NULL "
			  "FROM orchestrator.task_instance ti "
			  "LEFT JOIN orchestrator.task t ON t.dag_id = $2 AND t.task_id = ti.task_id "
			  "WHERE ti.run_id = $1 ORDER BY t.position, ti.task_id",
			  2, types, values, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	tis = palloc0(sizeof(TiState) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		Datum		d;

		tis[i].task_id = col_text(i, 1);
		tis[i].state = col_text(i, 2);
		d = col_datum(i, 3, &isnull);
		tis[i].has_next_try = !isnull;
		if (!isnull)
			tis[i].next_try_at = DatumGetTimestampTz(d);
		tis[i].trigger_rule = col_text(i, 4);
		tis[i].removed = DatumGetBool(col_datum(i, 6, &isnull));
		tis[i].is_leaf = !tis[i].removed;
	}
	/* upstream names to indexes; a task some other task depends on is no leaf */
	for (int i = 0; i < n; i++)
	{
		Datum		d = col_datum(i, 5, &isnull);
		Datum	   *elems;
		int			nelems;

		if (isnull)
			continue;
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		tis[i].upstream = palloc(sizeof(int) * Max(nelems, 1));
		for (int e = 0; e < nelems; e++)
		{
			char	   *name = TextDatumGetCString(elems[e]);

			for (int j = 0; j < n; j++)
			{
				if (strcmp(tis[j].task_id, name) == 0)
				{
					tis[i].upstream[tis[i].nupstream++] = j;
					tis[j].is_leaf = false;
					break;
				}
			}
		}
	}

	/* decide until nothing changes: upstream_failed and skipped propagate */
	do
	{
		changed = false;
		for (int i = 0; i < n; i++)
		{
			TiState    *ti = &tis[i];
			const char *decision = NULL;

			if (state_is(ti, "scheduled"))
			{
				if (ti->removed)
					decision = "skipped";
				else
					decision = trigger_rule_decision(tis, ti);
			}
			else if (state_is(ti, "up_for_retry"))
			{
				if (!ti->has_next_try || ti->next_try_at <= tick_now)
					decision = "ready";
				else
					wake_by(ti->next_try_at);
			}
			if (decision == NULL)
				continue;
			if (strcmp(decision, "ready") == 0)
			{
				if (active_tasks >= run->max_active_tasks)
					continue;	/* a finishing task wakes the scheduler */
				decision = "queued";
				active_tasks++;
			}
			set_ti_state(run->run_id, ti, decision);
			changed = true;
		}
	} while (changed);

	/* the run ends when all its tasks are done; its leaves decide how */
	for (int i = 0; i < n; i++)
	{
		if (!state_done(&tis[i]))
			all_done = false;
		else if (tis[i].is_leaf &&
				 (state_is(&tis[i], "failed") || state_is(&tis[i], "upstream_failed")))
			failed = true;
	}
	if (all_done)
	{
		StringInfoData why;

		values[1] = CStringGetTextDatum(failed ? "failed" : "success");
		run_query("UPDATE orchestrator.dag_run SET state = $2, finished_at = $3 WHERE run_id = $1",
				  3, types, values, NULL, SPI_OK_UPDATE);
		initStringInfo(&why);
		for (int i = 0; i < n && failed; i++)
			if (tis[i].is_leaf && (state_is(&tis[i], "failed") || state_is(&tis[i], "upstream_failed")))
				appendStringInfo(&why, "%s%s %s", why.len ? ", " : "tasks ",
								 tis[i].task_id, tis[i].state);
		enqueue_run_callback(run, failed ? "failed" : "success", failed ? why.data : NULL);
		/* a run slot is free: schedule again at once */
		wake_by(tick_now);
	}
}

static void
evaluate_runs(void)
{
	List	   *runs = NIL;
	ListCell   *lc;

	run_query("SELECT r.run_id, r.dag_id, r.started_at, r.started_at + d.dagrun_timeout, "
			  "       d.max_active_tasks "
			  "FROM orchestrator.dag_run r JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "WHERE r.state = 'running' ORDER BY r.logical_date, r.run_id",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		RunRow	   *run = palloc0(sizeof(RunRow));
		bool		isnull;
		Datum		d;

		run->run_id = DatumGetInt64(col_datum(i, 1, &isnull));
		run->dag_id = col_text(i, 2);
		run->started_at = DatumGetTimestampTz(col_datum(i, 3, &isnull));
		d = col_datum(i, 4, &isnull);
		run->has_timeout = !isnull;
		if (!isnull)
			run->deadline = DatumGetTimestampTz(d);
		run->max_active_tasks = DatumGetInt32(col_datum(i, 5, &isnull));
		runs = lappend(runs, run);
	}
	foreach(lc, runs)
	{
		RunRow	   *run = lfirst(lc);

		in_subxact(evaluate_run, run,
				   psprintf("cannot evaluate run " INT64_FORMAT " of DAG \"%s\"",
							run->run_id, run->dag_id));
	}
}

/* Task workers, up to orchestrator.max_workers, for the queued instances. */
static void
start_workers(int64 queued)
{
	ListCell   *lc;
	int			active;

	foreach(lc, worker_handles)
	{
		BackgroundWorkerHandle *handle = lfirst(lc);
		pid_t		pid;

		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED)
		{
			worker_handles = foreach_delete_current(worker_handles, lc);
			pfree(handle);
		}
	}
	active = list_length(worker_handles);

	if (GetCurrentTimestamp() - start_window >= USECS_PER_SEC)
	{
		start_window = GetCurrentTimestamp();
		starts_in_window = 0;
	}

	for (int64 i = 0; i < queued && active < orch_max_workers; i++)
	{
		BackgroundWorker worker;
		BackgroundWorkerHandle *handle;
		MemoryContext old;

		if (starts_in_window >= MAX_STARTS_PER_SECOND)
		{
			wake_by(tick_now + USECS_PER_SEC);
			return;
		}
		starts_in_window++;

		memset(&worker, 0, sizeof(worker));
		worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
		worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
		worker.bgw_restart_time = BGW_NEVER_RESTART;
		snprintf(worker.bgw_library_name, BGW_MAXLEN, "orchestrator");
		snprintf(worker.bgw_function_name, BGW_MAXLEN, "orch_worker_main");
		snprintf(worker.bgw_name, BGW_MAXLEN, "orchestrator worker");
		snprintf(worker.bgw_type, BGW_MAXLEN, "orchestrator worker");
		worker.bgw_notify_pid = MyProcPid;

		old = MemoryContextSwitchTo(TopMemoryContext);
		if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		{
			MemoryContextSwitchTo(old);
			/* said once, not at every tick; try again shortly */
			if (!start_failure_logged)
				ereport(LOG,
						(errmsg("orchestrator: could not start a task worker: no background worker slot is free"),
						 errhint("Raise max_worker_processes (it must leave room for orchestrator.max_workers = %d).",
								 orch_max_workers)));
			start_failure_logged = true;
			wake_by(tick_now + 5 * USECS_PER_SEC);
			return;
		}
		worker_handles = lappend(worker_handles, handle);
		MemoryContextSwitchTo(old);
		start_failure_logged = false;
		active++;
	}
}

/*
 * Once a day (and when the scheduler starts): ended runs older than
 * orchestrator.history_retention go, with their task instances and
 * artifacts, in batches of a transaction each, so that no lock is held
 * long.  Runs still going are never touched.
 */
static void
apply_retention(void)
{
	TimestampTz cutoff;
	int64		n;
	int64		total = 0;

	if (orch_history_retention == NULL || orch_history_retention[0] == '\0')
		return;
	if (last_purge != DT_NOBEGIN && tick_now - last_purge < USECS_PER_DAY)
	{
		wake_by(last_purge + USECS_PER_DAY);
		return;
	}
	last_purge = tick_now;
	wake_by(last_purge + USECS_PER_DAY);
	cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(tick_now),
													 DirectFunctionCall3(interval_in,
																		 CStringGetDatum(orch_history_retention),
																		 ObjectIdGetDatum(InvalidOid),
																		 Int32GetDatum(-1))));
	do
	{
		orch_begin_xact();
		n = OidIsValid(get_extension_oid("orchestrator", true)) ?
			orch_purge_batch(cutoff, InvalidOid, 1000) : 0;
		orch_end_xact();
		total += n;
		CHECK_FOR_INTERRUPTS();
	} while (n > 0);
	if (total > 0)
		ereport(LOG,
				(errmsg("orchestrator: removed " INT64_FORMAT " runs that ended before %s (orchestrator.history_retention = '%s')",
						total, timestamptz_to_str(cutoff), orch_history_retention)));
}

/*
 * One tick; returns how long to sleep, in milliseconds.
 */
static long
scheduler_tick(void)
{
	int64		queued = 0;
	bool		isnull;
	TimestampTz real_now;
	long		sleep_ms;

	orch_begin_xact();
	pgstat_report_activity(STATE_RUNNING, "scheduling");

	tick_now = orch_now();
	tick_wake = tick_now + MAX_SLEEP_MS * INT64CONST(1000);

	/* not installed (yet, or any more): CREATE EXTENSION wakes us */
	if (OidIsValid(get_extension_oid("orchestrator", true)))
	{
		recover_lost();
		if (orch_enabled)
		{
			schedule_dags();
			start_runs();
			evaluate_runs();
			run_query("SELECT (SELECT count(*) FROM orchestrator.task_instance ti "
					  "        JOIN orchestrator.dag_run r ON r.run_id = ti.run_id "
					  "        WHERE ti.state = 'queued' AND r.state = 'running') "
					  "     + (SELECT count(*) FROM orchestrator.callback)",
					  0, NULL, NULL, NULL, SPI_OK_SELECT);
			queued = DatumGetInt64(col_datum(0, 1, &isnull));
		}
	}

	orch_end_xact();

	/*
	 * Once what this tick decided is committed (a run timed out, say), and
	 * also what API calls committed (cancel_run), workers whose task was
	 * taken from them are stopped.
	 */
	if (any_worker_running())
	{
		orch_begin_xact();
		if (OidIsValid(get_extension_oid("orchestrator", true)))
			stop_orphaned_workers();
		orch_end_xact();
	}
	pgstat_report_activity(STATE_IDLE, NULL);

	apply_retention();

	if (queued > 0)
		start_workers(queued);

	/* the due times are on the scheduler's clock; the sleep on the real one */
	real_now = orch_now();
	sleep_ms = (long) Max((tick_wake - real_now) / 1000, 0);
	return Min(sleep_ms, MAX_SLEEP_MS);
}

void
orch_scheduler_main(Datum arg)
{
	long		sleep_ms;
	long		backoff_ms = 0;
	MemoryContext tick_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(orch_database, NULL, 0);
	pgstat_report_appname("orchestrator scheduler");

	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	orch_shared->scheduler_pid = MyProcPid;
	orch_shared->scheduler_latch = MyLatch;
	LWLockRelease(orch_shared->lock);
	before_shmem_exit(scheduler_detach, 0);

	ereport(LOG,
			(errmsg("orchestrator scheduler started for database \"%s\"", orch_database)));

	tick_cxt = AllocSetContextCreate(TopMemoryContext, "orchestrator tick",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		MemoryContextSwitchTo(tick_cxt);
		PG_TRY();
		{
			sleep_ms = scheduler_tick();
			backoff_ms = 0;
		}
		PG_CATCH();
		{
			/* log it, and try again later: the scheduler never gives up */
			MemoryContextSwitchTo(tick_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			backoff_ms = backoff_ms == 0 ? 1000 : Min(backoff_ms * 2, 60000);
			sleep_ms = backoff_ms;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(tick_cxt);

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
