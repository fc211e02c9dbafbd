/*-------------------------------------------------------------------------
 *
 * launcher.c
 *	  The launcher: one background worker per cluster, connected to no
 *	  database, that starts the scheduler and keeps it running.
 *
 * A background worker can connect to one database, once, and connecting to
 * one that does not exist is FATAL.  So the launcher, which reads only the
 * shared catalogs, waits for orchestrator.database to exist (saying so
 * once), starts the scheduler there as a dynamic background worker, and
 * starts it again if it stops: at once after a long life, with a back-off
 * (1 s doubling to a minute) after a short one, so that a scheduler that
 * keeps failing does not fill the log.  It never runs on a standby: it
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
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "orchestrator.h"

/* a scheduler that lived shorter than this failed: back off */
#define SHORT_LIFE_MS		(60 * 1000L)
#define MAX_BACKOFF_MS		(60 * 1000L)
#define POLL_DATABASE_MS	5000L

/* Whether a database of that name exists (shared catalog, no connection). */
static bool
database_exists(const char *name)
{
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tuple;
	bool		found = false;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (!found && (tuple = heap_getnext(scan, ForwardScanDirection)) != NULL)
		found = strcmp(NameStr(((Form_pg_database) GETSTRUCT(tuple))->datname), name) == 0;
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return found;
}

static BackgroundWorkerHandle *
start_scheduler(void)
{
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;

	orch_bgworker_spec(&worker, "orch_scheduler_main", "orchestrator scheduler",
					   BGW_NEVER_RESTART, MyProcPid);
	if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		return NULL;
	return handle;
}

void
orch_launcher_main(Datum arg)
{
	BackgroundWorkerHandle *handle = NULL;
	TimestampTz started_at = 0;
	TimestampTz next_start = 0;
	long		backoff_ms = 0;
	bool		said_missing = false;
	bool		said_no_slot = false;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	pgstat_report_appname("orchestrator launcher");

	for (;;)
	{
		long		timeout = -1;
		pid_t		pid;
		TimestampTz now = GetCurrentTimestamp();

		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}

		/* the scheduler stopped: again, at once or after a back-off */
		if (handle != NULL && GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED)
		{
			pfree(handle);
			handle = NULL;
			if (TimestampDifferenceExceeds(started_at, now, SHORT_LIFE_MS))
				backoff_ms = 0;
			else
				backoff_ms = backoff_ms == 0 ? 1000 : Min(backoff_ms * 2, MAX_BACKOFF_MS);
			next_start = TimestampTzPlusMilliseconds(now, backoff_ms);
		}

		if (handle == NULL)
		{
			if (!database_exists(orch_database))
			{
				if (!said_missing)
					ereport(LOG,
							(errmsg("orchestrator launcher: database \"%s\" does not exist; waiting for it",
									orch_database),
							 errhint("Create it, or set orchestrator.database to the database whose DAGs should run and restart the server.")));
				said_missing = true;
				timeout = POLL_DATABASE_MS;
			}
			else if (now < next_start)
				timeout = Max(1, (next_start - now) / 1000);
			else if ((handle = start_scheduler()) == NULL)
			{
				if (!said_no_slot)
					ereport(LOG,
							(errmsg("orchestrator launcher: could not start the scheduler: no background worker slot is free"),
							 errhint("Raise max_worker_processes.")));
				said_no_slot = true;
				timeout = POLL_DATABASE_MS;
			}
			else
			{
				if (said_missing)
					ereport(LOG,
							(errmsg("orchestrator launcher: database \"%s\" exists now", orch_database)));
				said_missing = said_no_slot = false;
				started_at = now;
			}
		}

		/* a start or a stop of the scheduler sets the latch (bgw_notify_pid) */
		(void) WaitLatch(MyLatch,
						 WL_LATCH_SET | WL_EXIT_ON_PM_DEATH | (timeout >= 0 ? WL_TIMEOUT : 0),
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
}
