/*-------------------------------------------------------------------------
 *
 * events.c
 *	  Events: every run and task state change, published with NOTIFY on
 *	  the channel orchestrator_events.
 *
 * An AFTER trigger on the run and task instance tables queues the
 * notification in the transaction that changes the state, so a listener
 * gets it at commit, and never for a change that rolled back.  The payload
 * is JSON: {"dag_id", "run_id", "task_id" (null for a run), "state",
 * "try_number", "error"}.
 *
 * NOTIFY has no permissions: every role that can connect to the database
 * can LISTEN.  orchestrator.events = 'ids' leaves dag_id and error out of
 * the payload (a listener reads them from the views, under row-level
 * security); 'off' publishes nothing.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "storage/proc.h"
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/rel.h"

#include "orchestrator.h"

/*
 * NOTIFY payloads must be shorter than 8000 bytes (NAMEDATALEN less than
 * the queue's page, in practice): the error is cut so that the whole
 * payload, escaped, stays under this.
 */
#define EVENT_MAX_PAYLOAD 7900

static char *
column(TriggerData *td, HeapTuple tuple, const char *name)
{
	int			attno = SPI_fnumber(td->tg_relation->rd_att, name);

	if (attno <= 0)
		return NULL;
	return SPI_getvalue(tuple, td->tg_relation->rd_att, attno);
}

static void
append_json_field(StringInfo buf, const char *key, const char *value, bool number)
{
	appendStringInfo(buf, "%s\"%s\": ", buf->len > 1 ? ", " : "", key);
	if (value == NULL)
		appendStringInfoString(buf, "null");
	else if (number)
		appendStringInfoString(buf, value);
	else
		escape_json(buf, value);
}

/*
 * The error, escaped, cut at a character boundary so that the payload stays
 * under EVENT_MAX_PAYLOAD whatever escaping does to its length (a control
 * character takes six bytes escaped).
 */
static void
append_error_field(StringInfo buf, const char *error)
{
	int			budget = EVENT_MAX_PAYLOAD - buf->len - (int) strlen(", \"error\": }");
	int			len;
	StringInfoData escaped;

	if (error == NULL)
	{
		append_json_field(buf, "error", NULL, false);
		return;
	}
	initStringInfo(&escaped);
	len = strlen(error);
	for (;;)
	{
		resetStringInfo(&escaped);
		escape_json(&escaped, pnstrdup(error, len));
		if (escaped.len <= budget || len == 0)
			break;
		/* shrink in proportion, a little more, at a character boundary */
		{
			int			limit = (int) ((int64) len * budget / escaped.len) - 8;

			len = limit <= 0 ? 0 : pg_mbcliplen(error, len, limit);
		}
	}
	appendStringInfo(buf, ", \"error\": %s", escaped.data);
}

/*
 * The DAGs of runs this transaction already knows (events_know_run), by
 * run: the scheduler decides a thousand new runs in a few statements, and
 * each instance it creates would otherwise be one lookup.  Kept in the
 * transaction's memory, forgotten with it.
 */
typedef struct RunDag
{
	int64		run_id;
	char		dag_id[ORCH_MAX_ID_LEN + 1];
} RunDag;

static HTAB *known_runs = NULL;
static LocalTransactionId known_lxid = InvalidLocalTransactionId;

static HTAB *
known_runs_of_xact(bool create)
{
	if (known_lxid != MyProc->lxid)
	{
		/* (the last transaction's table went with its memory) */
		known_runs = NULL;
		known_lxid = MyProc->lxid;
	}
	if (known_runs == NULL && create)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(int64);
		ctl.entrysize = sizeof(RunDag);
		ctl.hcxt = TopTransactionContext;
		known_runs = hash_create("orchestrator runs' DAGs", 256, &ctl,
								 HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	return known_runs;
}

/*
 * A run's DAG, as the caller read it with the run's row (a run never
 * changes DAG): what its events need, without a lookup, for the rest of
 * the transaction.
 */
void
events_know_run(int64 run_id, const char *dag_id)
{
	RunDag	   *entry;

	if (strlen(dag_id) > ORCH_MAX_ID_LEN)
		return;
	entry = hash_search(known_runs_of_xact(true), &run_id, HASH_ENTER, NULL);
	strlcpy(entry->dag_id, dag_id, sizeof(entry->dag_id));
}

/*
 * The DAG of a task instance's run: every change of state of every
 * instance asks (four times a task), so the plan is kept, and the answer
 * is kept for the rest of the transaction (a run's DAG does not change
 * under it; a later transaction asks again).
 */
static char *
dag_of_run(int64 run_id)
{
	static SPIPlanPtr plan = NULL;
	HTAB	   *known = known_runs_of_xact(false);
	RunDag	   *entry;
	char	   *dag_id = NULL;
	Datum		value = Int64GetDatum(run_id);

	if (known != NULL &&
		(entry = hash_search(known, &run_id, HASH_FIND, NULL)) != NULL)
		return pstrdup(entry->dag_id);
	SPI_connect();
	if (plan == NULL)
	{
		SPIPlanPtr	fresh = SPI_prepare("SELECT dag_id FROM orchestrator.dag_run WHERE run_id = $1",
										1, (Oid[]) {INT8OID});

		if (fresh == NULL)
			elog(ERROR, "orchestrator could not plan its event lookup: %s",
				 SPI_result_code_string(SPI_result));
		SPI_keepplan(fresh);
		plan = fresh;
	}
	if (SPI_execute_plan(plan, &value, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "orchestrator could not look up the DAG of run " INT64_FORMAT, run_id);
	if (SPI_processed > 0)
	{
		char	   *found = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		/* outlive SPI's memory */
		dag_id = strcpy(SPI_palloc(strlen(found) + 1), found);
	}
	SPI_finish();
	if (dag_id != NULL)
		events_know_run(run_id, dag_id);
	return dag_id;
}

/* one event's payload, queued for the transaction's commit */
static void
notify(const char *dag_id, const char *run_id, const char *task_id, const char *state,
	   const char *try_number, const char *error)
{
	StringInfoData payload;

	initStringInfo(&payload);
	appendStringInfoChar(&payload, '{');
	append_json_field(&payload, "dag_id", dag_id, false);
	append_json_field(&payload, "run_id", run_id, true);
	append_json_field(&payload, "task_id", task_id, false);
	append_json_field(&payload, "state", state, false);
	append_json_field(&payload, "try_number", try_number, true);
	append_error_field(&payload, error);
	appendStringInfoChar(&payload, '}');
	Async_Notify("orchestrator_events", payload.data);
}

PG_FUNCTION_INFO_V1(orch_notify_event);

/*
 * A row inserted in a later state than a new row's (a scheduled run
 * created running, an instance created queued: the scheduler decides a
 * new run as it creates it) is published with the state it skipped
 * first, so that a listener hears the same changes either way.
 */
Datum
orch_notify_event(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	HeapTuple	tuple;
	char	   *state;
	char	   *run_id;
	char	   *dag_id;
	char	   *task_id = NULL;
	char	   *try_number = NULL;
	char	   *error = NULL;
	const char *skipped = NULL;
	bool		is_task;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "orch_notify_event: not called as a trigger");
	tuple = td->tg_trigtuple;
	if (TRIGGER_FIRED_BY_UPDATE(td->tg_event))
	{
		char	   *old_state = column(td, td->tg_trigtuple, "state");

		tuple = td->tg_newtuple;
		if (old_state && strcmp(old_state, column(td, tuple, "state")) == 0)
			return PointerGetDatum(NULL);
	}
	if (strcmp(orch_events, "off") == 0)
		return PointerGetDatum(NULL);

	is_task = (strcmp(RelationGetRelationName(td->tg_relation), "task_instance") == 0);
	state = column(td, tuple, "state");
	run_id = column(td, tuple, "run_id");
	if (is_task)
	{
		task_id = column(td, tuple, "task_id");
		try_number = column(td, tuple, "try_number");
		error = column(td, tuple, "error");
		dag_id = dag_of_run(DatumGetInt64(DirectFunctionCall1(int8in, CStringGetDatum(run_id))));
	}
	else
		dag_id = column(td, tuple, "dag_id");

	if (strcmp(orch_events, "ids") == 0)
		dag_id = error = NULL;

	if (TRIGGER_FIRED_BY_INSERT(td->tg_event) && state != NULL)
	{
		if (is_task && strcmp(state, "queued") == 0)
			skipped = "scheduled";
		else if (!is_task && strcmp(state, "running") == 0)
			skipped = "queued";
	}
	if (skipped != NULL)
		notify(dag_id, run_id, task_id, skipped, try_number, NULL);
	notify(dag_id, run_id, task_id, state, try_number, error);
	return PointerGetDatum(NULL);
}
