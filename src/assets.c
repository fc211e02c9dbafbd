/*-------------------------------------------------------------------------
 *
 * assets.c
 *	  Assets (Airflow's datasets): named things that tasks and transactions
 *	  update, and DAGs that run when they do.
 *
 * An asset is a free name.  An event of it is recorded
 *
 *	  - by a task that succeeds, for each of its outlets (rendered) and, for
 *		a copy_into task, its target table (schema.table): in the worker's
 *		transaction, so the event commits with the task's success and its
 *		data, or not at all;
 *	  - by orchestrator.asset_updated(name, extra), in the caller's
 *		transaction: it counts only if that transaction commits, so an
 *		application's own write can start a pipeline, exactly once.
 *
 * In the same transaction, the event is queued for every DAG whose
 * on_assets names the asset (asset_queue, Airflow's AssetDagRunQueue), so
 * that no event is missed however late its transaction commits.  The
 * scheduler starts an asset-triggered run of a DAG once each asset it names
 * has a queued event (Airflow's rule), and links the queued events to that
 * run: several events before a run make one run.  Its logical date is the
 * last event's time, its data interval from the first event's time to the
 * last's; templates see the events ({{ triggering_asset_events }}).
 *
 * Who may record an event, and what anyone learns:
 *
 *	  - Any role that may use the orchestrator schema may record an event of
 *		any asset name, as in Airflow: asset names are a shared namespace,
 *		like dag ids, and an application role must be able to start another
 *		role's pipeline.  So an event's extra is input from whoever recorded
 *		it: a template must quote it where it lands (quote_literal, tojson).
 *	  - Recording tells the recorder nothing: asset_updated() returns
 *		nothing, and succeeds the same whether or not any DAG consumes the
 *		asset.
 *	  - A consumer sees the events of the assets its DAGs name: their times
 *		and extra, and its own runs.  Never the recording role, nor the
 *		source DAG, run or task, unless that DAG is its own.  A task's event
 *		publishes its run's data interval (the period of data the asset now
 *		holds) as its extra, and nothing else.
 *	  - The views (orchestrator.assets, orchestrator.asset_events) show a
 *		role the assets it records or consumes, and only its own DAGs and
 *		runs among their consumers and sources.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/timestamp.h"

#include "orchestrator.h"

/*
 * An asset name: 1 to ORCH_MAX_ASSET_LEN bytes, no control characters
 * (names are shown in views, logs and pictures).
 */
void
asset_check_name(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0 || len > ORCH_MAX_ASSET_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid asset name \"%s\"", name),
				 errdetail("An asset name is 1 to %d bytes.", ORCH_MAX_ASSET_LEN)));
	for (const char *c = name; *c; c++)
		if ((unsigned char) *c < 0x20 || *c == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_NAME),
					 errmsg("invalid asset name \"%s\"", name),
					 errdetail("An asset name has no control characters.")));
}

/*
 * Records an event of asset "name" in the current transaction, queued for
 * each DAG that consumes the asset; returns whether one does (the
 * scheduler is to be woken at commit).  With SPI connected, as the
 * catalog's owner or a superuser.  source_run_id 0: not a task's;
 * source_map_index -1: not a mapped instance's.
 */
bool
asset_record(const char *name, Jsonb *extra, Oid recorded_by,
			 int64 source_run_id, const char *source_task_id, int source_map_index,
			 TimestampTz at)
{
	Oid			types[7] = {TEXTOID, JSONBOID, TIMESTAMPTZOID, OIDOID, INT8OID, TEXTOID, INT4OID};
	Datum		values[7];
	char		nulls[7] = "       ";

	values[0] = CStringGetTextDatum(name);
	values[1] = JsonbPGetDatum(extra);
	values[2] = TimestampTzGetDatum(at);
	values[3] = ObjectIdGetDatum(recorded_by);
	if (!OidIsValid(recorded_by))
		nulls[3] = 'n';
	values[4] = Int64GetDatum(source_run_id);
	if (source_task_id != NULL)
		values[5] = CStringGetTextDatum(source_task_id);
	else
		nulls[4] = nulls[5] = 'n';
	values[6] = Int32GetDatum(source_map_index);
	if (source_task_id == NULL || source_map_index < 0)
		nulls[6] = 'n';
	run_query("WITH e AS ( "
			  "  INSERT INTO orchestrator.asset_event (asset, extra, recorded_at, recorded_by, "
			  "                                        source_run_id, source_task_id, "
			  "                                        source_map_index) "
			  "  VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id, asset) "
			  "INSERT INTO orchestrator.asset_queue (dag_id, event_id, asset) "
			  "SELECT d.dag_id, e.id, e.asset FROM e "
			  "JOIN orchestrator.dag d ON d.on_assets @> ARRAY[e.asset]",
			  7, types, values, nulls, SPI_OK_INSERT);
	return SPI_processed > 0;
}

PG_FUNCTION_INFO_V1(orch_asset_updated);

/*
 * asset_updated(name text, extra jsonb) RETURNS void: an event of the
 * asset, in the caller's transaction.  Returns the same whatever DAGs
 * consume the asset, so that the caller learns nothing of them.
 */
Datum
orch_asset_updated(PG_FUNCTION_ARGS)
{
	char	   *name;
	Jsonb	   *extra;
	CatalogWrite cw;
	bool		consumed;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	asset_check_name(name);
	if (PG_ARGISNULL(1))
		extra = DatumGetJsonbP(DirectFunctionCall1(jsonb_in, CStringGetDatum("{}")));
	else
	{
		extra = PG_GETARG_JSONB_P(1);
		if (!JB_ROOT_IS_OBJECT(extra) || JB_ROOT_IS_SCALAR(extra))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("extra must be a jsonb object")));
	}

	catalog_write_begin(&cw);
	consumed = asset_record(name, extra, cw.caller, 0, NULL, -1, orch_now());
	catalog_write_end(&cw);
	if (consumed)
		orch_wake_scheduler_at_commit();
	PG_RETURN_VOID();
}

/*
 * The DAGs an asset-triggered run is due for: not paused, with tasks, each
 * asset they name with a queued event, and room under max_active_runs
 * (events go on queueing meanwhile, and make one run when there is room).
 * For the scheduler, in a transaction; the ids in the current memory
 * context.
 */
List *
assets_due_dags(void)
{
	List	   *dags = NIL;

	/*
	 * From the DAGs with pending events (few, usually none), each looked
	 * up by key (OFFSET 0): never a join of every DAG with every task,
	 * which stale statistics once made a nested loop of 50 million pairs
	 * with 10,000 DAGs defined, at every pass.
	 */
	run_query("SELECT d.dag_id "
			  "FROM (SELECT DISTINCT q.dag_id FROM orchestrator.asset_queue q "
			  "      WHERE q.run_id IS NULL) p "
			  "CROSS JOIN LATERAL (SELECT d.* FROM orchestrator.dag d "
			  "                    WHERE d.dag_id = p.dag_id OFFSET 0) d "
			  "WHERE NOT d.paused "
			  "  AND EXISTS (SELECT 1 FROM orchestrator.task t WHERE t.dag_id = d.dag_id OFFSET 0) "
			  "  AND (SELECT count(DISTINCT q.asset) FROM orchestrator.asset_queue q "
			  "       WHERE q.dag_id = d.dag_id AND q.run_id IS NULL "
			  "         AND q.asset = ANY (d.on_assets)) = cardinality(d.on_assets) "
			  "  AND (SELECT count(*) FROM orchestrator.dag_run r "
			  "       WHERE r.dag_id = d.dag_id AND r.state IN ('queued', 'running')) < d.max_active_runs "
			  "ORDER BY d.dag_id",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	for (uint64 i = 0; i < SPI_processed; i++)
		dags = lappend(dags, SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1));
	return dags;
}

/*
 * An asset-triggered run of the DAG, from the events queued for it, which
 * it consumes; returns false (nothing done) if the DAG's row is locked by
 * another transaction, or the events no longer make a run.  For the
 * scheduler, in a transaction.
 */
bool
assets_start_run(const char *dag_id, TimestampTz now)
{
	Datum		dag = CStringGetTextDatum(dag_id);
	bool		isnull;
	Datum		ids;
	TimestampTz first,
				last;
	int64		run_id = 0;

	/* KEY SHARE: what inserting its run takes; create_dag and drop_dag hold more */
	run_query("SELECT 1 FROM orchestrator.dag WHERE dag_id = $1 AND NOT paused "
			  "FOR KEY SHARE SKIP LOCKED",
			  1, (Oid[]) {TEXTOID}, &dag, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	/* the queued events of the assets it names, locked, and their times */
	run_query("WITH p AS ( "
			  "  SELECT q.event_id, q.asset FROM orchestrator.asset_queue q "
			  "  JOIN orchestrator.dag d ON d.dag_id = q.dag_id "
			  "  WHERE q.dag_id = $1 AND q.run_id IS NULL AND q.asset = ANY (d.on_assets) "
			  "  FOR UPDATE OF q) "
			  "SELECT array_agg(p.event_id), min(e.recorded_at), max(e.recorded_at), "
			  "       count(DISTINCT p.asset) = (SELECT cardinality(on_assets) "
			  "                                  FROM orchestrator.dag WHERE dag_id = $1) "
			  "FROM p JOIN orchestrator.asset_event e ON e.id = p.event_id",
			  1, (Oid[]) {TEXTOID}, &dag, NULL, SPI_OK_SELECT);
	ids = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull ||
		!DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull)))
		return false;
	ids = PointerGetDatum(DatumGetArrayTypePCopy(ids));
	first = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	last = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));

	/*
	 * Its logical date is the last event's time; should another run of the
	 * DAG have that one (events recorded at the same instant), the next
	 * free microsecond.
	 */
	for (int k = 0; run_id == 0; k++)
	{
		if (k >= 1000)
			ereport(ERROR,
					(errcode(ERRCODE_UNIQUE_VIOLATION),
					 errmsg("no free logical date for an asset-triggered run of DAG \"%s\" near %s",
							dag_id, timestamptz_to_str(last))));
		run_query("INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, "
				  " data_interval_start, data_interval_end, state, queued_at) "
				  "VALUES ($1, 'asset_triggered', $2, $3, $2, 'queued', $4) "
				  "ON CONFLICT (dag_id, logical_date) DO NOTHING RETURNING run_id",
				  4, (Oid[]) {TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID},
				  (Datum[]) {dag, TimestampTzGetDatum(last + k), TimestampTzGetDatum(first),
					  TimestampTzGetDatum(now)},
				  NULL, SPI_OK_INSERT_RETURNING);
		if (SPI_processed > 0)
			run_id = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	run_query("UPDATE orchestrator.asset_queue SET run_id = $3 "
			  "WHERE dag_id = $1 AND event_id = ANY ($2)",
			  3, (Oid[]) {TEXTOID, INT8ARRAYOID, INT8OID},
			  (Datum[]) {dag, ids, Int64GetDatum(run_id)}, NULL, SPI_OK_UPDATE);
	return true;
}

/*
 * Events older than cutoff that no DAG waits for and no kept run was
 * started by; returns how many went.  For the scheduler's retention.
 */
int64
assets_purge(TimestampTz cutoff, int limit)
{
	run_query("DELETE FROM orchestrator.asset_event WHERE id IN ( "
			  "  SELECT e.id FROM orchestrator.asset_event e "
			  "  WHERE e.recorded_at < $1 "
			  "    AND NOT EXISTS (SELECT 1 FROM orchestrator.asset_queue q WHERE q.event_id = e.id) "
			  "  LIMIT $2)",
			  2, (Oid[]) {TIMESTAMPTZOID, INT4OID},
			  (Datum[]) {TimestampTzGetDatum(cutoff), Int32GetDatum(limit)},
			  NULL, SPI_OK_DELETE);
	return (int64) SPI_processed;
}
