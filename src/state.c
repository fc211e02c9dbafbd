/*-------------------------------------------------------------------------
 *
 * state.c
 *	  The changes of state of runs and task instances (see state.h), as
 *	  SQL on the catalog; the decisions are rules.c's.
 *
 * Locks, always taken in this order, so that no two of these wait on each
 * other in a cycle:
 *
 * 1. the run's row (FOR NO KEY UPDATE; the API's FOR UPDATE), by whatever
 *	  changes the states of its task instances;
 * 2. the DAG's row (FOR NO KEY UPDATE), by whatever queues task instances,
 *	  so that the count of its active instances is exact under
 *	  max_active_tasks when workers of several runs queue at once (one
 *	  DAG's row per transaction);
 * 3. the rows of the pools its tasks use (FOR NO KEY UPDATE, all in one
 *	  statement, in name order: pool.c), so that the slots taken in each
 *	  are exact across DAGs and owners;
 * 4. the task instances' rows.
 *
 * A task instance that is ready but finds no room under max_active_tasks,
 * or in its pool, stays scheduled, with ready_at set (it holds no worker);
 * whoever frees room (a worker whose task ends) queues the first such
 * instances of the DAG in claim order, through a small index, without
 * evaluating whole runs, and the worker of a pooled task then queues the
 * pool's first waiters of other DAGs (pool.c, state_pool_hand_out).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/timestamp.h"

#include "mapping.h"
#include "orchestrator.h"
#include "pool.h"
#include "rules.h"
#include "state.h"

static Datum
col(int row, int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, isnull);
}

static char *
col_text(int row, int column)
{
	bool		isnull;
	Datum		d = col(row, column, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static TiState
parse_state(const char *name)
{
	TiState		state;

	if (!rules_parse_state(name, &state))
		elog(ERROR, "unknown task instance state \"%s\"", name);
	return state;
}

static TriggerRule
parse_rule(const char *name)
{
	TriggerRule rule;

	if (!rules_parse_trigger_rule(name, &rule))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown trigger rule \"%s\"", name)));
	return rule;
}

/*
 * Queued runs start, oldest logical date first, up to each DAG's
 * max_active_runs; a run another transaction has locked waits.
 */
void
state_start_runs(TimestampTz now)
{
	/*
	 * Each queued run's DAG looked up by key (a LATERAL with OFFSET 0: no
	 * join of two sets, which statistics taken before a thousand runs
	 * were queued would make a nested loop over both), with its running
	 * runs counted through their index.
	 */
	run_query("WITH queued AS ( "
			  "  SELECT r.run_id, r.dag_id, r.logical_date FROM orchestrator.dag_run r "
			  "  WHERE r.state = 'queued' FOR NO KEY UPDATE SKIP LOCKED), "
			  "ranked AS ( "
			  "  SELECT r.run_id, row_number() OVER (PARTITION BY r.dag_id "
			  "                                      ORDER BY r.logical_date, r.run_id) AS k, f.n "
			  "  FROM queued r "
			  "  CROSS JOIN LATERAL ( "
			  "    SELECT d.max_active_runs - "
			  "           (SELECT count(*) FROM orchestrator.dag_run x "
			  "            WHERE x.dag_id = d.dag_id AND x.state = 'running') AS n "
			  "    FROM orchestrator.dag d WHERE d.dag_id = r.dag_id AND NOT d.paused "
			  "    OFFSET 0) f) "
			  "UPDATE orchestrator.dag_run r SET state = 'running', started_at = $1, finished_at = NULL "
			  "FROM ranked WHERE ranked.run_id = r.run_id AND ranked.k <= ranked.n",
			  1, (Oid[]) {TIMESTAMPTZOID}, (Datum[]) {TimestampTzGetDatum(now)},
			  NULL, SPI_OK_UPDATE);
}

/* positions in an array of runs, by run id */
typedef struct RunIndex
{
	int64		run_id;			/* the key */
	int			index;
} RunIndex;

static HTAB *
index_runs(const int64 *ids, int n)
{
	HASHCTL		ctl;
	HTAB	   *byrun;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(RunIndex);
	ctl.hcxt = CurrentMemoryContext;
	byrun = hash_create("orchestrator runs by id", Max(n, 1), &ctl,
						HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
		((RunIndex *) hash_search(byrun, &ids[i], HASH_ENTER, NULL))->index = i;
	return byrun;
}

/* run_id's position, or -1 */
static int
run_index(HTAB *byrun, int64 run_id)
{
	RunIndex   *ri = hash_search(byrun, &run_id, HASH_FIND, NULL);

	return ri ? ri->index : -1;
}

/*
 * A RunRef from the columns run_id, dag_id, max_active_tasks, deadline,
 * and (state_lock_runs', the scheduler's new runs) fresh, of row "row" of
 * SPI_tuptable
 */
void
state_read_run_ref(uint64 row, RunRef *run)
{
	bool		isnull;
	Datum		d;

	run->run_id = DatumGetInt64(col(row, 1, &isnull));
	run->skip_locked_dag = false;
	run->dag_idle = false;
	run->fresh = SPI_tuptable->tupdesc->natts >= 5 && DatumGetBool(col(row, 5, &isnull));
	run->dag_id = col_text(row, 2);
	run->max_active_tasks = DatumGetInt32(col(row, 3, &isnull));
	d = col(row, 4, &isnull);
	run->has_timeout = !isnull;
	run->deadline = isnull ? 0 : DatumGetTimestampTz(d);
	/* (its instances' events need it: no lookup each) */
	events_know_run(run->run_id, run->dag_id);
}

void
state_lock_runs(const int64 *ids, int n, RunRef *runs, bool *locked)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
	Datum		array;
	HTAB	   *byrun = index_runs(ids, n);

	for (int i = 0; i < n; i++)
	{
		elems[i] = Int64GetDatum(ids[i]);
		locked[i] = false;
	}
	array = PointerGetDatum(construct_array(elems, n, INT8OID, 8, FLOAT8PASSBYVAL,
											TYPALIGN_DOUBLE));
	/* (the rows in key order: the scheduler's only, and it never waits) */
	run_query("SELECT r.run_id, r.dag_id, d.max_active_tasks, r.started_at + d.dagrun_timeout, "
			  "       NOT EXISTS (SELECT 1 FROM orchestrator.task_instance x "
			  "                   WHERE x.run_id = r.run_id) "
			  "FROM orchestrator.dag_run r JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "WHERE r.run_id = ANY ($1) AND r.state = 'running' "
			  "ORDER BY r.run_id FOR NO KEY UPDATE OF r SKIP LOCKED",
			  1, (Oid[]) {INT8ARRAYOID}, &array, NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		bool		isnull;
		int			i = run_index(byrun, DatumGetInt64(col(r, 1, &isnull)));

		if (i < 0)
			continue;
		state_read_run_ref(r, &runs[i]);
		locked[i] = true;
	}
}

bool
state_lock_run(int64 run_id, bool skip_locked, RunRef *run)
{
	Datum		value = Int64GetDatum(run_id);

	run_query(skip_locked ?
			  "SELECT r.run_id, r.dag_id, d.max_active_tasks, r.started_at + d.dagrun_timeout "
			  "FROM orchestrator.dag_run r JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "WHERE r.run_id = $1 AND r.state = 'running' "
			  "FOR NO KEY UPDATE OF r SKIP LOCKED" :
			  "SELECT r.run_id, r.dag_id, d.max_active_tasks, r.started_at + d.dagrun_timeout "
			  "FROM orchestrator.dag_run r JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "WHERE r.run_id = $1 AND r.state = 'running' "
			  "FOR NO KEY UPDATE OF r",
			  1, (Oid[]) {INT8OID}, &value, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	state_read_run_ref(0, run);
	return true;
}

/* a task instance becomes skipped or upstream_failed: it is done */
static void
set_done(int64 run_id, const char *task_id, int map_index, TiState state, TimestampTz now)
{
	run_query("UPDATE orchestrator.task_instance SET state = $3, finished_at = $4, "
			  " next_try_at = NULL, ready_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $5",
			  5, (Oid[]) {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  CStringGetTextDatum(rules_state_name(state)), TimestampTzGetDatum(now),
			  Int32GetDatum(map_index)},
			  NULL, SPI_OK_UPDATE);
}

/*
 * How many instances of the DAG named by dag_expr are active (queued or
 * running, in its running runs): its running runs through their index
 * (never its history), then each run's active instances through theirs
 * (OFFSET 0: never a join planned over every active instance).
 */
#define ACTIVE_COUNT_SQL(dag_expr) \
	"(SELECT count(*) FROM " \
	"   (SELECT r.run_id FROM orchestrator.dag_run r " \
	"    WHERE r.dag_id = " dag_expr " AND r.state = 'running' OFFSET 0) r " \
	" CROSS JOIN LATERAL (SELECT 1 FROM orchestrator.task_instance ti " \
	"                     WHERE ti.run_id = r.run_id AND ti.state IN ('queued', 'running') " \
	"                     OFFSET 0) a)"

/*
 * Room under the DAG's max_active_tasks, with the DAG's row locked (see
 * the order of locks above) until the end of the transaction, and then the
 * pools its tasks use (and extra_pool), with their free slots (pool.c).
 * With skip_locked (the scheduler), a row another transaction holds (an
 * API call, perhaps in a long transaction of its author's) gives no room,
 * and the scheduler tries again at its next pass instead of waiting.
 */
static int
dag_room(const char *dag_id, int max_active_tasks, bool skip_locked,
		 const char *extra_pool, PoolRoom *pools, Advance *adv)
{
	Datum		value = CStringGetTextDatum(dag_id);
	bool		isnull;
	int64		active;

	pools->n = 0;
	run_query(skip_locked ?
			  "SELECT 1 FROM orchestrator.dag WHERE dag_id = $1 FOR NO KEY UPDATE SKIP LOCKED" :
			  "SELECT 1 FROM orchestrator.dag WHERE dag_id = $1 FOR NO KEY UPDATE",
			  1, (Oid[]) {TEXTOID}, &value, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0 ||
		!pool_lock(dag_id, extra_pool, skip_locked, pools))
	{
		/* (the scheduler's: held by an API call; no room this time) */
		adv->dag_locked = true;
		return 0;
	}
	run_query("SELECT " ACTIVE_COUNT_SQL("$1"),
			  1, (Oid[]) {TEXTOID}, &value, NULL, SPI_OK_SELECT);
	active = DatumGetInt64(col(0, 1, &isnull));
	return (int) Max(Min((int64) max_active_tasks - active, INT_MAX), 0);
}

/* what queueing a task instance needs of its task's definition */
typedef struct QueueInfo
{
	char		task_id[ORCH_MAX_ID_LEN + 1];	/* the key */
	char	   *pool;			/* NULL: none */
	int			pool_slots;
	int64		offset_ms;		/* its claim's advance for its weight */
} QueueInfo;

/* task instances to queue, or to mark waiting, all at once */
typedef struct InstanceSet
{
	int			n;
	int			size;
	Datum	   *run_ids;
	Datum	   *task_ids;
	Datum	   *map_indexes;
	Datum	   *offsets;		/* their claims' advance for their weights */
	Datum	   *pools;
	bool	   *no_pool;
	Datum	   *pool_slots;
} InstanceSet;

static void
set_add(InstanceSet *set, int64 run_id, const char *task_id, int map_index,
		const QueueInfo *info)
{
	if (set->n == set->size)
	{
		set->size = Max(16, set->size * 2);
#define GROW(field, type) \
		set->field = set->field ? repalloc(set->field, sizeof(type) * set->size) : \
			palloc(sizeof(type) * set->size)
		GROW(run_ids, Datum);
		GROW(task_ids, Datum);
		GROW(map_indexes, Datum);
		GROW(offsets, Datum);
		GROW(pools, Datum);
		GROW(no_pool, bool);
		GROW(pool_slots, Datum);
#undef GROW
	}
	set->run_ids[set->n] = Int64GetDatum(run_id);
	set->task_ids[set->n] = CStringGetTextDatum(task_id);
	set->map_indexes[set->n] = Int32GetDatum(map_index);
	set->offsets[set->n] = Int64GetDatum(info->offset_ms);
	set->no_pool[set->n] = info->pool == NULL;
	set->pools[set->n] = info->pool ? CStringGetTextDatum(info->pool) : (Datum) 0;
	set->pool_slots[set->n] = Int32GetDatum(info->pool_slots);
	set->n++;
}

/* $2..$7 of the statements below, from a set */
static void
set_arrays(const InstanceSet *set, Datum *values)
{
	int			dims[1] = {set->n};
	int			lbs[1] = {1};

	values[0] = PointerGetDatum(construct_array(set->run_ids, set->n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(set->task_ids, set->n, TEXTOID, -1, false,
												TYPALIGN_INT));
	values[2] = PointerGetDatum(construct_array(set->map_indexes, set->n, INT4OID, 4, true,
												TYPALIGN_INT));
	values[3] = PointerGetDatum(construct_array(set->offsets, set->n, INT8OID, 8,
												FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	values[4] = PointerGetDatum(construct_md_array(set->pools, set->no_pool, 1, dims, lbs,
												   TEXTOID, -1, false, TYPALIGN_INT));
	values[5] = PointerGetDatum(construct_array(set->pool_slots, set->n, INT4OID, 4, true,
												TYPALIGN_INT));
}

#define SET_TYPES {TIMESTAMPTZOID, INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID, \
				   INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID}
#define SET_UNNEST \
	"unnest($2::int8[], $3::text[], $4::int4[], $5::int8[], $6::text[], $7::int4[]) " \
	"AS u(run_id, task_id, map_index, offset_ms, pool, pool_slots)"

/*
 * Ready task instances are queued (those that still wait), in claim order:
 * the time each became ready (ready_at if it waited for room) less its
 * weight's advance; returns how many were.
 */
static int
queue_set(const InstanceSet *set, TimestampTz now)
{
	Datum		values[7];

	if (set->n == 0)
		return 0;
	values[0] = TimestampTzGetDatum(now);
	set_arrays(set, values + 1);
	run_query("UPDATE orchestrator.task_instance ti SET state = 'queued', queued_at = $1, "
			  " claim_at = coalesce(ti.ready_at, $1) - u.offset_ms * interval '1 millisecond', "
			  " pool = u.pool, pool_slots = u.pool_slots, next_try_at = NULL, ready_at = NULL "
			  "FROM " SET_UNNEST " "
			  "WHERE ti.run_id = u.run_id AND ti.task_id = u.task_id AND ti.map_index = u.map_index "
			  "  AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')",
			  7, (Oid[]) SET_TYPES, values, NULL, SPI_OK_UPDATE);
	return (int) SPI_processed;
}

/*
 * Ready task instances find no room (under max_active_tasks, or in their
 * pools): they wait, scheduled with ready_at set, in claim order.
 */
static void
mark_set_waiting(const InstanceSet *set, TimestampTz now)
{
	Datum		values[7];

	if (set->n == 0)
		return;
	values[0] = TimestampTzGetDatum(now);
	set_arrays(set, values + 1);
	/* (already marked by an earlier pass: not written again) */
	run_query("UPDATE orchestrator.task_instance ti SET ready_at = $1, "
			  " claim_at = $1 - u.offset_ms * interval '1 millisecond', "
			  " pool = u.pool, pool_slots = u.pool_slots "
			  "FROM " SET_UNNEST " "
			  "WHERE ti.run_id = u.run_id AND ti.task_id = u.task_id AND ti.map_index = u.map_index "
			  "  AND ti.ready_at IS NULL "
			  "  AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')",
			  7, (Oid[]) SET_TYPES, values, NULL, SPI_OK_UPDATE);
}

/* one instance queued (if it still waits): 1 if it was */
static int
queue_one(int64 run_id, const char *task_id, int map_index, const QueueInfo *info,
		  TimestampTz now)
{
	InstanceSet set = {0};

	set_add(&set, run_id, task_id, map_index, info);
	return queue_set(&set, now);
}

/* one instance waits for room */
static void
mark_waiting(int64 run_id, const char *task_id, int map_index, const QueueInfo *info,
			 TimestampTz now)
{
	InstanceSet set = {0};

	set_add(&set, run_id, task_id, map_index, info);
	mark_set_waiting(&set, now);
}

/* a QueueInfo from columns pool, pool_slots, priority_weight_total at col */
static void
read_queue_info(int row, int column, QueueInfo *info)
{
	bool		isnull;
	Datum		d;

	info->pool = col_text(row, column);
	d = col(row, column + 1, &isnull);
	info->pool_slots = isnull ? 1 : DatumGetInt32(d);
	d = col(row, column + 2, &isnull);
	info->offset_ms = rules_claim_offset_ms(isnull ? 1 : DatumGetInt64(d),
											orch_priority_weight_age_ms);
}

/* a ready task instance, to queue (or to expand first: mapping.c) */
typedef struct ReadyRef
{
	int64		run_id;
	char	   *task_id;
	int			map_index;
	bool		expand;
} ReadyRef;

static List *
add_ready(List *ready, int64 run_id, char *task_id, int map_index, bool expand)
{
	ReadyRef   *r = palloc(sizeof(ReadyRef));

	r->run_id = run_id;
	r->task_id = task_id;
	r->map_index = map_index;
	r->expand = expand;
	return lappend(ready, r);
}

/*
 * Queues the ready instances in order while the DAG has room, and each its
 * pool (each mapped instance takes its own slots); marks the rest ready_at,
 * for whoever frees room.  A mapped task's unmapped instance expands first,
 * room or not (mapping.c), and its instances take its place in the order.
 * Returns the tasks whose expansion ended them (skipped or failed): their
 * downstream is to be decided.
 */
static List *
queue_ready(const RunRef *run, List *ready, const char *extra_pool, TimestampTz now,
			Advance *adv)
{
	int			room;
	PoolRoom	pools;
	HASHCTL		ctl;
	HTAB	   *infos;
	Datum	   *elems;
	int			n = 0;
	QueueInfo	none = {0};
	List	   *ended = NIL;
	ListCell   *lc;

	if (ready == NIL)
		return NIL;
	/* the DAG's lock, then its pools', before any instance is written */
	room = dag_room(run->dag_id, run->max_active_tasks, run->skip_locked_dag,
					extra_pool, &pools, adv);

	/* their tasks' pools and weights */
	ctl.keysize = ORCH_MAX_ID_LEN + 1;
	ctl.entrysize = sizeof(QueueInfo);
	ctl.hcxt = CurrentMemoryContext;
	infos = hash_create("orchestrator ready tasks", Max(list_length(ready), 16), &ctl,
						HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	elems = palloc(sizeof(Datum) * list_length(ready));
	foreach(lc, ready)
		elems[n++] = CStringGetTextDatum(((ReadyRef *) lfirst(lc))->task_id);
	run_query("SELECT t.task_id, t.pool, t.pool_slots, t.priority_weight_total "
			  "FROM orchestrator.task t WHERE t.dag_id = $1 AND t.task_id = ANY ($2)",
			  2, (Oid[]) {TEXTOID, TEXTARRAYOID},
			  (Datum[]) {CStringGetTextDatum(run->dag_id),
				  PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT))},
			  NULL, SPI_OK_SELECT);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		char	   *name = col_text(r, 1);
		QueueInfo  *info;

		if (strlen(name) > ORCH_MAX_ID_LEN)
			continue;
		info = hash_search(infos, name, HASH_ENTER, NULL);
		read_queue_info(r, 2, info);
	}
	none.pool_slots = 1;

	foreach(lc, ready)
	{
		ReadyRef   *r = lfirst(lc);
		QueueInfo  *info = strlen(r->task_id) > ORCH_MAX_ID_LEN ? NULL :
			hash_search(infos, r->task_id, HASH_FIND, NULL);
		int			ninstances = 1;

		if (info == NULL)
			info = &none;
		if (r->expand)
		{
			ninstances = mapping_expand(r->run_id, run->dag_id, r->task_id, now);
			if (ninstances <= 0)
			{
				ended = lappend(ended, r->task_id);
				continue;
			}
		}
		for (int k = 0; k < ninstances; k++)
		{
			int			map_index = r->expand ? k : r->map_index;

			if (room <= 0)
			{
				mark_waiting(r->run_id, r->task_id, map_index, info, now);
				adv->held = true;
			}
			else if (info->pool != NULL && !pool_take(&pools, info->pool, info->pool_slots))
				mark_waiting(r->run_id, r->task_id, map_index, info, now);	/* its pool's */
			else if (queue_one(r->run_id, r->task_id, map_index, info, now) == 1)
			{
				adv->queued++;
				room--;
			}
		}
	}
	return ended;
}

/* The DAG's callback for a run that ended, if it has one. */
static void
enqueue_run_callback(int64 run_id, const char *state, const char *error)
{
	Datum		values[3];
	char		nulls[3] = "   ";

	values[0] = Int64GetDatum(run_id);
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
			  3, (Oid[]) {INT8OID, TEXTOID, TEXTOID}, values, nulls, SPI_OK_INSERT);
}

/* a run's task's instances in its array, by task id (they are contiguous) */
typedef struct TaskIndexEntry
{
	char		task_id[ORCH_MAX_ID_LEN + 1];	/* the key */
	int			first;
	int			count;
} TaskIndexEntry;

/* a run's instances, as the rules see them, and what writing them needs */
typedef struct RunTasks
{
	int			n;
	RuleTask   *tasks;
	char	  **names;
	int		   *map_indexes;
	bool	   *to_expand;
} RunTasks;

/*
 * The columns of a run's instances (RUN_INSTANCES_COLUMNS, from ti and t,
 * the task LEFT JOINed), in the order of its tasks, one row per instance:
 * a mapped task's count one by one.
 */
#define RUN_INSTANCES_COLUMNS \
	"ti.task_id, ti.state, ti.next_try_at, t.trigger_rule, t.upstream, " \
	"t.task_id IS NULL, ti.map_index, " MAPPING_TO_EXPAND_SQL
#define RUN_INSTANCES_NCOLUMNS 8

/*
 * Reads rows [first, first + n) of SPI_tuptable (RUN_INSTANCES_COLUMNS) as
 * one run's instances, their upstream linked through a hash by name:
 * linear in the run's instances.  A retry not yet due sets adv->retry_at.
 */
static void
read_run_tasks(uint64 first, int n, TimestampTz now, RunTasks *rt, Advance *adv)
{
	RuleTask   *tasks = palloc0(sizeof(RuleTask) * Max(n, 1));
	char	  **names = palloc0(sizeof(char *) * Max(n, 1));
	int		   *map_indexes = palloc0(sizeof(int) * Max(n, 1));
	bool	   *to_expand = palloc0(sizeof(bool) * Max(n, 1));
	bool		isnull;
	HASHCTL		ctl;
	HTAB	   *byname;

	ctl.keysize = ORCH_MAX_ID_LEN + 1;
	ctl.entrysize = sizeof(TaskIndexEntry);
	ctl.hcxt = CurrentMemoryContext;
	byname = hash_create("orchestrator run tasks", Max(n, 16), &ctl,
						 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		uint64		row = first + i;
		Datum		d;

		names[i] = col_text(row, 1);
		tasks[i].state = parse_state(col_text(row, 2));
		d = col(row, 3, &isnull);
		if (rules_state_waiting(tasks[i].state))
		{
			TimestampTz at = isnull ? 0 : DatumGetTimestampTz(d);

			tasks[i].retry_due = isnull || at <= now;
			if (!tasks[i].retry_due && (adv->retry_at == 0 || at < adv->retry_at))
				adv->retry_at = at;
		}
		tasks[i].removed = DatumGetBool(col(row, 6, &isnull));
		tasks[i].rule = tasks[i].removed ? TR_ALL_SUCCESS : parse_rule(col_text(row, 4));
		tasks[i].is_leaf = !tasks[i].removed;
		map_indexes[i] = DatumGetInt32(col(row, 7, &isnull));
		d = col(row, 8, &isnull);
		to_expand[i] = !isnull && DatumGetBool(d);
		if (strlen(names[i]) <= ORCH_MAX_ID_LEN)
		{
			bool		found;
			TaskIndexEntry *e = hash_search(byname, names[i], HASH_ENTER, &found);

			if (!found)
			{
				e->first = i;
				e->count = 0;
			}
			e->count++;
		}
	}
	for (int i = 0; i < n; i++)
	{
		Datum		d = col(first + i, 5, &isnull);
		Datum	   *elems;
		int			nelems;
		int		   *upstream = NULL;
		int			nupstream = 0;

		if (isnull)
			continue;
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		for (int pass = 0; pass < 2; pass++)
		{
			/* counted first, then filled: every instance of each upstream task */
			for (int e = 0; e < nelems; e++)
			{
				char	   *name = TextDatumGetCString(elems[e]);
				TaskIndexEntry *found;

				if (strlen(name) > ORCH_MAX_ID_LEN)
					continue;
				found = hash_search(byname, name, HASH_FIND, NULL);
				if (found == NULL)
					continue;
				for (int k = 0; k < found->count; k++)
				{
					if (pass == 1)
					{
						upstream[tasks[i].nupstream++] = found->first + k;
						tasks[found->first + k].is_leaf = false;
					}
					else
						nupstream++;
				}
			}
			if (pass == 0)
				upstream = palloc(sizeof(int) * Max(nupstream, 1));
		}
		tasks[i].upstream = upstream;
	}
	hash_destroy(byname);
	rt->n = n;
	rt->tasks = tasks;
	rt->names = names;
	rt->map_indexes = map_indexes;
	rt->to_expand = to_expand;
}

/* every task of the definition has an instance (also tasks added later) */
static void
insert_instances(Datum run_ids, Datum dag_ids)
{
	run_query("INSERT INTO orchestrator.task_instance (run_id, task_id, state, max_tries) "
			  "SELECT u.run_id, t.task_id, 'scheduled', t.retries + 1 "
			  "FROM unnest($1::int8[], $2::text[]) AS u(run_id, dag_id) "
			  /*
			   * Each DAG's tasks, and each task's instances, by key, whatever
			   * the statistics say (OFFSET 0: never an anti join that reads
			   * every instance of every run)
			   */
			  "CROSS JOIN LATERAL (SELECT t.task_id, t.retries FROM orchestrator.task t "
			  "                    WHERE t.dag_id = u.dag_id OFFSET 0) t "
			  "WHERE NOT EXISTS (SELECT 1 FROM orchestrator.task_instance x "
			  "                  WHERE x.run_id = u.run_id AND x.task_id = t.task_id OFFSET 0) "
			  "ON CONFLICT DO NOTHING",
			  2, (Oid[]) {INT8ARRAYOID, TEXTARRAYOID}, (Datum[]) {run_ids, dag_ids},
			  NULL, SPI_OK_INSERT);
}

static Datum
one_element(Datum value, Oid type)
{
	int16		typlen;
	bool		typbyval;
	char		typalign;

	get_typlenbyvalalign(type, &typlen, &typbyval, &typalign);
	return PointerGetDatum(construct_array(&value, 1, type, typlen, typbyval, typalign));
}

/* The run's end, if its leaves decide it, with its callback. */
static bool
end_run(const RunRef *run, const RunTasks *rt, TimestampTz now)
{
	Oid			types[2] = {INT8OID, TIMESTAMPTZOID};
	Datum		values[2];

	values[0] = Int64GetDatum(run->run_id);
	values[1] = TimestampTzGetDatum(now);
	switch (rules_run_outcome(rt->tasks, rt->n))
	{
		case RUN_GOING:
			return false;
		case RUN_SUCCEEDS:
			run_query("UPDATE orchestrator.dag_run SET state = 'success', finished_at = $2 WHERE run_id = $1",
					  2, types, values, NULL, SPI_OK_UPDATE);
			enqueue_run_callback(run->run_id, "success", NULL);
			break;
		case RUN_FAILS:
			{
				StringInfoData why;

				run_query("UPDATE orchestrator.dag_run SET state = 'failed', finished_at = $2 WHERE run_id = $1",
						  2, types, values, NULL, SPI_OK_UPDATE);
				initStringInfo(&why);
				for (int i = 0; i < rt->n; i++)
					if (rt->tasks[i].is_leaf &&
						(rt->tasks[i].state == TI_FAILED || rt->tasks[i].state == TI_UPSTREAM_FAILED))
						appendStringInfo(&why, "%s%s %s", why.len ? ", " : "tasks ",
										 rt->names[i], rules_state_name(rt->tasks[i].state));
				enqueue_run_callback(run->run_id, "failed", why.data);
				break;
			}
	}
	return true;
}

void
state_evaluate_run(const RunRef *run, TimestampTz now, Advance *adv)
{
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	RunTasks	rt;
	List	   *ready;
	int			budget;

	values[0] = Int64GetDatum(run->run_id);
	values[1] = CStringGetTextDatum(run->dag_id);
	insert_instances(one_element(values[0], INT8OID), one_element(values[1], TEXTOID));

again:
	budget = 0;
	ready = NIL;
	run_query("SELECT " RUN_INSTANCES_COLUMNS " "
			  "FROM orchestrator.task_instance ti "
			  "LEFT JOIN orchestrator.task t ON t.dag_id = $2 AND t.task_id = ti.task_id "
			  "WHERE ti.run_id = $1 ORDER BY t.position, ti.task_id, ti.map_index",
			  2, types, values, NULL, SPI_OK_SELECT);
	read_run_tasks(0, (int) SPI_processed, now, &rt, adv);

	/*
	 * Decided with no budget first: what is ready is queued by queue_ready,
	 * under the DAG's lock, only if something is.
	 */
	rules_evaluate_run(rt.tasks, rt.n, &budget);
	for (int i = 0; i < rt.n; i++)
	{
		if (rt.tasks[i].changed)
			set_done(run->run_id, rt.names[i], rt.map_indexes[i], rt.tasks[i].state, now);
		if (rt.tasks[i].ready)
			ready = add_ready(ready, run->run_id, rt.names[i], rt.map_indexes[i],
							  rt.to_expand[i]);
	}
	/* an expansion that skipped or failed its task: its downstream next */
	if (queue_ready(run, ready, NULL, now, adv) != NIL)
		goto again;

	/* the run ends when all its tasks are done; its leaves decide how */
	if (end_run(run, &rt, now))
		adv->ended = true;
}

/*
 * The instances of new runs (RunRef.fresh), each created in the state
 * their first evaluation decided: queued, ready but waiting for room
 * (ready_at set), or scheduled.  One write each: created scheduled, then
 * queued, the ready ones were written twice, their run's key checked
 * twice, and read back in between.
 */
typedef struct NewInstances
{
	ArrayBuildState *run_ids;
	ArrayBuildState *dag_ids;
	ArrayBuildState *task_ids;
	ArrayBuildState *hows;		/* queued, waiting, scheduled */
	ArrayBuildState *offsets;
	ArrayBuildState *pools;
	ArrayBuildState *pool_slots;
	int			n;
} NewInstances;

static void
new_add(NewInstances *ni, const RunRef *run, const char *task_id, const char *how,
		const QueueInfo *info)
{
	MemoryContext cxt = CurrentMemoryContext;

	ni->run_ids = accumArrayResult(ni->run_ids, Int64GetDatum(run->run_id), false, INT8OID, cxt);
	ni->dag_ids = accumArrayResult(ni->dag_ids, CStringGetTextDatum(run->dag_id), false,
								   TEXTOID, cxt);
	ni->task_ids = accumArrayResult(ni->task_ids, CStringGetTextDatum(task_id), false,
									TEXTOID, cxt);
	ni->hows = accumArrayResult(ni->hows, CStringGetTextDatum(how), false, TEXTOID, cxt);
	ni->offsets = accumArrayResult(ni->offsets, Int64GetDatum(info ? info->offset_ms : 0),
								   false, INT8OID, cxt);
	ni->pools = accumArrayResult(ni->pools,
								 info && info->pool ? CStringGetTextDatum(info->pool) : (Datum) 0,
								 !(info && info->pool), TEXTOID, cxt);
	ni->pool_slots = accumArrayResult(ni->pool_slots, Int32GetDatum(info ? info->pool_slots : 0),
									  info == NULL, INT4OID, cxt);
	ni->n++;
}

static void
new_insert(NewInstances *ni, TimestampTz now)
{
	MemoryContext cxt = CurrentMemoryContext;

	if (ni->n == 0)
		return;
	/* (max_tries from each task by key, as insert_instances) */
	run_query("INSERT INTO orchestrator.task_instance (run_id, task_id, state, max_tries, "
			  " queued_at, ready_at, claim_at, pool, pool_slots) "
			  "SELECT u.run_id, u.task_id, "
			  "       CASE WHEN u.how = 'queued' THEN 'queued' ELSE 'scheduled' END, "
			  "       t.retries + 1, "
			  "       CASE WHEN u.how = 'queued' THEN $1 END, "
			  "       CASE WHEN u.how = 'waiting' THEN $1 END, "
			  "       CASE WHEN u.how <> 'scheduled' THEN $1 - u.offset_ms * interval '1 millisecond' END, "
			  "       u.pool, u.pool_slots "
			  "FROM unnest($2::int8[], $3::text[], $4::text[], $5::text[], $6::int8[], $7::text[], "
			  "            $8::int4[]) AS u(run_id, dag_id, task_id, how, offset_ms, pool, pool_slots) "
			  "CROSS JOIN LATERAL (SELECT t.retries FROM orchestrator.task t "
			  "                    WHERE t.dag_id = u.dag_id AND t.task_id = u.task_id OFFSET 0) t "
			  "ON CONFLICT DO NOTHING",
			  8, (Oid[]) {TIMESTAMPTZOID, INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID, TEXTARRAYOID,
			  INT8ARRAYOID, TEXTARRAYOID, INT4ARRAYOID},
			  (Datum[]) {TimestampTzGetDatum(now), makeArrayResult(ni->run_ids, cxt),
				  makeArrayResult(ni->dag_ids, cxt), makeArrayResult(ni->task_ids, cxt),
				  makeArrayResult(ni->hows, cxt), makeArrayResult(ni->offsets, cxt),
			  makeArrayResult(ni->pools, cxt), makeArrayResult(ni->pool_slots, cxt)},
			  NULL, SPI_OK_INSERT);
	/* a task gone, or an instance made meanwhile: what was decided is not */
	if (SPI_processed != (uint64) ni->n)
		elog(ERROR, "orchestrator: %d new task instances decided, " UINT64_FORMAT " created",
			 ni->n, SPI_processed);
}

/*
 * The scheduler's batch of running runs, locked (state_lock_runs), decided
 * with a few statements for them all: their instances created and read at
 * once, the rules applied to each run, and the ready instances queued
 * under their DAGs' max_active_tasks (rows locked in one statement, SKIP
 * LOCKED, then counted, but for a DAG whose runs here are all new and that
 * had no other: RunRef.dag_idle) with one UPDATE.  A new run's instances are read
 * from its tasks instead, and created once decided (new_insert).  Only the
 * common case is decided
 * here: a run whose evaluation changes an instance's state (skipped,
 * upstream_failed), ends the run, expands a mapped task, queues into a
 * pool, or finds its DAG's row held is left (done[i] false) for
 * state_evaluate_run, in the caller's subtransaction, as before.
 */
void
state_evaluate_batch(const RunRef *runs, int n, TimestampTz now, Advance *advs, bool *done)
{
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int64	   *run_ids = palloc(sizeof(int64) * Max(n, 1));
	Datum	   *dag_ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *fresh = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *old_ids = palloc(sizeof(Datum) * Max(n, 1));
	Datum	   *old_dags = palloc(sizeof(Datum) * Max(n, 1));
	int			nold = 0;
	Datum		id_array;
	Datum		dag_array;
	Datum		fresh_array;
	HASHCTL		ctl;
	HTAB	   *byrun;
	HTAB	   *dags;
	List	  **ready;			/* of each run: its ready instances' indexes */
	RunTasks   *kept;			/* of each run: its instances */
	QueueInfo **infos;
	Datum	   *lock_ids;
	int			nlock = 0;
	uint64		nrows;
	SPITupleTable *rows;
	bool		isnull;
	InstanceSet queue = {0};
	InstanceSet wait = {0};
	NewInstances created = {0};
	const char ***hows;			/* of each fresh run: each instance's, for new_insert */
	typedef struct
	{
		char		dag_id[ORCH_MAX_ID_LEN + 1];	/* the key */
		int			max_active_tasks;
		bool		locked;
		bool		count;		/* some active instance of it may exist */
		int			room;
	}			DagRoom;
	Datum	   *count_ids;
	int			ncount = 0;

	for (int i = 0; i < n; i++)
	{
		run_ids[i] = runs[i].run_id;
		ids[i] = Int64GetDatum(runs[i].run_id);
		dag_ids[i] = CStringGetTextDatum(runs[i].dag_id);
		fresh[i] = BoolGetDatum(runs[i].fresh);
		if (!runs[i].fresh)
		{
			old_ids[nold] = ids[i];
			old_dags[nold++] = dag_ids[i];
		}
		done[i] = false;
		memset(&advs[i], 0, sizeof(Advance));
	}
	if (n == 0)
		return;
	id_array = PointerGetDatum(construct_array(ids, n, INT8OID, 8, FLOAT8PASSBYVAL,
											   TYPALIGN_DOUBLE));
	dag_array = PointerGetDatum(construct_array(dag_ids, n, TEXTOID, -1, false, TYPALIGN_INT));
	fresh_array = PointerGetDatum(construct_array(fresh, n, BOOLOID, 1, true, TYPALIGN_CHAR));
	/* (the tasks added since to runs that have instances) */
	if (nold > 0)
		insert_instances(PointerGetDatum(construct_array(old_ids, nold, INT8OID, 8,
														 FLOAT8PASSBYVAL, TYPALIGN_DOUBLE)),
						 PointerGetDatum(construct_array(old_dags, nold, TEXTOID, -1,
														 false, TYPALIGN_INT)));

	byrun = index_runs(run_ids, n);

	/*
	 * every instance of the batch, run by run, in each run's task order (a
	 * new run's: one scheduled instance of each task, not yet created)
	 */
	run_query("SELECT " RUN_INSTANCES_COLUMNS ", ti.run_id, t.pool, t.pool_slots, "
			  "       t.priority_weight_total "
			  "FROM unnest($1::int8[], $2::text[], $3::bool[]) AS u(run_id, dag_id, fresh) "
			  /* (each run's instances, and their tasks, by key: OFFSET 0) */
			  "CROSS JOIN LATERAL ( "
			  "  (SELECT ti.run_id, ti.task_id, ti.state, ti.next_try_at, ti.map_index "
			  "   FROM orchestrator.task_instance ti "
			  "   WHERE NOT u.fresh AND ti.run_id = u.run_id OFFSET 0) "
			  "  UNION ALL "
			  "  SELECT u.run_id, t.task_id, 'scheduled', NULL::timestamptz, -1 "
			  "  FROM orchestrator.task t WHERE u.fresh AND t.dag_id = u.dag_id) ti "
			  "LEFT JOIN LATERAL (SELECT t.* FROM orchestrator.task t "
			  "                   WHERE t.dag_id = u.dag_id AND t.task_id = ti.task_id "
			  "                   OFFSET 0) t ON true "
			  "ORDER BY ti.run_id, t.position, ti.task_id, ti.map_index",
			  3, (Oid[]) {INT8ARRAYOID, TEXTARRAYOID, BOOLARRAYOID},
			  (Datum[]) {id_array, dag_array, fresh_array},
			  NULL, SPI_OK_SELECT);
	rows = SPI_tuptable;
	nrows = SPI_processed;

	ready = palloc0(sizeof(List *) * n);
	kept = palloc0(sizeof(RunTasks) * n);
	infos = palloc0(sizeof(QueueInfo *) * n);
	hows = palloc0(sizeof(const char **) * n);
	for (uint64 first = 0; first < nrows;)
	{
		int64		run_id;
		uint64		last = first;
		int			i;
		RunTasks	rt;
		int			budget = 0;
		bool		simple = true;

		SPI_tuptable = rows;
		run_id = DatumGetInt64(col(first, RUN_INSTANCES_NCOLUMNS + 1, &isnull));
		while (last < nrows &&
			   DatumGetInt64(col(last, RUN_INSTANCES_NCOLUMNS + 1, &isnull)) == run_id)
			last++;
		i = run_index(byrun, run_id);
		read_run_tasks(first, (int) (last - first), now, &rt, &advs[i]);
		rules_evaluate_run(rt.tasks, rt.n, &budget);
		infos[i] = palloc0(sizeof(QueueInfo) * Max(rt.n, 1));
		for (int k = 0; k < rt.n && simple; k++)
		{
			if (rt.tasks[k].changed)
				simple = false;
			else if (rt.tasks[k].ready)
			{
				read_queue_info((int) (first + k), RUN_INSTANCES_NCOLUMNS + 2, &infos[i][k]);
				if (rt.to_expand[k] || infos[i][k].pool != NULL)
					simple = false;
				else
					ready[i] = lappend_int(ready[i], k);
			}
		}
		if (simple && rules_run_outcome(rt.tasks, rt.n) == RUN_GOING)
		{
			done[i] = true;
			kept[i] = rt;
			if (runs[i].fresh)
			{
				hows[i] = palloc(sizeof(const char *) * Max(rt.n, 1));
				for (int k = 0; k < rt.n; k++)
					hows[i][k] = "scheduled";
			}
		}
		else
		{
			memset(&advs[i], 0, sizeof(Advance));
			ready[i] = NIL;
		}
		first = last;
	}

	/* the DAGs with something to queue: their rows, then their room */
	ctl.keysize = ORCH_MAX_ID_LEN + 1;
	ctl.entrysize = sizeof(DagRoom);
	ctl.hcxt = CurrentMemoryContext;
	dags = hash_create("orchestrator batch DAGs", n, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	lock_ids = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
	{
		bool		found;
		DagRoom    *d;

		if (ready[i] == NIL)
			continue;
		if (strlen(runs[i].dag_id) > ORCH_MAX_ID_LEN)
		{
			done[i] = false;	/* (not an id the API lets in: its own path) */
			continue;
		}
		d = hash_search(dags, runs[i].dag_id, HASH_ENTER, &found);
		if (!found)
		{
			d->max_active_tasks = runs[i].max_active_tasks;
			d->locked = false;
			d->count = false;
			d->room = 0;
			lock_ids[nlock++] = CStringGetTextDatum(runs[i].dag_id);
		}
		if (!(runs[i].fresh && runs[i].dag_idle))
			d->count = true;
	}
	if (nlock > 0)
	{
		Datum		lock_array = PointerGetDatum(construct_array(lock_ids, nlock, TEXTOID, -1,
																 false, TYPALIGN_INT));

		/* (state.c's order: the runs' rows are held; the DAGs' next, by name) */
		run_query("SELECT dag_id FROM orchestrator.dag WHERE dag_id = ANY ($1) "
				  "ORDER BY dag_id FOR NO KEY UPDATE SKIP LOCKED",
				  1, (Oid[]) {TEXTARRAYOID}, &lock_array, NULL, SPI_OK_SELECT);
		count_ids = palloc(sizeof(Datum) * nlock);
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			DagRoom    *d = hash_search(dags, col_text(r, 1), HASH_FIND, NULL);

			if (d == NULL)
				continue;
			d->locked = true;
			/* (a DAG whose runs here are all new, and was idle: all its room) */
			d->room = d->max_active_tasks;
			if (d->count)
				count_ids[ncount++] = CStringGetTextDatum(d->dag_id);
		}
		/* counted once locked (a statement of its own: a snapshot after the locks) */
		if (ncount > 0)
			run_query("SELECT d.dag_id, " ACTIVE_COUNT_SQL("d.dag_id") " "
					  "FROM unnest($1::text[]) AS d(dag_id)",
					  1, (Oid[]) {TEXTARRAYOID},
					  (Datum[]) {PointerGetDatum(construct_array(count_ids, ncount, TEXTOID,
																 -1, false, TYPALIGN_INT))},
					  NULL, SPI_OK_SELECT);
		for (uint64 r = 0; ncount > 0 && r < SPI_processed; r++)
		{
			DagRoom    *d = hash_search(dags, col_text(r, 1), HASH_FIND, NULL);
			int64		active = DatumGetInt64(col(r, 2, &isnull));

			if (d != NULL)
				d->room = (int) Max(Min((int64) d->max_active_tasks - active, INT_MAX), 0);
		}
	}

	/* in the batch's order (the runs' logical dates), each run's in task order */
	for (int i = 0; i < n; i++)
	{
		DagRoom    *d;
		RunTasks   *rt = &kept[i];
		ListCell   *lc;

		if (ready[i] == NIL || !done[i])
			continue;
		d = hash_search(dags, runs[i].dag_id, HASH_FIND, NULL);
		if (d == NULL || !d->locked)
		{
			/* its DAG's row is held (an API call): the run's own path says so */
			done[i] = false;
			continue;
		}
		foreach(lc, ready[i])
		{
			int			k = lfirst_int(lc);

			if (d->room > 0)
			{
				if (runs[i].fresh)
					hows[i][k] = "queued";
				else
					set_add(&queue, runs[i].run_id, rt->names[k], rt->map_indexes[k], &infos[i][k]);
				advs[i].queued++;
				d->room--;
			}
			else
			{
				if (runs[i].fresh)
					hows[i][k] = "waiting";
				else
					set_add(&wait, runs[i].run_id, rt->names[k], rt->map_indexes[k], &infos[i][k]);
				advs[i].held = true;
			}
		}
	}
	queue_set(&queue, now);
	mark_set_waiting(&wait, now);

	/* the new runs decided here: their instances, created */
	for (int i = 0; i < n; i++)
	{
		if (!done[i] || !runs[i].fresh)
			continue;
		for (int k = 0; k < kept[i].n; k++)
			new_add(&created, &runs[i], kept[i].names[k], hows[i][k],
					strcmp(hows[i][k], "scheduled") == 0 ? NULL : &infos[i][k]);
	}
	new_insert(&created, now);
}

/*
 * Queues the first ready instances (in claim order) of the DAG that
 * earlier found no room, as far as there is room now, under
 * max_active_tasks and in their pools.  Every worker whose task ends comes
 * here after taking the DAG's lock (dag_room), so an instance held back by
 * a transaction that counted its task as active is seen once that commits.
 */
static void
queue_held(const RunRef *run, const char *extra_pool, TimestampTz now, Advance *adv)
{
	PoolRoom	pools;
	int			room = dag_room(run->dag_id, run->max_active_tasks, run->skip_locked_dag,
								extra_pool, &pools, adv);
	uint64		n;
	SPITupleTable *rows;
	bool		isnull;
	Datum	   *open;
	int			nopen = 0;

	if (room == 0)
		return;
	/* (waiters of a pool that has no free slot are left out) */
	open = palloc(sizeof(Datum) * Max(pools.n, 1));
	for (int i = 0; i < pools.n; i++)
		if (pools.free[i] > 0)
			open[nopen++] = CStringGetTextDatum(pools.names[i]);
	/*
	 * The first few of each running run, through its index in claim order,
	 * then the first of them all: never every waiting instance (a fan-out
	 * of thousands waits whole behind max_active_tasks).  The pool marked
	 * when it began waiting chooses; its task's, read at the end, decides.
	 */
	run_query("SELECT ti.run_id, ti.task_id, ti.map_index, t.pool, t.pool_slots, "
			  "       t.priority_weight_total "
			  "FROM orchestrator.dag_run r "
			  "CROSS JOIN LATERAL ("
			  "  SELECT w.run_id, w.task_id, w.map_index, w.claim_at "
			  "  FROM orchestrator.task_instance w "
			  "  WHERE w.run_id = r.run_id AND w.ready_at IS NOT NULL "
			  "    AND w.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule') "
			  "    AND (w.pool IS NULL OR w.pool = ANY ($3)) "
			  "  ORDER BY w.claim_at LIMIT $2) ti "
			  "JOIN orchestrator.task t ON t.dag_id = r.dag_id AND t.task_id = ti.task_id "
			  "WHERE r.dag_id = $1 AND r.state = 'running' "
			  "  AND (t.pool IS NULL OR t.pool = ANY ($3)) "
			  "ORDER BY ti.claim_at, ti.run_id, ti.task_id, ti.map_index LIMIT $2",
			  3, (Oid[]) {TEXTOID, INT4OID, TEXTARRAYOID},
			  (Datum[]) {CStringGetTextDatum(run->dag_id), Int32GetDatum(room),
				  PointerGetDatum(construct_array(open, nopen, TEXTOID, -1, false, TYPALIGN_INT))},
			  NULL, SPI_OK_SELECT);
	n = SPI_processed;
	rows = SPI_tuptable;
	for (uint64 i = 0; i < n; i++)
	{
		int64		run_id;
		char	   *task_id;
		int			map_index;
		QueueInfo	info;

		SPI_tuptable = rows;
		run_id = DatumGetInt64(col(i, 1, &isnull));
		task_id = col_text(i, 2);
		map_index = DatumGetInt32(col(i, 3, &isnull));
		read_queue_info(i, 4, &info);
		if (info.pool != NULL && !pool_take(&pools, info.pool, info.pool_slots))
			continue;
		adv->queued += queue_one(run_id, task_id, map_index, &info, now);
	}
}

/*
 * One waiter of a pool queued, for whoever freed room in it (pool.c): its
 * DAG's row, then the pools, locked in state.c's order.
 */
PoolHandOut
state_pool_hand_out(const char *pool, List *excluded, bool skip_locked,
					TimestampTz now, char *dag_out, bool *locked)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(excluded), 1));
	int			nexcluded = 0;
	ListCell   *lc;
	char	   *dag_id;
	int			max_active_tasks;
	int64		run_id;
	char	   *task_id;
	int			map_index;
	bool		isnull;
	PoolRoom	pools;
	Advance		adv = {0};
	int			room;
	QueueInfo	info;

	foreach(lc, excluded)
		elems[nexcluded++] = CStringGetTextDatum(lfirst(lc));
	run_query("SELECT ti.run_id, ti.task_id, r.dag_id, d.max_active_tasks, ti.map_index "
			  "FROM orchestrator.task_instance ti "
			  "JOIN orchestrator.dag_run r ON r.run_id = ti.run_id "
			  "JOIN orchestrator.dag d ON d.dag_id = r.dag_id "
			  "WHERE ti.pool = $1 AND ti.ready_at IS NOT NULL "
			  "  AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule') AND r.state = 'running' "
			  "  AND r.dag_id <> ALL ($2) "
			  "ORDER BY ti.claim_at, ti.run_id, ti.task_id, ti.map_index LIMIT 1",
			  2, (Oid[]) {TEXTOID, TEXTARRAYOID},
			  (Datum[]) {CStringGetTextDatum(pool),
				  PointerGetDatum(construct_array(elems, nexcluded, TEXTOID, -1, false, TYPALIGN_INT))},
			  NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return HAND_DONE;
	run_id = DatumGetInt64(col(0, 1, &isnull));
	task_id = col_text(0, 2);
	dag_id = col_text(0, 3);
	max_active_tasks = DatumGetInt32(col(0, 4, &isnull));
	map_index = DatumGetInt32(col(0, 5, &isnull));
	strlcpy(dag_out, dag_id, ORCH_MAX_ID_LEN + 1);

	room = dag_room(dag_id, max_active_tasks, skip_locked, pool, &pools, &adv);
	if (adv.dag_locked)
		*locked = true;
	if (room == 0)
		return HAND_NEXT_DAG;

	/* still waiting, now that its DAG and pools are locked */
	run_query("SELECT t.pool, t.pool_slots, t.priority_weight_total "
			  "FROM orchestrator.task_instance ti "
			  "JOIN orchestrator.task t ON t.dag_id = $3 AND t.task_id = ti.task_id "
			  "WHERE ti.run_id = $1 AND ti.task_id = $2 AND ti.map_index = $4 "
			  "  AND ti.ready_at IS NOT NULL "
			  "  AND ti.state IN ('scheduled', 'up_for_retry', 'up_for_reschedule')",
			  4, (Oid[]) {INT8OID, TEXTOID, TEXTOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  CStringGetTextDatum(dag_id), Int32GetDatum(map_index)},
			  NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return HAND_AGAIN;
	read_queue_info(0, 1, &info);
	/* the first in claim order does not fit: the pool waits for more room */
	if (info.pool != NULL && !pool_take(&pools, info.pool, info.pool_slots))
		return HAND_DONE;
	return queue_one(run_id, task_id, map_index, &info, now) == 1 ? HAND_QUEUED : HAND_AGAIN;
}

void
state_advance_after(const RunRef *run, const char *task_id, int map_index,
					TimestampTz now, Advance *adv)
{
	List	   *frontier = list_make1(makeString(pstrdup(task_id)));	/* String nodes */
	char	   *pool;
	bool		isnull;

	/* its pool: locked below with its DAG's, handed out after the commit */
	StaticAssertStmt(sizeof(adv->pool) == ORCH_MAX_ID_LEN + 1, "Advance.pool");
	run_query("SELECT pool FROM orchestrator.task_instance "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $3",
			  3, (Oid[]) {INT8OID, TEXTOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run->run_id), CStringGetTextDatum(task_id),
			  Int32GetDatum(map_index)},
			  NULL, SPI_OK_SELECT);
	pool = SPI_processed == 1 ? col_text(0, 1) : NULL;
	if (pool != NULL)
		strlcpy(adv->pool, pool, sizeof(adv->pool));

	/*
	 * Its downstream, and theirs as long as skipped and upstream_failed
	 * propagate, or an expansion ends a task (skipped, failed).
	 */
	while (frontier != NIL)
	{
		List	   *ready = NIL;

		while (frontier != NIL)
		{
			Datum	   *elems = palloc(sizeof(Datum) * list_length(frontier));
			ListCell   *lc;
			int			i = 0;
			uint64		nrows;
			SPITupleTable *rows;

			foreach(lc, frontier)
				elems[i++] = CStringGetTextDatum(strVal(lfirst(lc)));
			/*
			 * The downstream tasks through their edges' index, their
			 * instances through the key (OFFSET 0: never through the index
			 * of a run's unfinished instances, which a fan-out fills, on
			 * statistics taken while the run was small), and the states of
			 * their upstream instances, read once per task however many of
			 * its instances are mapped.
			 */
			run_query("WITH t AS MATERIALIZED ("
					  "  SELECT t.* FROM orchestrator.task t "
					  "  WHERE orchestrator.upstream_keys(t.dag_id, t.upstream) && "
					  "        orchestrator.upstream_keys($2, $3) "
					  "    AND t.dag_id = $2 AND t.upstream && $3), "
					  "ti AS MATERIALIZED ("
					  "  SELECT i.run_id, i.task_id, i.map_index FROM t "
					  "  CROSS JOIN LATERAL (SELECT i.run_id, i.task_id, i.map_index, i.state "
					  "                      FROM orchestrator.task_instance i "
					  "                      WHERE i.run_id = $1 AND i.task_id = t.task_id "
					  "                      OFFSET 0) i "
					  "  WHERE i.state = 'scheduled'), "
					  "up AS MATERIALIZED ("
					  "  SELECT t.task_id, "
					  "         coalesce(array_agg(u.state) FILTER (WHERE u.task_id IS NOT NULL), '{}') AS states, "
					  "         count(DISTINCT u.task_id) AS ntasks "
					  "  FROM t LEFT JOIN orchestrator.task_instance u "
					  "    ON u.run_id = $1 AND u.task_id = ANY (t.upstream) "
					  "  WHERE t.task_id IN (SELECT task_id FROM ti) "
					  "  GROUP BY t.task_id) "
					  "SELECT t.task_id, t.trigger_rule, cardinality(t.upstream), up.states, up.ntasks, "
					  "       ti.map_index, " MAPPING_TO_EXPAND_SQL " "
					  "FROM ti JOIN t ON t.task_id = ti.task_id JOIN up ON up.task_id = ti.task_id "
					  "ORDER BY t.position, ti.map_index",
					  3, (Oid[]) {INT8OID, TEXTOID, TEXTARRAYOID},
					  (Datum[]) {Int64GetDatum(run->run_id), CStringGetTextDatum(run->dag_id),
						  PointerGetDatum(construct_array(elems, list_length(frontier), TEXTOID,
														  -1, false, TYPALIGN_INT))},
					  NULL, SPI_OK_SELECT);
			frontier = NIL;
			nrows = SPI_processed;
			rows = SPI_tuptable;
			for (uint64 r = 0; r < nrows; r++)
			{
				char	   *name;
				TriggerRule rule;
				int			cardinality;
				Datum	   *states;
				int			nstates;
				int			map_index;
				UpstreamTally tally = {0};
				Decision	decision;

				SPI_tuptable = rows;
				name = col_text(r, 1);
				rule = parse_rule(col_text(r, 2));
				cardinality = DatumGetInt32(col(r, 3, &isnull));
				/* an upstream task added to the DAG has no instance yet: the scheduler's */
				if (DatumGetInt64(col(r, 5, &isnull)) != cardinality)
				{
					adv->undecided = true;
					continue;
				}
				deconstruct_array(DatumGetArrayTypeP(col(r, 4, &isnull)), TEXTOID, -1, false,
								  TYPALIGN_INT, &states, NULL, &nstates);
				map_index = DatumGetInt32(col(r, 6, &isnull));
				for (int s = 0; s < nstates; s++)
					rules_tally(&tally, parse_state(TextDatumGetCString(states[s])));
				decision = rules_decide(rule, &tally);
				if (decision == DECIDE_READY)
					ready = add_ready(ready, run->run_id, name, map_index,
									  DatumGetBool(col(r, 7, &isnull)));
				else if (decision == DECIDE_SKIPPED || decision == DECIDE_UPSTREAM_FAILED)
				{
					set_done(run->run_id, name, map_index,
							 decision == DECIDE_SKIPPED ? TI_SKIPPED : TI_UPSTREAM_FAILED, now);
					if (!list_member(frontier, makeString(name)))
						frontier = lappend(frontier, makeString(name));
				}
			}
		}
		/* tasks an expansion ended: their downstream next */
		{
			List	   *ended = queue_ready(run, ready, pool, now, adv);
			ListCell   *lc;

			foreach(lc, ended)
				frontier = lappend(frontier, makeString(lfirst(lc)));
		}
	}

	/* the room this task left, for instances that found none */
	if (!adv->held)
		queue_held(run, pool, now, adv);

	/* the last one ends the run (decided over the whole run, leaves and all) */
	run_query("SELECT 1 FROM orchestrator.task_instance WHERE run_id = $1 "
			  "  AND state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule') "
			  "LIMIT 1",
			  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(run->run_id)}, NULL,
			  SPI_OK_SELECT);
	if (SPI_processed == 0)
		state_evaluate_run(run, now, adv);
}

/*
 * A try is claimed: a new try, or the next poke of a sensor's try (its
 * first_poke_at set), which keeps its try number and its start.
 */
void
state_try_claimed(int64 run_id, const char *task_id, int map_index, TimestampTz now)
{
	run_query("UPDATE orchestrator.task_instance SET state = 'running', "
			  " try_number = try_number + CASE WHEN first_poke_at IS NULL THEN 1 ELSE 0 END, "
			  " worker_pid = $3, started_at = coalesce(first_poke_at, $4), "
			  " finished_at = NULL, next_try_at = NULL, error = NULL, ready_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $5",
			  5, (Oid[]) {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  Int32GetDatum(MyProcPid), TimestampTzGetDatum(now),
			  Int32GetDatum(map_index)},
			  NULL, SPI_OK_UPDATE);
}

/*
 * The try succeeded: only while it is still this worker's running try (a
 * run cancelled or timed out meanwhile makes this false).
 */
bool
state_try_succeeded(int64 run_id, const char *task_id, int map_index, int try_number,
					TimestampTz now, bool has_rows, int64 rows_loaded, bool cached)
{
	run_query("UPDATE orchestrator.task_instance SET state = 'success', finished_at = $4, "
			  " rows_loaded = $5, cached = $6, first_poke_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $7 AND state = 'running' "
			  "  AND try_number = $3 AND worker_pid = pg_backend_pid()",
			  7, (Oid[]) {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, INT8OID, BOOLOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  Int32GetDatum(try_number), TimestampTzGetDatum(now),
				  Int64GetDatum(rows_loaded), BoolGetDatum(cached),
			  Int32GetDatum(map_index)},
			  has_rows ? "       " : "    n  ", SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/*
 * A sensor's poke found its condition false: the instance waits for its
 * next poke, up_for_reschedule, holding no worker, with its try number,
 * and its timeout counted from first_poke_at.  Only while it is still
 * this worker's running try, as for a success.
 */
bool
state_try_rescheduled(int64 run_id, const char *task_id, int map_index, int try_number,
					  TimestampTz next_poke_at, TimestampTz first_poke_at)
{
	run_query("UPDATE orchestrator.task_instance SET state = 'up_for_reschedule', "
			  " next_try_at = $4, first_poke_at = $5, finished_at = NULL, ready_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $6 AND state = 'running' "
			  "  AND try_number = $3 AND worker_pid = pg_backend_pid()",
			  6, (Oid[]) {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  Int32GetDatum(try_number), TimestampTzGetDatum(next_poke_at),
			  TimestampTzGetDatum(first_poke_at), Int32GetDatum(map_index)},
			  NULL, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/*
 * A sensor past its timeout with soft_fail: skipped, the reason kept as
 * its error.  Only while it is still this worker's running try.
 */
bool
state_try_skipped(int64 run_id, const char *task_id, int map_index, int try_number,
				  TimestampTz now, const char *why)
{
	run_query("UPDATE orchestrator.task_instance SET state = 'skipped', finished_at = $4, "
			  " error = $5, first_poke_at = NULL, next_try_at = NULL, ready_at = NULL "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $6 AND state = 'running' "
			  "  AND try_number = $3 AND worker_pid = pg_backend_pid()",
			  6, (Oid[]) {INT8OID, TEXTOID, INT4OID, TIMESTAMPTZOID, TEXTOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  Int32GetDatum(try_number), TimestampTzGetDatum(now),
			  CStringGetTextDatum(why), Int32GetDatum(map_index)},
			  NULL, SPI_OK_UPDATE);
	return SPI_processed == 1;
}

/*
 * Records a failed try: up_for_retry with its next try time, or failed when
 * no tries remain or no_retry says so (a sensor's timeout) (*final), and
 * with it the callback due and the error as the try's last log line
 * (unless only_state).  Only applies to the given
 * running try, so that a try already cancelled, timed out or recovered is
 * left as it is.  Returns whether it applied.
 */
bool
state_try_failed(int64 run_id, const char *task_id, int map_index, int pid,
				 int try_number, const char *error, TimestampTz now, bool only_state,
				 bool no_retry, bool *final)
{
	Oid			types[8] = {INT8OID, TEXTOID, INT4OID, INT4OID, TEXTOID, TIMESTAMPTZOID, INT4OID,
	BOOLOID};
	Datum		values[8];
	bool		isnull;

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(task_id);
	values[2] = Int32GetDatum(pid);
	values[3] = Int32GetDatum(try_number);
	values[4] = CStringGetTextDatum(error);
	values[5] = TimestampTzGetDatum(now);
	values[6] = Int32GetDatum(map_index);
	values[7] = BoolGetDatum(no_retry);
	run_query("UPDATE orchestrator.task_instance ti SET "
			  " state = CASE WHEN ti.try_number < ti.max_tries AND NOT $8 THEN 'up_for_retry' ELSE 'failed' END, "
			  " next_try_at = CASE WHEN ti.try_number < ti.max_tries AND NOT $8 THEN $6 + "
			  "   CASE WHEN t.retry_exponential_backoff "
			  "        THEN LEAST(coalesce(t.retry_delay, '5 minutes') * power(2, LEAST(ti.try_number - 1, 30)), "
			  "                   coalesce(t.max_retry_delay, '1 day')) "
			  "        ELSE LEAST(coalesce(t.retry_delay, '5 minutes'), coalesce(t.max_retry_delay, coalesce(t.retry_delay, '5 minutes'))) END "
			  "   END, "
			  " finished_at = $6, error = $5, ready_at = NULL, first_poke_at = NULL "
			  "FROM orchestrator.dag_run r "
			  "LEFT JOIN orchestrator.task t ON t.dag_id = r.dag_id AND t.task_id = $2 "
			  "WHERE r.run_id = ti.run_id AND ti.run_id = $1 AND ti.task_id = $2 "
			  "  AND ti.map_index = $7 "
			  "  AND ti.state = 'running' AND ti.worker_pid = $3 AND ti.try_number = $4 "
			  "RETURNING ti.state = 'failed'",
			  8, types, values, NULL, SPI_OK_UPDATE_RETURNING);
	if (SPI_processed == 0)
		return false;
	if (final)
		*final = DatumGetBool(col(0, 1, &isnull));
	if (only_state)
		return true;
	/* its callback, due with this outcome */
	run_query("INSERT INTO orchestrator.callback (run_id, task_id, map_index, kind, spec, try_number, error) "
			  "SELECT ti.run_id, ti.task_id, ti.map_index, c.kind, c.spec, ti.try_number, $5 "
			  "FROM orchestrator.task_instance ti "
			  "JOIN orchestrator.dag_run r ON r.run_id = ti.run_id "
			  "JOIN orchestrator.task t ON t.dag_id = r.dag_id AND t.task_id = ti.task_id "
			  "CROSS JOIN LATERAL (SELECT CASE WHEN ti.state = 'failed' THEN 'on_failure_callback' ELSE 'on_retry_callback' END, "
			  "                           CASE WHEN ti.state = 'failed' THEN t.on_failure_callback ELSE t.on_retry_callback END) c(kind, spec) "
			  "WHERE ti.run_id = $1 AND ti.task_id = $2 AND ti.map_index = $7 AND c.spec IS NOT NULL",
			  7, types, values, NULL, SPI_OK_INSERT);
	/* the error ends the try's log */
	run_query("INSERT INTO orchestrator.log (run_id, task_id, map_index, try_number, logged_at, level, message) "
			  "VALUES ($1, $2, $7, $4, $6, 'ERROR', $5)",
			  7, types, values, NULL, SPI_OK_INSERT);
	return true;
}

/* A queued instance that could not be claimed fails, once, with why. */
void
state_fail_unclaimable(int64 run_id, const char *task_id, int map_index,
					   const char *error, TimestampTz now)
{
	run_query("UPDATE orchestrator.task_instance SET state = 'failed', finished_at = $3, error = $4 "
			  "WHERE run_id = $1 AND task_id = $2 AND map_index = $5 AND state = 'queued'",
			  5, (Oid[]) {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID, INT4OID},
			  (Datum[]) {Int64GetDatum(run_id), CStringGetTextDatum(task_id),
				  TimestampTzGetDatum(now),
				  CStringGetTextDatum(psprintf("the task could not be claimed: %s", error)),
			  Int32GetDatum(map_index)},
			  NULL, SPI_OK_UPDATE);
}

void
state_fail_run(int64 run_id, const char *error, TimestampTz now, bool callback)
{
	Oid			types[3] = {INT8OID, TEXTOID, TIMESTAMPTZOID};
	Datum		values[3] = {Int64GetDatum(run_id), CStringGetTextDatum(error),
	TimestampTzGetDatum(now)};

	/* a sensor between pokes is in the middle of its try too */
	run_query("UPDATE orchestrator.task_instance SET "
			  " state = CASE WHEN state IN ('running', 'up_for_reschedule') THEN 'failed' ELSE 'skipped' END, "
			  " error = CASE WHEN state IN ('running', 'up_for_reschedule') THEN $2 ELSE error END, "
			  " finished_at = $3, next_try_at = NULL, ready_at = NULL, first_poke_at = NULL "
			  "WHERE run_id = $1 "
			  "  AND state IN ('scheduled', 'queued', 'running', 'up_for_retry', 'up_for_reschedule')",
			  3, types, values, NULL, SPI_OK_UPDATE);
	run_query("UPDATE orchestrator.dag_run SET state = 'failed', finished_at = $3 WHERE run_id = $1",
			  3, types, values, NULL, SPI_OK_UPDATE);
	if (callback)
		enqueue_run_callback(run_id, "failed", error);
}

int
state_clear_tasks(int64 run_id, const char *dag_id, const char *task_id,
				  bool downstream, int map_index)
{
	Oid			types[5] = {INT8OID, TEXTOID, TEXTOID, BOOLOID, INT4OID};
	Datum		values[5];
	int			cleared;

	values[0] = Int64GetDatum(run_id);
	values[1] = CStringGetTextDatum(task_id);
	values[2] = CStringGetTextDatum(dag_id);
	values[3] = BoolGetDatum(downstream);
	values[4] = Int32GetDatum(map_index);

	/*
	 * One mapped instance ($5 >= 0): that instance of each cleared task,
	 * the same one of the downstream tasks mapped alike, and the unmapped
	 * ones.  A mapped task cleared whole keeps its instances and their
	 * elements; the unmapped instance of one whose expansion skipped or
	 * failed it expands again.
	 */
#define CLEAR_INSTANCE "($5 < 0 OR ti.map_index IN ($5, -1))"

#define CLEAR_SET \
	"WITH RECURSIVE cleared(task_id) AS ( " \
	"  SELECT $2::text " \
	"  UNION " \
	"  SELECT t.task_id FROM orchestrator.task t JOIN cleared c ON c.task_id = ANY (t.upstream) " \
	"  WHERE $4 AND t.dag_id = $3) "

	run_query(CLEAR_SET
			  "SELECT ti.task_id FROM orchestrator.task_instance ti JOIN cleared USING (task_id) "
			  "WHERE ti.run_id = $1 AND ti.state IN ('queued', 'running') "
			  "  AND " CLEAR_INSTANCE " "
			  "FOR NO KEY UPDATE OF ti",
			  5, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("task \"%s\" of run " INT64_FORMAT " is queued or running",
						col_text(0, 1), run_id),
				 errhint("Wait for it to finish, or cancel the run with cancel_run() first.")));

	run_query(CLEAR_SET
			  "UPDATE orchestrator.task_instance ti SET state = 'scheduled', "
			  " max_tries = ti.try_number + coalesce(t.retries, 0) + 1, "
			  " queued_at = NULL, started_at = NULL, finished_at = NULL, "
			  " next_try_at = NULL, error = NULL, worker_pid = NULL, ready_at = NULL, "
			  " first_poke_at = NULL "
			  "FROM cleared LEFT JOIN orchestrator.task t ON t.dag_id = $3 AND t.task_id = cleared.task_id "
			  "WHERE ti.run_id = $1 AND ti.task_id = cleared.task_id AND " CLEAR_INSTANCE,
			  5, types, values, NULL, SPI_OK_UPDATE);
	cleared = (int) SPI_processed;

	/* a finished run opens again, and starts as max_active_runs allows */
	run_query("UPDATE orchestrator.dag_run SET state = 'queued', finished_at = NULL "
			  "WHERE run_id = $1 AND state IN ('success', 'failed')",
			  1, types, values, NULL, SPI_OK_UPDATE);
	return cleared;
}
