/*-------------------------------------------------------------------------
 *
 * dag.c
 *	  The definition API: create_dag, add_task, drop_dag, pause and unpause.
 *
 * Every argument is checked before anything is written, so a bad
 * definition raises an ERROR and leaves nothing behind.
 *
 * The catalog tables are readable by DAG authors (row-level security shows
 * each role its own DAGs) but not writable: these functions write them as
 * the tables' owner, after checking themselves that the calling role owns
 * the DAG it changes.  The calling role is current_user when the function
 * is called; it becomes the owner of the DAGs it creates.  The SQL
 * declarations pin search_path, so that the queries below, run with the
 * owner's rights, cannot be redirected to a caller's objects.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/relation.h"
#include "access/xlog.h"
#include "catalog/namespace.h"
#include "catalog/pg_class.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgtime.h"
#include "port/pg_bitutils.h"
#include "storage/bufmgr.h"
#include "storage/proc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/jsonb.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "cron.h"
#include "mapping.h"
#include "orchestrator.h"
#include "pool.h"
#include "rules.h"

static const char *const trigger_rules[] = {
	"all_success", "all_failed", "all_done", "one_success", "one_failed",
	"none_failed", "none_skipped", "none_failed_min_one_success", "always",
	NULL
};

/*
 * A list of names (String nodes) as a text[]; an empty one for NIL.
 */
static Datum
names_array(List *names)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(names), 1));
	int			n = 0;
	ListCell   *lc;

	foreach(lc, names)
		elems[n++] = CStringGetTextDatum(strVal(lfirst(lc)));
	return PointerGetDatum(construct_array(elems, n, TEXTOID, -1, false, TYPALIGN_INT));
}

/*
 * create_dag's on_assets: asset names, no nulls, no duplicates, no
 * templates (an asset-triggered DAG waits for fixed names).
 */
static Datum
on_assets_array(FunctionCallInfo fcinfo, int argno)
{
	ArrayType  *arr;
	Datum	   *elems;
	bool	   *nulls;
	int			n;
	List	   *names = NIL;

	if (PG_ARGISNULL(argno))
		return names_array(NIL);
	arr = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("on_assets must be a one-dimensional array of asset names")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &nulls, &n);
	for (int i = 0; i < n; i++)
	{
		char	   *name;

		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("on_assets must not contain nulls")));
		name = TextDatumGetCString(elems[i]);
		asset_check_name(name);
		if (!list_member(names, makeString(name)))
			names = lappend(names, makeString(name));
	}
	return names_array(names);
}

static Oid
catalog_owner(void)
{
	Oid			nsp = get_namespace_oid("orchestrator", false);
	Oid			relid = get_relname_relid("dag", nsp);
	HeapTuple	tuple;
	Oid			owner;

	if (!OidIsValid(relid))
		elog(ERROR, "table orchestrator.dag is missing");
	tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
	if (!HeapTupleIsValid(tuple))
		elog(ERROR, "cache lookup failed for relation %u", relid);
	owner = ((Form_pg_class) GETSTRUCT(tuple))->relowner;
	ReleaseSysCache(tuple);
	return owner;
}

void
catalog_write_begin(CatalogWrite *cw)
{
	cw->caller = GetUserId();
	orch_require_catalog();
	SPI_connect();
	GetUserIdAndSecContext(&cw->save_userid, &cw->save_sec_context);
	SetUserIdAndSecContext(catalog_owner(),
						   cw->save_sec_context | SECURITY_LOCAL_USERID_CHANGE);
}

void
catalog_write_end(CatalogWrite *cw)
{
	SetUserIdAndSecContext(cw->save_userid, cw->save_sec_context);
	SPI_finish();
}

/*
 * The background workers' plans, by query text: the scheduler and the task
 * workers run the same few statements over and over, and planning them
 * each time would cost more than running them.  (Their search_path is
 * pinned, and the plan cache replans after any change to what a plan
 * depends on.)  Generic plans: planned once, not at each run with its
 * values (our statements' plans do not depend on them: the conditions
 * that pick partial indexes are constants).  Bounded, for statements
 * built at run time.
 *
 * A plan made when the tables were small can be ruinous once they are
 * not (a nested loop that rescans a table for each row of another: a
 * scheduler pass of minutes, once 10,000 DAGs were created in one
 * transaction), and PostgreSQL plans again only when ANALYZE or DDL
 * invalidates the tables, which may be a minute or more away.  So the
 * plans are also dropped, once per transaction at most, when the size of
 * one of the busy tables has crossed a power of two since they were made.
 */
typedef struct KeptPlan
{
	const char *query;			/* the key (a copy, in the hash's context) */
	int			nargs;
	Oid			types[FUNC_MAX_ARGS];
	SPIPlanPtr	plan;
} KeptPlan;

#define MAX_KEPT_PLANS	256

static HTAB *kept_plans = NULL;
static MemoryContext kept_cxt = NULL;	/* the hash and its keys */

/* the busy tables, and the log2 of their sizes in blocks when planned */
static const char *const sized_tables[] = {"dag", "task", "dag_run", "task_instance"};
static int	planned_sizes[lengthof(sized_tables)];
static LocalTransactionId sizes_checked = InvalidLocalTransactionId;

static void
forget_kept_plans(void)
{
	HASH_SEQ_STATUS seq;
	KeptPlan   *entry;

	if (kept_plans == NULL)
		return;
	hash_seq_init(&seq, kept_plans);
	while ((entry = hash_seq_search(&seq)) != NULL)
		SPI_freeplan(entry->plan);
	MemoryContextDelete(kept_cxt);
	kept_plans = NULL;
	kept_cxt = NULL;
}

/*
 * The size in blocks of busy table i (sized_tables), and its OID; false if
 * it is not there (the extension is being created or dropped).
 */
static bool
sized_table_blocks(int i, BlockNumber *blocks, Oid *relid)
{
	Oid			nsp = get_namespace_oid("orchestrator", true);
	Relation	rel;

	if (!OidIsValid(nsp))
		return false;
	*relid = get_relname_relid(sized_tables[i], nsp);
	if (!OidIsValid(*relid) || (rel = try_relation_open(*relid, AccessShareLock)) == NULL)
		return false;
	*blocks = RelationGetNumberOfBlocks(rel);
	relation_close(rel, NoLock);
	return true;
}

static void
check_table_sizes(void)
{
	bool		changed = false;

	if (MyProc->lxid == sizes_checked)
		return;
	sizes_checked = MyProc->lxid;
	for (int i = 0; i < lengthof(sized_tables); i++)
	{
		Oid			relid;
		BlockNumber blocks;
		int			size;

		if (!sized_table_blocks(i, &blocks, &relid))
			continue;
		size = pg_leftmost_one_pos32(blocks + 1);
		if (size != planned_sizes[i])
			changed = true;
		planned_sizes[i] = size;
	}
	if (changed)
		forget_kept_plans();
}

/*
 * Fresh plans are no better than the statistics they are made from, and a
 * table that grew from nothing in a minute has none, or those of when it
 * was small (the default estimate of an equality, 0.5% of the rows: a
 * nested loop over 1,000 running runs and 1,000 queued instances made
 * each claim read a million pairs, before autovacuum came by).  So the
 * scheduler, at the start of a pass and again once it has created the
 * pass's runs, ANALYZEs each busy table that grew across a power of two
 * in blocks since it last looked (the ANALYZE
 * invalidates every backend's plans on it).  Up to 32 MB: past that, a
 * table takes longer to double than autovacuum to analyze it, and a
 * sample of it costs more.  SKIP_LOCKED: never waits for a VACUUM.
 *
 * A sample of 3,000 rows (statistics target 10), not 30,000: what the
 * plans need of a table that doubled is the share of each state and how
 * many runs there are, and autovacuum's ANALYZE, with the full sample,
 * follows.  The full one took 20-50 ms of a due pass at 11,000 instances.
 */
#define ANALYZE_UP_TO_BLOCKS	4096
#define ANALYZE_RETRIES			10
#define ANALYZE_TARGET			"10"

void
orch_analyze_grown_tables(void)
{
	static int	analyzed_sizes[lengthof(sized_tables)];
	static int	analyze_retries[lengthof(sized_tables)];
	static BlockNumber tried_blocks[lengthof(sized_tables)];
	static bool initialized = false;

	for (int i = 0; i < lengthof(sized_tables); i++)
	{
		Oid			relid;
		BlockNumber blocks;
		int			size;

		if (!sized_table_blocks(i, &blocks, &relid))
			continue;
		size = pg_leftmost_one_pos32(blocks + 1);
		/* (what was there when the scheduler started: autovacuum's) */
		if (initialized && size > analyzed_sizes[i] && blocks <= ANALYZE_UP_TO_BLOCKS)
		{
			char	   *sql = psprintf("ANALYZE (SKIP_LOCKED) orchestrator.%s",
									   quote_identifier(sized_tables[i]));
			HeapTuple	tuple;
			float4		reltuples = -1;
			int			nestlevel = NewGUCNestLevel();

			(void) set_config_option("default_statistics_target", ANALYZE_TARGET,
									 PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
									 true, 0, false);
			if (SPI_execute(sql, false, 0) != SPI_OK_UTILITY)
				elog(ERROR, "orchestrator could not analyze %s", sized_tables[i]);
			AtEOXact_GUC(true, nestlevel);
			tuple = SearchSysCache1(RELOID, ObjectIdGetDatum(relid));
			if (HeapTupleIsValid(tuple))
			{
				reltuples = ((Form_pg_class) GETSTRUCT(tuple))->reltuples;
				ReleaseSysCache(tuple);
			}
			elog(DEBUG1, "orchestrator: analyzed %s, grown to %u blocks, %.0f rows",
				 sized_tables[i], blocks, reltuples);

			/*
			 * Fewer rows than blocks: what grew it is still being written
			 * (10,000 DAGs created in one transaction, uncommitted, count
			 * for nothing), and statistics of an empty table would outlive
			 * its commit.  Again at the next passes: as long as it grows,
			 * and a few times once it stops (a table of dead rows looks
			 * the same, and does not grow).
			 */
			if (blocks != tried_blocks[i])
				analyze_retries[i] = 0;
			tried_blocks[i] = blocks;
			if (reltuples < (float4) blocks && ++analyze_retries[i] <= ANALYZE_RETRIES)
				continue;
		}
		analyze_retries[i] = 0;
		analyzed_sizes[i] = size;
	}
	initialized = true;
}

/* the key is a pointer to the query text: hashed and compared as text */
static uint32
kept_plan_hash(const void *key, Size keysize)
{
	const char *query = *(const char *const *) key;

	return hash_bytes((const unsigned char *) query, (int) strlen(query));
}

static int
kept_plan_match(const void *key1, const void *key2, Size keysize)
{
	return strcmp(*(const char *const *) key1, *(const char *const *) key2);
}

static SPIPlanPtr
kept_plan(const char *query, int nargs, Oid *types)
{
	KeptPlan   *entry;
	bool		found;

	if (!IsBackgroundWorker || nargs > FUNC_MAX_ARGS)
		return NULL;
	check_table_sizes();
	if (kept_plans == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(char *);
		ctl.entrysize = sizeof(KeptPlan);
		ctl.hash = kept_plan_hash;
		ctl.match = kept_plan_match;
		kept_cxt = AllocSetContextCreate(TopMemoryContext, "orchestrator kept plans",
										 ALLOCSET_SMALL_SIZES);
		ctl.hcxt = kept_cxt;
		kept_plans = hash_create("orchestrator kept plans", 64, &ctl,
								 HASH_ELEM | HASH_FUNCTION | HASH_COMPARE | HASH_CONTEXT);
	}
	entry = hash_search(kept_plans, &query, HASH_FIND, &found);
	if (entry != NULL)
	{
		if (entry->nargs == nargs &&
			(nargs == 0 || memcmp(entry->types, types, sizeof(Oid) * nargs) == 0))
			return entry->plan;
		return NULL;
	}
	if (hash_get_num_entries(kept_plans) >= MAX_KEPT_PLANS)
		return NULL;
	{
		SPIPlanPtr	plan = SPI_prepare_cursor(query, nargs, types,
												   CURSOR_OPT_GENERIC_PLAN);
		char	   *key;

		if (plan == NULL)
			elog(ERROR, "orchestrator catalog query failed to prepare (%s): %s",
				 SPI_result_code_string(SPI_result), query);
		if (SPI_keepplan(plan) != 0)
			elog(ERROR, "could not keep the plan of: %s", query);
		key = MemoryContextStrdup(kept_cxt, query);
		entry = hash_search(kept_plans, &key, HASH_ENTER, &found);
		entry->query = key;
		entry->nargs = nargs;
		if (nargs > 0)
			memcpy(entry->types, types, sizeof(Oid) * nargs);
		entry->plan = plan;
		return plan;
	}
}

void
run_query(const char *query, int nargs, Oid *types, Datum *values,
		  const char *nulls, int expected)
{
	SPIPlanPtr	plan = kept_plan(query, nargs, types);
	int			rc;

	if (plan != NULL)
		rc = SPI_execute_plan(plan, values, nulls, false, 0);
	else
		rc = SPI_execute_with_args(query, nargs, types, values, nulls, false, 0);

	if (rc != expected)
		elog(ERROR, "orchestrator catalog query failed (%s): %s",
			 SPI_result_code_string(rc), query);
}

/*
 * Locks a DAG's row if the caller may change it: the caller owns it, or is a
 * superuser.  Another role's DAG reads exactly like one that does not exist
 * (same SQLSTATE, same message), and is neither locked nor waited for, so
 * that no API call tells a role anything about another role's DAGs.
 * Returns false if there is no such DAG (of the caller's) and missing_ok.
 *
 * "creating" is create_dag's case, where the INSERT found the dag_id taken:
 * DAG ids are shared by all roles, so the clash itself cannot be hidden, but
 * the error names no owner.
 */
bool
lock_owned_dag(CatalogWrite *cw, const char *dag_id, bool missing_ok,
			   bool creating)
{
	Oid			types[4] = {TEXTOID, OIDOID, BOOLOID, INT8OID};
	Datum		values[4];

	/* an owner's OID counts in the cluster it came from only */
	values[0] = CStringGetTextDatum(dag_id);
	values[1] = ObjectIdGetDatum(cw->caller);
	values[2] = BoolGetDatum(superuser_arg(cw->caller));
	values[3] = Int64GetDatum((int64) GetSystemIdentifier());
	run_query("SELECT 1 FROM orchestrator.dag "
			  "WHERE dag_id = $1 AND ((owner = $2 AND owner_sysid = $4) OR $3) "
			  "FOR UPDATE",
			  4, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		return true;
	if (creating)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("DAG \"%s\" already exists", dag_id),
				 errdetail("DAG ids are shared by all roles, and this one is not yours."),
				 errhint("Choose another dag_id.")));
	if (missing_ok)
		return false;
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("DAG \"%s\" does not exist", dag_id)));
	return false;				/* keep the compiler quiet */
}

void
orch_check_id(const char *id, const char *kind)
{
	size_t		len = strlen(id);

	if (len == 0 || len > ORCH_MAX_ID_LEN ||
		strspn(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") != len)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_NAME),
				 errmsg("invalid %s \"%s\"", kind, id),
				 errdetail("A %s is 1 to %d letters, digits, underscores, dashes and dots.",
						   kind, ORCH_MAX_ID_LEN)));
}

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be null", name)));
}

/* Raises ERROR unless the (non-null) interval argument is positive. */
static void
check_interval(FunctionCallInfo fcinfo, int argno, const char *name,
			   bool zero_ok)
{
	Interval	zero = {0};
	int			cmp;

	if (PG_ARGISNULL(argno))
		return;
	cmp = DatumGetInt32(DirectFunctionCall2(interval_cmp,
											PG_GETARG_DATUM(argno),
											IntervalPGetDatum(&zero)));
	if (cmp < 0 || (cmp == 0 && !zero_ok))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be %s", name, zero_ok ? "zero or more" : "positive")));
}

static void
check_finite(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (!PG_ARGISNULL(argno) && TIMESTAMP_NOT_FINITE(PG_GETARG_TIMESTAMPTZ(argno)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be finite", name),
				 errhint("Use NULL for no %s.", name)));
}

PG_FUNCTION_INFO_V1(orch_create_dag);

/*
 * create_dag(dag_id, schedule, start_date, end_date, catchup,
 *			  max_active_runs, max_active_tasks, timezone, params,
 *			  dagrun_timeout, paused, description, on_failure_callback,
 *			  on_success_callback, on_assets)
 */
Datum
orch_create_dag(PG_FUNCTION_ARGS)
{
	char	   *dag_id;
	const char *timezone;
	CatalogWrite cw;
	Oid			types[16] = {TEXTOID, OIDOID, TEXTOID, TIMESTAMPTZOID,
		TIMESTAMPTZOID, BOOLOID, INT4OID, INT4OID, TEXTOID, JSONBOID,
	INTERVALOID, BOOLOID, TEXTOID, JSONBOID, JSONBOID, TEXTARRAYOID};
	Datum		values[16];
	char		nulls[16];
	Datum		on_assets;

	/*
	 * before reading any argument: under a 0.1 catalog this function is
	 * called with the old, shorter argument list
	 */
	orch_require_catalog();
	require_arg(fcinfo, 0, "dag_id");
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	orch_check_id(dag_id, "dag_id");

	if (!PG_ARGISNULL(1))
	{
		CronSchedule sched;

		cron_parse(text_to_cstring(PG_GETARG_TEXT_PP(1)), &sched);
	}
	check_finite(fcinfo, 2, "start_date");
	check_finite(fcinfo, 3, "end_date");
	if (!PG_ARGISNULL(2) && !PG_ARGISNULL(3) &&
		PG_GETARG_TIMESTAMPTZ(3) < PG_GETARG_TIMESTAMPTZ(2))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("end_date %s is before start_date %s",
						pstrdup(timestamptz_to_str(PG_GETARG_TIMESTAMPTZ(3))),
						pstrdup(timestamptz_to_str(PG_GETARG_TIMESTAMPTZ(2))))));
	require_arg(fcinfo, 4, "catchup");
	require_arg(fcinfo, 5, "max_active_runs");
	require_arg(fcinfo, 6, "max_active_tasks");
	if (PG_GETARG_INT32(5) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_active_runs must be at least 1")));
	if (PG_GETARG_INT32(6) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_active_tasks must be at least 1")));

	/* the session's time zone when the DAG is defined, by default */
	if (PG_ARGISNULL(7))
		timezone = pg_get_timezone_name(session_timezone);
	else
		timezone = text_to_cstring(PG_GETARG_TEXT_PP(7));
	orch_lookup_timezone(timezone);

	require_arg(fcinfo, 8, "params");
	if (!JB_ROOT_IS_OBJECT(PG_GETARG_JSONB_P(8)) || JB_ROOT_IS_SCALAR(PG_GETARG_JSONB_P(8)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("params must be a jsonb object")));
	check_interval(fcinfo, 9, "dagrun_timeout", false);
	require_arg(fcinfo, 10, "paused");
	if (!PG_ARGISNULL(12))
		callback_validate(PG_GETARG_JSONB_P(12), "on_failure_callback");
	if (!PG_ARGISNULL(13))
		callback_validate(PG_GETARG_JSONB_P(13), "on_success_callback");
	on_assets = on_assets_array(fcinfo, 14);

	catalog_write_begin(&cw);

	values[0] = CStringGetTextDatum(dag_id);
	values[1] = ObjectIdGetDatum(cw.caller);
	values[8] = CStringGetTextDatum(timezone);
	memset(nulls, ' ', sizeof(nulls));
	/* the other parameters $3..$15 are arguments 1..13 */
	for (int i = 2; i <= 14; i++)
	{
		if (i == 8)
			continue;
		if (PG_ARGISNULL(i - 1))
			nulls[i] = 'n';
		else
			values[i] = PG_GETARG_DATUM(i - 1);
	}
	values[15] = on_assets;

	/* a new DAG, or the definition of one the caller owns */
	run_query("INSERT INTO orchestrator.dag (dag_id, owner, schedule, start_date, end_date, "
			  "catchup, max_active_runs, max_active_tasks, timezone, params, "
			  "dagrun_timeout, paused, description, on_failure_callback, on_success_callback, "
			  "on_assets, owner_name) "
			  "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, "
			  " (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = $2)) "
			  "ON CONFLICT (dag_id) DO NOTHING",
			  16, types, values, nulls, SPI_OK_INSERT);
	if (SPI_processed == 0)
	{
		lock_owned_dag(&cw, dag_id, false, true);
		run_query("UPDATE orchestrator.dag SET schedule = $3, start_date = $4, "
				  "end_date = $5, catchup = $6, max_active_runs = $7, "
				  "max_active_tasks = $8, timezone = $9, params = $10, "
				  "dagrun_timeout = $11, paused = $12, description = $13, "
				  "on_failure_callback = $14, on_success_callback = $15, "
				  "on_assets = $16, updated_at = now() "
				  "WHERE dag_id = $1",
				  16, types, values, nulls, SPI_OK_UPDATE);
		run_query("DELETE FROM orchestrator.task WHERE dag_id = $1",
				  1, types, values, nulls, SPI_OK_DELETE);
		/* events queued for assets it no longer waits for are dropped */
		run_query("DELETE FROM orchestrator.asset_queue "
				  "WHERE dag_id = $1 AND run_id IS NULL AND NOT (asset = ANY ($2))",
				  2, (Oid[]) {TEXTOID, TEXTARRAYOID}, (Datum[]) {values[0], on_assets},
				  NULL, SPI_OK_DELETE);
	}

	catalog_write_end(&cw);
	orch_wake_scheduler_at_commit();
	PG_RETURN_VOID();
}

/*
 * Effective weights (task.priority_weight_total) belong to the DAG as a
 * whole: a task's counts every task below (or above) it.  Kept up to date
 * task by task, each add_task rewrote the rows of all its ancestors: a DAG
 * of n tasks defined in one transaction left about n^2/2 dead rows there
 * (none prunable before the commit), which every later lookup by key read
 * through: 10 stages of 100 tasks took 11 minutes to define.  So add_task
 * only marks its DAG, and the deferred trigger task_weights computes each
 * marked DAG's weights once, at the commit (rules_weight_totals), with one
 * read and one UPDATE of the rows whose weight changed.
 */
static List *weights_pending = NIL;	/* DAG ids, in TopTransactionContext */
static LocalTransactionId weights_lxid = InvalidLocalTransactionId;

static void
weights_mark(const char *dag_id)
{
	MemoryContext old;

	if (weights_lxid != MyProc->lxid)
	{
		weights_pending = NIL;	/* (a past transaction's, freed with it) */
		weights_lxid = MyProc->lxid;
	}
	if (list_member(weights_pending, makeString((char *) dag_id)))
		return;
	old = MemoryContextSwitchTo(TopTransactionContext);
	weights_pending = lappend(weights_pending, makeString(pstrdup(dag_id)));
	MemoryContextSwitchTo(old);
}

/* whether dag_id was marked (and is no longer) */
static bool
weights_take(const char *dag_id)
{
	ListCell   *lc;

	if (weights_lxid != MyProc->lxid)
		return false;
	foreach(lc, weights_pending)
	{
		if (strcmp(strVal(lfirst(lc)), dag_id) == 0)
		{
			weights_pending = foreach_delete_current(weights_pending, lc);
			return true;
		}
	}
	return false;
}

/* A DAG's weights, all at once; in the caller's SPI connection. */
static void
compute_weights(const char *dag_id)
{
	Datum		dag = CStringGetTextDatum(dag_id);
	int			n;
	SPITupleTable *rows;
	RuleWeightTask *tasks;
	int		   *nchildren;
	int		   *child_start;
	int		   *children;
	int64	   *totals;
	int64	   *stored;
	Datum	   *names;
	Datum	   *changed_names;
	Datum	   *changed_totals;
	int			nchanged = 0;
	int			nedges = 0;
	HASHCTL		ctl;
	HTAB	   *byname;
	bool		isnull;
	typedef struct
	{
		char		task_id[ORCH_MAX_ID_LEN + 1];	/* the key */
		int			index;
	}			NameIndex;

	/* (in the order they were added: a task's upstream tasks come first) */
	run_query("SELECT task_id, upstream, priority_weight, weight_rule, priority_weight_total "
			  "FROM orchestrator.task WHERE dag_id = $1 ORDER BY position",
			  1, (Oid[]) {TEXTOID}, &dag, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	if (n == 0)
		return;
	rows = SPI_tuptable;
	tasks = palloc0(sizeof(RuleWeightTask) * n);
	nchildren = palloc0(sizeof(int) * n);
	child_start = palloc0(sizeof(int) * (n + 1));
	totals = palloc(sizeof(int64) * n);
	stored = palloc(sizeof(int64) * n);
	names = palloc(sizeof(Datum) * n);
	ctl.keysize = ORCH_MAX_ID_LEN + 1;
	ctl.entrysize = sizeof(NameIndex);
	ctl.hcxt = CurrentMemoryContext;
	byname = hash_create("orchestrator DAG weights", n, &ctl,
						 HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < n; i++)
	{
		HeapTuple	row = rows->vals[i];
		char	   *name = SPI_getvalue(row, rows->tupdesc, 1);

		names[i] = CStringGetTextDatum(name);
		if (strlen(name) <= ORCH_MAX_ID_LEN)
			((NameIndex *) hash_search(byname, name, HASH_ENTER, NULL))->index = i;
		tasks[i].weight = DatumGetInt32(SPI_getbinval(row, rows->tupdesc, 3, &isnull));
		if (!rules_parse_weight_rule(SPI_getvalue(row, rows->tupdesc, 4), &tasks[i].rule))
			tasks[i].rule = WR_ABSOLUTE;
		stored[i] = DatumGetInt64(SPI_getbinval(row, rows->tupdesc, 5, &isnull));
	}
	for (int i = 0; i < n; i++)
	{
		Datum		d = SPI_getbinval(rows->vals[i], rows->tupdesc, 2, &isnull);
		Datum	   *elems;
		int			nelems;
		int		   *up;

		if (isnull)
			continue;
		deconstruct_array(DatumGetArrayTypeP(d), TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, NULL, &nelems);
		up = palloc(sizeof(int) * Max(nelems, 1));
		for (int e = 0; e < nelems; e++)
		{
			char	   *name = TextDatumGetCString(elems[e]);
			NameIndex  *found = strlen(name) > ORCH_MAX_ID_LEN ? NULL :
				hash_search(byname, name, HASH_FIND, NULL);

			if (found == NULL)
				continue;
			up[tasks[i].nupstream++] = found->index;
			nchildren[found->index]++;
			nedges++;
		}
		tasks[i].upstream = up;
	}
	/* each task's children, from its upstream lists */
	children = palloc(sizeof(int) * Max(nedges, 1));
	for (int i = 0; i < n; i++)
		child_start[i + 1] = child_start[i] + nchildren[i];
	memset(nchildren, 0, sizeof(int) * n);
	for (int i = 0; i < n; i++)
		for (int k = 0; k < tasks[i].nupstream; k++)
		{
			int			u = tasks[i].upstream[k];

			children[child_start[u] + nchildren[u]++] = i;
		}
	rules_weight_totals(tasks, n, child_start, children, totals,
						palloc0(sizeof(int) * n), palloc(sizeof(int) * n));

	changed_names = palloc(sizeof(Datum) * n);
	changed_totals = palloc(sizeof(Datum) * n);
	for (int i = 0; i < n; i++)
		if (totals[i] != stored[i])
		{
			changed_names[nchanged] = names[i];
			changed_totals[nchanged++] = Int64GetDatum(totals[i]);
		}
	if (nchanged > 0)
		run_query("UPDATE orchestrator.task t SET priority_weight_total = u.total "
				  "FROM unnest($2::text[], $3::int8[]) AS u(task_id, total) "
				  "WHERE t.dag_id = $1 AND t.task_id = u.task_id",
				  3, (Oid[]) {TEXTOID, TEXTARRAYOID, INT8ARRAYOID},
				  (Datum[]) {dag,
					  PointerGetDatum(construct_array(changed_names, nchanged, TEXTOID, -1,
													  false, TYPALIGN_INT)),
					  PointerGetDatum(construct_array(changed_totals, nchanged, INT8OID, 8,
													  FLOAT8PASSBYVAL, TYPALIGN_DOUBLE))},
				  NULL, SPI_OK_UPDATE);
}

PG_FUNCTION_INFO_V1(orch_task_weights);

/*
 * task_weights: a deferred trigger on task (AFTER INSERT), so at the
 * commit: the first event of a DAG that add_task marked computes its
 * weights; the others find nothing to do.
 */
Datum
orch_task_weights(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	TupleDesc	desc;
	int			attnum;
	bool		isnull;
	Datum		d;
	char	   *dag_id;
	CatalogWrite cw;

	if (!CALLED_AS_TRIGGER(fcinfo))
		elog(ERROR, "orch_task_weights: not called as a trigger");
	desc = RelationGetDescr(td->tg_relation);
	attnum = SPI_fnumber(desc, "dag_id");
	if (attnum <= 0)
		elog(ERROR, "orchestrator.task has no dag_id");
	d = heap_getattr(td->tg_trigtuple, attnum, desc, &isnull);
	if (isnull)
		return PointerGetDatum(NULL);
	dag_id = TextDatumGetCString(d);
	if (!weights_take(dag_id))
		return PointerGetDatum(NULL);
	/* as the catalog's owner, as add_task wrote them */
	catalog_write_begin(&cw);
	compute_weights(dag_id);
	catalog_write_end(&cw);
	return PointerGetDatum(NULL);
}

/*
 * A new task's pool and own weight; its effective weight and those of
 * the rest of its DAG are computed at the commit (compute_weights).
 */
static void
set_priority(const char *dag_id, const char *task_id, const char *pool,
			 int pool_slots, int weight, WeightRule rule)
{
	run_query("UPDATE orchestrator.task SET pool = $3, pool_slots = $4, priority_weight = $5, "
			  " weight_rule = $6, priority_weight_total = $7 "
			  "WHERE dag_id = $1 AND task_id = $2",
			  7, (Oid[]) {TEXTOID, TEXTOID, TEXTOID, INT4OID, INT4OID, TEXTOID, INT8OID},
			  (Datum[]) {CStringGetTextDatum(dag_id), CStringGetTextDatum(task_id),
				  pool ? CStringGetTextDatum(pool) : (Datum) 0, Int32GetDatum(pool_slots),
				  Int32GetDatum(weight),
				  CStringGetTextDatum(rule == WR_UPSTREAM ? "upstream" :
									  rule == WR_ABSOLUTE ? "absolute" : "downstream"),
			  Int64GetDatum(rules_effective_weight(rule, weight, 0, 0))},
			  pool ? "       " : "  n    ", SPI_OK_UPDATE);
	weights_mark(dag_id);
}

PG_FUNCTION_INFO_V1(orch_add_task);

/*
 * add_task(dag_id, task_id, operator, upstream, retries, retry_delay,
 *			retry_exponential_backoff, max_retry_delay, execution_timeout,
 *			trigger_rule, on_failure_callback, on_success_callback,
 *			on_retry_callback, cache_expiration, outlets, expand, expand_query,
 *			pool, pool_slots, priority_weight, weight_rule)
 */
Datum
orch_add_task(PG_FUNCTION_ARGS)
{
	char	   *dag_id;
	char	   *task_id;
	Jsonb	   *spec;
	char	   *input;
	char	   *rule;
	bool		rule_ok = false;
	List	   *upstream = NIL;
	ArrayBuildState *astate = NULL;
	CatalogWrite cw;
	Oid			types[17] = {TEXTOID, TEXTOID, JSONBOID, TEXTARRAYOID, INT4OID,
		INTERVALOID, BOOLOID, INTERVALOID, INTERVALOID, TEXTOID, JSONBOID, JSONBOID, JSONBOID,
	INTERVALOID, TEXTARRAYOID, JSONBOID, TEXTOID};
	Datum		values[17];
	char		nulls[17];
	ListCell   *lc;
	int			pool_arg;
	char	   *pool;
	int			pool_slots;
	int			priority_weight;
	char	   *weight_rule_name;
	WeightRule	weight_rule;
	List	   *outlets = NIL;

	/* (as in create_dag: the 0.1 catalog calls it with fewer arguments) */
	orch_require_catalog();
	require_arg(fcinfo, 0, "dag_id");
	require_arg(fcinfo, 1, "task_id");
	require_arg(fcinfo, 2, "operator");
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));
	task_id = text_to_cstring(PG_GETARG_TEXT_PP(1));
	orch_check_id(dag_id, "dag_id");
	orch_check_id(task_id, "task_id");
	spec = PG_GETARG_JSONB_P(2);
	operator_validate(spec, task_id);

	/* upstream: no nulls, no duplicates, not the task itself */
	if (!PG_ARGISNULL(3))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(3);
		Datum	   *elems;
		bool	   *elem_nulls;
		int			nelems;

		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("upstream must be a one-dimensional array of task ids")));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT,
						  &elems, &elem_nulls, &nelems);
		for (int i = 0; i < nelems; i++)
		{
			char	   *up;

			if (elem_nulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("upstream must not contain nulls")));
			up = TextDatumGetCString(elems[i]);
			if (strcmp(up, task_id) == 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
						 errmsg("task \"%s\" cannot depend on itself", task_id)));
			if (!list_member(upstream, makeString(up)))
				upstream = lappend(upstream, makeString(up));
		}
	}

	/* the task whose artifact this one reads is an upstream task */
	input = operator_input_task(spec);
	if (input != NULL)
	{
		if (strcmp(input, task_id) == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("task \"%s\" cannot read its own output", task_id)));
		if (!list_member(upstream, makeString(input)))
			upstream = lappend(upstream, makeString(input));
	}

	require_arg(fcinfo, 4, "retries");
	if (PG_GETARG_INT32(4) < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("retries must be zero or more, not %d", PG_GETARG_INT32(4))));
	require_arg(fcinfo, 5, "retry_delay");
	check_interval(fcinfo, 5, "retry_delay", true);
	require_arg(fcinfo, 6, "retry_exponential_backoff");
	check_interval(fcinfo, 7, "max_retry_delay", false);
	check_interval(fcinfo, 8, "execution_timeout", false);
	require_arg(fcinfo, 9, "trigger_rule");
	rule = text_to_cstring(PG_GETARG_TEXT_PP(9));
	for (int i = 0; trigger_rules[i] != NULL; i++)
		rule_ok |= (strcmp(rule, trigger_rules[i]) == 0);
	if (!rule_ok)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown trigger rule \"%s\"", rule),
				 errhint("Trigger rules are all_success, all_failed, all_done, one_success, one_failed, none_failed, none_skipped, none_failed_min_one_success and always.")));

	if (!PG_ARGISNULL(10))
		callback_validate(PG_GETARG_JSONB_P(10), "on_failure_callback");
	if (!PG_ARGISNULL(11))
		callback_validate(PG_GETARG_JSONB_P(11), "on_success_callback");
	if (!PG_ARGISNULL(12))
		callback_validate(PG_GETARG_JSONB_P(12), "on_retry_callback");
	check_interval(fcinfo, 13, "cache_expiration", false);
	if (!PG_ARGISNULL(13) && !operator_produces_artifact(operator_name(spec)))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cache_expiration applies only to tasks that produce an artifact"),
				 errhint("http_fetch and gunzip tasks can be cached.")));
	if (!PG_ARGISNULL(14))
		outlets = outlets_validate(PG_GETARG_ARRAYTYPE_P(14), task_id);

	/*
	 * pool, pool_slots, priority_weight and weight_rule are add_task's last
	 * four arguments (whatever other arguments come before them)
	 */
	pool_arg = PG_NARGS() - 4;
	pool = PG_ARGISNULL(pool_arg) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(pool_arg));
	require_arg(fcinfo, pool_arg + 1, "pool_slots");
	pool_slots = PG_GETARG_INT32(pool_arg + 1);
	if (pool == NULL && pool_slots != 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pool_slots applies only to a task in a pool")));
	require_arg(fcinfo, pool_arg + 2, "priority_weight");
	priority_weight = PG_GETARG_INT32(pool_arg + 2);
	require_arg(fcinfo, pool_arg + 3, "weight_rule");
	weight_rule_name = text_to_cstring(PG_GETARG_TEXT_PP(pool_arg + 3));
	if (!rules_parse_weight_rule(weight_rule_name, &weight_rule))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown weight rule \"%s\"", weight_rule_name),
				 errhint("Weight rules are downstream, upstream and absolute.")));

	/* dynamic task mapping (mapping.c) */
	mapping_check_definition(PG_NARGS() > 15 && !PG_ARGISNULL(15) ? PG_GETARG_JSONB_P(15) : NULL,
							 PG_NARGS() > 16 && !PG_ARGISNULL(16) ?
							 text_to_cstring(PG_GETARG_TEXT_PP(16)) : NULL,
							 task_id);

	catalog_write_begin(&cw);
	lock_owned_dag(&cw, dag_id, false, false);
	if (pool != NULL)
		pool_check_task(cw.caller, dag_id, pool, pool_slots);

	values[0] = CStringGetTextDatum(dag_id);
	values[1] = CStringGetTextDatum(task_id);
	run_query("SELECT 1 FROM orchestrator.task WHERE dag_id = $1 AND task_id = $2",
			  2, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("task \"%s\" already exists in DAG \"%s\"", task_id, dag_id),
				 errhint("Redefine a DAG by calling create_dag again, then adding all its tasks.")));

	/* the size limit, counted under the DAG's lock */
	run_query("SELECT count(*) FROM orchestrator.task WHERE dag_id = $1",
			  1, types, values, NULL, SPI_OK_SELECT);
	{
		bool		isnull;
		int64		ntasks = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
														 SPI_tuptable->tupdesc, 1, &isnull));

		if (ntasks >= orch_max_tasks_per_dag)
			ereport(ERROR,
					(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
					 errmsg_plural("DAG \"%s\" cannot have more than %d task",
								   "DAG \"%s\" cannot have more than %d tasks",
								   orch_max_tasks_per_dag,
								   dag_id, orch_max_tasks_per_dag),
					 errdetail_plural("It has " INT64_FORMAT " task, and orchestrator.max_tasks_per_dag is %d.",
									  "It has " INT64_FORMAT " tasks, and orchestrator.max_tasks_per_dag is %d.",
									  (unsigned long) ntasks,
									  ntasks, orch_max_tasks_per_dag),
					 errhint("Split the pipeline into smaller DAGs, or have a superuser raise orchestrator.max_tasks_per_dag.")));
	}

	/* every upstream task exists; an input produces an artifact */
	foreach(lc, upstream)
	{
		char	   *up = strVal(lfirst(lc));
		bool		isnull;
		char	   *opname;

		values[1] = CStringGetTextDatum(up);
		run_query("SELECT spec->>'operator' FROM orchestrator.task WHERE dag_id = $1 AND task_id = $2",
				  2, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("upstream task \"%s\" of task \"%s\" does not exist in DAG \"%s\"",
							up, task_id, dag_id),
					 errhint("Add each task after the tasks it depends on.")));
		opname = TextDatumGetCString(SPI_getbinval(SPI_tuptable->vals[0],
												   SPI_tuptable->tupdesc, 1, &isnull));
		if (input != NULL && strcmp(up, input) == 0 &&
			!operator_produces_artifact(opname))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_OBJECT_DEFINITION),
					 errmsg("task \"%s\" reads the output of task \"%s\", which produces none",
							task_id, input),
					 errdetail("Task \"%s\" is a %s task; only http_fetch and gunzip tasks produce output to read.",
							   input, opname)));
		astate = accumArrayResult(astate, values[1], false, TEXTOID, CurrentMemoryContext);
	}

	memset(nulls, ' ', sizeof(nulls));
	values[1] = CStringGetTextDatum(task_id);
	values[2] = JsonbPGetDatum(spec);
	values[3] = astate != NULL ? makeArrayResult(astate, CurrentMemoryContext) :
		PointerGetDatum(construct_empty_array(TEXTOID));
	for (int i = 4; i <= 8; i++)
	{
		if (PG_ARGISNULL(i))
			nulls[i] = 'n';
		else
			values[i] = PG_GETARG_DATUM(i);
	}
	values[9] = CStringGetTextDatum(rule);
	for (int i = 10; i <= 16; i++)
	{
		if (i >= PG_NARGS() || PG_ARGISNULL(i))
			nulls[i] = 'n';
		else
			values[i] = PG_GETARG_DATUM(i);
	}
	values[14] = names_array(outlets);
	nulls[14] = ' ';
	run_query("INSERT INTO orchestrator.task (dag_id, task_id, spec, upstream, retries, "
			  "retry_delay, retry_exponential_backoff, max_retry_delay, "
			  "execution_timeout, trigger_rule, on_failure_callback, on_success_callback, "
			  "on_retry_callback, cache_expiration, outlets, expand, expand_query, position) "
			  "SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, "
			  "coalesce(max(position), 0) + 1 FROM orchestrator.task WHERE dag_id = $1",
			  17, types, values, nulls, SPI_OK_INSERT);
	set_priority(dag_id, task_id, pool, pool_slots, priority_weight, weight_rule);

	catalog_write_end(&cw);
	orch_wake_scheduler_at_commit();
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orch_drop_dag);

/* drop_dag(dag_id text, if_exists boolean): the DAG, its tasks and history */
Datum
orch_drop_dag(PG_FUNCTION_ARGS)
{
	char	   *dag_id;
	bool		if_exists = !PG_ARGISNULL(1) && PG_GETARG_BOOL(1);
	CatalogWrite cw;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	bool		found;

	require_arg(fcinfo, 0, "dag_id");
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));

	catalog_write_begin(&cw);
	found = lock_owned_dag(&cw, dag_id, if_exists, false);
	if (found)
	{
		values[0] = CStringGetTextDatum(dag_id);
		run_query("DELETE FROM orchestrator.dag WHERE dag_id = $1",
				  1, types, values, NULL, SPI_OK_DELETE);
	}
	catalog_write_end(&cw);
	orch_wake_scheduler_at_commit();

	if (!found)
		ereport(NOTICE,
				(errmsg("DAG \"%s\" does not exist, skipping", dag_id)));
	PG_RETURN_VOID();
}

static void
set_paused(FunctionCallInfo fcinfo, bool paused)
{
	char	   *dag_id;
	CatalogWrite cw;
	Oid			types[2] = {TEXTOID, BOOLOID};
	Datum		values[2];

	require_arg(fcinfo, 0, "dag_id");
	dag_id = text_to_cstring(PG_GETARG_TEXT_PP(0));

	catalog_write_begin(&cw);
	lock_owned_dag(&cw, dag_id, false, false);
	values[0] = CStringGetTextDatum(dag_id);
	values[1] = BoolGetDatum(paused);
	run_query("UPDATE orchestrator.dag SET paused = $2, updated_at = now() WHERE dag_id = $1",
			  2, types, values, NULL, SPI_OK_UPDATE);
	catalog_write_end(&cw);
	orch_wake_scheduler_at_commit();
}

PG_FUNCTION_INFO_V1(orch_pause_dag);

Datum
orch_pause_dag(PG_FUNCTION_ARGS)
{
	set_paused(fcinfo, true);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orch_unpause_dag);

Datum
orch_unpause_dag(PG_FUNCTION_ARGS)
{
	set_paused(fcinfo, false);
	PG_RETURN_VOID();
}
