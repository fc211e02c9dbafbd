/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  What the task worker's parts share: a claimed try's run context, its
 *	  owner check, the timeout of what runs, and the abort after an error.
 *	  Internal to worker.c and callback.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_WORKER_H
#define ORCHESTRATOR_WORKER_H

#include "access/htup.h"
#include "access/tupdesc.h"

#include "task.h"

/*
 * the columns worker_read_run_context() reads, from dag_run r and dag d;
 * the last, an asset-triggered run's events by asset, for templates
 */
#define RUN_CONTEXT_COLUMNS \
	"r.dag_id, r.run_type, r.logical_date, r.data_interval_start, " \
	"r.data_interval_end, d.owner, d.params || r.conf, d.owner_name::text, d.owner_sysid, " \
	"CASE WHEN r.run_type = 'asset_triggered' THEN " \
	" (SELECT pg_catalog.jsonb_object_agg(x.asset, x.events) FROM " \
	"  (SELECT q.asset, pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(" \
	"     'asset', e.asset, " \
	"     'time', pg_catalog.to_char(e.recorded_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"+00:00\"'), " \
	"     'extra', e.extra) ORDER BY e.id) AS events " \
	"   FROM orchestrator.asset_queue q JOIN orchestrator.asset_event e ON e.id = q.event_id " \
	"   WHERE q.run_id = r.run_id GROUP BY q.asset) x) END"
/* how many they are: the columns after them come this much later */
#define RUN_CONTEXT_NCOLUMNS 10

extern char *worker_getstr(HeapTuple tuple, TupleDesc desc, int col,
						   MemoryContext cxt);
extern void worker_read_run_context(TaskRun *task, HeapTuple tuple,
									TupleDesc desc, int col, MemoryContext cxt);
extern void worker_set_run_context(TaskRun *task);
extern void worker_check_owner(TaskRun *task);

/* a timeout for what runs now: cancelled at ms, stopped by the scheduler later */
extern void worker_timeout_start(int64 ms);
extern void worker_timeout_stop(void);
extern bool worker_timed_out(void);

/* in a PG_CATCH: the error kept, the transaction and what it held gone */
extern ErrorData *worker_catch(MemoryContext cxt);

/* callbacks (callback.c) */
extern bool run_next_callback(MemoryContext cxt);

#endif							/* ORCHESTRATOR_WORKER_H */
