/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Task workers: dynamic background workers that claim queued task
 *	  instances, run them as the DAG's owner, and record the outcome.
 *
 * A task instance's try, from the worker's side:
 *
 * 1. Claim, in a short transaction of its own: the first queued instance
 *	  in claim order (weight, then age) becomes running, with its try number, this worker's pid and the start
 *	  time, so a SELECT shows it at once.  The worker's shared-memory slot
 *	  names the instance, which is how the scheduler tells a live try from a
 *	  lost one.
 * 2. Work, in one transaction: the operator runs as the DAG's owner, then
 *	  the instance becomes success, and both commit together.  The success
 *	  update only applies while the instance is still this worker's running
 *	  try; if the run was cancelled or timed out meanwhile, it raises an
 *	  error instead, so the work is rolled back.  In the same transaction,
 *	  with the run's row locked, the task's downstream is decided and what
 *	  became ready is queued (state.c), and the run ends if it was the last.
 * 3. On error: roll back, then record the error and the next state
 *	  (up_for_retry, or failed when no tries remain, then its downstream as
 *	  after a success) in a new transaction.
 *
 * Then, if its task was in a pool, it queues the pool's waiters of other
 * DAGs in the room it left (pool.c); the instances it queued go to workers
 * waiting for work, and it claims the next queued instance itself.  With
 * none, it waits on its latch for orchestrator.worker_idle_timeout, for the
 * scheduler or another worker to hand it work, and exits when none came.  It serves the one
 * database its scheduler serves, and exits between tasks, or while it
 * waits, when another database wants its share of orchestrator.max_workers
 * (registry.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "access/xlog.h"
#include "mb/pg_wchar.h"
#include "storage/ipc.h"
#include "storage/large_object.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"
#include "funcapi.h"

#include "orchestrator.h"
#include "pool.h"
#include "sandbox.h"
#include "state.h"
#include "tasklog.h"
#include "worker.h"

static TimeoutId task_timeout_id;
static volatile sig_atomic_t task_timed_out = false;

/* the timeout of what runs: cancel the running statement, as a query cancel does */
static void
task_timeout_handler(void)
{
	task_timed_out = true;
	InterruptPending = true;
	QueryCancelPending = true;
	SetLatch(MyLatch);
}

/*
 * Starts the timeout of what runs now (0: none).  At ms, the worker cancels
 * its statement; the slot's deadline lets the scheduler stop it for good if
 * it catches the cancel.
 */
void
worker_timeout_start(int64 ms)
{
	task_timed_out = false;
	if (ms <= 0)
		return;
	ms = Min(ms, INT_MAX);
	progress_set_deadline(TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms));
	orch_wake_scheduler();
	enable_timeout_after(task_timeout_id, (int) ms);
}

void
worker_timeout_stop(void)
{
	disable_timeout(task_timeout_id, false);
}

bool
worker_timed_out(void)
{
	return task_timed_out;
}

/*
 * In a PG_CATCH: the error, copied into cxt; then no timeout or cancel left
 * for what comes next, the transaction rolled back (which also undoes the
 * user code's settings and identity), large objects closed.
 */
ErrorData *
worker_catch(MemoryContext cxt)
{
	ErrorData  *edata;

	MemoryContextSwitchTo(cxt);
	edata = CopyErrorData();
	FlushErrorState();
	disable_all_timeouts(false);
	QueryCancelPending = false;
	AbortCurrentTransaction();
	close_lo_relation(false);
	return edata;
}

/* the memory context current when the transaction began, for after it */
static MemoryContext xact_caller_cxt = NULL;

/*
 * A transaction with a snapshot and SPI, for a background worker.  What is
 * allocated in it goes with it; after the commit, the caller's memory
 * context is current again (not TopMemoryContext, where what a loop of
 * transactions allocates would pile up).
 */
void
orch_begin_xact(void)
{
	xact_caller_cxt = CurrentMemoryContext;
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
}

void
orch_end_xact(void)
{
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	if (xact_caller_cxt != NULL)
		MemoryContextSwitchTo(xact_caller_cxt);
	pgstat_report_stat(false);
}

char *
worker_getstr(HeapTuple tuple, TupleDesc desc, int col, MemoryContext cxt)
{
	bool		isnull;
	Datum		d = SPI_getbinval(tuple, desc, col, &isnull);

	if (isnull)
		return NULL;
	return MemoryContextStrdup(cxt, TextDatumGetCString(d));
}

/*
 * The run's context, from ten consecutive columns starting at col (see
 * RUN_CONTEXT_COLUMNS): dag_id, run_type, logical_date,
 * data_interval_start, data_interval_end, the DAG's owner, its params
 * merged with the run's conf, the owner's name and cluster, and an
 * asset-triggered run's events.
 */
void
worker_read_run_context(TaskRun *task, HeapTuple tuple, TupleDesc desc, int col,
				 MemoryContext cxt)
{
	bool		isnull;
	Datum		d;
	MemoryContext old;

	task->dag_id = worker_getstr(tuple, desc, col, cxt);
	task->run_type = worker_getstr(tuple, desc, col + 1, cxt);
	task->ctx.logical_date = DatumGetTimestampTz(SPI_getbinval(tuple, desc, col + 2, &isnull));
	d = SPI_getbinval(tuple, desc, col + 3, &isnull);
	task->ctx.data_interval_start = isnull ? task->ctx.logical_date : DatumGetTimestampTz(d);
	d = SPI_getbinval(tuple, desc, col + 4, &isnull);
	task->ctx.data_interval_end = isnull ? task->ctx.logical_date : DatumGetTimestampTz(d);
	d = SPI_getbinval(tuple, desc, col + 5, &isnull);
	task->owner = isnull ? InvalidOid : DatumGetObjectId(d);
	task->owner_name = worker_getstr(tuple, desc, col + 7, cxt);
	d = SPI_getbinval(tuple, desc, col + 8, &isnull);
	task->owner_sysid = isnull ? 0 : (uint64) DatumGetInt64(d);
	d = SPI_getbinval(tuple, desc, col + 6, &isnull);
	old = MemoryContextSwitchTo(cxt);
	task->ctx.params = isnull ? NULL : DatumGetJsonbPCopy(d);
	d = SPI_getbinval(tuple, desc, col + 9, &isnull);
	task->ctx.asset_events = isnull ? NULL : DatumGetJsonbPCopy(d);
	task->ctx.dag_id = task->dag_id;
	/* Airflow's run id: "scheduled__2021-01-02T06:00:00+00:00" */
	task->ctx.run_id = psprintf("%s__%s", task->run_type,
								template_render("{{ ts }}", "ts", &task->ctx));
	MemoryContextSwitchTo(old);
}

/* A task's outlets (text[]), as a list of C strings in cxt. */
static List *
read_outlets(Datum d, MemoryContext cxt)
{
	Datum	   *elems;
	int			n;
	List	   *names = NIL;
	MemoryContext old;

	deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
					  &elems, NULL, &n);
	old = MemoryContextSwitchTo(cxt);
	for (int i = 0; i < n; i++)
		names = lappend(names, TextDatumGetCString(elems[i]));
	MemoryContextSwitchTo(old);
	return names;
}

typedef enum ClaimResult
{
	CLAIM_NONE,					/* nothing queued */
	CLAIM_OK,					/* a try to run */
	CLAIM_POISON				/* a queued instance that could not be read: failed */
} ClaimResult;

/* A queued instance that could not be claimed fails, once, with why. */
static void
fail_unclaimable(int64 run_id, const char *task_id, int map_index, const char *error)
{
	ereport(LOG,
			(errmsg("orchestrator: task \"%s\" of run " INT64_FORMAT " could not be claimed: %s",
					task_id, run_id, error)));
	orch_begin_xact();
	state_fail_unclaimable(run_id, task_id, map_index, error, orch_now());
	orch_end_xact();
}

/*
 * Claims the first queued task instance of a running run in claim order
 * (weight, then age: state.c's queue_one), walking an index.  An instance
 * whose row cannot be read fails instead of killing every worker that
 * picks it.
 */
static ClaimResult
claim_next(TaskRun *task, MemoryContext cxt)
{
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	volatile int64 run_id;
	char	   *volatile task_id;
	volatile int map_index;
	TimestampTz now;

	orch_begin_xact();
	pgstat_report_activity(STATE_RUNNING, "claiming a task");

	/*
	 * The first queued instance in claim order, through its index, whose
	 * run is running (looked up by key for each: never a join planned on
	 * statistics from before a thousand runs started); then what it needs.
	 * (A sensor's next poke goes on with its try: same number, same start.)
	 */
	run_query("WITH c AS ("
			  "  SELECT c.run_id, c.task_id, c.map_index FROM orchestrator.task_instance c "
			  "  WHERE c.state = 'queued' "
			  "    AND (SELECT x.state FROM orchestrator.dag_run x WHERE x.run_id = c.run_id) = 'running' "
			  "  ORDER BY c.claim_at, c.run_id, c.task_id, c.map_index "
			  "  LIMIT 1 FOR UPDATE OF c SKIP LOCKED) "
			  "SELECT ti.run_id, ti.task_id, "
			  "       ti.try_number + CASE WHEN ti.first_poke_at IS NULL THEN 1 ELSE 0 END, "
			  "       " RUN_CONTEXT_COLUMNS ", t.spec, "
			  "       (extract(epoch FROM t.execution_timeout) * 1000)::int8, "
			  "       t.cache_expiration IS NOT NULL, ti.first_poke_at, t.outlets, "
			  "       ti.map_index, ti.map_item "
			  "FROM c "
			  "JOIN orchestrator.task_instance ti "
			  "  ON ti.run_id = c.run_id AND ti.task_id = c.task_id AND ti.map_index = c.map_index "
			  "JOIN orchestrator.dag_run r ON r.run_id = ti.run_id "
			  "JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "LEFT JOIN orchestrator.task t ON t.dag_id = r.dag_id AND t.task_id = ti.task_id",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		orch_end_xact();
		return CLAIM_NONE;
	}

	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(task, 0, sizeof(TaskRun));
	run_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	task_id = worker_getstr(tuple, desc, 2, cxt);
	map_index = DatumGetInt32(SPI_getbinval(tuple, desc, 9 + RUN_CONTEXT_NCOLUMNS, &isnull));

	PG_TRY();
	{
		Datum		d;

		task->run_id = run_id;
		task->task_id = task_id;
		task->map_index = map_index;
		task->try_number = DatumGetInt32(SPI_getbinval(tuple, desc, 3, &isnull));
		worker_read_run_context(task, tuple, desc, 4, cxt);
		d = SPI_getbinval(tuple, desc, 4 + RUN_CONTEXT_NCOLUMNS, &isnull);
		if (!isnull)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			task->spec = DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
		d = SPI_getbinval(tuple, desc, 5 + RUN_CONTEXT_NCOLUMNS, &isnull);
		task->timeout_ms = isnull ? 0 : DatumGetInt64(d);
		d = SPI_getbinval(tuple, desc, 6 + RUN_CONTEXT_NCOLUMNS, &isnull);
		task->cache = !isnull && DatumGetBool(d);
		d = SPI_getbinval(tuple, desc, 7 + RUN_CONTEXT_NCOLUMNS, &isnull);
		task->first_poke_at = isnull ? 0 : DatumGetTimestampTz(d);
		d = SPI_getbinval(tuple, desc, 8 + RUN_CONTEXT_NCOLUMNS, &isnull);
		task->outlets = isnull ? NIL : read_outlets(d, cxt);
		task->ctx.task_id = task->task_id;
		if (task->map_index >= 0)
		{
			MemoryContext old = MemoryContextSwitchTo(cxt);

			d = SPI_getbinval(tuple, desc, 10 + RUN_CONTEXT_NCOLUMNS, &isnull);
			task->ctx.mapped = true;
			task->ctx.map_index = task->map_index;
			task->ctx.item = isnull ? NULL : DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}

		now = orch_now();
		state_try_claimed(task->run_id, task->task_id, task->map_index, now);
		/* a new try: a sensor's first poke starts it */
		task->continuing = (task->first_poke_at != 0);
		if (!task->continuing)
			task->first_poke_at = now;

		/* the slot names the try before the claim is visible */
		progress_set(SLOT_CLAIMING, task->run_id, task->task_id, task->map_index, task->owner, "task", 0);
		orch_end_xact();
	}
	PG_CATCH();
	{
		ErrorData  *edata = worker_catch(cxt);

		progress_set(SLOT_IDLE, 0, NULL, -1, InvalidOid, NULL, 0);
		fail_unclaimable(run_id, task_id, map_index, edata->message);
		return CLAIM_POISON;
	}
	PG_END_TRY();
	progress_set(SLOT_RUNNING, task->run_id, task->task_id, task->map_index, task->owner, "task", 0);
	return CLAIM_OK;
}

static void
set_context(const char *name, const char *value)
{
	set_config_option(name, value, PGC_USERSET, PGC_S_SESSION,
					  GUC_ACTION_LOCAL, true, 0, false);
}

/* The task's artifact replaces the one of an earlier (cleared) success. */
static void
record_artifact(TaskRun *task)
{
	Oid			types[13] = {INT8OID, TEXTOID, OIDOID, INT8OID, TEXTOID, TEXTOID, INT4OID,
		TEXTOID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID};
	Datum		values[13];
	char		nulls[13];
	const char *optional[5] = {task->content_type, task->url, task->cache_key,
	task->etag, task->last_modified};
	const int	optional_cols[5] = {5, 7, 8, 9, 10};

	memset(nulls, ' ', sizeof(nulls));
	values[0] = Int64GetDatum(task->run_id);
	values[1] = CStringGetTextDatum(task->task_id);
	values[2] = ObjectIdGetDatum(task->artifact.loid);
	values[3] = Int64GetDatum(task->artifact.size);
	values[4] = CStringGetTextDatum(task->artifact.sha256);
	for (int i = 0; i < 5; i++)
	{
		if (optional[i])
			values[optional_cols[i]] = CStringGetTextDatum(optional[i]);
		else
			nulls[optional_cols[i]] = 'n';
	}
	values[6] = Int32GetDatum((int32) task->http_status);
	if (task->http_status == 0)
		nulls[6] = 'n';
	values[11] = TimestampTzGetDatum(task->artifact_created_at ? task->artifact_created_at : orch_now());
	values[12] = Int32GetDatum(task->map_index);
	run_query("DELETE FROM orchestrator.artifact WHERE run_id = $1 AND task_id = $2 AND map_index = $13",
			  13, types, values, nulls, SPI_OK_DELETE);
	run_query("INSERT INTO orchestrator.artifact (run_id, task_id, loid, size, sha256, "
			  " content_type, http_status, url, cache_key, etag, last_modified, created_at, "
			  " map_index) "
			  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
			  13, types, values, nulls, SPI_OK_INSERT);
}

/*
 * The newest artifact of the same DAG and task made from the same key (not
 * this run's own, which a rerun replaces), if its large object is still
 * there: fresh if younger than cache_expiration, else a candidate for
 * revalidation.
 */
static void
find_cache_entry(TaskRun *task)
{
	Oid			types[5] = {TEXTOID, TEXTOID, TEXTOID, INT8OID, TIMESTAMPTZOID};
	Datum		values[5];
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;

	task->cache_key = op_cache_key(task);
	values[0] = CStringGetTextDatum(task->dag_id);
	values[1] = CStringGetTextDatum(task->task_id);
	values[2] = CStringGetTextDatum(task->cache_key);
	values[3] = Int64GetDatum(task->run_id);
	values[4] = TimestampTzGetDatum(orch_now());
	run_query("SELECT a.loid, a.size, a.sha256, a.content_type, a.url, a.http_status, a.etag, "
			  "       a.last_modified, a.created_at, a.created_at >= $5 - t.cache_expiration "
			  "FROM orchestrator.artifact a "
			  "JOIN orchestrator.dag_run r ON r.run_id = a.run_id "
			  "JOIN orchestrator.task t ON t.dag_id = r.dag_id AND t.task_id = a.task_id "
			  "WHERE r.dag_id = $1 AND a.task_id = $2 AND a.cache_key = $3 AND a.run_id <> $4 "
			  "  AND EXISTS (SELECT 1 FROM pg_catalog.pg_largeobject_metadata m WHERE m.oid = a.loid) "
			  "ORDER BY a.created_at DESC LIMIT 1",
			  5, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return;
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	task->has_entry = true;
	task->entry.loid = DatumGetObjectId(SPI_getbinval(tuple, desc, 1, &isnull));
	task->entry.size = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
	strlcpy(task->entry.sha256, SPI_getvalue(tuple, desc, 3), sizeof(task->entry.sha256));
	task->entry_content_type = SPI_getvalue(tuple, desc, 4);
	task->entry_url = SPI_getvalue(tuple, desc, 5);
	d = SPI_getbinval(tuple, desc, 6, &isnull);
	task->entry_status = isnull ? 0 : DatumGetInt32(d);
	task->entry_etag = SPI_getvalue(tuple, desc, 7);
	task->entry_last_modified = SPI_getvalue(tuple, desc, 8);
	task->entry_created_at = DatumGetTimestampTz(SPI_getbinval(tuple, desc, 9, &isnull));
	if (DatumGetBool(SPI_getbinval(tuple, desc, 10, &isnull)))
	{
		/* fresh: reused as it is, and it expires when the original does */
		task->cached = true;
		task->artifact_created_at = task->entry_created_at;
	}
}

/*
 * The run's context, readable with current_setting(), for the rest of the
 * transaction.
 */
void
worker_set_run_context(TaskRun *task)
{
	set_context("orchestrator.run_id", psprintf(INT64_FORMAT, task->run_id));
	set_context("orchestrator.dag_id", task->dag_id);
	set_context("orchestrator.task_id", task->task_id);
	set_context("orchestrator.logical_date",
				template_render("{{ ts }}", "ts", &task->ctx));
	set_context("orchestrator.ds", template_render("{{ ds }}", "ds", &task->ctx));
	set_context("orchestrator.try_number", psprintf("%d", task->try_number));
	set_context("orchestrator.run_type", task->run_type);
	set_context("orchestrator.error", task->ctx.error ? task->ctx.error : "");
}

/*
 * The DAG has an owner in this cluster, or its tasks and callbacks cannot
 * run: a DAG restored from another cluster belongs to the role of the same
 * name, once the scheduler has mapped it, or to no one.
 */
void
worker_check_owner(TaskRun *task)
{
	if (task->owner_sysid != GetSystemIdentifier())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("DAG \"%s\" was restored from another cluster, and its owner \"%s\" is not mapped to a role of this one yet",
						task->dag_id, task->owner_name ? task->owner_name : "?"),
				 errhint("The scheduler maps restored DAGs to roles by name when it starts, when roles change or DAGs are restored, and at a reload (pg_reload_conf()).")));
	if (!OidIsValid(task->owner))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("DAG \"%s\" has no owner: role \"%s\" does not exist in this cluster",
						task->dag_id, task->owner_name ? task->owner_name : "?"),
				 errhint("Create the role (the scheduler gives it the DAG once that commits), or drop the DAG.")));
	if (!SearchSysCacheExists1(AUTHOID, ObjectIdGetDatum(task->owner)))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("the owner of DAG \"%s\" (role OID %u) no longer exists",
						task->dag_id, task->owner),
				 errhint("Recreate the DAG as an existing role.")));
}

/* Runs the task's operator; as the owner, inside the user scope. */
static void
run_operator(TaskRun *task)
{
	const char *opname;

	/* a spec changed behind the API's back gets a clear error, not a crash */
	operator_validate(task->spec, task->task_id);
	opname = operator_name(task->spec);
	if (task->cached)
		op_use_cache_entry(task, "cached");
	else if (strcmp(opname, "sql") == 0)
		op_sql_run(task);
	else if (strcmp(opname, "http_fetch") == 0)
		op_http_fetch_run(task);
	else if (strcmp(opname, "gunzip") == 0)
		op_gunzip_run(task);
	else if (strcmp(opname, "copy_into") == 0)
		op_copy_into_run(task);
	else if (operator_is_sensor(opname))
		op_sensor_poke(task);
	else
		elog(ERROR, "unknown operator \"%s\"", opname);
	artifact_done();
}

/*
 * The task's downstream and its run, decided in the transaction that
 * records its outcome (state.c).  In a subtransaction: should deciding
 * fail (a definition changed behind the API's back, say), the task's own
 * outcome still commits, and the scheduler, woken, decides and reports.
 */
static void
advance(RunRef *run, TaskRun *task, Advance *adv)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		state_advance_after(run, task->task_id, task->map_index, orch_now(), adv);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		memset(adv, 0, sizeof(Advance));
		adv->undecided = true;
		ereport(LOG,
				(errmsg("orchestrator: could not decide the downstream of task \"%s\" of run " INT64_FORMAT ": %s",
						task->task_id, task->run_id, edata->message)));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
}

typedef enum TryOutcome
{
	OUTCOME_SUCCESS,
	OUTCOME_RESCHEDULE,			/* a sensor not yet true: up_for_reschedule */
	OUTCOME_SKIPPED				/* a sensor past its timeout, with soft_fail */
} TryOutcome;

static int64
spec_interval_us(TaskRun *task, const char *key, const char *dflt)
{
	JsonbValue *v = jsonb_get_key(task->spec, key);

	if (v != NULL && v->type == jbvString)
		return op_interval_ms(pnstrdup(v->val.string.val, v->val.string.len)) * 1000;
	return op_interval_ms(dflt) * 1000;
}

/*
 * A sensor whose poke found its condition false: its next poke, or at its
 * timeout (counted from the try's first poke) a final failure, raised
 * here, or with soft_fail a skip.
 */
static TryOutcome
sensor_outcome(TaskRun *task, TimestampTz *next_poke_at, char **why)
{
	JsonbValue *v = jsonb_get_key(task->spec, "timeout");
	int64		interval = spec_interval_us(task, "poke_interval", "1 minute");
	int64		timeout = spec_interval_us(task, "timeout", "1 day");
	TimestampTz now = orch_now();
	TimestampTz deadline = task->first_poke_at + timeout;

	if (now < deadline)
	{
		*next_poke_at = Min(now + interval, deadline);
		return OUTCOME_RESCHEDULE;
	}
	*why = psprintf("sensor \"%s\" timed out: its condition was not met within %s of its first poke",
					task->task_id,
					v != NULL && v->type == jbvString ?
					pnstrdup(v->val.string.val, v->val.string.len) : "1 day");
	v = jsonb_get_key(task->spec, "soft_fail");
	if (v != NULL && v->type == jbvBool && v->val.boolean)
	{
		task_log("%s: skipped (soft_fail)", *why);
		return OUTCOME_SKIPPED;
	}
	/* a sensor's timeout is final, as in Airflow: no retry would change it */
	task->no_retry = true;
	ereport(ERROR,
			(errcode(ERRCODE_QUERY_CANCELED),
			 errmsg("%s", *why)));
	return OUTCOME_SKIPPED;		/* keep the compiler quiet */
}

/*
 * The assets a successful try produced: its outlets, rendered, and a
 * copy_into's table.  Each event publishes the run's data interval, and
 * nothing else of the DAG's (see assets.c).
 */
static void
record_assets(TaskRun *task, TimestampTz now)
{
	List	   *names = NIL;
	ListCell   *lc;
	Jsonb	   *extra;
	bool		consumed = false;

	foreach(lc, task->outlets)
	{
		char	   *name = template_render(lfirst(lc),
										   psprintf("an outlet of task \"%s\"", task->task_id),
										   &task->ctx);

		asset_check_name(name);
		if (!list_member(names, makeString(name)))
			names = lappend(names, makeString(name));
	}
	if (task->asset_table != NULL && !list_member(names, makeString(task->asset_table)))
		names = lappend(names, makeString(task->asset_table));
	if (names == NIL)
		return;
	extra = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum(
		psprintf("{\"data_interval_start\": \"%s\", \"data_interval_end\": \"%s\"}",
				 template_render("{{ data_interval_start }}", "data_interval_start", &task->ctx),
				 template_render("{{ data_interval_end }}", "data_interval_end", &task->ctx)))));
	foreach(lc, names)
		consumed |= asset_record(strVal(lfirst(lc)), extra, task->owner,
								 task->run_id, task->task_id, task->map_index, now);
	if (consumed)
		orch_wake_scheduler_at_commit();
}

/* The work and its outcome's row, in one transaction. */
static void
run_task(TaskRun *task, Advance *adv)
{
	UserScope	scope;
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, INT4OID};
	Datum		values[4];
	RunRef		run;
	TryOutcome	outcome;
	TimestampTz next_poke_at = 0;
	TimestampTz now;
	char	   *why = NULL;

	orch_begin_xact();
	pgstat_report_activity(STATE_RUNNING,
						   psprintf("task %s.%s of run " INT64_FORMAT,
									task->dag_id, task->task_id, task->run_id));

	if (task->spec == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("task \"%s\" is no longer defined in DAG \"%s\"",
						task->task_id, task->dag_id)));
	worker_check_owner(task);

	/* the artifact of the task this one reads, found before leaving superuser */
	{
		char	   *input = operator_input_task(task->spec);

		if (input != NULL)
		{
			Oid			itypes[3] = {INT8OID, TEXTOID, INT4OID};
			Datum		ivalues[3] = {Int64GetDatum(task->run_id), CStringGetTextDatum(input),
			Int32GetDatum(task->map_index)};
			bool		isnull;

			/* a mapped input: instance i reads instance i's (mapping.c) */
			run_query("SELECT loid, sha256 FROM orchestrator.artifact "
					  "WHERE run_id = $1 AND task_id = $2 AND map_index IN ($3, -1) "
					  "ORDER BY map_index DESC LIMIT 1",
					  3, itypes, ivalues, NULL, SPI_OK_SELECT);
			if (SPI_processed == 0)
				ereport(ERROR,
						(errcode(ERRCODE_UNDEFINED_OBJECT),
						 errmsg("task \"%s\" has no output in run " INT64_FORMAT " for task \"%s\" to read",
								input, task->run_id, task->task_id)));
			task->input_loid = DatumGetObjectId(SPI_getbinval(SPI_tuptable->vals[0],
															  SPI_tuptable->tupdesc, 1, &isnull));
			task->input_sha256 = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		}
	}
	if (task->cache)
		find_cache_entry(task);

	worker_set_run_context(task);

	task_log_begin();
	if (!task->continuing)
	{
		task_log("try %d of task %s.%s, run " INT64_FORMAT ", logical date %s",
				 task->try_number, task->dag_id, task->task_id, task->run_id,
				 template_render("{{ ts }}", "ts", &task->ctx));
		if (task->map_index >= 0)
			task_log("mapped instance %d, item %s", task->map_index,
					 task->ctx.item ? JsonbToCString(NULL, &task->ctx.item->root,
													 VARSIZE(task->ctx.item)) : "null");
	}

	worker_timeout_start(task->timeout_ms);

	/* as the owner, with exactly the owner's rights (sandbox.c) */
	sandbox_enter(&scope, task->owner);
	run_operator(task);
	sandbox_leave(&scope);

	worker_timeout_stop();

	outcome = operator_is_sensor(operator_name(task->spec)) && !task->poke_ok ?
		sensor_outcome(task, &next_poke_at, &why) : OUTCOME_SUCCESS;

	/* from here on the scheduler leaves this worker be */
	progress_set(SLOT_FINISHING, task->run_id, task->task_id, task->map_index, task->owner, "task", 0);
	task_log_end();

	values[0] = Int64GetDatum(task->run_id);
	values[1] = CStringGetTextDatum(task->task_id);
	values[2] = Int32GetDatum(task->try_number);
	values[3] = Int32GetDatum(task->map_index);

	/* the run first (state.c's order of locks): a sibling's join waits */
	now = orch_now();
	if (!state_lock_run(task->run_id, false, &run) ||
		!(outcome == OUTCOME_SUCCESS ?
		  state_try_succeeded(task->run_id, task->task_id, task->map_index,
							  task->try_number, now, task->has_rows,
							  (int64) task->rows_loaded, task->cached) :
		  outcome == OUTCOME_RESCHEDULE ?
		  state_try_rescheduled(task->run_id, task->task_id, task->map_index,
								task->try_number, next_poke_at, task->first_poke_at) :
		  state_try_skipped(task->run_id, task->task_id, task->map_index,
							task->try_number, now, why)))
		ereport(ERROR,
				(errcode(ERRCODE_QUERY_CANCELED),
				 errmsg("task \"%s\" of run " INT64_FORMAT " was cancelled while it ran; its work is rolled back",
						task->task_id, task->run_id)));
	if (task->has_artifact)
		record_artifact(task);
	task_log_write(task->run_id, task->task_id, task->map_index, task->try_number);
	if (outcome == OUTCOME_RESCHEDULE)
	{
		/* its next poke is the scheduler's, as a retry is */
		adv->undecided = true;
		sandbox_reset_session();
		orch_end_xact();
		return;
	}
	if (outcome == OUTCOME_SUCCESS)
	{
		run_query("INSERT INTO orchestrator.callback (run_id, task_id, map_index, kind, spec, try_number) "
				  "SELECT r.run_id, t.task_id, $4, 'on_success_callback', t.on_success_callback, $3 "
				  "FROM orchestrator.dag_run r "
				  "JOIN orchestrator.task t ON t.dag_id = r.dag_id AND t.task_id = $2 "
				  "WHERE r.run_id = $1 AND t.on_success_callback IS NOT NULL",
				  4, types, values, NULL, SPI_OK_INSERT);
		/* what it produced: an event each, committed with its success */
		record_assets(task, now);
	}
	advance(&run, task, adv);
	sandbox_reset_session();
	orch_end_xact();
}

/* an error is kept whole up to this size; a longer one is cut */
#define ERROR_TEXT_MAX	16384

static char *
error_text(ErrorData *edata, TaskRun *task)
{
	StringInfoData buf;

	initStringInfo(&buf);
	if (worker_timed_out())
		appendStringInfo(&buf, "execution_timeout exceeded after %.3f s",
						 task->timeout_ms / 1000.0);
	else
		appendStringInfoString(&buf, edata->message ? edata->message : "unknown error");
	if (edata->detail)
		appendStringInfo(&buf, "\nDETAIL:  %s", edata->detail);
	if (edata->hint)
		appendStringInfo(&buf, "\nHINT:  %s", edata->hint);
	if (buf.len > ERROR_TEXT_MAX)
	{
		buf.len = pg_mbcliplen(buf.data, buf.len, ERROR_TEXT_MAX);
		buf.data[buf.len] = '\0';
		appendStringInfoString(&buf, " [...]");
	}
	return buf.data;
}

/*
 * Records a failed try, with its log and callback; when no tries remain,
 * its downstream and its run are decided as after a success.
 */
static void
record_failure(TaskRun *task, const char *text, bool only_state, Advance *adv)
{
	RunRef		run;
	bool		final = false;
	bool		locked;

	orch_begin_xact();
	/* the run first (state.c's order of locks), then what refers to the try */
	locked = state_lock_run(task->run_id, false, &run);
	if (!only_state)
		task_log_write(task->run_id, task->task_id, task->map_index, task->try_number);
	if (state_try_failed(task->run_id, task->task_id, task->map_index, MyProcPid,
						 task->try_number, text, orch_now(), only_state, task->no_retry,
						 &final) && locked)
	{
		if (final)
			advance(&run, task, adv);
		else
			adv->undecided = true;	/* the retry is the scheduler's */
	}
	sandbox_reset_session();
	orch_end_xact();
}

/*
 * Records a failed try with its own error.  Should recording it with its
 * log and callback fail (a secondary failure), that is logged, and the
 * state and error are recorded alone: the try never ends as "lost" while
 * its worker knew what went wrong.
 */
static void
record_failed_try(TaskRun *task, const char *text, MemoryContext cxt, Advance *adv)
{
	PG_TRY();
	{
		record_failure(task, text, false, adv);
	}
	PG_CATCH();
	{
		ErrorData  *edata = worker_catch(cxt);

		ereport(LOG,
				(errmsg("orchestrator: could not record the failure of task \"%s\" of run " INT64_FORMAT " with its log and callbacks: %s; recording its error alone",
						task->task_id, task->run_id, edata->message)));
		memset(adv, 0, sizeof(Advance));
		record_failure(task, text, true, adv);
	}
	PG_END_TRY();
}

/*
 * Nothing to claim: waits on the latch for work, for
 * orchestrator.worker_idle_timeout.  True when there may be work (the
 * latch was set: handed work, a reload, a signal), false when the worker
 * is to exit (its slot already given up).
 */
static bool
wait_for_work(void)
{
	TimestampTz since = GetCurrentTimestamp();

	progress_set(SLOT_WAITING, 0, NULL, -1, InvalidOid, NULL, 0);
	for (;;)
	{
		long		left = orch_worker_idle_timeout_ms -
			(long) ((GetCurrentTimestamp() - since) / 1000);
		int			rc;

		if (left <= 0)
			return !progress_leave_if_idle();
		rc = WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
					   left, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (rc & WL_LATCH_SET)
		{
			/* its place is wanted by another database's work */
			if (progress_told_to_leave())
				return !progress_leave_if_idle();
			progress_set(SLOT_IDLE, 0, NULL, -1, InvalidOid, NULL, 0);
			return true;
		}
	}
}

/*
 * After a task: the instances it queued go to waiting workers (this one
 * takes one itself); the scheduler is woken only for what workers do not
 * do: start more of them, retries, instances undecided, a run slot freed.
 * (Instances held back under max_active_tasks are queued by the workers of
 * the DAG's active tasks as these end.)
 */
static void
hand_out(const Advance *adv)
{
	int			others = adv->queued - 1;

	if (adv->undecided)
		orch_request_evaluation();
	if (others > 0 && progress_hand_out(others) < others)
		orch_wake_scheduler();
	else if (adv->ended || adv->undecided)
		orch_wake_scheduler();
}

void
orch_worker_main(Datum arg)
{
	MemoryContext task_cxt;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* the database of the scheduler that started it */
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	sandbox_pin_session();
	pgstat_report_appname("orchestrator worker");

	if (orch_shared == NULL || !progress_slot_acquire())
		proc_exit(0);
	task_timeout_id = RegisterTimeout(USER_TIMEOUT, task_timeout_handler);
	task_cxt = AllocSetContextCreate(TopMemoryContext, "orchestrator task",
									 ALLOCSET_DEFAULT_SIZES);

	for (;;)
	{
		TaskRun		task;
		ClaimResult claim;
		Advance		adv;

		CHECK_FOR_INTERRUPTS();
		/* another database waits for its share of the workers */
		if (registry_worker_should_yield())
			break;
		/* settings reloaded between tasks (allowed hosts, say) */
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		MemoryContextReset(task_cxt);
		/* callbacks due first: they follow outcomes already decided */
		if (run_next_callback(task_cxt))
		{
			QueryCancelPending = false;
			continue;
		}
		MemoryContextReset(task_cxt);
		claim = claim_next(&task, task_cxt);
		if (claim == CLAIM_NONE)
		{
			if (wait_for_work())
				continue;
			break;
		}
		if (claim == CLAIM_POISON)
			continue;

		memset(&adv, 0, sizeof(adv));
		PG_TRY();
		{
			run_task(&task, &adv);
		}
		PG_CATCH();
		{
			ErrorData  *edata = worker_catch(task_cxt);
			char	   *text;

			progress_set(SLOT_FINISHING, task.run_id, task.task_id, task.map_index, task.owner, "task", 0);
			task_log_end();
			text = error_text(edata, &task);

			ereport(LOG,
					(errmsg("task \"%s\" of DAG \"%s\" (run " INT64_FORMAT ", try %d) failed: %s",
							task.task_id, task.dag_id, task.run_id, task.try_number, text)));
			memset(&adv, 0, sizeof(adv));
			record_failed_try(&task, text, task_cxt, &adv);
		}
		PG_END_TRY();

		progress_set(SLOT_IDLE, 0, NULL, -1, InvalidOid, NULL, 0);
		/* a cancel meant for the finished task is not for the next one */
		QueryCancelPending = false;
		/* the slots it freed in its pool, to waiters of any DAG */
		if (adv.pool[0] != '\0')
			adv.queued += pool_hand_out(adv.pool);
		hand_out(&adv);
	}

	orch_wake_scheduler();
	proc_exit(0);
}
