/*-------------------------------------------------------------------------
 *
 * runs.c
 *	  Operations on runs: trigger_dag, backfill, clear_task, cancel_run and
 *	  wait_run.
 *
 * Like the definition API, these check that the caller owns the DAG, then
 * write the catalog as its owner, and wake the scheduler when (and only
 * if) the transaction commits.  Stopping the workers of a cancelled run is
 * the scheduler's job: it sees the instances cancelled under them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "cron.h"
#include "orchestrator.h"
#include "state.h"

/* at most this many runs from one backfill() call */
#define MAX_BACKFILL_RUNS 10000

static void
check_conf(FunctionCallInfo fcinfo, int argno)
{
	Jsonb	   *conf;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("conf must not be null")));
	conf = PG_GETARG_JSONB_P(argno);
	if (!JB_ROOT_IS_OBJECT(conf) || JB_ROOT_IS_SCALAR(conf))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("conf must be a jsonb object")));
}

static void
check_timestamp(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
	if (TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(argno)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be finite", name)));
}

/*
 * Raises ERROR if the DAG has no task: a run of it would have nothing to do,
 * and would succeed at once.  Call with the DAG's row locked (add_task locks
 * it too), so that the answer holds until the run commits.
 */
static void
require_tasks(const char *dag_id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(dag_id)};

	run_query("SELECT 1 FROM orchestrator.task WHERE dag_id = $1 LIMIT 1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("DAG \"%s\" has no tasks", dag_id),
				 errhint("Add its tasks with add_task() first.")));
}

/*
 * Airflow's data interval for a manual run of a scheduled DAG: the last
 * complete interval before its logical date, that is from the schedule's
 * time before the latest one at or before the logical date, to that one.
 * Returns false for a DAG without a schedule, or @once (whose manual runs
 * keep an empty interval at their logical date).
 */
static bool
manual_interval(const char *dag_id, TimestampTz logical,
				TimestampTz *start, TimestampTz *end)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(dag_id)};
	char	   *schedule;
	CronSchedule sched;
	pg_tz	   *tz;

	run_query("SELECT schedule, timezone FROM orchestrator.dag WHERE dag_id = $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	schedule = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (schedule == NULL)
		return false;
	cron_parse(schedule, &sched);
	if (sched.once)
		return false;
	tz = orch_lookup_timezone(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));

	/*
	 * The last two schedule times at or before the logical date, looked for
	 * in a window that doubles from an hour until it holds two (a schedule
	 * fires at least once in ten years, or not at all).
	 */
	for (int64 window = USECS_PER_HOUR;
		 window <= 22 * INT64CONST(365) * USECS_PER_DAY && logical - window > MIN_TIMESTAMP;
		 window *= 2)
	{
		TimestampTz t = logical - window;
		TimestampTz next;
		TimestampTz last = 0,
					before = 0;
		int			found = 0;

		while (cron_next_time(&sched, tz, t, &next) && next <= logical)
		{
			before = last;
			last = next;
			found++;
			t = next;
		}
		if (found >= 2)
		{
			*start = before;
			*end = last;
			return true;
		}
	}
	return false;
}

PG_FUNCTION_INFO_V1(orch_trigger_dag);

/* trigger_dag(dag_id text, conf jsonb, logical_date timestamptz) RETURNS bigint */
Datum
orch_trigger_dag(PG_FUNCTION_ARGS)
{
	char	   *dag_id;
	CatalogWrite cw;
	Oid			types[5] = {TEXTOID, TIMESTAMPTZOID, JSONBOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[5];
	int64		run_id;
	bool		isnull;
	TimestampTz start,
				end;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("dag_id must not be null")));
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	check_conf(fcinfo, 1);
	check_timestamp(fcinfo, 2, "logical_date");

	catalog_write_begin(&cw);
	lock_owned_dag(&cw, dag_id, false, false);
	require_tasks(dag_id);
	values[0] = CStringGetTextDatum(dag_id);
	values[1] = PG_GETARG_DATUM(2);
	values[2] = PG_GETARG_DATUM(1);
	/* a scheduled DAG's manual run gets the last complete interval, as in Airflow */
	if (!manual_interval(dag_id, PG_GETARG_TIMESTAMPTZ(2), &start, &end))
		start = end = PG_GETARG_TIMESTAMPTZ(2);
	values[3] = TimestampTzGetDatum(start);
	values[4] = TimestampTzGetDatum(end);
	run_query("INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, "
			  " data_interval_start, data_interval_end, state, conf) "
			  "VALUES ($1, 'manual', $2, $4, $5, 'queued', $3) "
			  "ON CONFLICT (dag_id, logical_date) DO NOTHING RETURNING run_id",
			  5, types, values, NULL, SPI_OK_INSERT_RETURNING);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNIQUE_VIOLATION),
				 errmsg("DAG \"%s\" already has a run with logical date %s",
						dag_id, timestamptz_to_str(PG_GETARG_TIMESTAMPTZ(2))),
				 errhint("Give another logical_date, or run the existing run's tasks again with clear_task().")));
	run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	catalog_write_end(&cw);

	orch_wake_scheduler_at_commit();
	PG_RETURN_INT64(run_id);
}

PG_FUNCTION_INFO_V1(orch_backfill);

/*
 * backfill(dag_id text, from_date timestamptz, to_date timestamptz)
 * RETURNS int: creates the runs of the schedule's intervals whose logical
 * dates fall in [from_date, to_date], except those that exist.
 */
Datum
orch_backfill(PG_FUNCTION_ARGS)
{
	char	   *dag_id;
	TimestampTz from,
				to,
				start,
				end;
	CatalogWrite cw;
	Oid			types[3] = {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	Datum		values[3];
	CronSchedule sched;
	pg_tz	   *tz;
	char	   *schedule;
	int			created = 0;
	int			intervals = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("dag_id must not be null")));
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	check_timestamp(fcinfo, 1, "from_date");
	check_timestamp(fcinfo, 2, "to_date");
	from = PG_GETARG_TIMESTAMPTZ(1);
	to = PG_GETARG_TIMESTAMPTZ(2);
	if (to < from)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("to_date is before from_date")));

	catalog_write_begin(&cw);
	lock_owned_dag(&cw, dag_id, false, false);
	values[0] = CStringGetTextDatum(dag_id);
	run_query("SELECT schedule, timezone FROM orchestrator.dag WHERE dag_id = $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	schedule = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (schedule == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("DAG \"%s\" has no schedule to backfill", dag_id),
				 errhint("Use trigger_dag() for a DAG without a schedule.")));
	cron_parse(schedule, &sched);
	if (sched.once)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("DAG \"%s\" runs @once and has no intervals to backfill", dag_id)));
	tz = orch_lookup_timezone(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2));
	require_tasks(dag_id);

	for (TimestampTz t = from - 1;
		 cron_next_time(&sched, tz, t, &start) && start <= to;
		 t = start)
	{
		if (++intervals > MAX_BACKFILL_RUNS)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("backfill would create more than %d runs", MAX_BACKFILL_RUNS),
					 errhint("Backfill a shorter period at a time.")));
		if (!cron_next_time(&sched, tz, start, &end))
			break;
		values[1] = TimestampTzGetDatum(start);
		values[2] = TimestampTzGetDatum(end);
		run_query("INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, "
				  " data_interval_start, data_interval_end, state) "
				  "VALUES ($1, 'backfill', $2, $2, $3, 'queued') "
				  "ON CONFLICT (dag_id, logical_date) DO NOTHING",
				  3, types, values, NULL, SPI_OK_INSERT);
		created += (int) SPI_processed;
	}
	catalog_write_end(&cw);

	orch_wake_scheduler_at_commit();
	PG_RETURN_INT32(created);
}

/*
 * Locks a run of a DAG the caller may change (its own, or any for a
 * superuser), and its DAG; returns the run's state.  Another role's run
 * reads exactly like one that does not exist, and is not locked.
 */
static char *
lock_owned_run(CatalogWrite *cw, int64 run_id, char **dag_id)
{
	Oid			types[4] = {INT8OID, OIDOID, BOOLOID, INT8OID};
	Datum		values[4];
	char	   *state;

	values[0] = Int64GetDatum(run_id);
	values[1] = ObjectIdGetDatum(cw->caller);
	values[2] = BoolGetDatum(superuser_arg(cw->caller));
	values[3] = Int64GetDatum((int64) GetSystemIdentifier());
	run_query("SELECT r.dag_id, r.state FROM orchestrator.dag_run r "
			  "JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "WHERE r.run_id = $1 AND ((d.owner = $2 AND d.owner_sysid = $4) OR $3) "
			  "FOR UPDATE OF r",
			  4, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run " INT64_FORMAT " does not exist", run_id)));
	*dag_id = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
	lock_owned_dag(cw, *dag_id, false, false);
	return state;
}

PG_FUNCTION_INFO_V1(orch_clear_task);

/*
 * clear_task(run_id bigint, task_id text, downstream boolean, map_index
 * integer) RETURNS int: the task (and its downstream tasks) run again, with
 * their retries anew; a finished run reopens.  With map_index, only that
 * instance of a mapped task (and of its downstream: the same instance of
 * those mapped alike, and the unmapped ones).  Returns how many task
 * instances were cleared.
 */
Datum
orch_clear_task(PG_FUNCTION_ARGS)
{
	int64		run_id;
	char	   *task_id;
	bool		downstream;
	char	   *dag_id;
	CatalogWrite cw;
	int			map_index;
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, BOOLOID, INT4OID};
	Datum		values[5];
	int			cleared;

	/* (before reading map_index: the 0.1 catalog passes three arguments) */
	orch_require_catalog();
	downstream = PG_ARGISNULL(2) ? true : PG_GETARG_BOOL(2);
	map_index = PG_ARGISNULL(3) ? -1 : PG_GETARG_INT32(3);
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_id and task_id must not be null")));
	if (!PG_ARGISNULL(3) && map_index < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("map_index must be zero or more, not %d", map_index),
				 errhint("Leave map_index NULL to clear every instance of the task.")));
	run_id = PG_GETARG_INT64(0);
	task_id = text_to_cstring(PG_GETARG_TEXT_PP(1));

	catalog_write_begin(&cw);
	lock_owned_run(&cw, run_id, &dag_id);

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(task_id);
	values[2] = CStringGetTextDatum(dag_id);
	values[3] = BoolGetDatum(downstream);
	values[4] = Int32GetDatum(map_index);
	run_query("SELECT 1 FROM orchestrator.task_instance WHERE run_id = $1 AND task_id = $2",
			  2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("run " INT64_FORMAT " has no task \"%s\"", run_id, task_id)));
	if (map_index >= 0)
	{
		run_query("SELECT 1 FROM orchestrator.task_instance "
				  "WHERE run_id = $1 AND task_id = $2 AND map_index = $5",
				  5, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("task \"%s\" of run " INT64_FORMAT " has no mapped instance %d",
							task_id, run_id, map_index)));
	}

	cleared = state_clear_tasks(run_id, dag_id, task_id, downstream, map_index);
	catalog_write_end(&cw);

	orch_wake_scheduler_at_commit();
	PG_RETURN_INT32(cleared);
}

PG_FUNCTION_INFO_V1(orch_cancel_run);

/*
 * cancel_run(run_id bigint) RETURNS void: the run fails; its running tasks
 * fail (their workers are stopped and their work rolls back), the tasks not
 * started are skipped.
 */
Datum
orch_cancel_run(PG_FUNCTION_ARGS)
{
	int64		run_id;
	char	   *dag_id;
	char	   *state;
	CatalogWrite cw;
	Oid			types[1] = {INT8OID};
	Datum		values[1];

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_id must not be null")));
	run_id = PG_GETARG_INT64(0);

	catalog_write_begin(&cw);
	state = lock_owned_run(&cw, run_id, &dag_id);
	values[0] = Int64GetDatum(run_id);
	/* its callbacks go too, also one running (the scheduler stops it) */
	run_query("DELETE FROM orchestrator.callback WHERE run_id = $1",
			  1, types, values, NULL, SPI_OK_DELETE);
	if (SPI_processed > 0)
		orch_wake_scheduler_at_commit();
	if (strcmp(state, "success") == 0 || strcmp(state, "failed") == 0)
	{
		ereport(NOTICE,
				(errmsg("run " INT64_FORMAT " has already ended (%s)", run_id, state)));
		catalog_write_end(&cw);
		PG_RETURN_VOID();
	}
	/* wait for a claim in progress, then decide on committed states */
	/*
	 * (NO KEY UPDATE: a claim's update conflicts with it, the KEY SHARE
	 * locks a running load's rejects take on its instance do not)
	 */
	run_query("SELECT 1 FROM orchestrator.task_instance WHERE run_id = $1 FOR NO KEY UPDATE",
			  1, types, values, NULL, SPI_OK_SELECT);
	state_fail_run(run_id, "cancelled by cancel_run()",
				   GetCurrentTransactionStartTimestamp(), false);
	catalog_write_end(&cw);

	orch_wake_scheduler_at_commit();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orch_wait_run);

/*
 * wait_run(run_id bigint, timeout interval) RETURNS text: waits until the
 * run ends, or the timeout passes, and returns its state then.  Reads as
 * the caller, so it sees only the caller's runs (row-level security), and
 * another role's run reads like one that does not exist.  Each look takes
 * a new snapshot, so it needs READ COMMITTED.
 */
Datum
orch_wait_run(PG_FUNCTION_ARGS)
{
	int64		run_id;
	TimestampTz deadline;
	Oid			types[1] = {INT8OID};
	Datum		values[1];
	char	   *state = NULL;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("run_id must not be null")));
	run_id = PG_GETARG_INT64(0);

	/* with one snapshot for the whole transaction, the run never changes */
	if (IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
				 errmsg("wait_run() cannot be called in a %s transaction",
						IsolationIsSerializable() ? "SERIALIZABLE" : "REPEATABLE READ"),
				 errdetail("Such a transaction sees the runs as they were when it started, so it would never see the run progress."),
				 errhint("Call wait_run() in a READ COMMITTED transaction, or as a statement of its own in autocommit mode.")));

	deadline = PG_ARGISNULL(1) ? DT_NOEND :
		DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												TimestampTzGetDatum(GetCurrentTimestamp()),
												PG_GETARG_DATUM(1)));
	values[0] = Int64GetDatum(run_id);

	SPI_connect();
	for (;;)
	{
		bool		isnull;

		run_query("SELECT state, xmin FROM orchestrator.dag_run WHERE run_id = $1",
				  1, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("run " INT64_FORMAT " does not exist", run_id)));
		/* the scheduler cannot see a run this transaction has not committed */
		if (TransactionIdIsCurrentTransactionId(DatumGetTransactionId(SPI_getbinval(SPI_tuptable->vals[0],
																				   SPI_tuptable->tupdesc, 2, &isnull))))
			ereport(ERROR,
					(errcode(ERRCODE_ACTIVE_SQL_TRANSACTION),
					 errmsg("run " INT64_FORMAT " was created or changed in this transaction, which must commit before it can run",
							run_id),
					 errhint("Call wait_run() in a transaction of its own, after the one that calls trigger_dag().")));
		state = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
		SPI_freetuptable(SPI_tuptable);
		if (strcmp(state, "success") == 0 || strcmp(state, "failed") == 0 ||
			GetCurrentTimestamp() >= deadline)
			break;
		pfree(state);
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 100L, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
	}
	/* the result outlives SPI's memory */
	{
		char	   *result = SPI_palloc(strlen(state) + 1);

		strcpy(result, state);
		SPI_finish();
		PG_RETURN_TEXT_P(cstring_to_text(result));
	}
}

/*
 * Deletes at most "limit" runs that ended before "cutoff", with their task
 * instances and artifacts (whose large objects a trigger unlinks); only the
 * DAGs of "owner", unless it is InvalidOid.  Runs still going are never
 * touched, and runs locked by someone else are skipped.  Returns how many
 * it deleted.  Needs SPI, and the rights of the catalog's owner.
 */
int64
orch_purge_batch(TimestampTz cutoff, Oid owner, int limit)
{
	Oid			types[3] = {TIMESTAMPTZOID, OIDOID, INT4OID};
	Datum		values[3];

	values[0] = TimestampTzGetDatum(cutoff);
	values[1] = ObjectIdGetDatum(owner);
	values[2] = Int32GetDatum(limit);
	run_query("DELETE FROM orchestrator.dag_run WHERE run_id IN ("
			  " SELECT r.run_id FROM orchestrator.dag_run r "
			  " JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  " WHERE r.state IN ('success', 'failed') AND r.finished_at < $1 "
			  "   AND ($2 = 0 OR d.owner = $2) "
			  " LIMIT $3 FOR UPDATE OF r SKIP LOCKED)",
			  3, types, values, NULL, SPI_OK_DELETE);
	return (int64) SPI_processed;
}

PG_FUNCTION_INFO_V1(orch_purge_history);

/*
 * purge_history(older_than interval) RETURNS bigint: deletes the caller's
 * runs (a superuser's: all runs) that ended before now() - older_than, in
 * batches.  The scheduler does the same once a day, by
 * orchestrator.history_retention.
 */
Datum
orch_purge_history(PG_FUNCTION_ARGS)
{
	CatalogWrite cw;
	TimestampTz cutoff;
	int64		n;
	int64		total = 0;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("older_than must not be null")));
	cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(GetCurrentTransactionStartTimestamp()),
													 PG_GETARG_DATUM(0)));

	catalog_write_begin(&cw);
	do
	{
		n = orch_purge_batch(cutoff, superuser_arg(cw.caller) ? InvalidOid : cw.caller, 1000);
		total += n;
		CHECK_FOR_INTERRUPTS();
	} while (n > 0);
	catalog_write_end(&cw);
	PG_RETURN_INT64(total);
}
