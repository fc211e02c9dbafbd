/*-------------------------------------------------------------------------
 *
 * callback.c
 *	  Callbacks (on_failure_callback, on_success_callback, on_retry_callback),
 *	  run by the task workers as the DAG's owner, with the triggering
 *	  task's context and error.
 *
 * A callback's life, like a task's:
 *
 * 1. Claim, in a short transaction: the oldest unclaimed callback row gets
 *	  this worker's pid and a start time, and the worker's slot names it,
 *	  with a deadline orchestrator.callback_timeout away.
 * 2. Run, in one transaction that also deletes the row: as the owner, in
 *	  the sandbox.  A failure is logged (server log, and the triggering
 *	  try's task log) and the row deleted: a callback never changes an
 *	  outcome, and never runs twice.
 *
 * A row that cannot even be read (a spec changed behind the API's back) is
 * dropped with a log line instead of killing every worker that picks it.
 * A claimed row whose worker is gone (terminated at its timeout or by
 * cancel_run, or crashed) is dropped by the scheduler.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "orchestrator.h"
#include "sandbox.h"
#include "worker.h"

/* A line in the triggering try's log (a run's own callbacks have none). */
static void
callback_log_line(int64 run_id, const char *task_id, int map_index, int try_number,
				  const char *level, const char *message)
{
	Oid			types[6] = {INT8OID, TEXTOID, INT4OID, TEXTOID, TEXTOID, INT4OID};
	Datum		values[6];

	if (task_id == NULL || task_id[0] == '\0')
		return;
	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(task_id);
	values[2] = Int32GetDatum(try_number);
	values[3] = CStringGetTextDatum(level);
	values[4] = CStringGetTextDatum(message);
	values[5] = Int32GetDatum(map_index);
	run_query("INSERT INTO orchestrator.log (run_id, task_id, map_index, try_number, logged_at, level, message) "
			  "SELECT $1, $2, $6, $3, clock_timestamp(), $4, $5 "
			  "WHERE EXISTS (SELECT 1 FROM orchestrator.task_instance "
			  "              WHERE run_id = $1 AND task_id = $2 AND map_index = $6)",
			  6, types, values, NULL, SPI_OK_INSERT);
}

/* Deletes a callback with a line in its try's log, in a transaction of its own. */
static void
callback_drop(int64 id, int64 run_id, const char *task_id, int map_index,
			  int try_number, const char *level, const char *message)
{
	orch_begin_xact();
	run_query("DELETE FROM orchestrator.callback WHERE id = $1",
			  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(id)}, NULL, SPI_OK_DELETE);
	callback_log_line(run_id, task_id, map_index, try_number, level, message);
	sandbox_reset_session();
	orch_end_xact();
}

/*
 * Runs the oldest callback due, if there is one; false if there is none.
 */
bool
run_next_callback(MemoryContext cxt)
{
	TaskRun		task;
	volatile int64 id;
	char	   *volatile kind = NULL;
	volatile bool claimed = false;
	HeapTuple	tuple;
	TupleDesc	desc;
	bool		isnull;
	Datum		d;
	UserScope	scope;

	memset(&task, 0, sizeof(task));
	orch_begin_xact();
	run_query("SELECT c.id, c.run_id, c.task_id, c.kind, c.try_number, c.spec, c.error, "
			  "       " RUN_CONTEXT_COLUMNS ", coalesce(c.map_index, -1), ti.map_item "
			  "FROM orchestrator.callback c "
			  "JOIN orchestrator.dag_run r ON r.run_id = c.run_id "
			  "JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "LEFT JOIN orchestrator.task_instance ti ON ti.run_id = c.run_id "
			  "  AND ti.task_id = c.task_id AND ti.map_index = c.map_index "
			  "WHERE c.worker_pid IS NULL "
			  "ORDER BY c.id LIMIT 1 FOR UPDATE OF c SKIP LOCKED",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		orch_end_xact();
		return false;
	}
	tuple = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
	task.run_id = DatumGetInt64(SPI_getbinval(tuple, desc, 2, &isnull));
	/* a run's own callback has no task */
	task.task_id = worker_getstr(tuple, desc, 3, cxt);
	if (task.task_id == NULL)
		task.task_id = MemoryContextStrdup(cxt, "");
	kind = worker_getstr(tuple, desc, 4, cxt);
	d = SPI_getbinval(tuple, desc, 5, &isnull);
	task.try_number = isnull ? 0 : DatumGetInt32(d);
	/* (after the run's context, columns 8 to 8 + RUN_CONTEXT_NCOLUMNS - 1) */
	task.map_index = DatumGetInt32(SPI_getbinval(tuple, desc, 8 + RUN_CONTEXT_NCOLUMNS, &isnull));

	PG_TRY();
	{
		TimestampTz now = GetCurrentTimestamp();

		MemoryContext old;

		/* 1. claim: what may fail to read, then the row is this worker's */
		old = MemoryContextSwitchTo(cxt);
		task.spec = DatumGetJsonbPCopy(SPI_getbinval(tuple, desc, 6, &isnull));
		MemoryContextSwitchTo(old);
		task.ctx.error = worker_getstr(tuple, desc, 7, cxt);
		worker_read_run_context(&task, tuple, desc, 8, cxt);
		task.ctx.task_id = task.task_id;
		if (task.map_index >= 0)
		{
			d = SPI_getbinval(tuple, desc, 9 + RUN_CONTEXT_NCOLUMNS, &isnull);
			task.ctx.mapped = true;
			task.ctx.map_index = task.map_index;
			old = MemoryContextSwitchTo(cxt);
			task.ctx.item = isnull ? NULL : DatumGetJsonbPCopy(d);
			MemoryContextSwitchTo(old);
		}
		run_query("UPDATE orchestrator.callback SET worker_pid = pg_backend_pid(), started_at = $2 "
				  "WHERE id = $1",
				  2, (Oid[]) {INT8OID, TIMESTAMPTZOID},
				  (Datum[]) {Int64GetDatum(id), TimestampTzGetDatum(now)}, NULL, SPI_OK_UPDATE);
		progress_set(SLOT_CLAIMING, task.run_id, task.task_id, task.map_index, task.owner, kind, id);
		orch_end_xact();
		claimed = true;
		progress_set(SLOT_RUNNING, task.run_id, task.task_id, task.map_index, task.owner, kind, id);

		/* 2. run it, and delete it with its success */
		orch_begin_xact();
		pgstat_report_activity(STATE_RUNNING,
							   psprintf("%s of run " INT64_FORMAT, kind, task.run_id));
		worker_check_owner(&task);
		worker_set_run_context(&task);
		worker_timeout_start((int64) orch_callback_timeout_ms);
		/* a spec changed behind the API's back gets a clear error */
		callback_validate(task.spec, kind);
		sandbox_enter(&scope, task.owner);
		if (strcmp(operator_name(task.spec), "sql") == 0)
			op_sql_run(&task);
		else
			op_webhook_run(&task);
		sandbox_leave(&scope);
		worker_timeout_stop();
		progress_set(SLOT_FINISHING, task.run_id, task.task_id, task.map_index, task.owner, kind, id);
		run_query("DELETE FROM orchestrator.callback WHERE id = $1",
				  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(id)}, NULL, SPI_OK_DELETE);
		callback_log_line(task.run_id, task.task_id, task.map_index, task.try_number, "INFO",
						  psprintf("%s ran", kind));
		sandbox_reset_session();
		orch_end_xact();
	}
	PG_CATCH();
	{
		ErrorData  *edata = worker_catch(cxt);
		char	   *message;
		bool		timed_out = worker_timed_out();

		progress_set(SLOT_FINISHING, task.run_id, task.task_id, task.map_index, task.owner, kind, id);
		if (timed_out)
			message = psprintf("%s failed: orchestrator.callback_timeout (%d ms) exceeded",
							   kind, orch_callback_timeout_ms);
		else if (claimed)
			message = psprintf("%s failed: %s", kind, edata->message);
		else
			message = psprintf("%s dropped: it could not be read: %s", kind, edata->message);
		ereport(LOG,
				(errmsg("orchestrator: %s of DAG \"%s\" (run " INT64_FORMAT "%s%s) %s",
						kind, task.dag_id ? task.dag_id : "?", task.run_id,
						task.task_id[0] ? ", task " : "", task.task_id, message)));
		callback_drop(id, task.run_id, task.task_id, task.map_index, task.try_number, "WARNING", message);
	}
	PG_END_TRY();
	progress_set(SLOT_IDLE, 0, NULL, -1, InvalidOid, NULL, 0);
	return true;
}

/*
 * A claimed callback whose worker no longer runs it was stopped (at
 * callback_timeout, or by cancel_run) or lost with its worker: it is
 * dropped, with a line in its try's log, never run again.  The scheduler
 * calls this with a copy of the slots taken after reading the rows.
 */
void
orch_drop_lost_callbacks(void)
{
	SPITupleTable *tuptable;
	OrchWorkerSlot *slots;
	uint64		n;

	run_query("SELECT id, worker_pid, run_id, task_id, try_number, kind, coalesce(map_index, -1) "
			  "FROM orchestrator.callback WHERE worker_pid IS NOT NULL",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	n = SPI_processed;
	if (n == 0)
		return;
	tuptable = SPI_tuptable;
	slots = progress_copy_slots();

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		int			pid = DatumGetInt32(SPI_getbinval(tuple, desc, 2, &isnull));
		int64		run_id = DatumGetInt64(SPI_getbinval(tuple, desc, 3, &isnull));
		char	   *task_id = SPI_getvalue(tuple, desc, 4);
		Datum		d = SPI_getbinval(tuple, desc, 5, &isnull);
		int			try_number = isnull ? 0 : DatumGetInt32(d);
		char	   *kind = SPI_getvalue(tuple, desc, 6);
		int			map_index = DatumGetInt32(SPI_getbinval(tuple, desc, 7, &isnull));
		char	   *message;

		if (progress_slots_show(slots, pid, run_id, -1, NULL, id))
			continue;
		run_query("DELETE FROM orchestrator.callback WHERE id = $1 AND worker_pid = $2",
				  2, (Oid[]) {INT8OID, INT4OID},
				  (Datum[]) {Int64GetDatum(id), Int32GetDatum(pid)}, NULL, SPI_OK_DELETE);
		if (SPI_processed == 0)
			continue;
		message = psprintf("%s dropped: its worker (pid %d) was stopped (orchestrator.callback_timeout, or cancel_run) or died before it finished",
						   kind, pid);
		ereport(LOG,
				(errmsg("orchestrator: %s of run " INT64_FORMAT "%s%s", kind, run_id,
						task_id ? ", task " : "", task_id ? task_id : ""),
				 errdetail("%s", message)));
		callback_log_line(run_id, task_id, map_index, try_number, "WARNING", message);
	}
}
