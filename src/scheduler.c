/*-------------------------------------------------------------------------
 *
 * scheduler.c
 *	  The scheduler: one background worker per database with the extension,
 *	  started by the launcher (launcher.c).
 *
 * It sleeps on its latch until the earliest of the next schedule time, the
 * next retry time and the next run timeout, or until something changes what
 * is due: an API call that commits (create_dag, trigger_dag, clear_task,
 * ...), a worker that needs it (a run ended, a retry to time, more workers
 * wanted, a task it could not decide), a worker that starts or stops, a
 * configuration reload.  Each wake-up is one pass:
 *
 * 1. recover lost work: running task instances whose worker is gone count
 *	  as a failed try;
 * 2. create the runs that schedules make due (Airflow's data intervals),
 *	  looking only at the DAGs due;
 * 3. start queued runs, up to each DAG's max_active_runs;
 * 4. decide running runs as a whole (state.c): the safety net under the
 *	  workers, which decide their own tasks' downstream as they finish
 *	  them; here a run's first tasks are queued, retries that came due, and
 *	  runs past dagrun_timeout fail.  Only the runs that need it: new ones,
 *	  those whose time came, all of them when asked (an API call, a worker
 *	  that could not decide, a lost try), and each at least once a minute;
 *
 * and, after the commits, 5. stop workers whose task instance was cancelled
 * or timed out under them, and hand the queued instances to workers that
 * wait for work, starting new ones for the rest, within this database's
 * share of orchestrator.max_workers (registry.c).  The scheduler never
 * waits on a task and never touches the network.  When it finds the
 * extension gone (DROP EXTENSION, or a database the launcher tried that
 * never had it), it says so to the launcher and exits.
 *
 * Each DAG and each run is handled in a transaction of its own, so that
 * one that raises an error (a schedule made invalid behind the API's back,
 * say) is reported and skipped while the others go on.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>
#include <sys/resource.h>

#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/proc.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "lib/stringinfo.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "cron.h"
#include "orchestrator.h"
#include "pool.h"
#include "sandbox.h"
#include "state.h"

/* the longest the scheduler sleeps with nothing due */
#define MAX_SLEEP_MS		(3600 * 1000L)
/* at most this many runs created for one DAG in one tick */
#define MAX_RUNS_PER_TICK	1000

/* task workers started and not yet seen stopped */
static List *worker_handles = NIL;
static bool start_failure_logged = false;

/* this database's name, for the log */
static char *my_dbname = NULL;

/* whether the extension was found (the scheduler said it started) */
static bool seen_installed = false;
/* the extension is not installed: the scheduler leaves */
static bool extension_absent = false;

/* orchestrator.max_workers_per_database of the server's configuration */
static int	cluster_cap = 0;

/*
 * Worker starts in the current second: workers that keep exiting without a
 * task (a broken catalog, say) must not make the scheduler spin.
 */
#define MAX_STARTS_PER_SECOND	(4 * orch_max_workers)
static TimestampTz start_window = 0;
static int	starts_in_window = 0;

/* when the scheduler last applied orchestrator.history_retention */
static TimestampTz last_purge = DT_NOBEGIN;

/* set when every running run is to be evaluated at the next pass */
static bool evaluate_everything = true;

/* the owners generation last mapped (owners.c); -1: map at the next pass */
static uint64 owners_mapped = PG_UINT64_MAX;

/* the catalog version last complained about */
static char *version_logged = NULL;

/* what a tick allocates, reset after each */
static MemoryContext tick_cxt = NULL;

/* the tick's time and its earliest next due time */
static TimestampTz tick_now;
static TimestampTz tick_wake;

static void
wake_by(TimestampTz when)
{
	if (when < tick_wake)
		tick_wake = when;
}

/*
 * How long the scheduler waits for a row lock or a transaction before it
 * skips what it was doing and comes back to it: no lock a task can take
 * (its own DAG's, through the API) stalls the scheduler's pass.
 */
#define SCHED_LOCK_TIMEOUT	"100ms"

typedef enum XactResult
{
	XACT_COMMITTED,
	XACT_FAILED,				/* an error, logged */
	XACT_LOCKED					/* a lock wait gave up: again in a second */
} XactResult;

/*
 * Runs fn(arg) in a transaction of its own, so that the scheduler never
 * holds one transaction, nor the locks it takes, across every DAG.  An
 * error is logged and rolled back, and the caller goes on; a lock that
 * could not be had is not an error: what needed it is retried shortly.
 */
/* After an error: the error reported (a lock wait, briefly) and its kind. */
static XactResult
report_error(ErrorData *edata, const char *what)
{
	XactResult	result;

	if (edata->sqlerrcode == ERRCODE_LOCK_NOT_AVAILABLE)
	{
		ereport(DEBUG1,
				(errmsg("orchestrator scheduler: %s: %s; trying again shortly",
						what, edata->message)));
		wake_by(tick_now + USECS_PER_SEC);
		result = XACT_LOCKED;
	}
	else
	{
		ereport(WARNING,
				(errmsg("orchestrator scheduler: %s: %s", what, edata->message),
				 edata->detail ? errdetail("%s", edata->detail) : 0));
		result = XACT_FAILED;
	}
	FreeErrorData(edata);
	return result;
}

static void
begin_sched_xact(void)
{
	orch_begin_xact();
	set_config_option("lock_timeout", SCHED_LOCK_TIMEOUT, PGC_SUSET, PGC_S_SESSION,
					  GUC_ACTION_LOCAL, true, 0, false);
}

static void
hand_out_pools(void *arg)
{
	pool_hand_out_all();
}

static XactResult
in_xact(void (*fn) (void *), void *arg, const char *what)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	XactResult	result = XACT_COMMITTED;

	begin_sched_xact();
	PG_TRY();
	{
		fn(arg);
		orch_end_xact();
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		AbortCurrentTransaction();
		MemoryContextSwitchTo(oldcxt);
		result = report_error(edata, what);
	}
	PG_END_TRY();
	return result;
}

/*
 * Like in_xact for each of n items, but up to BATCH_SIZE of them share a
 * transaction, each in a subtransaction of its own: an item's error rolls
 * back that item alone.  A pass with a thousand DAGs due costs ten commits,
 * not a thousand.  results[i] says how item i went.
 */
#define BATCH_SIZE	100

/*
 * fn(arg) in a subtransaction: on error, it is rolled back and the error
 * returned (the caller reports it); NULL if fn went through.
 */
static ErrorData *
in_subxact(void (*fn) (void *), void *arg)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ErrorData  *edata = NULL;

	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		fn(arg);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
	}
	PG_END_TRY();
	MemoryContextSwitchTo(oldcxt);
	CurrentResourceOwner = owner;
	return edata;
}

static void
in_batches(void (*fn) (void *), void **items, int n, XactResult *results,
		   const char *(*what) (void *), void (*at_once) (void **, int, bool *))
{
	MemoryContext oldcxt = CurrentMemoryContext;
	bool		done[BATCH_SIZE];

	for (int first = 0; first < n; first += BATCH_SIZE)
	{
		int			last = Min(n, first + BATCH_SIZE);

		begin_sched_xact();

		/*
		 * Fresh statistics for each batch: the batches before may have grown
		 * a table from a few blocks (a thousand runs created), and plans
		 * made on the statistics of a handful of runs of one DAG read the
		 * whole table once per DAG.
		 */
		orch_analyze_grown_tables();
		/* the batch at once, as far as the caller can (and nothing fails) */
		memset(done, 0, sizeof(done));
		if (at_once != NULL)
			at_once(items + first, last - first, done);
		for (int i = first; i < last; i++)
		{
			ErrorData  *edata = done[i - first] ? NULL : in_subxact(fn, items[i]);

			results[i] = edata == NULL ? XACT_COMMITTED : report_error(edata, what(items[i]));
		}
		orch_end_xact();
		MemoryContextSwitchTo(oldcxt);
	}
}

static char *
col_text(int row, int col)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc,
								  col, &isnull);

	return isnull ? NULL : TextDatumGetCString(d);
}

static Datum
col_datum(int row, int col, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull);
}

/* A copy of the worker slots, taken under the lock. */
/*
 * 1. A running task instance whose worker holds no slot for it is lost: its
 * worker died (SIGKILL, a crash, a restart) without recording an outcome.
 * Its work rolled back with it, so the try counts as failed and is retried
 * if tries remain.
 */
static void
recover_lost(void)
{
	OrchWorkerSlot *slots;
	SPITupleTable *tuptable;
	uint64		n;

	/*
	 * The instances first, then the slots: a claim committed before this
	 * snapshot had its slot set before it committed, so the slots copied
	 * next show it.
	 */
	run_query("SELECT run_id, task_id, worker_pid, try_number, map_index "
			  "FROM orchestrator.task_instance WHERE state = 'running'",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	n = SPI_processed;
	if (n == 0)
		return;
	tuptable = SPI_tuptable;
	slots = progress_copy_slots();

	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tuple = tuptable->vals[i];
		TupleDesc	desc = tuptable->tupdesc;
		bool		isnull;
		int64		run_id = DatumGetInt64(SPI_getbinval(tuple, desc, 1, &isnull));
		char	   *task_id = TextDatumGetCString(SPI_getbinval(tuple, desc, 2, &isnull));
		Datum		pidd = SPI_getbinval(tuple, desc, 3, &isnull);
		int			pid = isnull ? 0 : DatumGetInt32(pidd);
		int			try_number = DatumGetInt32(SPI_getbinval(tuple, desc, 4, &isnull));
		int			map_index = DatumGetInt32(SPI_getbinval(tuple, desc, 5, &isnull));

		if (progress_slots_show(slots, pid, run_id, map_index, task_id, 0))
			continue;

		/*
		 * Applies only if it is still that running try: a worker that
		 * recorded its outcome since the snapshot above (and left its slot)
		 * decided its downstream itself, and nothing else is evaluated for
		 * it (with workers draining short tasks, that is most passes).
		 */
		if (state_try_failed(run_id, task_id, map_index, pid, try_number,
								psprintf("the worker (pid %d) stopped without recording an outcome (killed, crashed, or the server restarted)",
										 pid),
								tick_now, false, false, NULL))
		{
			StringInfoData live;

			evaluate_everything = true;

			/* which workers there were, should a loss ever be questioned */
			initStringInfo(&live);
			for (int s = 0; s < orch_shared->nslots; s++)
				if (slots[s].pid != 0)
					appendStringInfo(&live, "%s%d (%s " INT64_FORMAT ")", live.len ? ", " : "",
									 slots[s].pid, slots[s].task_id, slots[s].run_id);
			ereport(LOG,
					(errmsg("orchestrator: task \"%s\" of run " INT64_FORMAT " lost its worker (pid %d); counting try %d as failed",
							task_id, run_id, pid, try_number),
					 errdetail("Live workers: %s.", live.len ? live.data : "none")));
		}
	}
}

/* 1. Work whose worker is gone: lost tries, lost callbacks. */
static void
recover_work(void *arg)
{
	recover_lost();
	orch_drop_lost_callbacks();
}

/*
 * Whether the extension is installed, at the version this library works
 * with.  Between a new library and ALTER EXTENSION ... UPDATE, nothing is
 * scheduled: said once, and checked again at each wake-up and every minute
 * (the update script wakes the scheduler).
 */
static bool
catalog_usable(void)
{
	char	   *version;

	if (!OidIsValid(get_extension_oid("orchestrator", true)))
	{
		extension_absent = true;
		return false;
	}
	version = orch_catalog_version();
	if (version != NULL && strcmp(version, ORCH_CATALOG_VERSION) == 0)
	{
		version_logged = NULL;
		return true;
	}
	if (version_logged == NULL || strcmp(version_logged, version ? version : "") != 0)
	{
		ereport(LOG,
				(errmsg("orchestrator: the catalog of database \"%s\" is at version %s and this library needs %s: nothing runs until it is updated",
						my_dbname, version ? version : "?", ORCH_CATALOG_VERSION),
				 errhint("Run ALTER EXTENSION orchestrator UPDATE in database \"%s\".", my_dbname)));
		version_logged = MemoryContextStrdup(TopMemoryContext, version ? version : "");
	}
	wake_by(tick_now + 60 * USECS_PER_SEC);
	return false;
}

/*
 * Whether some worker of this database is running a task (no transaction
 * needed to tell).
 */
static bool
any_worker_running(void)
{
	bool		running = false;

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	for (int s = 0; s < orch_shared->nslots && !running; s++)
		running = (orch_shared->slots[s].pid != 0 &&
				   orch_shared->slots[s].dboid == MyDatabaseId &&
				   orch_shared->slots[s].phase == SLOT_RUNNING);
	LWLockRelease(orch_shared->lock);
	return running;
}

/* Whether slot s still runs the try that copy shows. */
static bool
slot_unchanged(int s, const OrchWorkerSlot *copy)
{
	OrchWorkerSlot *slot = &orch_shared->slots[s];

	return slot->pid == copy->pid && slot->phase == SLOT_RUNNING &&
		slot->run_id == copy->run_id && strcmp(slot->task_id, copy->task_id) == 0;
}

/* Signals the worker of slot s if it still runs that try. */
static void
signal_worker(int s, const OrchWorkerSlot *copy, int signo, TimestampTz now)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	if (slot_unchanged(s, copy))
	{
		if (signo == SIGINT)
			orch_shared->slots[s].stop_requested_at = now;
		kill(copy->pid, signo);
	}
	LWLockRelease(orch_shared->lock);
}

/* Sleeps no longer than until "when", on the real clock. */
static void
wake_by_real(TimestampTz when, TimestampTz real_now)
{
	wake_by(tick_now + Max(when - real_now, 0));
}

/*
 * A try past its execution_timeout and the grace: it caught the cancel its
 * worker raised at the timeout.  Records it as failed (or up for retry),
 * with its real duration; returns whether it was still that running try.
 */
static bool
record_timeout(const OrchWorkerSlot *slot, TimestampTz now)
{
	Oid			types[4] = {INT8OID, TEXTOID, INT4OID, INT4OID};
	Datum		values[4];
	bool		isnull;
	int			try_number;
	TimestampTz started_at;

	values[0] = Int64GetDatum(slot->run_id);
	values[1] = CStringGetTextDatum(slot->task_id);
	values[2] = Int32GetDatum(slot->pid);
	values[3] = Int32GetDatum(slot->map_index);
	run_query("SELECT try_number, started_at FROM orchestrator.task_instance "
			  "WHERE run_id = $1 AND task_id = $2 AND state = 'running' AND worker_pid = $3 "
			  "  AND map_index = $4",
			  4, types, values, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
		return false;
	try_number = DatumGetInt32(col_datum(0, 1, &isnull));
	started_at = DatumGetTimestampTz(col_datum(0, 2, &isnull));
	evaluate_everything = true;
	return state_try_failed(slot->run_id, slot->task_id, slot->map_index, slot->pid, try_number,
							   psprintf("execution_timeout exceeded: the task went on after it was cancelled at its timeout, so its worker was terminated after %.3f s",
										(double) (now - started_at) / USECS_PER_SEC),
							   tick_now, false, false, NULL);
}

/* lappend_int() in a memory context that outlives the transaction */
static List *
keep_index(List *list, int index, MemoryContext keep)
{
	MemoryContext old = MemoryContextSwitchTo(keep);

	list = lappend_int(list, index);
	MemoryContextSwitchTo(old);
	return list;
}

/*
 * 5. Workers whose try must stop.  A try past its execution_timeout is
 * cancelled by its own worker; one whose instance is no longer its running
 * try (the run was cancelled or timed out, the DAG dropped) is cancelled
 * from here with SIGINT.  Either way, its work rolls back.  A query cancel
 * can be caught (PL/pgSQL's EXCEPTION WHEN query_canceled), so a try still
 * running ORCH_STOP_GRACE_MS later is stopped for good: its outcome is
 * recorded (unless already), then its worker is terminated (SIGTERM, which
 * nothing can catch).  Returns the pids to terminate once the recorded
 * outcomes commit.
 */
static List *
stop_workers(OrchWorkerSlot **slots_out, MemoryContext keep)
{
	MemoryContext old = MemoryContextSwitchTo(keep);
	OrchWorkerSlot *slots = progress_copy_slots();
	TimestampTz now = GetCurrentTimestamp();
	List	   *terminate = NIL;

	MemoryContextSwitchTo(old);

	for (int s = 0; s < orch_shared->nslots; s++)
	{
		OrchWorkerSlot *slot = &slots[s];
		Oid			types[4] = {INT8OID, TEXTOID, INT4OID, INT4OID};
		Datum		values[4];
		TimestampTz kill_at;

		if (slot->pid == 0 || slot->phase != SLOT_RUNNING)
			continue;

		if (slot->deadline != 0)
		{
			kill_at = TimestampTzPlusMilliseconds(slot->deadline, ORCH_STOP_GRACE_MS);
			if (now < kill_at)
				wake_by_real(kill_at, now);
			else
			{
				/* (a callback's row is dropped once its worker is gone) */
				if (slot->callback_id == 0 && record_timeout(slot, now))
					ereport(LOG,
							(errmsg("orchestrator: terminating worker %d: %s \"%s\" of run " INT64_FORMAT " went on past its timeout",
									slot->pid, slot->what, slot->task_id, slot->run_id)));
				terminate = keep_index(terminate, s, keep);
				continue;
			}
		}

		/* still its running try, or its callback still due */
		values[0] = Int64GetDatum(slot->run_id);
		values[1] = CStringGetTextDatum(slot->task_id);
		values[2] = Int32GetDatum(slot->pid);
		values[3] = Int32GetDatum(slot->map_index);
		if (slot->callback_id != 0)
			run_query("SELECT 1 FROM orchestrator.callback WHERE id = $1",
					  1, (Oid[]) {INT8OID}, (Datum[]) {Int64GetDatum(slot->callback_id)},
					  NULL, SPI_OK_SELECT);
		else
			run_query("SELECT 1 FROM orchestrator.task_instance "
					  "WHERE run_id = $1 AND task_id = $2 AND state = 'running' AND worker_pid = $3 "
					  "  AND map_index = $4",
					  4, types, values, NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			continue;

		if (slot->stop_requested_at == 0)
		{
			ereport(LOG,
					(errmsg("orchestrator: stopping worker %d: %s \"%s\" of run " INT64_FORMAT " was cancelled",
							slot->pid, slot->what, slot->task_id, slot->run_id)));
			signal_worker(s, slot, SIGINT, now);
			wake_by_real(TimestampTzPlusMilliseconds(now, ORCH_STOP_GRACE_MS), now);
			continue;
		}
		kill_at = TimestampTzPlusMilliseconds(slot->stop_requested_at, ORCH_STOP_GRACE_MS);
		if (now < kill_at)
			wake_by_real(kill_at, now);
		else
		{
			ereport(LOG,
					(errmsg("orchestrator: terminating worker %d: %s \"%s\" of run " INT64_FORMAT " went on after it was cancelled",
							slot->pid, slot->what, slot->task_id, slot->run_id)));
			terminate = keep_index(terminate, s, keep);
		}
	}

	/* the slots as they were, for the identity check at the kill */
	*slots_out = slots;
	return terminate;
}

/* Terminates the workers stop_workers() gave up on, still on those tries. */
static void
terminate_workers(List *terminate, OrchWorkerSlot *slots)
{
	ListCell   *lc;

	foreach(lc, terminate)
		signal_worker(lfirst_int(lc), &slots[lfirst_int(lc)], SIGTERM, 0);
}

/*
 * The last two times the schedule fired at or before "now": the latest
 * complete data interval [*start, *end].
 */
static bool
latest_interval(const CronSchedule *sched, pg_tz *tz, TimestampTz now,
				TimestampTz *start, TimestampTz *end)
{
	for (int64 window = USECS_PER_HOUR; window < 40 * 366 * USECS_PER_DAY; window *= 4)
	{
		TimestampTz t = now - window;
		TimestampTz x;
		bool		have_last = false,
					have_prev = false;
		int			steps = 0;

		while (cron_next_time(sched, tz, t, &x) && x <= now && steps++ < 100000)
		{
			*start = *end;
			have_prev = have_last;
			*end = x;
			have_last = true;
			t = x;
		}
		if (have_prev)
			return true;
	}
	return false;
}

typedef struct DagRow
{
	char	   *dag_id;
	char	   *schedule;
	TimestampTz start;			/* start_date, or created_at */
	bool		has_end;
	TimestampTz end_date;
	bool		catchup;
	int			max_active_runs;
	char	   *timezone;
	TransactionId xmin;			/* of its row: changes with its definition */
	int64		active;			/* its queued and running runs */
	bool		idle;			/* none, as the scheduling read found it */
	bool		skipped;		/* locked by another transaction */
	TimestampTz next_check;		/* when it next needs looking at */
} DagRow;

/*
 * What the scheduler knows of a DAG with a schedule: when it next needs
 * looking at, as long as neither its row nor its number of active runs
 * changed, and its definition as of its row's version.  A pass looks only
 * at the DAGs due, so its cost does not grow with the DAGs defined; and
 * it reads none of their definitions while none changed (a due DAG's row
 * is read once, locked, by the scheduling read).
 */
typedef struct DagCacheEntry
{
	char		dag_id[ORCH_MAX_ID_LEN + 1];	/* the key */
	TransactionId xmin;			/* invalid: to be listed again */
	int64		active;
	TimestampTz next_check;
	bool		blocked;		/* at max_active_runs: looked at each pass */
	uint64		listed;			/* the listing that last returned it */
	DagRow	   *def;			/* its definition at xmin (dag_cache_cxt) */
} DagCacheEntry;

static HTAB *dag_cache = NULL;
static MemoryContext dag_cache_cxt = NULL;	/* the cache and its definitions */

/*
 * No entry of the cache needs a look before this time: until then a pass
 * reads none of them (an idle pass's cost does not grow with the DAGs).
 * Lowered as entries are set; raised only by a walk through them all.
 */
static TimestampTz cache_earliest = DT_NOBEGIN;

/*
 * Every DAG is listed when definitions changed (a trigger on dag and task
 * bumps a generation at commit, orchestrator.c), at the first pass, after
 * the test clock moved back, and at a pass a minute or more after the last
 * full listing if the tables were written since (should a change have
 * come by a way that fires no trigger: a restore with triggers disabled;
 * definitions_written).  Other passes read none of the DAGs the
 * cache says are due (it holds their definitions), and list only those
 * blocked at max_active_runs or to be listed again: a trigger_dag or a
 * finished run costs no look at 10,000 DAGs, and a thousand DAGs due
 * are read once each, by the scheduling read.
 */
static uint64 definitions_listed = PG_UINT64_MAX;
static uint64 listings = 0;
static TimestampTz last_full_listing = 0;	/* real time */
static int64 written_at_listing = -1;	/* definitions_written() then */

#define FULL_LISTING_EVERY	(60 * USECS_PER_SEC)

/* after an error, a DAG is tried again this much later (or when changed) */
#define DAG_RETRY_AFTER_ERROR	(60 * USECS_PER_SEC)

/*
 * What the scheduler keeps of each running run between passes: when to
 * look at it next (4. below).  The scheduling phase decides the runs it
 * creates (decide_new_runs), the deciding phase the others.
 */
typedef struct RunCacheEntry
{
	int64		run_id;			/* the key */
	TimestampTz next_eval;
	bool		seen;			/* still running at this pass */
} RunCacheEntry;

static HTAB *run_cache = NULL;

#define RUN_EVAL_EVERY		(60 * USECS_PER_SEC)
/* a run skipped (locked) or failed: evaluated at the next pass, whatever the clock */
#define EVAL_AT_NEXT_PASS	DT_NOBEGIN

typedef struct RunEval
{
	int64		run_id;
	TimestampTz next_eval;		/* out */
} RunEval;

/*
 * A run about to be decided (locked, or new: no other transaction sees it
 * yet): its next look by its deadline, or, past its dagrun_timeout, failed
 * here instead (false: nothing more to decide).
 */
static bool
eval_prepare(RunEval *eval, RunRef *run)
{
	eval->next_eval = tick_now + RUN_EVAL_EVERY;
	if (run->has_timeout)
	{
		if (run->deadline <= tick_now)
		{
			ereport(LOG,
					(errmsg("orchestrator: run " INT64_FORMAT " of DAG \"%s\" exceeded its dagrun_timeout",
							run->run_id, run->dag_id)));
			state_fail_run(run->run_id, "dagrun_timeout exceeded", tick_now, true);
			/* a run slot is free, and room under max_active_tasks */
			evaluate_everything = true;
			wake_by(tick_now);
			return false;
		}
		eval->next_eval = Min(eval->next_eval, run->deadline);
	}
	run->skip_locked_dag = true;
	return true;
}

/* A run decided: its next look by what happened. */
static void
eval_finish(RunEval *eval, const Advance *adv)
{
	if (adv->dag_locked)
		eval->next_eval = EVAL_AT_NEXT_PASS;
	if (adv->retry_at != 0)
		eval->next_eval = Min(eval->next_eval, adv->retry_at);
	if (adv->ended)
		wake_by(tick_now);		/* a run slot is free: schedule again at once */
}

static void
run_cache_init(void)
{
	HASHCTL		ctl;

	if (run_cache != NULL)
		return;
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(RunCacheEntry);
	run_cache = hash_create("orchestrator runs", 256, &ctl, HASH_ELEM | HASH_BLOBS);
}

/* A run looked at (and committed, or not): when to look at it again. */
static void
note_evaluated(const RunEval *eval, bool committed)
{
	RunCacheEntry *entry;

	run_cache_init();
	entry = hash_search(run_cache, &eval->run_id, HASH_ENTER, NULL);
	entry->next_eval = committed ? eval->next_eval : EVAL_AT_NEXT_PASS;
	entry->seen = true;
	/* again in a second (of real time: the test clock may stand still) */
	wake_by(entry->next_eval == EVAL_AT_NEXT_PASS ? tick_now + USECS_PER_SEC :
			entry->next_eval);
}

/* The runs a pass creates, inserted with one statement. */
typedef struct NewRuns
{
	ArrayBuildState *dag_ids;
	ArrayBuildState *starts;
	ArrayBuildState *ends;
	int			n;
} NewRuns;

static void
add_run(NewRuns *runs, const char *dag_id, TimestampTz start, TimestampTz end)
{
	runs->dag_ids = accumArrayResult(runs->dag_ids, CStringGetTextDatum(dag_id), false,
									 TEXTOID, CurrentMemoryContext);
	runs->starts = accumArrayResult(runs->starts, TimestampTzGetDatum(start), false,
									TIMESTAMPTZOID, CurrentMemoryContext);
	runs->ends = accumArrayResult(runs->ends, TimestampTzGetDatum(end), false,
								  TIMESTAMPTZOID, CurrentMemoryContext);
	runs->n++;
}

/*
 * The runs are created running: plan_runs creates none beyond
 * max_active_runs, counting the queued runs, which the starting phase
 * starts in the same pass.  (Created queued, each was written a second
 * time by that phase's UPDATE.)  With "returning", the runs created are
 * left in SPI_tuptable as RunRefs (state_read_run_ref), and counted.
 */
#define INSERT_RUNS \
	"INSERT INTO orchestrator.dag_run (dag_id, run_type, logical_date, " \
	" data_interval_start, data_interval_end, state, queued_at, started_at) " \
	"SELECT u.dag_id, 'scheduled', u.start, u.start, u.finish, 'running', $4, $4 " \
	"FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2), pg_catalog.unnest($3)) " \
	"     AS u(dag_id, start, finish) " \
	"ON CONFLICT (dag_id, logical_date) DO NOTHING"

static uint64
insert_runs(NewRuns *runs, bool returning)
{
	Datum		values[4];

	if (runs->n == 0)
		return 0;
	values[0] = makeArrayResult(runs->dag_ids, CurrentMemoryContext);
	values[1] = makeArrayResult(runs->starts, CurrentMemoryContext);
	values[2] = makeArrayResult(runs->ends, CurrentMemoryContext);
	values[3] = TimestampTzGetDatum(tick_now);
	memset(runs, 0, sizeof(NewRuns));
	if (!returning)
	{
		run_query(INSERT_RUNS, 4,
				  (Oid[]) {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID},
				  values, NULL, SPI_OK_INSERT);
		return SPI_processed;
	}
	/* (each new run's DAG under the KEY SHARE lock SCHEDULE_READ took) */
	run_query("WITH n AS (" INSERT_RUNS " RETURNING run_id, dag_id, started_at) "
			  "SELECT n.run_id, n.dag_id, d.max_active_tasks, n.started_at + d.dagrun_timeout, true "
			  "FROM n JOIN orchestrator.dag d ON d.dag_id = n.dag_id",
			  4, (Oid[]) {TEXTARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZOID},
			  values, NULL, SPI_OK_SELECT);
	return SPI_processed;
}

/*
 * The queued and running runs of the DAGs in the text[] ids, counted by
 * DAG in one read of the active runs: per DAG, statistics of a few runs of
 * one DAG (the table before a pass creates a thousand) read every run
 * once for each DAG.  Joined to the ids, not filtered by "= ANY (ids)":
 * on such statistics the runs were read in full, and each compared with
 * each of a hundred ids (2 ms a batch by the pass's end).
 */
#define ACTIVE_RUNS_OF_DAGS(ids) \
	"SELECT x.dag_id, count(*) AS n " \
	"FROM pg_catalog.unnest(" ids "::text[]) AS i(dag_id) " \
	"JOIN orchestrator.dag_run x ON x.dag_id = i.dag_id " \
	"WHERE x.state IN ('queued', 'running') " \
	"GROUP BY x.dag_id"

/*
 * What the scheduling of a DAG reads, under its row's KEY SHARE lock (what
 * inserting its runs takes; API changes hold more): its active runs, the
 * end of its last scheduled run's interval, and the logical dates from
 * there on that other runs hold (a manual run given that date, a backfill
 * ahead of the schedule: dag_run_unscheduled_idx, most often empty), and
 * its row's version (to tell whether the definition planned from is
 * still its own).  For one DAG or a batch.
 */
#define SCHEDULE_READ \
	"SELECT d.dag_id, coalesce(a.n, 0), l.run_id IS NOT NULL, l.data_interval_end, " \
	"       ARRAY(SELECT h.logical_date FROM orchestrator.dag_run h " \
	"             WHERE h.dag_id = d.dag_id AND h.run_type <> 'scheduled' " \
	"             AND h.logical_date >= coalesce(l.data_interval_end, d.start_date, d.created_at) " \
	"             ORDER BY h.logical_date), " \
	"       d.xmin::text::int8 " \
	"FROM orchestrator.dag d " \
	"LEFT JOIN (" ACTIVE_RUNS_OF_DAGS("$1") ") a ON a.dag_id = d.dag_id " \
	"LEFT JOIN LATERAL (SELECT r.run_id, r.data_interval_end FROM orchestrator.dag_run r " \
	"                   WHERE r.dag_id = d.dag_id AND r.run_type = 'scheduled' " \
	"                   ORDER BY r.logical_date DESC LIMIT 1) l ON true " \
	"WHERE d.dag_id = ANY ($1) AND NOT d.paused " \
	"FOR KEY SHARE OF d SKIP LOCKED"

/*
 * The logical dates another run holds (SCHEDULE_READ's last column),
 * ascending, taken in order as plan_runs goes through the intervals.
 */
typedef struct HeldDates
{
	Datum	   *dates;
	int			n;
	int			next;
} HeldDates;

/* Whether another run holds the interval that starts at "start". */
static bool
held_by_another_run(HeldDates *held, TimestampTz start)
{
	while (held->next < held->n && DatumGetTimestampTz(held->dates[held->next]) < start)
		held->next++;
	return held->next < held->n && DatumGetTimestampTz(held->dates[held->next]) == start;
}

/*
 * 2. The runs a DAG's schedule makes due.  A run's logical date is the
 * start of its data interval, and it is created once the interval has
 * ended.  With catchup, every interval from start_date on gets a run;
 * without, only the latest complete one.  No run starts after end_date, and
 * no more are created than max_active_runs allows.  An interval whose
 * logical date another run holds has that run as its own, as in Airflow:
 * the schedule goes on past it (else it would be planned again at every
 * pass, and a catchup would stop there).  The DAG's own next wake-up
 * (wake_by) is collected apart, into dag->next_check.
 */
static void
plan_runs(DagRow *dag, int64 active, bool have_last, TimestampTz last_end,
		  HeldDates *held, NewRuns *runs)
{
	CronSchedule sched;
	pg_tz	   *tz;

	cron_parse(dag->schedule, &sched);
	tz = orch_lookup_timezone(dag->timezone);

	if (sched.once)
	{
		if (have_last || held_by_another_run(held, dag->start))
			return;
		if (dag->start > tick_now)
		{
			wake_by(dag->start);
			return;
		}
		add_run(runs, dag->dag_id, dag->start, dag->start);
		dag->active = active + 1;
		return;
	}

	for (int created = 0; active < dag->max_active_runs;)
	{
		TimestampTz start;
		TimestampTz end;
		TimestampTz latest_start = 0;
		TimestampTz latest_end = 0;

		if (created >= MAX_RUNS_PER_TICK)
		{
			/* more next tick, at once */
			wake_by(tick_now);
			return;
		}
		if (have_last)
			start = last_end;
		else if (!cron_next_time(&sched, tz, dag->start - 1, &start))
			return;
		if (!cron_next_time(&sched, tz, start, &end))
			return;
		if (end > tick_now)
		{
			/* the next interval has not ended: nothing to skip either */
			if (!dag->has_end || start <= dag->end_date)
				wake_by(end);
			return;
		}
		/* without catchup, only the latest complete interval */
		if (!dag->catchup &&
			latest_interval(&sched, tz, tick_now, &latest_start, &latest_end) &&
			latest_start > start && latest_start >= dag->start)
		{
			start = latest_start;
			end = latest_end;
		}
		if (dag->has_end && start > dag->end_date)
			return;
		have_last = true;
		last_end = end;
		/* (not counted: the held dates are finite, and each is passed once) */
		if (held_by_another_run(held, start))
			continue;
		add_run(runs, dag->dag_id, start, end);
		created++;
		active++;
		dag->active = active;
	}
}

/*
 * plan_runs from SCHEDULE_READ's row, with the DAG's wake-ups collected
 * into dag->next_check; a DAG whose row changed since the definition in
 * hand was read is skipped (and listed again).
 */
static void
plan_runs_apart(DagRow *dag, int row, NewRuns *runs)
{
	TimestampTz saved_wake = tick_wake;
	bool		isnull;
	int64		active = DatumGetInt64(col_datum(row, 2, &isnull));
	bool		have_last = DatumGetBool(col_datum(row, 3, &isnull));
	Datum		d = col_datum(row, 4, &isnull);
	TimestampTz last_end = isnull ? 0 : DatumGetTimestampTz(d);
	HeldDates	held = {0};

	dag->idle = false;
	if ((TransactionId) DatumGetInt64(col_datum(row, 6, &isnull)) != dag->xmin)
	{
		/* its definition changed since it was listed: listed again */
		dag->skipped = true;
		wake_by(tick_now + USECS_PER_SEC);
		return;
	}
	dag->active = active;
	dag->idle = (active == 0);
	deconstruct_array(DatumGetArrayTypeP(col_datum(row, 5, &isnull)), TIMESTAMPTZOID,
					  sizeof(TimestampTz), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &held.dates, NULL, &held.n);
	tick_wake = DT_NOEND;
	PG_TRY();
	{
		plan_runs(dag, active, have_last, last_end, &held, runs);
	}
	PG_FINALLY();
	{
		dag->next_check = tick_wake;
		tick_wake = Min(saved_wake, tick_wake);
	}
	PG_END_TRY();
}

/* One DAG, in its own subtransaction (in_batches): the fallback. */
static void
schedule_dag(void *arg)
{
	DagRow	   *dag = arg;
	NewRuns		runs = {0};
	Datum		ids = PointerGetDatum(construct_array((Datum[]) {CStringGetTextDatum(dag->dag_id)},
													  1, TEXTOID, -1, false, TYPALIGN_INT));

	dag->next_check = DT_NOEND;
	run_query(SCHEDULE_READ, 1, (Oid[]) {TEXTARRAYOID}, &ids, NULL, SPI_OK_SELECT);
	if (SPI_processed == 0)
	{
		dag->skipped = true;
		wake_by(tick_now + USECS_PER_SEC);
		return;
	}
	plan_runs_apart(dag, 0, &runs);
	/* (decided by the deciding phase) */
	insert_runs(&runs, false);
}

/*
 * A batch of due DAGs with two statements: one reads them all, one inserts
 * their runs.  False if anything failed (rolled back): then each DAG goes
 * on its own, so that one bad definition holds up no other.
 */
typedef struct DagBatch
{
	DagRow	  **dags;
	int			n;
	List	   *decided;		/* out: the new runs it decided (RunEval) */
} DagBatch;

/*
 * The runs a batch just created, decided in its transaction as the
 * deciding phase would (state.c): no other transaction sees them yet, so
 * none is locked first, and none is read or locked again by that phase
 * (evaluate_runs finds them in the run cache, to look at by their
 * deadline).  The runs state_evaluate_batch leaves (pools, expansions) are
 * left to that phase.
 */
static void
decide_new_runs(DagBatch *b, uint64 n)
{
	SPITupleTable *tuptable = SPI_tuptable;
	RunRef	   *runs = palloc(sizeof(RunRef) * Max(n, 1));
	RunEval    *evals = palloc(sizeof(RunEval) * Max(n, 1));
	Advance    *advs = palloc0(sizeof(Advance) * Max(n, 1));
	bool	   *decided = palloc(sizeof(bool) * Max(n, 1));
	int			nruns = 0;
	HTAB	   *idle;
	HASHCTL		ctl;

	/* the DAGs with no other run active (RunRef.dag_idle) */
	ctl.keysize = ORCH_MAX_ID_LEN + 1;
	ctl.entrysize = ORCH_MAX_ID_LEN + 1;
	ctl.hcxt = CurrentMemoryContext;
	idle = hash_create("orchestrator idle DAGs", Max(b->n, 1), &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < b->n; i++)
		if (b->dags[i]->idle && !b->dags[i]->skipped)
			(void) hash_search(idle, b->dags[i]->dag_id, HASH_ENTER, NULL);

	for (uint64 r = 0; r < n; r++)
	{
		SPI_tuptable = tuptable;
		state_read_run_ref(r, &runs[nruns]);
		runs[nruns].dag_idle = strlen(runs[nruns].dag_id) <= ORCH_MAX_ID_LEN &&
			hash_search(idle, runs[nruns].dag_id, HASH_FIND, NULL) != NULL;
		evals[nruns].run_id = runs[nruns].run_id;
		if (eval_prepare(&evals[nruns], &runs[nruns]))
			nruns++;
	}
	state_evaluate_batch(runs, nruns, tick_now, advs, decided);
	for (int k = 0; k < nruns; k++)
	{
		RunEval    *eval;

		if (!decided[k])
			continue;
		eval_finish(&evals[k], &advs[k]);
		eval = MemoryContextAlloc(tick_cxt, sizeof(RunEval));
		*eval = evals[k];
		b->decided = lappend(b->decided, eval);
	}
}

static void
schedule_batch_at_once(void *arg)
{
	DagBatch   *b = arg;
	ArrayBuildState *ids = NULL;
	NewRuns		runs = {0};
	HTAB	   *rows;
	HASHCTL		ctl;
	SPITupleTable *tuptable;
	uint64		nrows;

	ctl.keysize = ORCH_MAX_ID_LEN + 1;
	ctl.entrysize = ORCH_MAX_ID_LEN + 1 + sizeof(int);
	ctl.hcxt = CurrentMemoryContext;
	rows = hash_create("orchestrator due DAGs", b->n, &ctl,
					   HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	for (int i = 0; i < b->n; i++)
	{
		b->dags[i]->next_check = DT_NOEND;
		ids = accumArrayResult(ids, CStringGetTextDatum(b->dags[i]->dag_id), false,
							   TEXTOID, CurrentMemoryContext);
	}
	run_query(SCHEDULE_READ, 1, (Oid[]) {TEXTARRAYOID},
			  (Datum[]) {makeArrayResult(ids, CurrentMemoryContext)}, NULL, SPI_OK_SELECT);
	tuptable = SPI_tuptable;
	nrows = SPI_processed;
	for (uint64 r = 0; r < nrows; r++)
	{
		char	   *name = SPI_getvalue(tuptable->vals[r], tuptable->tupdesc, 1);
		char	   *entry = hash_search(rows, name, HASH_ENTER, NULL);

		*(int *) (entry + ORCH_MAX_ID_LEN + 1) = (int) r;
	}
	for (int i = 0; i < b->n; i++)
	{
		char	   *entry = hash_search(rows, b->dags[i]->dag_id, HASH_FIND, NULL);

		if (entry == NULL)
		{
			/* locked by an API call, or paused since the listing */
			b->dags[i]->skipped = true;
			wake_by(tick_now + USECS_PER_SEC);
			continue;
		}
		SPI_tuptable = tuptable;
		plan_runs_apart(b->dags[i], *(int *) (entry + ORCH_MAX_ID_LEN + 1), &runs);
	}
	decide_new_runs(b, insert_runs(&runs, true));
}

/* the new runs the pass's batches decided, for the run cache (tick_cxt) */
static List *decided_runs = NIL;

static bool
schedule_batch(DagRow **dags, int n)
{
	TimestampTz saved_wake = tick_wake;
	DagBatch	b = {dags, n, NIL};
	ErrorData  *edata = in_subxact(schedule_batch_at_once, &b);

	if (edata == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(tick_cxt);

		decided_runs = list_concat(decided_runs, b.decided);
		MemoryContextSwitchTo(old);
		return true;
	}
	ereport(DEBUG1,
			(errmsg("orchestrator scheduler: a batch of %d DAGs failed (%s); one at a time",
					n, edata->message)));
	FreeErrorData(edata);
	tick_wake = saved_wake;
	for (int i = 0; i < n; i++)
		dags[i]->skipped = false;
	return false;
}

/* The cache's copy of a DAG's definition, in one chunk (dag_cache_cxt). */
static DagRow *
dag_def_copy(const DagRow *dag)
{
	size_t		lid = strlen(dag->dag_id) + 1;
	size_t		lsched = strlen(dag->schedule) + 1;
	size_t		ltz = strlen(dag->timezone) + 1;
	DagRow	   *def = MemoryContextAlloc(dag_cache_cxt, sizeof(DagRow) + lid + lsched + ltz);
	char	   *p = (char *) (def + 1);

	*def = *dag;
	def->dag_id = memcpy(p, dag->dag_id, lid);
	def->schedule = memcpy(p + lid, dag->schedule, lsched);
	def->timezone = memcpy(p + lid + lsched, dag->timezone, ltz);
	return def;
}

static void
dag_cache_forget(DagCacheEntry *entry)
{
	if (entry->def != NULL)
		pfree(entry->def);
	hash_search(dag_cache, entry->dag_id, HASH_REMOVE, NULL);
}

static void
dag_cache_reset(void)
{
	if (dag_cache_cxt != NULL)
		MemoryContextReset(dag_cache_cxt);
	dag_cache = NULL;
}

/*
 * The DAGs the cache says need a look: those due whose definition it
 * holds, into *from_cache (allocated in tick_cxt); the others (blocked at
 * max_active_runs, or to be listed again) as a text[] of ids to read, or 0
 * if none.  The scheduler wakes by the others' times.
 */
static Datum
due_ids(List **from_cache)
{
	HASH_SEQ_STATUS seq;
	DagCacheEntry *entry;
	ArrayBuildState *ids = NULL;
	TimestampTz earliest = DT_NOEND;

	if (cache_earliest > tick_now)
	{
		wake_by(cache_earliest);
		return (Datum) 0;
	}
	hash_seq_init(&seq, dag_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
	{
		if (entry->next_check <= tick_now && entry->def != NULL &&
			TransactionIdIsValid(entry->xmin))
		{
			/*
			 * no definition changed since the last full listing: as listed
			 * then (the scheduling read skips it should its row have changed
			 * since, plan_runs_apart)
			 */
			MemoryContext old = MemoryContextSwitchTo(tick_cxt);
			DagRow	   *dag = palloc(sizeof(DagRow));

			*dag = *entry->def;
			dag->dag_id = pstrdup(entry->def->dag_id);
			dag->schedule = pstrdup(entry->def->schedule);
			dag->timezone = pstrdup(entry->def->timezone);
			dag->xmin = entry->xmin;
			dag->active = entry->active;
			dag->idle = false;
			dag->skipped = false;
			*from_cache = lappend(*from_cache, dag);
			MemoryContextSwitchTo(old);
			entry->listed = listings;
			earliest = tick_now;
		}
		else if (entry->next_check <= tick_now || entry->blocked)
		{
			ids = accumArrayResult(ids, CStringGetTextDatum(entry->dag_id), false,
								   TEXTOID, CurrentMemoryContext);
			/* (set again by this pass: a walk at the next one) */
			earliest = tick_now;
		}
		else
		{
			wake_by(entry->next_check);
			earliest = Min(earliest, entry->next_check);
		}
	}
	cache_earliest = earliest;
	return ids == NULL ? (Datum) 0 : makeArrayResult(ids, CurrentMemoryContext);
}

/*
 * The rows of dag and task inserted, updated or deleted, by the cumulative
 * statistics (which count them whatever fires or not), or -1 if they are
 * not counted (track_counts = off).  A change that fired no trigger shows
 * here within a second or so of its commit.
 */
static int64
definitions_written(void)
{
	static const char *const tables[] = {"dag", "task"};
	Oid			nsp = get_namespace_oid("orchestrator", true);
	int64		written = 0;

	if (!pgstat_track_counts || !OidIsValid(nsp))
		return -1;
	for (int i = 0; i < lengthof(tables); i++)
	{
		Datum		relid = ObjectIdGetDatum(get_relname_relid(tables[i], nsp));

		written += DatumGetInt64(DirectFunctionCall1(pg_stat_get_tuples_inserted, relid)) +
			DatumGetInt64(DirectFunctionCall1(pg_stat_get_tuples_updated, relid)) +
			DatumGetInt64(DirectFunctionCall1(pg_stat_get_tuples_deleted, relid));
	}
	return written;
}

/*
 * The DAGs with a schedule that need a look, read in the pass's first
 * transaction: all of them, or those the cache says are due.  A minute
 * after the last full listing, every DAG is listed again only if the
 * definitions' tables were written since (so that the pass of the
 * thousand DAGs due at 12:30, after an idle minute, is not also a listing
 * of all ten thousand).
 */
static List *
due_dags(void)
{
	List	   *dags = NIL;
	Datum		ids = (Datum) 0;
	MemoryContext old;
	bool		full;
	uint64		nrows = 0;

	if (dag_cache == NULL)
	{
		HASHCTL		ctl;

		if (dag_cache_cxt == NULL)
			dag_cache_cxt = AllocSetContextCreate(TopMemoryContext, "orchestrator DAGs",
												  ALLOCSET_DEFAULT_SIZES);
		ctl.keysize = ORCH_MAX_ID_LEN + 1;
		ctl.entrysize = sizeof(DagCacheEntry);
		ctl.hcxt = dag_cache_cxt;
		dag_cache = hash_create("orchestrator DAGs", 1024, &ctl,
								HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
		definitions_listed = PG_UINT64_MAX;
		cache_earliest = DT_NOBEGIN;
	}

	listings++;
	full = definitions_listed != orch_definitions_generation();
	if (!full && GetCurrentTimestamp() - last_full_listing >= FULL_LISTING_EVERY)
	{
		int64		written = definitions_written();

		full = written < 0 || written != written_at_listing;
		last_full_listing = GetCurrentTimestamp();
	}
	if (full)
	{
		definitions_listed = orch_definitions_generation();
		last_full_listing = GetCurrentTimestamp();
		/* (before the listing's snapshot: a write counted later lists again) */
		written_at_listing = definitions_written();
		/* the active runs counted from the few active ones, not per DAG */
		run_query("SELECT d.dag_id, d.schedule, coalesce(d.start_date, d.created_at), d.end_date, "
				  "       d.catchup, d.max_active_runs, d.timezone, d.xmin::text::int8, "
				  "       coalesce(a.n, 0) "
				  "FROM orchestrator.dag d "
				  "LEFT JOIN (SELECT r.dag_id, count(*) AS n FROM orchestrator.dag_run r "
				  "           WHERE r.state IN ('queued', 'running') GROUP BY r.dag_id) a "
				  "       ON a.dag_id = d.dag_id "
				  "WHERE NOT d.paused AND d.schedule IS NOT NULL "
				  "AND EXISTS (SELECT 1 FROM orchestrator.task t WHERE t.dag_id = d.dag_id)",
				  0, NULL, NULL, NULL, SPI_OK_SELECT);
		nrows = SPI_processed;
	}
	else if ((ids = due_ids(&dags)) != (Datum) 0)
	{
		run_query("SELECT d.dag_id, d.schedule, coalesce(d.start_date, d.created_at), d.end_date, "
				  "       d.catchup, d.max_active_runs, d.timezone, d.xmin::text::int8, "
				  "       coalesce(a.n, 0) "
				  "FROM orchestrator.dag d "
				  "LEFT JOIN (" ACTIVE_RUNS_OF_DAGS("$1") ") a ON a.dag_id = d.dag_id "
				  "WHERE d.dag_id = ANY ($1) AND NOT d.paused AND d.schedule IS NOT NULL "
				  "AND EXISTS (SELECT 1 FROM orchestrator.task t WHERE t.dag_id = d.dag_id)",
				  1, (Oid[]) {TEXTARRAYOID}, &ids, NULL, SPI_OK_SELECT);
		nrows = SPI_processed;
	}
	old = MemoryContextSwitchTo(tick_cxt);
	for (uint64 i = 0; i < nrows; i++)
	{
		DagRow	   *dag;
		DagCacheEntry *entry;
		bool		isnull;
		Datum		d;
		TransactionId xmin = (TransactionId) DatumGetInt64(col_datum(i, 8, &isnull));
		int64		active = DatumGetInt64(col_datum(i, 9, &isnull));
		char	   *dag_id = col_text(i, 1);

		if (strlen(dag_id) > ORCH_MAX_ID_LEN)
			continue;
		entry = hash_search(dag_cache, dag_id, HASH_FIND, NULL);
		if (entry != NULL)
			entry->listed = listings;
		if (entry != NULL && entry->xmin == xmin && entry->active == active &&
			entry->next_check > tick_now)
		{
			wake_by(entry->next_check);
			continue;
		}
		dag = palloc0(sizeof(DagRow));
		dag->dag_id = dag_id;
		dag->schedule = col_text(i, 2);
		dag->start = DatumGetTimestampTz(col_datum(i, 3, &isnull));
		d = col_datum(i, 4, &isnull);
		dag->has_end = !isnull;
		if (!isnull)
			dag->end_date = DatumGetTimestampTz(d);
		dag->catchup = DatumGetBool(col_datum(i, 5, &isnull));
		dag->max_active_runs = DatumGetInt32(col_datum(i, 6, &isnull));
		dag->timezone = col_text(i, 7);
		dag->xmin = xmin;
		dag->active = active;
		dags = lappend(dags, dag);
	}
	MemoryContextSwitchTo(old);

	/*
	 * No longer listed (paused, dropped, unscheduled, without tasks):
	 * forgotten.  After a full listing, every such DAG, so that no cached
	 * definition outlives its DAG's listing; else those read and not found.
	 */
	if (full)
	{
		HASH_SEQ_STATUS seq;
		DagCacheEntry *entry;

		hash_seq_init(&seq, dag_cache);
		while ((entry = hash_seq_search(&seq)) != NULL)
			if (entry->listed != listings)
				dag_cache_forget(entry);
	}
	else if (ids != (Datum) 0)
	{
		Datum	   *names;
		int			n;

		deconstruct_array(DatumGetArrayTypeP(ids), TEXTOID, -1, false, TYPALIGN_INT,
						  &names, NULL, &n);
		for (int i = 0; i < n; i++)
		{
			char	   *name = TextDatumGetCString(names[i]);
			DagCacheEntry *entry = hash_search(dag_cache, name, HASH_FIND, NULL);

			if (entry != NULL && entry->listed != listings)
				dag_cache_forget(entry);
		}
	}
	return dags;
}

/*
 * 2. The due DAGs, a hundred to a transaction, each batch with two
 * statements (or, if that fails, each DAG in a subtransaction of its
 * own); what each found (when it is next due) is cached, so later passes
 * skip it until then.
 */
static const char *
schedule_what(void *arg)
{
	return psprintf("cannot schedule DAG \"%s\"", ((DagRow *) arg)->dag_id);
}

static void
schedule_at_once(void **items, int n, bool *done)
{
	if (schedule_batch((DagRow **) items, n))
		memset(done, true, sizeof(bool) * n);
}

static void
schedule_dags(List *dags)
{
	int			n = list_length(dags);
	void	  **items = palloc(sizeof(void *) * Max(n, 1));
	XactResult *results = palloc(sizeof(XactResult) * Max(n, 1));
	int			i = 0;
	ListCell   *lc;
	bool		found;

	foreach(lc, dags)
		items[i++] = lfirst(lc);
	decided_runs = NIL;
	in_batches(schedule_dag, items, n, results, schedule_what, schedule_at_once);
	/* (committed with their batch) */
	foreach(lc, decided_runs)
		note_evaluated(lfirst(lc), true);
	decided_runs = NIL;

	for (i = 0; i < n; i++)
	{
		DagRow	   *dag = items[i];
		TimestampTz next_check = dag->next_check;
		DagCacheEntry *entry;

		entry = hash_search(dag_cache, dag->dag_id, HASH_ENTER, &found);
		if (found && entry->def != NULL)
			pfree(entry->def);
		entry->def = dag_def_copy(dag);
		entry->xmin = dag->xmin;
		entry->active = dag->active;
		entry->blocked = dag->active >= dag->max_active_runs;
		entry->listed = listings;
		/* locked by another transaction: at the next pass (in a second) */
		if (dag->skipped || results[i] == XACT_LOCKED)
		{
			entry->xmin = InvalidTransactionId;
			next_check = tick_now;
		}
		else if (results[i] == XACT_FAILED)
			next_check = tick_now + DAG_RETRY_AFTER_ERROR;
		entry->next_check = next_check;
		cache_earliest = Min(cache_earliest, entry->blocked ? tick_now : next_check);
	}
}

/*
 * 2b. Asset-triggered runs (assets.c): a DAG each of whose assets has had
 * an event since its last such run gets one, consuming those events.  A
 * DAG another transaction holds is looked at again in a second.
 */
static void
start_asset_run(void *arg)
{
	if (!assets_start_run((const char *) arg, tick_now))
		wake_by(tick_now + USECS_PER_SEC);
}

static const char *
asset_run_what(void *arg)
{
	return psprintf("cannot start an asset-triggered run of DAG \"%s\"", (const char *) arg);
}

static void
start_asset_runs(List *dags)
{
	int			n = list_length(dags);
	void	  **items = palloc(sizeof(void *) * Max(n, 1));
	XactResult *results = palloc(sizeof(XactResult) * Max(n, 1));
	int			i = 0;
	ListCell   *lc;

	if (n == 0)
		return;
	foreach(lc, dags)
		items[i++] = lfirst(lc);
	in_batches(start_asset_run, items, n, results, asset_run_what, NULL);
	for (i = 0; i < n; i++)
		if (results[i] != XACT_COMMITTED)
			wake_by(tick_now + USECS_PER_SEC);
}

/*
 * 3. Queued runs start, oldest logical date first, up to max_active_runs;
 * a run another transaction has locked waits for the next pass.
 */
static void
start_runs(void *arg)
{
	state_start_runs(tick_now);
}

/*
 * 4. One running run, decided as a whole (state.c): the safety net under
 * the workers, which decide their own tasks' downstream as they finish
 * them.  It also queues a run's first tasks, retries that came due, and
 * fails a run past its dagrun_timeout.  A run is looked at when it is new
 * to this scheduler, when one of its times comes (a retry, its timeout,
 * and once a minute at the least), and when anything asks for every run
 * to be looked at: an API call, a worker that could not decide, a lost
 * try.  A pass's cost does not grow with runs that nothing happened to.
 */
static void
evaluate_run(void *arg)
{
	RunEval    *eval = arg;
	RunRef		run;
	Advance		adv = {0};

	/* still running, and no API call (cancel_run, clear_task) or worker on it */
	if (!state_lock_run(eval->run_id, true, &run))
	{
		eval->next_eval = EVAL_AT_NEXT_PASS;
		return;
	}
	if (!eval_prepare(eval, &run))
		return;
	state_evaluate_run(&run, tick_now, &adv);
	eval_finish(eval, &adv);
}

/*
 * A batch of runs decided at once (state.c), in a subtransaction: the
 * runs it leaves (a run that changes more than its queue:
 * state_evaluate_batch), or all of them should it fail, are evaluated one
 * by one (evaluate_run).
 */
typedef struct EvalBatch
{
	RunEval   **evals;
	int			n;
	bool	   *done;
} EvalBatch;

static void
evaluate_batch(void *arg)
{
	EvalBatch  *b = arg;
	int64	   *ids = palloc(sizeof(int64) * b->n);
	RunRef	   *runs = palloc0(sizeof(RunRef) * b->n);
	bool	   *locked = palloc(sizeof(bool) * b->n);
	RunRef	   *batch = palloc(sizeof(RunRef) * b->n);
	int		   *which = palloc(sizeof(int) * b->n);
	Advance    *advs = palloc(sizeof(Advance) * b->n);
	bool	   *decided = palloc(sizeof(bool) * b->n);
	int			nbatch = 0;

	for (int i = 0; i < b->n; i++)
		ids[i] = b->evals[i]->run_id;
	state_lock_runs(ids, b->n, runs, locked);
	for (int i = 0; i < b->n; i++)
	{
		RunEval    *eval = b->evals[i];

		if (!locked[i])
		{
			/* as evaluate_run: ended, or held by an API call or a worker */
			eval->next_eval = EVAL_AT_NEXT_PASS;
			b->done[i] = true;
			continue;
		}
		if (!eval_prepare(eval, &runs[i]))
		{
			b->done[i] = true;
			continue;
		}
		batch[nbatch] = runs[i];
		which[nbatch++] = i;
	}
	state_evaluate_batch(batch, nbatch, tick_now, advs, decided);
	for (int k = 0; k < nbatch; k++)
	{
		if (!decided[k])
			continue;
		b->done[which[k]] = true;
		eval_finish(b->evals[which[k]], &advs[k]);
	}
}

static void
evaluate_at_once(void **items, int n, bool *done)
{
	EvalBatch	b = {(RunEval **) items, n, done};
	ErrorData  *edata = in_subxact(evaluate_batch, &b);

	if (edata == NULL)
		return;
	ereport(DEBUG1,
			(errmsg("orchestrator scheduler: a batch of %d runs failed (%s); one at a time",
					n, edata->message)));
	FreeErrorData(edata);
	memset(done, 0, sizeof(bool) * n);
}

static const char *
evaluate_what(void *arg)
{
	return psprintf("cannot evaluate run " INT64_FORMAT, ((RunEval *) arg)->run_id);
}

static void
evaluate_runs(void)
{
	int64	   *run_ids;
	int			n;
	bool		isnull;
	/* (a request is taken in any case: this pass answers it) */
	bool		requested = orch_take_evaluation_request();
	bool		everything = evaluate_everything || requested;
	HASH_SEQ_STATUS seq;
	RunCacheEntry *entry;
	void	  **evals;
	int			nevals = 0;
	XactResult *results;

	evaluate_everything = false;
	run_cache_init();

	orch_begin_xact();
	run_query("SELECT r.run_id FROM orchestrator.dag_run r "
			  "WHERE r.state = 'running' ORDER BY r.logical_date, r.run_id",
			  0, NULL, NULL, NULL, SPI_OK_SELECT);
	n = (int) SPI_processed;
	run_ids = MemoryContextAlloc(tick_cxt, sizeof(int64) * Max(n, 1));
	for (int i = 0; i < n; i++)
		run_ids[i] = DatumGetInt64(col_datum(i, 1, &isnull));
	orch_end_xact();

	hash_seq_init(&seq, run_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
		entry->seen = false;

	evals = palloc(sizeof(void *) * Max(n, 1));
	for (int i = 0; i < n; i++)
	{
		bool		found;
		RunEval    *eval;

		entry = hash_search(run_cache, &run_ids[i], HASH_ENTER, &found);
		entry->seen = true;
		if (found && !everything && entry->next_eval > tick_now)
		{
			wake_by(entry->next_eval);
			continue;
		}
		eval = palloc(sizeof(RunEval));
		eval->run_id = run_ids[i];
		eval->next_eval = tick_now + USECS_PER_SEC;
		evals[nevals++] = eval;
	}
	results = palloc(sizeof(XactResult) * Max(nevals, 1));
	in_batches(evaluate_run, evals, nevals, results, evaluate_what, evaluate_at_once);
	for (int i = 0; i < nevals; i++)
		note_evaluated(evals[i], results[i] == XACT_COMMITTED);

	/* runs no longer running are forgotten */
	hash_seq_init(&seq, run_cache);
	while ((entry = hash_seq_search(&seq)) != NULL)
		if (!entry->seen)
			hash_search(run_cache, &entry->run_id, HASH_REMOVE, NULL);
}

/* Forgets the task workers that stopped; returns how many are left. */
static int
reap_workers(void)
{
	ListCell   *lc;

	foreach(lc, worker_handles)
	{
		BackgroundWorkerHandle *handle = lfirst(lc);
		pid_t		pid;

		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED)
		{
			worker_handles = foreach_delete_current(worker_handles, lc);
			pfree(handle);
		}
	}
	return list_length(worker_handles);
}

/*
 * Task workers for the queued instances, within this database's share of
 * orchestrator.max_workers and its cap (registry.c).  Returns how many
 * instances are left waiting for a worker.
 */
static int64
start_workers(int64 queued, int cap)
{
	int			active = reap_workers();
	int			allowed;
	int64		i;

	/* the cap first: workers handed work beyond it leave (registry.c) */
	registry_publish(active, (int) Min(queued, INT_MAX / 2), cap);

	/* workers waiting for work take it first: no process start */
	queued -= progress_hand_out((int) Min(queued, INT_MAX));

	if (GetCurrentTimestamp() - start_window >= USECS_PER_SEC)
	{
		start_window = GetCurrentTimestamp();
		starts_in_window = 0;
	}

	allowed = registry_budget(active, (int) Min(queued, INT_MAX / 2), cap);
	for (i = 0; i < queued && allowed > 0; i++)
	{
		BackgroundWorker worker;
		BackgroundWorkerHandle *handle;
		MemoryContext old;

		if (starts_in_window >= MAX_STARTS_PER_SECOND)
		{
			wake_by(tick_now + USECS_PER_SEC);
			return queued - i;
		}
		starts_in_window++;

		orch_bgworker_spec(&worker, "orch_worker_main", "orchestrator worker",
						   BGW_NEVER_RESTART, MyProcPid);
		worker.bgw_main_arg = ObjectIdGetDatum(MyDatabaseId);

		old = MemoryContextSwitchTo(TopMemoryContext);
		if (!RegisterDynamicBackgroundWorker(&worker, &handle))
		{
			MemoryContextSwitchTo(old);
			/* said once, not at every tick; try again shortly */
			if (!start_failure_logged)
				ereport(LOG,
						(errmsg("orchestrator: could not start a task worker: no background worker slot is free"),
						 errhint("Raise max_worker_processes (it must leave room for orchestrator.max_workers = %d).",
								 orch_max_workers)));
			start_failure_logged = true;
			wake_by(tick_now + 5 * USECS_PER_SEC);
			return queued - i;
		}
		worker_handles = lappend(worker_handles, handle);
		MemoryContextSwitchTo(old);
		start_failure_logged = false;
		active++;
		allowed--;
		/* counted at once, so that no other scheduler spends it too */
		registry_publish(active, (int) Min(queued - i - 1, INT_MAX / 2), cap);
	}
	return queued - i;
}

/*
 * Once a day (and when the scheduler starts): ended runs older than
 * orchestrator.history_retention go, with their task instances and
 * artifacts, in batches of a transaction each, so that no lock is held
 * long.  Runs still going are never touched.
 */
static void
apply_retention(bool installed)
{
	TimestampTz cutoff;
	int64		n;
	int64		total = 0;

	if (orch_history_retention == NULL || orch_history_retention[0] == '\0')
		return;
	if (last_purge != DT_NOBEGIN && tick_now - last_purge < USECS_PER_DAY)
	{
		wake_by(last_purge + USECS_PER_DAY);
		return;
	}
	last_purge = tick_now;
	wake_by(last_purge + USECS_PER_DAY);
	cutoff = DatumGetTimestampTz(DirectFunctionCall2(timestamptz_mi_interval,
													 TimestampTzGetDatum(tick_now),
													 DirectFunctionCall3(interval_in,
																		 CStringGetDatum(orch_history_retention),
																		 ObjectIdGetDatum(InvalidOid),
																		 Int32GetDatum(-1))));
	do
	{
		orch_begin_xact();
		n = OidIsValid(get_extension_oid("orchestrator", true)) ?
			orch_purge_batch(cutoff, InvalidOid, 1000) : 0;
		orch_end_xact();
		total += n;
		CHECK_FOR_INTERRUPTS();
	} while (n > 0);
	/* then the asset events no run kept and no DAG waits for (catalog 0.2) */
	do
	{
		if (!installed)
			break;
		orch_begin_xact();
		n = OidIsValid(get_extension_oid("orchestrator", true)) ?
			assets_purge(cutoff, 1000) : 0;
		orch_end_xact();
		CHECK_FOR_INTERRUPTS();
	} while (n > 0);
	if (total > 0)
		ereport(LOG,
				(errmsg("orchestrator: removed " INT64_FORMAT " runs that ended before %s (orchestrator.history_retention = '%s')",
						total, timestamptz_to_str(cutoff), orch_history_retention)));
}

/* the user and system CPU time between two getrusage calls, in ms */
static double
cpu_ms(const struct rusage *from, const struct rusage *to)
{
	return (double) (to->ru_utime.tv_sec - from->ru_utime.tv_sec +
					 to->ru_stime.tv_sec - from->ru_stime.tv_sec) * 1000.0 +
		(double) (to->ru_utime.tv_usec - from->ru_utime.tv_usec +
				  to->ru_stime.tv_usec - from->ru_stime.tv_usec) / 1000.0;
}

/* 0. The statistics of the busy tables, when they grew fast (dag.c). */
static void
analyze_grown(void *arg)
{
	orch_analyze_grown_tables();
}

/*
 * One tick; returns how long to sleep, in milliseconds.
 */
static long
scheduler_tick(void)
{
	int64		queued = 0;
	int			cap = cluster_cap;
	bool		isnull;
	TimestampTz real_now;
	long		sleep_ms;

	bool		installed;
	List	   *dags = NIL;
	List	   *asset_dags = NIL;
	TimestampTz pass_start = GetCurrentTimestamp();
	/* when scheduling, starting runs, deciding runs began, and ended */
	TimestampTz phases[4] = {pass_start, pass_start, pass_start, pass_start};
	struct rusage ru_start;
	struct rusage ru_end;

	getrusage(RUSAGE_SELF, &ru_start);
	orch_begin_xact();
	pgstat_report_activity(STATE_RUNNING, "scheduling");

	tick_now = orch_now();
	tick_wake = tick_now + MAX_SLEEP_MS * INT64CONST(1000);

	/* not installed (yet, or any more): CREATE EXTENSION wakes us */
	installed = catalog_usable();
	orch_end_xact();

	/* each in a transaction of its own (in_xact) */
	if (installed)
	{
		in_xact(analyze_grown, NULL, "cannot analyze the catalog's tables");
		in_xact(recover_work, NULL, "cannot recover lost work");
		/* when roles changed or DAGs were inserted (a restore): no polling */
		if (owners_mapped != owners_generation())
		{
			uint64		generation = owners_generation();
			bool		complete = false;

			if (in_xact(owners_map, &complete, "cannot map the owners of restored DAGs") ==
				XACT_COMMITTED && complete)
				owners_mapped = generation;
			else
				wake_by(tick_now + 10 * USECS_PER_SEC);
		}
		if (orch_enabled)
		{
			MemoryContext old;

			orch_begin_xact();
			dags = due_dags();
			old = MemoryContextSwitchTo(tick_cxt);
			asset_dags = assets_due_dags();
			MemoryContextSwitchTo(old);
			orch_end_xact();
		}
	}

	if (installed && orch_enabled)
	{
		phases[0] = GetCurrentTimestamp();
		schedule_dags(dags);
		start_asset_runs(asset_dags);
		/* (a thousand new runs: fresh statistics before they are read) */
		in_xact(analyze_grown, NULL, "cannot analyze the catalog's tables");
		phases[1] = GetCurrentTimestamp();
		in_xact(start_runs, NULL, "cannot start queued runs");
		phases[2] = GetCurrentTimestamp();
		evaluate_runs();
		phases[3] = GetCurrentTimestamp();
		/* pool slots freed by what no worker hands out (cancel, lost tries) */
		in_xact(hand_out_pools, NULL, "cannot queue the waiters of pools");

		orch_begin_xact();
		/* (each run looked up by key: no join planned on stale statistics) */
		run_query("SELECT (SELECT count(*) FROM orchestrator.task_instance ti "
				  "        WHERE ti.state = 'queued' "
				  "          AND (SELECT r.state FROM orchestrator.dag_run r "
				  "               WHERE r.run_id = ti.run_id) = 'running') "
				  "     + (SELECT count(*) FROM orchestrator.callback)",
				  0, NULL, NULL, NULL, SPI_OK_SELECT);
		queued = DatumGetInt64(col_datum(0, 1, &isnull));

		/*
		 * ALTER DATABASE ... SET orchestrator.max_workers_per_database
		 * applies from the next pass, without a restart
		 */
		run_query("SELECT pg_catalog.split_part(c, '=', 2)::int4 "
				  "FROM pg_catalog.pg_db_role_setting s, pg_catalog.unnest(s.setconfig) c "
				  "WHERE s.setdatabase = $1 AND s.setrole = 0 "
				  "AND c ~ '^orchestrator\\.max_workers_per_database=[0-9]{1,4}$'",
				  1, (Oid[]) {OIDOID}, (Datum[]) {ObjectIdGetDatum(MyDatabaseId)},
				  NULL, SPI_OK_SELECT);
		if (SPI_processed > 0)
			cap = DatumGetInt32(col_datum(0, 1, &isnull));
		orch_end_xact();
	}

	/*
	 * Once what this tick decided is committed (a run timed out, say), and
	 * also what API calls committed (cancel_run), workers whose task was
	 * taken from them are stopped.
	 */
	if (any_worker_running())
	{
		List	   *terminate = NIL;
		OrchWorkerSlot *slots = NULL;

		orch_begin_xact();
		if (OidIsValid(get_extension_oid("orchestrator", true)))
			terminate = stop_workers(&slots, tick_cxt);
		orch_end_xact();
		terminate_workers(terminate, slots);
	}
	pgstat_report_activity(STATE_IDLE, NULL);

	apply_retention(installed);

	if (queued > 0)
		queued = start_workers(queued, cap);
	/* for the budget and orchestrator.schedulers */
	registry_publish(reap_workers(), (int) Min(queued, INT_MAX / 2), cap);

	/* what a pass costs (bench/sched.sh reads it), and its CPU time */
	getrusage(RUSAGE_SELF, &ru_end);
	ereport(DEBUG1,
			(errmsg_internal("orchestrator scheduler: pass took %.3f ms, %d DAGs due, %lld queued "
							 "(listing %.1f ms, scheduling %.1f, starting %.1f, deciding %.1f; "
							 "CPU %.1f ms)",
							 (double) (GetCurrentTimestamp() - pass_start) / 1000.0,
							 list_length(dags), (long long) queued,
							 (double) (phases[0] - pass_start) / 1000.0,
							 (double) (phases[1] - phases[0]) / 1000.0,
							 (double) (phases[2] - phases[1]) / 1000.0,
							 (double) (phases[3] - phases[2]) / 1000.0,
							 cpu_ms(&ru_start, &ru_end))));

	/* the due times are on the scheduler's clock; the sleep on the real one */
	real_now = orch_now();
	sleep_ms = (long) Max((tick_wake - real_now) / 1000, 0);
	return Min(sleep_ms, MAX_SLEEP_MS);
}

void
orch_scheduler_main(Datum arg)
{
	long		sleep_ms;
	long		backoff_ms = 0;
	int			entry = DatumGetInt32(arg);
	Oid			dboid;

	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	/* the server's setting, before the database's own applies */
	cluster_cap = orch_max_workers_per_database;

	/* the launcher names the database in the entry it gave us (registry.c) */
	dboid = registry_dboid(entry);
	if (!OidIsValid(dboid))
		proc_exit(0);
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, 0);
	/* it is being dropped or renamed: not here */
	if (!registry_scheduler_attach(entry))
		proc_exit(0);
	sandbox_pin_session();
	pgstat_report_appname("orchestrator scheduler");

	StartTransactionCommand();
	my_dbname = MemoryContextStrdup(TopMemoryContext, get_database_name(MyDatabaseId));
	CommitTransactionCommand();

	/*
	 * The scheduler's commits need not wait for the disk: what a crash
	 * loses of them (a run created, started or ended, an instance queued)
	 * the next pass decides again, and a worker's claim, which is flushed,
	 * flushes every earlier commit with it.
	 */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	/*
	 * No JIT: the scheduler runs only its own short statements, and a
	 * batch's, costed over a hundred DAGs, crossed jit_above_cost and spent
	 * 50 ms compiling for a millisecond's work.
	 */
	SetConfigOption("jit", "off", PGC_SUSET, PGC_S_OVERRIDE);

	tick_cxt = AllocSetContextCreate(TopMemoryContext, "orchestrator tick",
									 ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		MemoryContextSwitchTo(tick_cxt);
		PG_TRY();
		{
			sleep_ms = scheduler_tick();
			backoff_ms = 0;
		}
		PG_CATCH();
		{
			/* log it, and try again later: the scheduler never gives up */
			MemoryContextSwitchTo(tick_cxt);
			EmitErrorReport();
			FlushErrorState();
			AbortCurrentTransaction();
			backoff_ms = backoff_ms == 0 ? 1000 : Min(backoff_ms * 2, 60000);
			sleep_ms = backoff_ms;
		}
		PG_END_TRY();
		MemoryContextSwitchTo(TopMemoryContext);
		MemoryContextReset(tick_cxt);

		/* no extension here (any more): the launcher starts us again at CREATE EXTENSION */
		if (extension_absent)
		{
			if (seen_installed)
				ereport(LOG,
						(errmsg("orchestrator scheduler of database \"%s\" stopped: the extension was dropped",
								my_dbname)));
			registry_scheduler_absent();
			proc_exit(0);
		}
		if (!seen_installed)
		{
			seen_installed = true;
			ereport(LOG,
					(errmsg("orchestrator scheduler started for database \"%s\"", my_dbname)));
		}

		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 sleep_ms, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
			/*
			 * the clock may have moved back (orchestrator.test_clock): what
			 * the caches say is due later may be due before; forward, what
			 * came due is looked at anyway
			 */
			if (orch_now() < tick_now)
			{
				dag_cache_reset();
				evaluate_everything = true;
			}
			/*
			 * and owners mapped again, should anything have been missed (the
			 * DAGs are listed again a minute after the last listing anyway)
			 */
			owners_mapped = PG_UINT64_MAX;
		}
	}
}
