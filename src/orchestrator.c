/*-------------------------------------------------------------------------
 *
 * orchestrator.c
 *	  Module initialisation: settings, shared memory, the scheduler's
 *	  registration, waking the scheduler at commit, and the clock.
 *
 * The library must be loaded through shared_preload_libraries for DAGs to
 * run: the scheduler is a background worker registered at postmaster
 * start.  Loaded any other way (by calling one of its functions), it still
 * defines the settings and the definition API works, but nothing runs.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/indexing.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/trigger.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "postmaster/bgworker.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/proc.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/rel.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"

#include "orchestrator.h"

PG_MODULE_MAGIC;

char	   *orch_database = NULL;
int			orch_max_workers = 4;
int			orch_max_workers_per_database = 0;
int			orch_max_tasks_per_dag = 10000;
int			orch_max_map_length = 1024;
int			orch_expand_query_timeout_ms = 10000;
bool		orch_enabled = true;
char	   *orch_http_allowed_hosts = NULL;
char	   *orch_history_retention = NULL;
char	   *orch_events = NULL;
int			orch_callback_timeout_ms = 5 * 60 * 1000;
int			orch_worker_idle_timeout_ms = 5000;
int			orch_priority_weight_age_ms = 60 * 1000;

/* set when loaded through shared_preload_libraries */
bool		orch_preloaded = false;

OrchShared *orch_shared = NULL;

/*
 * A fixed time to use instead of the real clock, for tests of schedules and
 * retries (empty: the real clock).  Not shown by SHOW ALL.
 */
static char *orch_test_clock = NULL;

/* the run context of the running task, readable with current_setting() */
static char *orch_ctx_values[8];
static const char *const orch_ctx_names[8] = {
	"orchestrator.run_id", "orchestrator.dag_id", "orchestrator.task_id",
	"orchestrator.logical_date", "orchestrator.ds", "orchestrator.try_number",
	"orchestrator.run_type", "orchestrator.error"
};

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;

/* set by an API call that changes what is due; acted on at commit */
static bool wake_at_commit = false;

/* set by CREATE EXTENSION and CREATE DATABASE; acted on at commit */
static bool poke_at_commit = false;
/* this transaction changed a row of orchestrator.dag or orchestrator.task */
static bool definitions_changed = false;
static Oid	poke_database = InvalidOid;

void		_PG_init(void);

static bool
check_events(char **newval, void **extra, GucSource source)
{
	if (*newval && (strcmp(*newval, "on") == 0 || strcmp(*newval, "ids") == 0 ||
					strcmp(*newval, "off") == 0))
		return true;
	GUC_check_errdetail("It must be on, ids or off.");
	return false;
}

/* orchestrator.history_retention: an interval of zero or more, or empty */
static bool
check_history_retention(char **newval, void **extra, GucSource source)
{
	Interval   *iv = NULL;
	Interval	zero = {0};
	MemoryContext cxt = CurrentMemoryContext;

	if (*newval == NULL || (*newval)[0] == '\0')
		return true;

	/* interval_in raises on bad input; a check hook must not */
	PG_TRY();
	{
		iv = DatumGetIntervalP(DirectFunctionCall3(interval_in,
												   CStringGetDatum(*newval),
												   ObjectIdGetDatum(InvalidOid),
												   Int32GetDatum(-1)));
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(cxt);
		FlushErrorState();
		iv = NULL;
	}
	PG_END_TRY();
	if (iv == NULL)
	{
		GUC_check_errdetail("It must be an interval, such as '90 days', or empty for ever.");
		return false;
	}
	if (DatumGetInt32(DirectFunctionCall2(interval_cmp, IntervalPGetDatum(iv),
										  IntervalPGetDatum(&zero))) < 0)
	{
		GUC_check_errdetail("The retention must not be negative.");
		return false;
	}
	return true;
}

/* the shared struct: the worker slots, then the scheduler entries */
static Size
orch_shmem_slots_size(void)
{
	return MAXALIGN(add_size(offsetof(OrchShared, slots),
							 mul_size(max_worker_processes, sizeof(OrchWorkerSlot))));
}

static Size
orch_shmem_size(void)
{
	return add_size(orch_shmem_slots_size(),
					mul_size(max_worker_processes, sizeof(OrchSchedulerSlot)));
}

static void
orch_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	RequestAddinShmemSpace(orch_shmem_size());
	RequestNamedLWLockTranche("orchestrator", 1);
}

static void
orch_shmem_startup(void)
{
	bool		found;

	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();

	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	orch_shared = ShmemInitStruct("orchestrator", orch_shmem_size(), &found);
	if (!found)
	{
		memset(orch_shared, 0, orch_shmem_size());
		orch_shared->lock = &(GetNamedLWLockTranche("orchestrator"))->lock;
		orch_shared->nslots = max_worker_processes;
		orch_shared->nschedulers = max_worker_processes;
		orch_shared->schedulers = (OrchSchedulerSlot *)
			((char *) orch_shared + orch_shmem_slots_size());
	}
	LWLockRelease(AddinShmemInitLock);
}

/* Sets the latch of this database's scheduler, if one runs. */
void
orch_wake_scheduler(void)
{
	registry_wake_scheduler(MyDatabaseId);
}

/*
 * Asks this database's scheduler to evaluate every running run at its next
 * pass (registry.c).
 */
void
orch_request_evaluation(void)
{
	registry_request_evaluation(MyDatabaseId);
}

bool
orch_take_evaluation_request(void)
{
	return registry_take_evaluation_request();
}

/* Wakes the scheduler when (and only if) the current transaction commits. */
void
orch_wake_scheduler_at_commit(void)
{
	wake_at_commit = true;
}

PG_FUNCTION_INFO_V1(orch_definitions_changed);

/*
 * definitions_changed() RETURNS trigger, AFTER ... FOR EACH STATEMENT on
 * orchestrator.dag and orchestrator.task: whatever changed them (the API, a
 * superuser's own UPDATE, a restore), the schedulers look at every DAG
 * again once it commits.  Between such changes a scheduler looks only at
 * the DAGs it knows to be due (scheduler.c).
 */
Datum
orch_definitions_changed(PG_FUNCTION_ARGS)
{
	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("definitions_changed() may only be called as a trigger")));
	definitions_changed = true;
	wake_at_commit = true;
	return PointerGetDatum(NULL);
}

/* (read before a listing of the DAGs: a change committed during it bumps it after) */
uint64
orch_definitions_generation(void)
{
	uint64		generation;

	if (orch_shared == NULL)
		return 0;
	LWLockAcquire(orch_shared->lock, LW_SHARED);
	generation = orch_shared->definitions_generation;
	LWLockRelease(orch_shared->lock);
	return generation;
}

/*
 * Tells the launcher, when (and only if) the current transaction commits,
 * to look at the databases again, and that database dboid (if valid) has
 * the extension now.
 */
void
orch_poke_launcher_at_commit(Oid dboid)
{
	poke_at_commit = true;
	if (OidIsValid(dboid))
		poke_database = dboid;
}

static void
orch_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			if (definitions_changed && orch_shared != NULL)
			{
				LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
				orch_shared->definitions_generation++;
				LWLockRelease(orch_shared->lock);
			}
			definitions_changed = false;
			if (wake_at_commit)
			{
				orch_request_evaluation();
				orch_wake_scheduler();
			}
			if (poke_at_commit)
				registry_poke(poke_database);
			wake_at_commit = poke_at_commit = false;
			poke_database = InvalidOid;
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			wake_at_commit = poke_at_commit = definitions_changed = false;
			poke_database = InvalidOid;
			break;
		default:
			break;
	}
}

/*
 * The time the scheduler and workers go by: the real clock, or the fixed
 * time orchestrator.test_clock gives.
 */
TimestampTz
orch_now(void)
{
	static char *parsed_text = NULL;
	static TimestampTz parsed_value = 0;

	if (orch_test_clock == NULL || orch_test_clock[0] == '\0')
		return GetCurrentTimestamp();
	if (parsed_text == NULL || strcmp(parsed_text, orch_test_clock) != 0)
	{
		parsed_value = DatumGetTimestampTz(DirectFunctionCall3(timestamptz_in,
															   CStringGetDatum(orch_test_clock),
															   ObjectIdGetDatum(InvalidOid),
															   Int32GetDatum(-1)));
		if (parsed_text != NULL)
			free(parsed_text);
		parsed_text = strdup(orch_test_clock);
	}
	return parsed_value;
}

/*
 * A background worker of this library: connected to a database (or none),
 * never on a standby (runs start once it is promoted).  notify_pid: the
 * process told when it starts and stops (0 for none).
 */
void
orch_bgworker_spec(BackgroundWorker *worker, const char *function,
				   const char *type, int restart_time, pid_t notify_pid)
{
	memset(worker, 0, sizeof(*worker));
	worker->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker->bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker->bgw_restart_time = restart_time;
	snprintf(worker->bgw_library_name, BGW_MAXLEN, "orchestrator");
	snprintf(worker->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(worker->bgw_name, BGW_MAXLEN, "%s", type);
	snprintf(worker->bgw_type, BGW_MAXLEN, "%s", type);
	worker->bgw_notify_pid = notify_pid;
}

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
							   "The one database whose DAGs run (empty: every database with the extension).",
							   "Set, it restricts the launcher to that database; the others' DAGs do not run.",
							   &orch_database,
							   "",
							   PGC_SIGHUP,
							   0,
							   NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.max_workers",
							"Maximum number of tasks that run at once, in all databases together.",
							"Each running task uses one background worker; max_worker_processes must leave room for them and for a scheduler per database.",
							&orch_max_workers,
							4,
							1, 1024,
							PGC_SIGHUP,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.max_workers_per_database",
							"Maximum number of tasks of one database that run at once (0: only orchestrator.max_workers bounds them).",
							"Set it for one database with ALTER DATABASE ... SET; whatever it is, a database gets no more than its fair share of orchestrator.max_workers while others wait.",
							&orch_max_workers_per_database,
							0,
							0, 1024,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.max_tasks_per_dag",
							"Maximum number of tasks in one DAG.",
							"add_task() refuses a task beyond it; DAGs that already have more keep them.",
							&orch_max_tasks_per_dag,
							10000,
							1, INT_MAX,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.max_map_length",
							"Maximum number of instances of one mapped task in a run.",
							"A task whose expand array or expand_query has more elements fails instead of expanding.",
							&orch_max_map_length,
							1024,
							1, 100000,
							PGC_SUSET,
							0,
							NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.expand_query_timeout",
							"How long a mapped task's expand_query may run.",
							"It runs when the task becomes ready, in the scheduler or the worker that decides it; past this, the task fails.",
							&orch_expand_query_timeout_ms,
							10000,
							1, 600000,
							PGC_SUSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomBoolVariable("orchestrator.enabled",
							 "Whether the scheduler starts runs and tasks.",
							 "When off, definitions can still be changed; nothing new starts.",
							 &orch_enabled,
							 true,
							 PGC_SIGHUP,
							 0,
							 NULL, NULL, NULL);

	DefineCustomStringVariable("orchestrator.http_allowed_hosts",
							   "Hosts that http_fetch and copy_into tasks may reach (comma-separated; empty: any).",
							   "Applies to every request and every redirect.",
							   &orch_http_allowed_hosts,
							   "",
							   PGC_SUSET,
							   GUC_LIST_INPUT,
							   NULL, NULL, NULL);

	DefineCustomStringVariable("orchestrator.history_retention",
							   "How long the scheduler keeps ended runs, with their task instances and artifacts (empty: for ever).",
							   "Applied once a day; the same as calling orchestrator.purge_history() with it.",
							   &orch_history_retention,
							   "90 days",
							   PGC_SIGHUP,
							   0,
							   check_history_retention, NULL, NULL);

	DefineCustomStringVariable("orchestrator.events",
							   "What NOTIFY orchestrator_events publishes: ids (run, task, state and try only; the default), on (also dag_id and error), or off.",
							   "Any role that can connect can LISTEN: use ids where roles must not see each other's DAGs.",
							   &orch_events,
							   "ids",
							   PGC_SUSET,
							   0,
							   check_events, NULL, NULL);

	DefineCustomIntVariable("orchestrator.callback_timeout",
							"How long a callback may run before it is stopped.",
							"A callback still running then is cancelled, and its worker terminated a few seconds later if it goes on.",
							&orch_callback_timeout_ms,
							5 * 60 * 1000,
							1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.worker_idle_timeout",
							"How long a task worker with nothing to run waits for work before it exits.",
							"A waiting worker takes the next task at once, without a process start; 0 makes workers exit as soon as nothing is queued.",
							&orch_worker_idle_timeout_ms,
							5000,
							0, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomIntVariable("orchestrator.priority_weight_age",
							"How much waiting one unit of a task's effective priority weight is worth.",
							"A ready task is claimed in the order of the time it became ready less its effective weight times this: weight first, then age; a task waits behind later ones only while they are younger by less than their weight's advance, so none waits forever.",
							&orch_priority_weight_age_ms,
							60 * 1000,
							1, INT_MAX,
							PGC_SIGHUP,
							GUC_UNIT_MS,
							NULL, NULL, NULL);

	DefineCustomStringVariable("orchestrator.test_clock",
							   "A fixed time the scheduler uses instead of the clock (tests only).",
							   NULL,
							   &orch_test_clock,
							   "",
							   PGC_SIGHUP,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE,
							   NULL, NULL, NULL);

	for (int i = 0; i < lengthof(orch_ctx_names); i++)
		DefineCustomStringVariable(orch_ctx_names[i],
								   "Context of the running task (set by the worker).",
								   NULL,
								   &orch_ctx_values[i],
								   "",
								   PGC_USERSET,
								   GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
								   NULL, NULL, NULL);

	MarkGUCPrefixReserved("orchestrator");

	RegisterXactCallback(orch_xact_callback, NULL);

	if (!orch_preloaded)
		return;

	owners_init();

	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = orch_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = orch_shmem_startup;

	/* DROP DATABASE and friends clear the way (dbhooks.c) */
	dbhooks_init();

	{
		BackgroundWorker launcher;

		/* it starts the scheduler (launcher.c) */
		orch_bgworker_spec(&launcher, "orch_launcher_main", "orchestrator launcher", 10, 0);
		RegisterBackgroundWorker(&launcher);
	}
}

PG_FUNCTION_INFO_V1(orch_check_setup);

/*
 * check_setup() RETURNS boolean: warns if DAGs defined in this database
 * cannot run, and says what to change: what the launcher looks at (the
 * library preloaded, orchestrator.database, a database that is not a
 * template and allows connections).  CREATE EXTENSION calls it, which also
 * tells the launcher, at commit, to start this database's scheduler.
 */
Datum
orch_check_setup(PG_FUNCTION_ARGS)
{
	const char *dbname = get_database_name(MyDatabaseId);
	HeapTuple	tuple;
	bool		is_template = false;
	bool		allow_conn = true;

	orch_wake_scheduler_at_commit();
	orch_poke_launcher_at_commit(MyDatabaseId);
	if (!orch_preloaded)
	{
		ereport(WARNING,
				(errmsg("orchestrator is not loaded through shared_preload_libraries, so no DAG will run"),
				 errdetail("DAGs can be defined, but the scheduler only starts when the server starts with the library preloaded."),
				 errhint("Add orchestrator to shared_preload_libraries in postgresql.conf and restart the server.")));
		PG_RETURN_BOOL(false);
	}
	if (orch_database != NULL && orch_database[0] != '\0' &&
		(dbname == NULL || strcmp(dbname, orch_database) != 0))
	{
		ereport(WARNING,
				(errmsg("DAGs in database \"%s\" will not run: orchestrator.database is \"%s\"",
						dbname ? dbname : "?", orch_database),
				 errdetail("Set, orchestrator.database restricts the scheduling to that one database."),
				 errhint("Set orchestrator.database = '' (every database with the extension) and reload, or use the extension in database \"%s\".",
						 orch_database)));
		PG_RETURN_BOOL(false);
	}
	tuple = SearchSysCache1(DATABASEOID, ObjectIdGetDatum(MyDatabaseId));
	if (HeapTupleIsValid(tuple))
	{
		is_template = ((Form_pg_database) GETSTRUCT(tuple))->datistemplate;
		allow_conn = ((Form_pg_database) GETSTRUCT(tuple))->datallowconn;
		ReleaseSysCache(tuple);
	}
	if (is_template || !allow_conn)
	{
		ereport(WARNING,
				(errmsg("DAGs in database \"%s\" will not run: it is %s",
						dbname ? dbname : "?",
						is_template ? "a template" : "closed to connections"),
				 errdetail("The launcher starts schedulers only in databases that are not templates and allow connections; databases created from this one get the extension, and a scheduler."),
				 errhint("Use ALTER DATABASE ... WITH %s to have this database's DAGs run.",
						 is_template ? "IS_TEMPLATE false" : "ALLOW_CONNECTIONS true")));
		PG_RETURN_BOOL(false);
	}
	PG_RETURN_BOOL(true);
}

/*
 * The version of the orchestrator catalog installed in this database (the
 * extension's version), or NULL if it is not installed.  Call in a
 * transaction.
 */
char *
orch_catalog_version(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tuple;
	char	   *version = NULL;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber, F_NAMEEQ,
				CStringGetDatum("orchestrator"));
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tuple = systable_getnext(scan);
	if (HeapTupleIsValid(tuple))
	{
		bool		isnull;
		Datum		d = heap_getattr(tuple, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
	return version;
}

/*
 * Refuses to go on with a catalog of another version than this library's:
 * between installing a new library and ALTER EXTENSION ... UPDATE, the API
 * says what to do instead of failing deep inside a query.
 */
void
orch_require_catalog(void)
{
	char	   *version = orch_catalog_version();

	if (version == NULL || strcmp(version, ORCH_CATALOG_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the orchestrator catalog is at version %s, but the installed library needs version %s",
						version ? version : "(none)", ORCH_CATALOG_VERSION),
				 errhint("Run ALTER EXTENSION orchestrator UPDATE.")));
}

PG_FUNCTION_INFO_V1(orch_system_identifier);

/*
 * system_identifier() RETURNS bigint: the cluster's, which role OIDs are
 * meaningful in.
 */
Datum
orch_system_identifier(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64((int64) GetSystemIdentifier());
}
