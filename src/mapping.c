/*-------------------------------------------------------------------------
 *
 * mapping.c
 *	  Dynamic task mapping (see mapping.h), as Airflow's expand(): a mapped
 *	  task's unmapped instance (map_index -1, as Airflow stores it; the
 *	  views show NULL) is replaced, when its trigger rule makes it ready, by
 *	  one instance per element, each with its own tries, state, log,
 *	  artifact and progress.  state.c calls this where it queues ready
 *	  instances, then queues the new ones as room allows.
 *
 * The elements come from:
 * - the task's expand, a JSON array checked by add_task;
 * - its expand_query, run here as the DAG's owner (sandbox.c), read-only,
 *	 in a subtransaction that is always rolled back (whatever the query
 *	 did, through volatile functions, is undone), under
 *	 orchestrator.expand_query_timeout, and read no further than one row
 *	 past orchestrator.max_map_length: a query of a million rows costs
 *	 max_map_length + 1 of them;
 * - or the instances of the mapped task whose artifact the task reads:
 *	 instance i then reads instance i's artifact, with its element.
 *
 * No element skips the task; more than max_map_length, or a query that
 * fails, fails the task with the reason as its error (rules_expansion).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "parser/parser.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/plancache.h"
#include "utils/jsonb.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/timeout.h"
#include "utils/timestamp.h"

#include "mapping.h"
#include "orchestrator.h"
#include "rules.h"
#include "sandbox.h"

/* a plain SELECT: no data-modifying WITH, no row locks */
static void
foreach_query_must_read(SPIPlanPtr plan)
{
	ListCell   *lc;

	foreach(lc, SPI_plan_get_plan_sources(plan))
	{
		CachedPlanSource *ps = lfirst(lc);
		ListCell   *qc;

		foreach(qc, ps->query_list)
		{
			Query	   *q = lfirst_node(Query, qc);

			if (q->commandType != CMD_SELECT || q->hasModifyingCTE || q->rowMarks != NIL)
				ereport(ERROR,
						(errcode(ERRCODE_READ_ONLY_SQL_TRANSACTION),
						 errmsg("expand_query must only read: no data-modifying WITH, no FOR UPDATE or SHARE")));
		}
	}
}

/*
 * Runs an expand_query as owner; returns its rows (at most limit + 1) as
 * JSON objects, or NIL with *error set.
 */
static List *
run_expand_query(const char *query, Oid owner, int limit, char **error)
{
	MemoryContext outer = CurrentMemoryContext;
	ResourceOwner outer_owner = CurrentResourceOwner;
	List	   *volatile items = NIL;

	*error = NULL;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		UserScope	scope;
		SPIPlanPtr	plan;
		int			rc;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		enable_timeout_after(STATEMENT_TIMEOUT, orch_expand_query_timeout_ms);
		sandbox_enter(&scope, owner);
		plan = SPI_prepare(query, 0, NULL);
		if (plan == NULL)
			elog(ERROR, "could not prepare the expand_query: %s",
				 SPI_result_code_string(SPI_result));
		if (!SPI_is_cursor_plan(plan))
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("expand_query must be one query that returns rows")));
		foreach_query_must_read(plan);
		rc = SPI_execute_plan(plan, NULL, NULL, true, (long) limit + 1);
		if (rc != SPI_OK_SELECT)
			ereport(ERROR,
					(errcode(ERRCODE_WRONG_OBJECT_TYPE),
					 errmsg("expand_query must be one query that returns rows")));
		if (SPI_processed > 0)
		{
			TupleDesc	desc = BlessTupleDesc(SPI_tuptable->tupdesc);

			for (uint64 i = 0; i < SPI_processed; i++)
			{
				Datum		row = heap_copy_tuple_as_datum(SPI_tuptable->vals[i], desc);
				Datum		json = DirectFunctionCall1(row_to_json, row);
				Datum		jsonb = DirectFunctionCall1(jsonb_in,
														CStringGetDatum(TextDatumGetCString(json)));
				MemoryContext old = MemoryContextSwitchTo(outer);

				items = lappend(items, DatumGetJsonbPCopy(jsonb));
				MemoryContextSwitchTo(old);
			}
		}
		sandbox_leave(&scope);
		disable_timeout(STATEMENT_TIMEOUT, false);
		SPI_finish();
		/* whatever it wrote is undone */
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		disable_timeout(STATEMENT_TIMEOUT, false);
		MemoryContextSwitchTo(outer);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		items = NIL;
		*error = edata->message ? edata->message : "unknown error";
	}
	PG_END_TRY();
	MemoryContextSwitchTo(outer);
	CurrentResourceOwner = outer_owner;
	sandbox_reset_session();
	return items;
}

/* the task's unmapped instance ends, skipped or failed with why */
static void
end_unexpanded(int64 run_id, const char *task_id, bool failed, const char *error,
			   TimestampTz now)
{
	Datum		values[5];
	char		nulls[5] = "     ";

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(task_id);
	values[2] = CStringGetTextDatum(failed ? "failed" : "skipped");
	values[3] = TimestampTzGetDatum(now);
	if (error)
		values[4] = CStringGetTextDatum(error);
	else
		nulls[4] = 'n';
	run_query("UPDATE orchestrator.task_instance SET state = $3, finished_at = $4, "
			  " error = $5, next_try_at = NULL, ready_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = -1",
			  5, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TEXTOID},
			  values, nulls, SPI_OK_UPDATE);
}

int
mapping_expand(int64 run_id, const char *dag_id, const char *task_id, TimestampTz now)
{
	Oid			types[3] = {INT8OID, TEXTOID, TEXTOID};
	Datum		values[3];
	bool		isnull;
	Datum		d;
	long		n = -1;
	char	   *error = NULL;
	Datum		items = (Datum) 0;	/* a jsonb[] of the elements */
	int			max_tries;
	bool		has_query;
	bool		has_input;

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(dag_id);
	values[2] = CStringGetTextDatum(task_id);
	run_query("SELECT t.expand, t.expand_query, t.spec->>'input', t.retries + 1, "
			  "       CASE WHEN d.owner_sysid = orchestrator.system_identifier() "
			  "            THEN (SELECT a.oid FROM pg_catalog.pg_authid a WHERE a.oid = d.owner) END "
			  "FROM orchestrator.task t JOIN orchestrator.dag d ON d.dag_id = t.dag_id "
			  "WHERE t.dag_id = $2 AND t.task_id = $3",
			  3, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return 0;				/* no longer defined: nothing to expand */
	max_tries = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	has_query = !isnull;
	(void) SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
	has_input = !isnull;

	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (!isnull)
	{
		/* an array, checked by add_task; counted before it is unpacked */
		run_query("SELECT pg_catalog.jsonb_array_length($1)", 1, (Oid[]) {JSONBOID}, &d,
				  NULL, SPI_OK_SELECT);
		n = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		if (n > 0 && n <= orch_max_map_length)
		{
			run_query("SELECT pg_catalog.array_agg(e ORDER BY i) "
					  "FROM pg_catalog.jsonb_array_elements($1) WITH ORDINALITY AS x(e, i)",
					  1, (Oid[]) {JSONBOID}, &d, NULL, SPI_OK_SELECT);
			items = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		}
	}
	else if (has_query)
	{
		char	   *query = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2);
		Datum		owner = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 5, &isnull);

		if (isnull)
			error = psprintf("the expand_query of task \"%s\" cannot run: DAG \"%s\" has no owner in this cluster",
							 task_id, dag_id);
		else
		{
			List	   *rows = run_expand_query(query, DatumGetObjectId(owner),
												orch_max_map_length, &error);

			if (error != NULL)
				error = psprintf("the expand_query of task \"%s\" failed: %s", task_id, error);
			else
			{
				n = list_length(rows);
				if (n > 0 && n <= orch_max_map_length)
				{
					Datum	   *elems = palloc(sizeof(Datum) * n);
					int			i = 0;
					ListCell   *lc;

					foreach(lc, rows)
						elems[i++] = JsonbPGetDatum(lfirst(lc));
					items = PointerGetDatum(construct_array(elems, (int) n, JSONBOID, -1,
															false, TYPALIGN_INT));
				}
			}
		}
	}
	else if (has_input)
	{
		/* the elements of the mapped task whose artifact it reads */
		values[2] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull);
		values[2] = PointerGetDatum(DatumGetTextPCopy(values[2]));
		run_query("SELECT count(*), pg_catalog.array_agg(coalesce(map_item, 'null') ORDER BY map_index) "
				  "FROM orchestrator.task_instance "
				  "WHERE run_id = $1 AND task_id = $3 AND map_index >= 0",
				  3, types, values, NULL, SPI_OK_SELECT);
		n = (long) DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
		items = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull);
	}
	else
		return 0;

	switch (rules_expansion(n, orch_max_map_length))
	{
		case EXPAND_SKIPPED:
			end_unexpanded(run_id, task_id, false, NULL, now);
			return 0;
		case EXPAND_FAILED:
			if (error == NULL)
				error = psprintf("task \"%s\" would expand into more than %d instances (orchestrator.max_map_length)",
								 task_id, orch_max_map_length);
			end_unexpanded(run_id, task_id, true, error, now);
			return -1;
		case EXPAND_INSTANCES:
			break;
	}

	/* the unmapped instance gives way to one per element */
	values[1] = CStringGetTextDatum(task_id);
	values[2] = items;
	run_query("DELETE FROM orchestrator.task_instance "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = -1",
			  2, types, values, NULL, SPI_OK_DELETE);
	run_query("INSERT INTO orchestrator.task_instance (run_id, task_id, map_index, map_item, "
			  " state, max_tries) "
			  "SELECT $1, $2, (u.i - 1)::int, u.item, 'scheduled', $4 "
			  "FROM unnest($3::jsonb[]) WITH ORDINALITY AS u(item, i)",
			  4, (Oid[]) {INT8OID, TEXTOID, JSONBARRAYOID, INT4OID},
			  (Datum[]) {values[0], values[1], values[2], Int32GetDatum(max_tries)},
			  NULL, SPI_OK_INSERT);
	return (int) n;
}

/*
 * add_task's checks of expand and expand_query, before anything is
 * written: one of them at most; expand a JSON array of at most
 * max_map_length elements; expand_query one SELECT.
 */
void
mapping_check_definition(Jsonb *expand, const char *expand_query, const char *task_id)
{
	if (expand != NULL && expand_query != NULL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("task \"%s\" cannot have both expand and expand_query", task_id)));
	if (expand != NULL)
	{
		int			n;

		if (!JB_ROOT_IS_ARRAY(expand) || JB_ROOT_IS_SCALAR(expand))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("expand of task \"%s\" must be a JSON array", task_id),
					 errhint("One task instance runs per element, as in '[\"yellow\", \"green\"]'.")));
		n = JB_ROOT_COUNT(expand);
		if (n > orch_max_map_length)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg("expand of task \"%s\" has %d elements, more than orchestrator.max_map_length (%d)",
							task_id, n, orch_max_map_length)));
	}
	if (expand_query != NULL)
	{
		List	   *stmts = raw_parser(expand_query, RAW_PARSE_DEFAULT);

		Node	   *stmt = list_length(stmts) == 1 ? ((RawStmt *) linitial(stmts))->stmt : NULL;

		if (stmt == NULL || !IsA(stmt, SelectStmt) ||
			((SelectStmt *) stmt)->intoClause != NULL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("expand_query of task \"%s\" must be one SELECT", task_id),
					 errhint("Each row it returns, as a JSON object, is an element: {{ item.COLUMN }} in templates.")));
	}
}
