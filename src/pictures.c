/*-------------------------------------------------------------------------
 *
 * pictures.c
 *	  Pictures of DAGs and runs, for psql: dag_graph() draws a DAG as
 *	  Mermaid or Graphviz DOT, its nodes coloured by state when a run is
 *	  named; grid() draws Airflow's grid view as lines of text.
 *
 * Both read the views as the caller, so row-level security shows each
 * role only its own DAGs.
 *
 * A mapped task is one node and one line, its state the most telling of
 * its instances' (running first, then queued, up_for_retry,
 * up_for_reschedule, scheduled, failed, upstream_failed, success,
 * skipped), with "[k/n]": k of its n instances succeeded (in the run
 * drawn, or the grid's newest); without a run, the graph marks it "[ ]".
 * The grid then shows each instance of the newest run on a line of its
 * own, up to GRID_MAX_INSTANCES of them; the view task_instances has them
 * all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "catalog/namespace.h"
#include "nodes/makefuncs.h"
#include "nodes/value.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/regproc.h"

#include "orchestrator.h"

static const struct
{
	const char *state;
	const char *color;			/* fill, for the graphs */
	char		symbol;			/* for the grid */
}			state_styles[] = {
	{"success", "#8fd18f", '#'},
	{"failed", "#f28b82", 'X'},
	{"upstream_failed", "#fbbc74", '^'},
	{"skipped", "#e0e0e0", '-'},
	{"running", "#8ab4f8", '>'},
	{"queued", "#d7c3f1", '~'},
	{"scheduled", "#fff3b0", '.'},
	{"up_for_retry", "#fdd663", 'R'},
	{"up_for_reschedule", "#40e0d0", '@'},
};

/* a task's state over its instances, and its counts, in a run */
#define TASK_STATE_SQL(task, run) \
	"SELECT (array_agg(state ORDER BY array_position(" \
	"          ARRAY['running', 'queued', 'up_for_retry', 'up_for_reschedule', 'scheduled', " \
	"                'failed', 'upstream_failed', 'success', 'skipped'], state)))[1], " \
	"       count(*) FILTER (WHERE map_index IS NOT NULL), " \
	"       count(*) FILTER (WHERE map_index IS NOT NULL AND state = 'success') " \
	"FROM orchestrator.task_instances WHERE task_id = " task " AND run_id = " run

/* at most this many instances of a mapped task on lines of their own */
#define GRID_MAX_INSTANCES 16

static int
state_style(const char *state)
{
	for (int i = 0; i < lengthof(state_styles); i++)
		if (state != NULL && strcmp(state, state_styles[i].state) == 0)
			return i;
	return -1;
}

static void
check_dag_visible(const char *dag_id)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(dag_id)};

	run_query("SELECT 1 FROM orchestrator.dags WHERE dag_id = $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("DAG \"%s\" does not exist", dag_id)));
}

/* A free text (an asset's name, a DAG id) as a label in quotes. */
static void
append_label(StringInfo out, const char *text, bool mermaid)
{
	appendStringInfoChar(out, '"');
	for (const char *c = text; *c; c++)
	{
		if (*c == '"')
			appendStringInfoString(out, mermaid ? "#quot;" : "\\\"");
		else if (*c == '\\' && !mermaid)
			appendStringInfoString(out, "\\\\");
		else
			appendStringInfoChar(out, *c);
	}
	appendStringInfoChar(out, '"');
}

/* the index of name in names (added if absent), for node names */
static int
name_index(List **names, const char *name)
{
	int			i = 0;
	ListCell   *lc;

	foreach(lc, *names)
	{
		if (strcmp(strVal(lfirst(lc)), name) == 0)
			return i;
		i++;
	}
	*names = lappend(*names, makeString(pstrdup(name)));
	return i;
}

/*
 * The asset a copy_into target records: the table it names, as
 * schema.table, if it has no template and exists now; else the target as
 * written.
 */
static char *
target_asset(const char *target)
{
	Oid			relid;

	if (strstr(target, "{{") != NULL)
		return pstrdup(target);
	relid = RangeVarGetRelid(makeRangeVarFromNameList(stringToQualifiedNameList(target)),
							 NoLock, true);
	if (!OidIsValid(relid))
		return pstrdup(target);
	return pstrdup(quote_qualified_identifier(get_namespace_name(get_rel_namespace(relid)),
											  get_rel_name(relid)));
}

/*
 * The DAG's assets around its tasks: those it waits for (on_assets) into
 * its first tasks, those its tasks produce (outlets, a copy_into's table)
 * out of them; and between DAGs, the caller's other DAGs that
 * produce what it waits for or wait for what it produces (row-level
 * security shows no one else's).  Nothing for a DAG without assets.
 */
static void
append_assets(StringInfo out, bool mermaid, Datum dag_id, SPITupleTable *tasks,
			  uint64 ntasks)
{
	List	   *assets = NIL;
	List	   *dags = NIL;
	List	   *consumed = NIL;
	StringInfoData edges;
	ListCell   *lc;
	Oid			types[2] = {TEXTOID, TEXTOID};
	const char *dotted = mermaid ? "    %s%d -.-> %s%d\n" : "    %s%d -> %s%d [style=dashed];\n";

	initStringInfo(&edges);
	run_query("SELECT unnest(on_assets) FROM orchestrator.dags WHERE dag_id = $1",
			  1, types, &dag_id, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
		consumed = lappend(consumed, makeString(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
	foreach(lc, consumed)
	{
		int			a = name_index(&assets, strVal(lfirst(lc)));

		/* into the tasks that start the run */
		for (uint64 t = 0; t < ntasks; t++)
			if (SPI_getvalue(tasks->vals[t], tasks->tupdesc, 4) == NULL)
				appendStringInfo(&edges, mermaid ? "    a%d --> t%s\n" : "    a%d -> t%s;\n", a,
								 SPI_getvalue(tasks->vals[t], tasks->tupdesc, 2));
	}
	run_query("SELECT t.position, a.name, a.target FROM orchestrator.tasks t "
			  "CROSS JOIN LATERAL (SELECT u.x, false FROM unnest(t.outlets) u(x) "
			  "                    UNION ALL "
			  "                    SELECT t.spec ->> 'target', true WHERE t.operator = 'copy_into') a(name, target) "
			  "WHERE t.dag_id = $1 ORDER BY t.position",
			  1, types, &dag_id, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

		if (strcmp(SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3), "t") == 0)
			name = target_asset(name);
		appendStringInfo(&edges, mermaid ? "    t%s --> a%d\n" : "    t%s -> a%d;\n",
						 SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
						 name_index(&assets, name));
	}
	if (assets == NIL)
		return;

	/* the caller's other DAGs at either end of these assets */
	foreach(lc, assets)
	{
		Datum		values[2] = {dag_id, CStringGetTextDatum(strVal(lfirst(lc)))};
		int			a = foreach_current_index(lc);

		run_query("SELECT dag_id FROM orchestrator.dags "
				  "WHERE dag_id <> $1 AND on_assets @> ARRAY[$2] ORDER BY dag_id",
				  2, types, values, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
			appendStringInfo(&edges, dotted, "a", a, "d",
							 name_index(&dags, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)));
		run_query("SELECT DISTINCT dag_id FROM orchestrator.tasks "
				  "WHERE dag_id <> $1 AND outlets @> ARRAY[$2] ORDER BY dag_id",
				  2, types, values, NULL, SPI_OK_SELECT);
		for (uint64 i = 0; i < SPI_processed; i++)
			appendStringInfo(&edges, dotted, "d",
							 name_index(&dags, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1)),
							 "a", a);
	}
	foreach(lc, assets)
	{
		appendStringInfo(out, mermaid ? "    a%d[(" : "    a%d [shape=cylinder, label=",
						 foreach_current_index(lc));
		append_label(out, strVal(lfirst(lc)), mermaid);
		appendStringInfoString(out, mermaid ? ")]\n" : "];\n");
	}
	foreach(lc, dags)
	{
		appendStringInfo(out, mermaid ? "    d%d[[" : "    d%d [shape=component, label=",
						 foreach_current_index(lc));
		append_label(out, psprintf("DAG %s", strVal(lfirst(lc))), mermaid);
		appendStringInfoString(out, mermaid ? "]]\n" : "];\n");
	}
	appendStringInfoString(out, edges.data);
}

PG_FUNCTION_INFO_V1(orch_dag_graph);

/* dag_graph(dag_id text, format text, run_id bigint) RETURNS text */
Datum
orch_dag_graph(PG_FUNCTION_ARGS)
{
	char	   *dag_id;
	char	   *format;
	bool		mermaid;
	bool		with_run = !PG_ARGISNULL(2);
	Oid			types[2] = {TEXTOID, INT8OID};
	Datum		values[2];
	StringInfoData out;
	text	   *result;
	uint64		ntasks;
	SPITupleTable *tasks;

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	format = PG_ARGISNULL(1) ? "mermaid" : text_to_cstring(PG_GETARG_TEXT_PP(1));
	if (strcmp(format, "mermaid") != 0 && strcmp(format, "dot") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown graph format \"%s\"", format),
				 errhint("The formats are mermaid and dot.")));
	mermaid = (strcmp(format, "mermaid") == 0);

	SPI_connect();
	check_dag_visible(dag_id);
	values[0] = CStringGetTextDatum(dag_id);
	values[1] = Int64GetDatum(with_run ? PG_GETARG_INT64(2) : 0);
	if (with_run)
	{
		run_query("SELECT 1 FROM orchestrator.dag_runs WHERE run_id = $2 AND dag_id = $1",
				  2, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("DAG \"%s\" has no run " INT64_FORMAT, dag_id, PG_GETARG_INT64(2))));
	}
	/* (a task mapped by its input: the mapped tasks come before it) */
	run_query("WITH RECURSIVE mapped(task_id) AS ( "
			  "  SELECT task_id FROM orchestrator.tasks "
			  "  WHERE dag_id = $1 AND (expand IS NOT NULL OR expand_query IS NOT NULL) "
			  "  UNION "
			  "  SELECT t.task_id FROM orchestrator.tasks t JOIN mapped m ON t.spec->>'input' = m.task_id "
			  "  WHERE t.dag_id = $1) "
			  "SELECT t.task_id, t.position, ti.state, "
			  "       (SELECT string_agg(u.position::text, ',' ORDER BY u.position) "
			  "          FROM orchestrator.tasks u WHERE u.dag_id = t.dag_id AND u.task_id = ANY (t.upstream)), "
			  "       CASE WHEN ti.n > 0 THEN format('%s [%s/%s]', t.task_id, ti.ok, ti.n) "
			  "            WHEN t.task_id IN (SELECT task_id FROM mapped) THEN t.task_id || ' [ ]' "
			  "            ELSE t.task_id END, "
			  "       ti.n > 0 OR t.task_id IN (SELECT task_id FROM mapped) "
			  "FROM orchestrator.tasks t "
			  "LEFT JOIN LATERAL (" TASK_STATE_SQL("t.task_id", "$2") ") ti(state, n, ok) ON $2 <> 0 "
			  "WHERE t.dag_id = $1 ORDER BY t.position",
			  2, types, values, NULL, SPI_OK_SELECT);
	ntasks = SPI_processed;
	tasks = SPI_tuptable;

	initStringInfo(&out);
	if (mermaid)
		appendStringInfoString(&out, "graph LR\n");
	else
	{
		appendStringInfo(&out, "digraph %s {\n", quote_identifier(dag_id));
		appendStringInfoString(&out, "    rankdir=LR;\n");
		appendStringInfoString(&out, "    node [shape=box, style=\"rounded,filled\", fillcolor=\"#ffffff\"];\n");
	}
	/* the nodes, named by position (task ids may hold '.' and '-') */
	for (uint64 i = 0; i < ntasks; i++)
	{
		char	   *label = SPI_getvalue(tasks->vals[i], tasks->tupdesc, 5);
		char	   *pos = SPI_getvalue(tasks->vals[i], tasks->tupdesc, 2);
		int			style = state_style(SPI_getvalue(tasks->vals[i], tasks->tupdesc, 3));
		bool		isnull;
		bool		mapped = DatumGetBool(SPI_getbinval(tasks->vals[i], tasks->tupdesc, 6, &isnull));

		/* a mapped task: a stack of boxes */
		if (mermaid)
			appendStringInfo(&out, mapped ? "    t%s[[\"%s\"]]\n" : "    t%s[\"%s\"]\n", pos, label);
		else
			appendStringInfo(&out, "    t%s [label=\"%s\"%s%s%s%s];\n", pos, label,
							 mapped ? ", shape=box3d" : "",
							 style >= 0 ? ", fillcolor=\"" : "",
							 style >= 0 ? state_styles[style].color : "",
							 style >= 0 ? "\"" : "");
	}
	/* the edges */
	for (uint64 i = 0; i < ntasks; i++)
	{
		char	   *pos = SPI_getvalue(tasks->vals[i], tasks->tupdesc, 2);
		char	   *ups = SPI_getvalue(tasks->vals[i], tasks->tupdesc, 4);
		char	   *tok;
		char	   *save;

		if (ups == NULL)
			continue;
		for (tok = strtok_r(ups, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
			appendStringInfo(&out, mermaid ? "    t%s --> t%s\n" : "    t%s -> t%s;\n", tok, pos);
	}
	append_assets(&out, mermaid, values[0], tasks, ntasks);
	/* the states' colours, for Mermaid */
	if (mermaid && with_run)
	{
		for (int s = 0; s < lengthof(state_styles); s++)
		{
			StringInfoData members;

			initStringInfo(&members);
			for (uint64 i = 0; i < ntasks; i++)
				if (state_style(SPI_getvalue(tasks->vals[i], tasks->tupdesc, 3)) == s)
					appendStringInfo(&members, "%st%s", members.len ? "," : "",
									 SPI_getvalue(tasks->vals[i], tasks->tupdesc, 2));
			if (members.len == 0)
				continue;
			appendStringInfo(&out, "    classDef %s fill:%s\n", state_styles[s].state, state_styles[s].color);
			appendStringInfo(&out, "    class %s %s\n", members.data, state_styles[s].state);
		}
	}
	if (!mermaid)
		appendStringInfoString(&out, "}\n");

	result = (text *) SPI_palloc(VARHDRSZ + out.len);
	SET_VARSIZE(result, VARHDRSZ + out.len);
	memcpy(VARDATA(result), out.data, out.len);
	SPI_finish();
	PG_RETURN_TEXT_P(result);
}

PG_FUNCTION_INFO_V1(orch_grid);

/*
 * grid(dag_id text, runs int) RETURNS SETOF text: Airflow's grid view, one
 * line per task and one column per run, oldest left, newest right.
 */
Datum
orch_grid(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char	   *dag_id;
	int32		nruns;
	Oid			types[2] = {TEXTOID, INT4OID};
	Datum		values[2];
	uint64		n;
	SPITupleTable *runs;
	int			width = 4;		/* "run" */
	int64	   *run_ids;
	StringInfoData line;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	nruns = PG_ARGISNULL(1) ? 10 : PG_GETARG_INT32(1);
	if (nruns < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("runs must be at least 1")));

#define EMIT(str) \
	do { \
		Datum v = CStringGetTextDatum(str); \
		bool nl = false; \
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &v, &nl); \
	} while (0)

	SPI_connect();
	check_dag_visible(dag_id);
	values[0] = CStringGetTextDatum(dag_id);
	values[1] = Int32GetDatum(nruns);
	run_query("SELECT run_id, state, to_char(logical_date, 'YYYY-MM-DD HH24:MI') FROM ("
			  " SELECT * FROM orchestrator.dag_runs WHERE dag_id = $1 "
			  " ORDER BY logical_date DESC, run_id DESC LIMIT $2) r "
			  "ORDER BY logical_date, run_id",
			  2, types, values, NULL, SPI_OK_SELECT);
	n = SPI_processed;
	runs = SPI_tuptable;
	run_ids = palloc(sizeof(int64) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
		run_ids[i] = pg_strtoint64(SPI_getvalue(runs->vals[i], runs->tupdesc, 1));

	run_query("SELECT task_id FROM orchestrator.tasks WHERE dag_id = $1 ORDER BY position",
			  1, types, values, NULL, SPI_OK_SELECT);
	{
		SPITupleTable *tasks = SPI_tuptable;
		uint64		ntasks = SPI_processed;
		char	  **labels = palloc0(sizeof(char *) * Max(ntasks, 1));
		StringInfoData *cells = palloc0(sizeof(StringInfoData) * Max(ntasks, 1));
		int64	   *mapped = palloc0(sizeof(int64) * Max(ntasks, 1));

		/* each task's cells first: a mapped task's label counts its instances */
		for (uint64 t = 0; t < ntasks; t++)
		{
			char	   *task_id = SPI_getvalue(tasks->vals[t], tasks->tupdesc, 1);
			int64		ok = 0;

			labels[t] = task_id;
			initStringInfo(&cells[t]);
			for (uint64 i = 0; i < n; i++)
			{
				Datum		tvalues[2] = {CStringGetTextDatum(task_id), Int64GetDatum(run_ids[i])};
				bool		isnull;
				int			s;

				run_query(TASK_STATE_SQL("$1", "$2"), 2, (Oid[]) {TEXTOID, INT8OID}, tvalues, NULL, SPI_OK_SELECT);
				s = state_style(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
				appendStringInfo(&cells[t], " %c", s >= 0 ? state_styles[s].symbol : ' ');
				/* (the newest run's counts are kept) */
				mapped[t] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
				ok = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
			}
			if (mapped[t] > 0)
				labels[t] = psprintf("%s [" INT64_FORMAT "/" INT64_FORMAT "]", task_id, ok, mapped[t]);
			width = Max(width, (int) strlen(labels[t]));
			if (mapped[t] > 0)
				width = Max(width, (int) strlen(task_id) + 10);
		}

		initStringInfo(&line);
		appendStringInfo(&line, "DAG %s: %s, oldest left", dag_id,
						 n == 0 ? "no runs" : psprintf(UINT64_FORMAT " run%s", n, n == 1 ? "" : "s"));
		EMIT(line.data);

		/* the runs' own states, then each task's */
		resetStringInfo(&line);
		appendStringInfo(&line, "%-*s |", width, "run");
		for (uint64 i = 0; i < n; i++)
		{
			int			s = state_style(SPI_getvalue(runs->vals[i], runs->tupdesc, 2));

			appendStringInfo(&line, " %c", s >= 0 ? state_styles[s].symbol : '?');
		}
		EMIT(line.data);
		for (uint64 t = 0; t < ntasks; t++)
		{
			char	   *task_id = SPI_getvalue(tasks->vals[t], tasks->tupdesc, 1);
			int			shown = (int) Min(mapped[t], GRID_MAX_INSTANCES);

			resetStringInfo(&line);
			appendStringInfo(&line, "%-*s |%s", width, labels[t], cells[t].data);
			EMIT(line.data);

			/* a mapped task: each instance of the newest run, a cell per run */
			for (int m = 0; m < shown; m++)
			{
				resetStringInfo(&line);
				appendStringInfo(&line, "%-*s |", width, psprintf("  %s[%d]", task_id, m));
				for (uint64 i = 0; i < n; i++)
				{
					Datum		mvalues[3] = {CStringGetTextDatum(task_id), Int64GetDatum(run_ids[i]),
					Int32GetDatum(m)};
					int			s = -1;

					run_query("SELECT state FROM orchestrator.task_instances "
							  "WHERE task_id = $1 AND run_id = $2 AND map_index = $3",
							  3, (Oid[]) {TEXTOID, INT8OID, INT4OID}, mvalues, NULL, SPI_OK_SELECT);
					if (SPI_processed > 0)
						s = state_style(SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1));
					appendStringInfo(&line, " %c", s >= 0 ? state_styles[s].symbol : ' ');
				}
				EMIT(line.data);
			}
			if (mapped[t] > shown)
			{
				resetStringInfo(&line);
				appendStringInfo(&line, "%-*s | (" INT64_FORMAT " more: see orchestrator.task_instances)",
								 width, psprintf("  %s[...]", task_id), mapped[t] - shown);
				EMIT(line.data);
			}
		}
	}

	resetStringInfo(&line);
	appendStringInfoString(&line, "legend:");
	for (int s = 0; s < lengthof(state_styles); s++)
		appendStringInfo(&line, " %c %s", state_styles[s].symbol, state_styles[s].state);
	EMIT(line.data);
	for (uint64 i = 0; i < n; i++)
	{
		resetStringInfo(&line);
		appendStringInfo(&line, "column %d: run %s, %s, %s", (int) i + 1,
						 SPI_getvalue(runs->vals[i], runs->tupdesc, 1),
						 SPI_getvalue(runs->vals[i], runs->tupdesc, 3),
						 SPI_getvalue(runs->vals[i], runs->tupdesc, 2));
		EMIT(line.data);
	}
	SPI_finish();
	return (Datum) 0;
}
