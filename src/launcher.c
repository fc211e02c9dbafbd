/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one background worker per cluster, connected to no
 *	  database, that starts a scheduler in every database with the
 *	  extension and keeps them running.
 *
 * A background worker can connect to one database, once, so the launcher
 * reads only the shared catalogs: it lists the databases that allow
 * connections and are not templates (only orchestrator.database, if that
 * is set), and cannot see which have the extension.  So it tries: it starts
 * a scheduler in each, and a scheduler that finds no extension says so
 * (registry.c) and exits; the launcher then leaves that database alone
 * until CREATE EXTENSION there commits and tells it (a poke).  It looks at
 * pg_database again whenever its latch is set (a poke, a scheduler that
 * started or stopped, CREATE DATABASE, a hold released) and every few
 * seconds.
 *
 * Each database's scheduler is started again if it stops: at once after a
 * long life, with a back-off (1 s doubling to a minute) after a short one,
 * so that a scheduler that keeps failing does not fill the log; the others
 * go on meanwhile.  No scheduler starts in a database that a backend is
 * dropping or renaming (a hold, dbhooks.c).  A database that went away, or
 * that no longer qualifies (made a template, orchestrator.database changed),
 * has its scheduler stopped.  The launcher never runs on a standby: it
 * starts when recovery finishes, so a promoted standby starts scheduling by
 * itself.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "orchestrator.h"

/* a scheduler that lived shorter than this failed: back off */
#define SHORT_LIFE_MS		(60 * 1000L)
#define MAX_BACKOFF_MS		(60 * 1000L)
/* pg_database is read at least this often */
#define RESCAN_MS			5000L
/* after a failed start (no worker slot, no entry), again this much later */
#define RETRY_START_MS		5000L

/* What the launcher knows of one database. */
typedef struct DbState
{
	Oid			dboid;			/* the key */
	char		name[NAMEDATALEN];
	bool		eligible;		/* at the last look at pg_database */
	bool		absent;			/* its scheduler found no extension */
	bool		poked;			/* CREATE EXTENSION there since its scheduler started */
	int			entry;			/* its scheduler's entry (registry.c), -1: none */
	BackgroundWorkerHandle *handle;
	TimestampTz started_at;
	TimestampTz next_start;
	long		backoff_ms;
} DbState;

static HTAB *databases = NULL;
static bool said_missing = false;
static bool said_no_slot = false;

/*
 * Reads pg_database (a shared catalog, no connection needed): marks which
 * databases a scheduler may serve, adding those not seen before.
 */
static void
scan_databases(void)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	HASH_SEQ_STATUS seq;
	DbState    *db;
	bool		restricted = orch_database != NULL && orch_database[0] != '\0';
	bool		found_restricted = false;

	hash_seq_init(&seq, databases);
	while ((db = hash_seq_search(&seq)) != NULL)
		db->eligible = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while ((tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
	{
		Form_pg_database form = (Form_pg_database) GETSTRUCT(tuple);
		bool		found;

		if (restricted && strcmp(NameStr(form->datname), orch_database) != 0)
			continue;
		found_restricted = true;
		if (!form->datallowconn || form->datistemplate)
			continue;
		db = hash_search(databases, &form->oid, HASH_ENTER, &found);
		if (!found)
		{
			db->absent = false;
			db->poked = false;
			db->entry = -1;
			db->handle = NULL;
			db->started_at = db->next_start = 0;
			db->backoff_ms = 0;
		}
		strlcpy(db->name, NameStr(form->datname), NAMEDATALEN);
		db->eligible = true;
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();

	/* orchestrator.database names one that does not exist (yet) */
	if (restricted && !found_restricted)
	{
		if (!said_missing)
			ereport(LOG,
					(errmsg("orchestrator launcher: database \"%s\" does not exist; waiting for it",
							orch_database),
					 errhint("Create it, or set orchestrator.database to the database whose DAGs should run (or to '' for every database with the extension) and reload.")));
		said_missing = true;
	}
	else if (restricted && said_missing)
	{
		ereport(LOG,
				(errmsg("orchestrator launcher: database \"%s\" exists now", orch_database)));
		said_missing = false;
	}
}

/*
 * Starts the scheduler of a database; ASSIGN_NONE_FREE if no entry or no
 * worker slot is free, ASSIGN_STILL_RUNNING if a scheduler of an earlier
 * launcher still runs there, else its entry.
 */
static int
start_scheduler(DbState *db, TimestampTz now)
{
	BackgroundWorker worker;
	int			entry = registry_assign(db->dboid);

	if (entry < 0)
		return entry;
	orch_bgworker_spec(&worker, "orch_scheduler_main", "orchestrator scheduler",
					   BGW_NEVER_RESTART, MyProcPid);
	worker.bgw_main_arg = Int32GetDatum(entry);
	snprintf(worker.bgw_name, BGW_MAXLEN, "orchestrator scheduler %s", db->name);
	if (!RegisterDynamicBackgroundWorker(&worker, &db->handle))
	{
		(void) registry_release(entry);
		db->handle = NULL;
		return ASSIGN_NONE_FREE;
	}
	db->entry = entry;
	db->started_at = now;
	db->poked = false;
	return entry;
}

/*
 * One database: its scheduler stopped (again later, or not until CREATE
 * EXTENSION), or is to be stopped, or started.  Returns how long until it
 * needs looking at again (-1: not before something happens).
 */
static long
tend_database(DbState *db, TimestampTz now, bool *remove)
{
	pid_t		pid;
	int			started;

	*remove = false;
	if (db->handle != NULL && GetBackgroundWorkerPid(db->handle, &pid) == BGWH_STOPPED)
	{
		bool		absent = registry_release(db->entry);

		pfree(db->handle);
		db->handle = NULL;
		db->entry = -1;
		/* (a scheduler that looked before CREATE EXTENSION committed: again) */
		if (absent && !db->poked)
		{
			/* no extension there: not again until a poke */
			db->absent = true;
			db->backoff_ms = 0;
		}
		else if (TimestampDifferenceExceeds(db->started_at, now, SHORT_LIFE_MS))
			db->backoff_ms = 0;
		else
			db->backoff_ms = db->backoff_ms == 0 ? 1000 :
				Min(db->backoff_ms * 2, MAX_BACKOFF_MS);
		db->next_start = TimestampTzPlusMilliseconds(now, db->backoff_ms);
	}

	if (!db->eligible)
	{
		/* gone, or no longer to be served: stop its scheduler, then forget it */
		if (db->handle != NULL)
		{
			TerminateBackgroundWorker(db->handle);
			return -1;
		}
		*remove = true;
		return -1;
	}
	if (db->handle != NULL || db->absent || registry_held(db->dboid))
		return -1;
	if (now < db->next_start)
		return Max(1, (db->next_start - now) / 1000);
	started = start_scheduler(db, now);
	if (started == ASSIGN_STILL_RUNNING)
		return 100;
	if (started == ASSIGN_NONE_FREE)
	{
		if (!said_no_slot)
			ereport(LOG,
					(errmsg("orchestrator launcher: could not start the scheduler of database \"%s\": no background worker slot is free",
							db->name),
					 errhint("Raise max_worker_processes: it must leave room for a scheduler per database with the extension, and for orchestrator.max_workers.")));
		said_no_slot = true;
		return RETRY_START_MS;
	}
	said_no_slot = false;
	return -1;
}

void
orch_launcher_main(Datum arg)
{
	HASHCTL		ctl;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("orchestrator launcher");
	registry_launcher_attach();

	ctl.keysize = sizeof(Oid);
	ctl.entrysize = sizeof(DbState);
	databases = hash_create("orchestrator launcher databases", 64, &ctl,
							HASH_ELEM | HASH_BLOBS);

	for (;;)
	{
		long		timeout;
		TimestampTz now;
		bool		poke_all;
		List	   *pokes;
		HASH_SEQ_STATUS seq;
		DbState    *db;

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* CREATE EXTENSION committed there: try again, at once */
		pokes = registry_take_pokes(&poke_all);
		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
			if (poke_all || list_member_oid(pokes, db->dboid))
			{
				db->absent = false;
				db->poked = true;
			}
		list_free(pokes);

		/* each wake-up may be news of a database: pg_database is small */
		scan_databases();
		now = GetCurrentTimestamp();
		timeout = RESCAN_MS;

		hash_seq_init(&seq, databases);
		while ((db = hash_seq_search(&seq)) != NULL)
		{
			bool		remove;
			long		t = tend_database(db, now, &remove);

			if (remove)
				(void) hash_search(databases, &db->dboid, HASH_REMOVE, NULL);
			else if (t >= 0)
				timeout = Min(timeout, t);
		}

		/* a start or a stop of a scheduler sets the latch (bgw_notify_pid) */
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | WL_TIMEOUT,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
