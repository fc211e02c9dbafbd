/*-------------------------------------------------------------------------
 *
 * pool.c
 *	  Pools: at most a pool's slots of task instances run at once, across
 *	  all DAGs and owners.
 *
 * A superuser creates and drops pools and grants their use to roles
 * (create_pool, drop_pool, grant_pool, revoke_pool); add_task(..., pool,
 * pool_slots) puts a task of a DAG whose owner may use the pool in it.
 *
 * The limit is kept where instances are queued, not where they are
 * claimed: an instance takes its slots when it is queued, and gives them
 * back when it ends.  Whoever queues (state.c: the scheduler, a worker
 * whose task ended) locks the DAG's row, then the rows of the pools the
 * DAG's tasks use (pool_lock, in name order, in one statement), then
 * counts the slots taken by queued and running instances with a snapshot
 * taken after the locks: two transactions queueing into one pool, for
 * whatever DAGs, count one after the other, and the count is exact.
 *
 * A ready instance that finds its pool full stays scheduled with ready_at
 * set, in claim order (its pool's index): it holds no worker, and no
 * worker is started for it.  When a pooled task ends, its worker, after
 * its commit, queues the pool's first waiters of any DAG as far as the
 * pool and their DAGs have room (pool_hand_out, one transaction each); the
 * waiters of its own DAG were already considered in its own transaction
 * (state.c's queue_held).  The scheduler does the same at each pass for
 * every pool with waiters (slots freed by cancel_run, a lost try, a
 * timeout), never waiting for a lock.
 *
 * drop_pool refuses a pool that a task definition uses (and the catalog's
 * foreign key enforces it); revoke_pool refuses while the role's tasks use
 * the pool: no task is ever in a pool its DAG's owner may not use.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "orchestrator.h"
#include "pool.h"
#include "state.h"

static Datum
col(int row, int column, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, column, isnull);
}

static void
require_superuser(const char *what)
{
	if (!superuser())
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s", what),
				 errdetail("Only superusers manage pools."),
				 errhint("A superuser can let your role use a pool with orchestrator.grant_pool().")));
}

static char *
pool_arg(FunctionCallInfo fcinfo, int argno)
{
	char	   *pool;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("pool must not be null")));
	pool = text_to_cstring(PG_GETARG_TEXT_PP(argno));
	orch_check_id(pool, "pool");
	return pool;
}

/* the pool's row, locked as asked; raises an error if there is none */
static int
lock_pool(const char *pool, const char *lock, bool missing_ok)
{
	bool		isnull;

	run_query(psprintf("SELECT slots FROM orchestrator.pool WHERE pool = $1 %s", lock),
			  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(pool)}, NULL,
			  SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		if (missing_ok)
			return 0;
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pool \"%s\" does not exist", pool)));
	}
	return DatumGetInt32(col(0, 1, &isnull));
}

PG_FUNCTION_INFO_V1(orch_create_pool);

/* create_pool(pool text, slots integer, description text) */
Datum
orch_create_pool(PG_FUNCTION_ARGS)
{
	char	   *pool;
	CatalogWrite cw;

	require_superuser("create a pool");
	pool = pool_arg(fcinfo, 0);
	if (PG_ARGISNULL(1) || PG_GETARG_INT32(1) < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("a pool's slots must be 1 or more")));

	catalog_write_begin(&cw);
	run_query("INSERT INTO orchestrator.pool (pool, slots, description) VALUES ($1, $2, $3) "
			  "ON CONFLICT (pool) DO NOTHING",
			  3, (Oid[]) {TEXTOID, INT4OID, TEXTOID},
			  (Datum[]) {CStringGetTextDatum(pool), PG_GETARG_DATUM(1),
			  PG_ARGISNULL(2) ? (Datum) 0 : PG_GETARG_DATUM(2)},
			  PG_ARGISNULL(2) ? "  n" : "   ", SPI_OK_INSERT);
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_DUPLICATE_OBJECT),
				 errmsg("pool \"%s\" already exists", pool)));
	catalog_write_end(&cw);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orch_drop_pool);

/* drop_pool(pool text, if_exists boolean): a pool no task uses */
Datum
orch_drop_pool(PG_FUNCTION_ARGS)
{
	char	   *pool;
	CatalogWrite cw;
	bool		isnull;
	int64		ntasks;

	require_superuser("drop a pool");
	pool = pool_arg(fcinfo, 0);

	catalog_write_begin(&cw);
	/* (add_task holds KEY SHARE on the row it puts a task in) */
	run_query("SELECT 1 FROM orchestrator.pool WHERE pool = $1 FOR UPDATE",
			  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(pool)}, NULL,
			  SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		if (!PG_ARGISNULL(1) && PG_GETARG_BOOL(1))
		{
			catalog_write_end(&cw);
			ereport(NOTICE,
					(errmsg("pool \"%s\" does not exist, skipping", pool)));
			PG_RETURN_VOID();
		}
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("pool \"%s\" does not exist", pool)));
	}
	run_query("SELECT count(*), count(DISTINCT dag_id), min(dag_id) FROM orchestrator.task WHERE pool = $1",
			  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(pool)}, NULL,
			  SPI_OK_SELECT);
	ntasks = DatumGetInt64(col(0, 1, &isnull));
	if (ntasks > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("pool \"%s\" is in use", pool),
				 errdetail("%s task(s) of %s DAG(s) use it, DAG \"%s\" among them.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1),
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2),
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3)),
				 errhint("Redefine or drop those DAGs first; instances already queued or running in the pool end as they would.")));
	run_query("DELETE FROM orchestrator.pool WHERE pool = $1",
			  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(pool)}, NULL,
			  SPI_OK_DELETE);
	catalog_write_end(&cw);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orch_grant_pool);

/* grant_pool(pool text, role regrole) */
Datum
orch_grant_pool(PG_FUNCTION_ARGS)
{
	char	   *pool;
	CatalogWrite cw;

	require_superuser("grant the use of a pool");
	pool = pool_arg(fcinfo, 0);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role must not be null")));

	catalog_write_begin(&cw);
	lock_pool(pool, "FOR KEY SHARE", false);
	run_query("INSERT INTO orchestrator.pool_grant (pool, grantee) VALUES ($1, $2) "
			  "ON CONFLICT DO NOTHING",
			  2, (Oid[]) {TEXTOID, OIDOID},
			  (Datum[]) {CStringGetTextDatum(pool), PG_GETARG_DATUM(1)},
			  NULL, SPI_OK_INSERT);
	catalog_write_end(&cw);
	PG_RETURN_VOID();
}

PG_FUNCTION_INFO_V1(orch_revoke_pool);

/* revoke_pool(pool text, role regrole): once none of the role's tasks use it */
Datum
orch_revoke_pool(PG_FUNCTION_ARGS)
{
	char	   *pool;
	CatalogWrite cw;
	Oid			role;

	require_superuser("revoke the use of a pool");
	pool = pool_arg(fcinfo, 0);
	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("role must not be null")));
	role = PG_GETARG_OID(1);

	catalog_write_begin(&cw);
	/* (serialized with add_task, which holds KEY SHARE on it) */
	lock_pool(pool, "FOR UPDATE", false);
	run_query("SELECT d.dag_id FROM orchestrator.task t "
			  "JOIN orchestrator.dag d ON d.dag_id = t.dag_id "
			  "WHERE t.pool = $1 AND d.owner = $2 LIMIT 1",
			  2, (Oid[]) {TEXTOID, OIDOID},
			  (Datum[]) {CStringGetTextDatum(pool), ObjectIdGetDatum(role)},
			  NULL, SPI_OK_SELECT);
	if (SPI_processed > 0)
		ereport(ERROR,
				(errcode(ERRCODE_DEPENDENT_OBJECTS_STILL_EXIST),
				 errmsg("role \"%s\" still has tasks in pool \"%s\"",
						GetUserNameFromId(role, false), pool),
				 errdetail("DAG \"%s\" has a task in it.",
						   SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1)),
				 errhint("Redefine or drop the role's DAGs that use the pool first.")));
	run_query("DELETE FROM orchestrator.pool_grant WHERE pool = $1 AND grantee = $2",
			  2, (Oid[]) {TEXTOID, OIDOID},
			  (Datum[]) {CStringGetTextDatum(pool), ObjectIdGetDatum(role)},
			  NULL, SPI_OK_DELETE);
	catalog_write_end(&cw);
	PG_RETURN_VOID();
}

/*
 * add_task's checks, in its catalog write (the DAG's row locked): the pool
 * exists, the DAG's owner may use it (a superuser may use any), and the
 * task's slots fit in it.  A role that may not use a pool learns nothing
 * of whether it exists.
 */
void
pool_check_task(Oid caller, const char *dag_id, const char *pool, int slots)
{
	bool		isnull;
	Datum		d;
	Oid			owner;
	int			pool_slots;

	orch_check_id(pool, "pool");
	if (slots < 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pool_slots must be 1 or more, not %d", slots)));

	run_query("SELECT owner FROM orchestrator.dag WHERE dag_id = $1",
			  1, (Oid[]) {TEXTOID}, (Datum[]) {CStringGetTextDatum(dag_id)}, NULL,
			  SPI_OK_SELECT);
	d = SPI_processed == 1 ? col(0, 1, &isnull) : (Datum) 0;
	owner = (SPI_processed == 1 && !isnull) ? DatumGetObjectId(d) : InvalidOid;

	/* (KEY SHARE: drop_pool and revoke_pool wait for this transaction) */
	run_query("SELECT p.slots, "
			  "       EXISTS (SELECT 1 FROM orchestrator.pool_grant g "
			  "               WHERE g.pool = p.pool AND g.grantee = $2) "
			  "FROM orchestrator.pool p WHERE p.pool = $1 FOR KEY SHARE OF p",
			  2, (Oid[]) {TEXTOID, OIDOID},
			  (Datum[]) {CStringGetTextDatum(pool), ObjectIdGetDatum(owner)},
			  NULL, SPI_OK_SELECT);
	if (SPI_processed == 0 ||
		!(OidIsValid(owner) &&
		  (superuser_arg(owner) || DatumGetBool(col(0, 2, &isnull)))))
	{
		if (!superuser_arg(caller))
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("pool \"%s\" does not exist or may not be used by the owner of DAG \"%s\"",
							pool, dag_id),
					 errhint("A superuser creates pools, and grants their use with orchestrator.grant_pool().")));
		if (SPI_processed == 0)
			ereport(ERROR,
					(errcode(ERRCODE_UNDEFINED_OBJECT),
					 errmsg("pool \"%s\" does not exist", pool)));
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("the owner of DAG \"%s\" may not use pool \"%s\"", dag_id, pool),
				 errhint("Grant it with orchestrator.grant_pool().")));
	}
	pool_slots = DatumGetInt32(col(0, 1, &isnull));
	if (slots > pool_slots)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("pool_slots %d is more than pool \"%s\" has", slots, pool),
				 errdetail("The pool has %d slot(s): the task could never run.", pool_slots)));
}

bool
pool_lock(const char *dag_id, const char *extra, bool skip_locked, PoolRoom *room)
{
	Datum		values[2];
	char		nulls[2] = "  ";
	int			nlocked;
	Datum	   *names;
	bool		isnull;

	room->n = 0;
	values[0] = CStringGetTextDatum(dag_id);
	if (extra)
		values[1] = CStringGetTextDatum(extra);
	else
		nulls[1] = 'n';
	/* (a DAG whose tasks use no pool: one lookup of an empty index range) */
	run_query(skip_locked ?
			  "SELECT p.pool FROM orchestrator.pool p "
			  "WHERE p.pool IN (SELECT t.pool FROM orchestrator.task t "
			  "                 WHERE t.dag_id = $1 AND t.pool IS NOT NULL) OR p.pool = $2 "
			  "ORDER BY p.pool FOR NO KEY UPDATE OF p SKIP LOCKED" :
			  "SELECT p.pool FROM orchestrator.pool p "
			  "WHERE p.pool IN (SELECT t.pool FROM orchestrator.task t "
			  "                 WHERE t.dag_id = $1 AND t.pool IS NOT NULL) OR p.pool = $2 "
			  "ORDER BY p.pool FOR NO KEY UPDATE OF p",
			  2, (Oid[]) {TEXTOID, TEXTOID}, values, nulls, SPI_OK_SELECT);
	nlocked = (int) SPI_processed;
	if (nlocked == 0 && !skip_locked)
		return true;
	names = palloc(sizeof(Datum) * Max(nlocked, 1));
	for (int i = 0; i < nlocked; i++)
		names[i] = col(i, 1, &isnull);

	/* every pool it uses, or (skip_locked) some are another's: no room */
	if (skip_locked)
	{
		run_query("SELECT count(*) FROM orchestrator.pool p "
				  "WHERE p.pool IN (SELECT t.pool FROM orchestrator.task t "
				  "                 WHERE t.dag_id = $1 AND t.pool IS NOT NULL) OR p.pool = $2",
				  2, (Oid[]) {TEXTOID, TEXTOID}, values, nulls, SPI_OK_SELECT);
		if (DatumGetInt64(col(0, 1, &isnull)) != nlocked)
			return false;
		if (nlocked == 0)
			return true;
	}

	/* the slots taken, seen after the locks (a new snapshot) */
	run_query("SELECT p.pool, p.slots - coalesce((SELECT sum(ti.pool_slots) "
			  "  FROM orchestrator.task_instance ti "
			  "  WHERE ti.pool = p.pool AND ti.state IN ('queued', 'running')), 0) "
			  "FROM orchestrator.pool p WHERE p.pool = ANY ($1)",
			  1, (Oid[]) {TEXTARRAYOID},
			  (Datum[]) {PointerGetDatum(construct_array(names, nlocked, TEXTOID, -1, false,
														 TYPALIGN_INT))},
			  NULL, SPI_OK_SELECT);
	room->n = (int) SPI_processed;
	room->names = palloc(sizeof(char *) * Max(room->n, 1));
	room->free = palloc(sizeof(int64) * Max(room->n, 1));
	for (int i = 0; i < room->n; i++)
	{
		room->names[i] = TextDatumGetCString(col(i, 1, &isnull));
		room->free[i] = DatumGetInt64(col(i, 2, &isnull));
	}
	return true;
}

bool
pool_take(PoolRoom *room, const char *pool, int slots)
{
	for (int i = 0; i < room->n; i++)
	{
		if (strcmp(room->names[i], pool) != 0)
			continue;
		if (room->free[i] < slots)
			return false;
		room->free[i] -= slots;
		return true;
	}
	/* a pool that is gone (drop_pool: no task uses it) limits nothing */
	return true;
}

/*
 * Hands out the pool's free slots to its first waiters, one at a time;
 * the caller's transaction(s): own_xacts, one each (a worker), else all in
 * the caller's, never waiting for a lock (the scheduler).
 */
static int
hand_out(const char *pool, bool own_xacts, bool *locked)
{
	MemoryContext cxt = AllocSetContextCreate(CurrentMemoryContext,
											  "orchestrator pool hand-out",
											  ALLOCSET_SMALL_SIZES);
	MemoryContext old = MemoryContextSwitchTo(cxt);
	List	   *excluded = NIL;
	int			queued = 0;
	int			again = 0;
	char		dag[ORCH_MAX_ID_LEN + 1];

	for (;;)
	{
		PoolHandOut result;

		if (own_xacts)
			orch_begin_xact();
		result = state_pool_hand_out(pool, excluded, !own_xacts, orch_now(), dag, locked);
		if (own_xacts)
			orch_end_xact();
		MemoryContextSwitchTo(cxt);
		if (result == HAND_QUEUED)
			queued++;
		else if (result == HAND_NEXT_DAG)
			excluded = lappend(excluded, pstrdup(dag));
		else if (result == HAND_DONE || ++again > 100)
			break;
		CHECK_FOR_INTERRUPTS();
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(cxt);
	return queued;
}

int
pool_hand_out(const char *pool)
{
	MemoryContext old = CurrentMemoryContext;
	volatile int queued = 0;
	bool		locked = false;

	PG_TRY();
	{
		queued = hand_out(pool, true, &locked);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		/* the scheduler's pass does it instead */
		MemoryContextSwitchTo(old);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(old);
		ereport(WARNING,
				(errmsg("orchestrator: cannot queue the waiters of pool \"%s\": %s",
						pool, edata->message)));
		orch_wake_scheduler();
	}
	PG_END_TRY();
	return queued;
}

int
pool_hand_out_all(void)
{
	uint64		n;
	char	  **pools;
	bool		isnull;
	int			queued = 0;
	bool		locked = false;

	run_query("SELECT DISTINCT pool FROM orchestrator.task_instance "
			  "WHERE pool IS NOT NULL AND ready_at IS NOT NULL",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	n = SPI_processed;
	pools = palloc(sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
		pools[i] = TextDatumGetCString(col(i, 1, &isnull));
	for (uint64 i = 0; i < n; i++)
		queued += hand_out(pools[i], false, &locked);
	return queued;
}
