/*-------------------------------------------------------------------------
 *
 * owners.c
 *	  DAG owners across clusters.  A DAG's owner is a role OID, which
 *	  means nothing in another cluster: each DAG also records its owner's
 *	  name and the cluster it belongs to, and the scheduler maps DAGs that a
 *	  restore brought from another cluster to the roles of the same names.
 *
 * The scheduler maps when it starts, at a reload, and when something it
 * maps from changed: a role created, renamed or dropped (in any database:
 * roles belong to the cluster; dbhooks.c's utility hook says so), or rows
 * inserted into orchestrator.dag (a restore; a trigger says so).  Each such change bumps a generation
 * counter in shared memory at commit and wakes the scheduler, so that an
 * idle scheduler needs no periodic wake-up for it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "storage/lwlock.h"
#include "utils/builtins.h"

#include "orchestrator.h"

/* this transaction changed what owners map from */
static bool changed_in_xact = false;

static void
owners_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (changed_in_xact && orch_shared != NULL)
			{
				LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
				orch_shared->owners_generation++;
				LWLockRelease(orch_shared->lock);
				/* roles belong to the cluster: every database's DAGs */
				registry_wake_all_schedulers();
			}
			changed_in_xact = false;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			changed_in_xact = false;
			break;
		default:
			break;
	}
}

/* A role was created, dropped or renamed (dbhooks.c): map at commit. */
void
owners_changed_at_commit(void)
{
	changed_in_xact = true;
}

/* From _PG_init, with the library preloaded: in every backend. */
void
owners_init(void)
{
	RegisterXactCallback(owners_xact_callback, NULL);
}

uint64
owners_generation(void)
{
	uint64		generation;

	if (orch_shared == NULL)
		return 0;
	LWLockAcquire(orch_shared->lock, LW_SHARED);
	generation = orch_shared->owners_generation;
	LWLockRelease(orch_shared->lock);
	return generation;
}

PG_FUNCTION_INFO_V1(orch_dag_rows_inserted);

/*
 * dag_rows_inserted() RETURNS trigger, AFTER INSERT FOR EACH ROW on
 * orchestrator.dag, for rows of another cluster: rows a restore brought are
 * mapped once it commits.
 */
Datum
orch_dag_rows_inserted(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("dag_rows_inserted() may only be called as a trigger")));
	changed_in_xact = true;
	return PointerGetDatum(NULL);
}

/*
 * Owners that a restore brought from another cluster (their OIDs mean
 * nothing here): each such DAG goes to the role of the same name, or to no
 * one; a DAG of no one goes to a role of its owner's name created since;
 * and a renamed owner's new name is kept, for the next restore.  Roles
 * are read from pg_authid, through its indexes (the scheduler is a
 * superuser).  Runs in the scheduler's transaction; *(bool *) arg says
 * whether every DAG is now of this cluster (rows an API call held locked
 * are left for a later pass).
 */
void
owners_map(void *arg)
{
	Datum		sysid = Int64GetDatum((int64) GetSystemIdentifier());
	bool		isnull;
	bool		foreign,
				unowned,
				renamed;

	/*
	 * What needs mapping, in one read: an UPDATE, even of no row, counts as
	 * a change of definitions (a statement trigger), and the next pass
	 * would list every DAG again.
	 */
	run_query("SELECT coalesce(bool_or(x.owner_sysid <> $1), false), "
			  "       coalesce(bool_or(x.owner IS NULL AND x.owner_sysid = $1 "
			  "                        AND EXISTS (SELECT 1 FROM pg_catalog.pg_authid r "
			  "                                    WHERE r.rolname = x.owner_name)), false), "
			  "       coalesce(bool_or(x.owner_name IS DISTINCT FROM y.rolname "
			  "                        AND x.owner_sysid = $1 AND y.oid IS NOT NULL), false) "
			  "FROM orchestrator.dag x LEFT JOIN pg_catalog.pg_authid y ON y.oid = x.owner",
			  1, (Oid[]) {INT8OID}, &sysid, NULL, SPI_OK_SELECT);
	foreign = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	unowned = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	renamed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	*(bool *) arg = !foreign;

	/* (rows an API call has locked are left for the next time) */
	if (foreign)
	{
		run_query("UPDATE orchestrator.dag d SET owner_sysid = $1, "
				  " owner = (SELECT r.oid FROM pg_catalog.pg_authid r WHERE r.rolname = d.owner_name) "
				  "FROM (SELECT dag_id FROM orchestrator.dag WHERE owner_sysid <> $1 "
				  "      FOR NO KEY UPDATE SKIP LOCKED) l "
				  "WHERE d.dag_id = l.dag_id "
				  "RETURNING d.dag_id, d.owner_name::text, d.owner IS NOT NULL",
				  1, (Oid[]) {INT8OID}, &sysid, NULL, SPI_OK_UPDATE_RETURNING);
		for (uint64 i = 0; i < SPI_processed; i++)
		{
			bool		found = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 3, &isnull));
			char	   *owner_name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2);

			ereport(LOG,
					(errmsg("orchestrator: DAG \"%s\" was restored from another cluster: %s",
							SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1),
							psprintf(found ? "it belongs to role \"%s\" of this one" :
									 "it belongs to no one: role \"%s\" does not exist here",
									 owner_name ? owner_name : "?"))));
		}
	}

	/*
	 * (each statement sees rows committed since the one before: a restore
	 * may bring foreign rows meanwhile, which only the next pass maps, so
	 * these two touch rows of this cluster only)
	 */
	if (unowned)
	{
		run_query("UPDATE orchestrator.dag d SET owner = r.oid "
				  "FROM (SELECT dag_id FROM orchestrator.dag WHERE owner IS NULL AND owner_sysid = $1 "
				  "      FOR NO KEY UPDATE SKIP LOCKED) l, pg_catalog.pg_authid r "
				  "WHERE d.dag_id = l.dag_id AND r.rolname = d.owner_name "
				  "RETURNING d.dag_id, d.owner_name::text",
				  1, (Oid[]) {INT8OID}, &sysid, NULL, SPI_OK_UPDATE_RETURNING);
		for (uint64 i = 0; i < SPI_processed; i++)
			ereport(LOG,
					(errmsg("orchestrator: DAG \"%s\" now belongs to the new role \"%s\"",
							SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1), SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2))));
	}
	if (renamed)
		run_query("UPDATE orchestrator.dag d SET owner_name = r.rolname "
				  "FROM (SELECT x.dag_id FROM orchestrator.dag x JOIN pg_catalog.pg_authid y ON y.oid = x.owner "
				  "      WHERE x.owner_name IS DISTINCT FROM y.rolname AND x.owner_sysid = $1 "
				  "      FOR NO KEY UPDATE OF x SKIP LOCKED) l, pg_catalog.pg_authid r "
				  "WHERE d.dag_id = l.dag_id AND r.oid = d.owner AND d.owner_sysid = $1",
				  1, (Oid[]) {INT8OID}, &sysid, NULL, SPI_OK_UPDATE);

	/* what was locked, and skipped, is mapped at a pass a few seconds on */
	if (foreign)
	{
		run_query("SELECT 1 FROM orchestrator.dag WHERE owner_sysid <> $1 LIMIT 1",
				  1, (Oid[]) {INT8OID}, &sysid, NULL, SPI_OK_SELECT);
		*(bool *) arg = SPI_processed == 0;
	}
}

