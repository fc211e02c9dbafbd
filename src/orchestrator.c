/*-------------------------------------------------------------------------
 *
 * orchestrator.c
 *	  Module initialisation and settings.
 *
 * The library must be loaded through shared_preload_libraries for DAGs to
 * run: the scheduler is a background worker registered at postmaster
 * start.  Loaded any other way (by calling one of its functions), it still
 * defines the settings and the definition API works, but nothing runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "commands/dbcommands.h"
#include "utils/guc.h"

#include "orchestrator.h"

PG_MODULE_MAGIC;

char	   *orch_database = NULL;
int			orch_max_workers = 4;
bool		orch_enabled = true;

/* set when loaded through shared_preload_libraries */
bool		orch_preloaded = false;

void		_PG_init(void);

void
_PG_init(void)
{
	orch_preloaded = process_shared_preload_libraries_in_progress;

	/*
	 * A server-start setting can only be defined while preloading; loaded
	 * later, the library runs no scheduler, and the setting is only read by
	 * check_setup().
	 */
	DefineCustomStringVariable("orchestrator.database",
							   "Database whose DAGs the scheduler runs.",
							   NULL,
							   &orch_database,
							   "postgres",
							   orch_preloaded ? PGC_POSTMASTER : PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.max_workers",
							"Maximum number of tasks that run at once.",
							"Each running task uses one background worker; max_worker_processes must leave room for them.",
							&orch_max_workers,
							4,
							1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("orchestrator.enabled",
							 "Whether the scheduler starts runs and tasks.",
							 "When off, definitions can still be changed; nothing new starts.",
							 &orch_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	MarkGUCPrefixReserved("orchestrator");
}

PG_FUNCTION_INFO_V1(orch_check_setup);

/*
 * check_setup() RETURNS boolean: warns if DAGs defined in this database
 * cannot run, and says what to change.  CREATE EXTENSION calls it.
 */
Datum
orch_check_setup(PG_FUNCTION_ARGS)
{
	const char *dbname = get_database_name(MyDatabaseId);

	if (!orch_preloaded)
	{
		ereport(WARNING,
				(errmsg("orchestrator is not loaded through shared_preload_libraries, so no DAG will run"),
				 errdetail("DAGs can be defined, but the scheduler only starts when the server starts with the library preloaded."),
				 errhint("Add orchestrator to shared_preload_libraries in postgresql.conf and restart the server.")));
		PG_RETURN_BOOL(false);
	}
	if (dbname == NULL || strcmp(dbname, orch_database) != 0)
	{
		ereport(WARNING,
				(errmsg("DAGs in database \"%s\" will not run: orchestrator.database is \"%s\"",
						dbname ? dbname : "?", orch_database),
				 errhint("Set orchestrator.database = '%s' in postgresql.conf and restart the server, or use the extension in database \"%s\".",
						 dbname ? dbname : "?", orch_database)));
		PG_RETURN_BOOL(false);
	}
	PG_RETURN_BOOL(true);
}
