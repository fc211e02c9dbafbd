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
#include "utils/builtins.h"
#include "utils/json.h"
#include "utils/rel.h"

#include "orchestrator.h"

/* NOTIFY payloads are limited to 8000 bytes */
#define EVENT_MAX_ERROR 4000

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

PG_FUNCTION_INFO_V1(orch_notify_event);

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
	bool		is_task;
	StringInfoData payload;

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
		SPI_connect();
		SPI_execute_with_args("SELECT dag_id FROM orchestrator.dag_run WHERE run_id = $1",
							  1, (Oid[]) {INT8OID},
							  (Datum[]) {DirectFunctionCall1(int8in, CStringGetDatum(run_id))},
							  NULL, true, 1);
		dag_id = SPI_processed > 0 ?
			SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
		/* outlive SPI's memory */
		if (dag_id)
			dag_id = strcpy(SPI_palloc(strlen(dag_id) + 1), dag_id);
		SPI_finish();
	}
	else
		dag_id = column(td, tuple, "dag_id");

	if (strcmp(orch_events, "ids") == 0)
		dag_id = error = NULL;
	if (error && strlen(error) > EVENT_MAX_ERROR)
		error = pnstrdup(error, pg_mbcliplen(error, strlen(error), EVENT_MAX_ERROR));

	initStringInfo(&payload);
	appendStringInfoChar(&payload, '{');
	append_json_field(&payload, "dag_id", dag_id, false);
	append_json_field(&payload, "run_id", run_id, true);
	append_json_field(&payload, "task_id", task_id, false);
	append_json_field(&payload, "state", state, false);
	append_json_field(&payload, "try_number", try_number, true);
	append_json_field(&payload, "error", error, false);
	appendStringInfoChar(&payload, '}');
	Async_Notify("orchestrator_events", payload.data);
	return PointerGetDatum(NULL);
}
