/*-------------------------------------------------------------------------
 *
 * registry.c
 *	  The schedulers of the cluster, in shared memory: which database each
 *	  one serves, how it is doing (for orchestrator.schedulers), and the
 *	  one budget of task workers they share.
 *
 * The launcher assigns a scheduler entry to a database before it starts
 * the scheduler there (the entry's index is the scheduler's bgw_main_arg),
 * and frees it once it saw the scheduler stop; the scheduler says at each
 * pass how many workers it has started and how much work waits.
 *
 * The budget: orchestrator.max_workers task workers for the whole
 * cluster, shared out by water-filling: each database wants its workers
 * plus its queued work (at most its orchestrator.max_workers_per_database),
 * and the budget is filled from the smallest want up, so that a database
 * with a thousand queued tasks gets no more than an equal share while
 * another wants some.  A database over its share gives workers back as
 * they finish a task (registry_worker_should_yield); workers that wait for
 * work in another database are told to leave when a database below its
 * share finds the budget spent.
 *
 * Two more small things live here: the databases where CREATE EXTENSION
 * committed (pokes, for the launcher), and the databases a backend is
 * dropping or renaming (holds: no scheduler or worker starts there).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <signal.h>

#include "access/htup_details.h"
#include "catalog/pg_database.h"
#include "commands/dbcommands.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "orchestrator.h"

/* this scheduler's entry */
static OrchSchedulerSlot *my_entry = NULL;

/* whether this backend holds databases (dropping or renaming them) */
static bool holding = false;

/* ---- the launcher's side ---- */

/*
 * The launcher publishes its latch, for pokes and released holds.  A
 * launcher that starts again (it exited on an error) finds the schedulers
 * of the one before, whose handles it does not have: it asks them to exit,
 * and starts its own once they are gone (registry_assign).
 */
void
registry_launcher_attach(void)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	orch_shared->launcher_pid = MyProcPid;
	orch_shared->launcher_latch = MyLatch;
	for (int i = 0; i < orch_shared->nschedulers; i++)
		if (orch_shared->schedulers[i].pid != 0)
			kill(orch_shared->schedulers[i].pid, SIGTERM);
	LWLockRelease(orch_shared->lock);
}

/*
 * A free entry for a scheduler of database dboid: its index, or
 * ASSIGN_NONE_FREE, or ASSIGN_STILL_RUNNING while a scheduler of an earlier
 * launcher still runs there.  Entries of an earlier launcher whose
 * scheduler is gone are freed on the way.
 */
int
registry_assign(Oid dboid)
{
	int			found = ASSIGN_NONE_FREE;

	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < orch_shared->nschedulers; i++)
	{
		OrchSchedulerSlot *e = &orch_shared->schedulers[i];

		if (e->dboid != InvalidOid && e->launcher_pid != MyProcPid)
		{
			if (e->pid == 0)
				memset(e, 0, sizeof(*e));
			else if (e->dboid == dboid)
			{
				found = ASSIGN_STILL_RUNNING;
				break;
			}
		}
	}
	for (int i = 0; i < orch_shared->nschedulers && found == ASSIGN_NONE_FREE; i++)
	{
		OrchSchedulerSlot *e = &orch_shared->schedulers[i];

		if (e->dboid == InvalidOid)
		{
			memset(e, 0, sizeof(*e));
			e->dboid = dboid;
			e->launcher_pid = MyProcPid;
			found = i;
		}
	}
	LWLockRelease(orch_shared->lock);
	return found;
}

/*
 * Frees the entry of a scheduler that stopped; true if it left because the
 * extension is not installed in its database.
 */
bool
registry_release(int index)
{
	OrchSchedulerSlot *e = &orch_shared->schedulers[index];
	bool		absent;

	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	absent = e->absent;
	memset(e, 0, sizeof(*e));
	LWLockRelease(orch_shared->lock);
	return absent;
}

/* The databases poked since the last call (all: every one, again). */
List *
registry_take_pokes(bool *all)
{
	List	   *pokes = NIL;

	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	*all = orch_shared->poke_all;
	for (int i = 0; i < orch_shared->npokes; i++)
		pokes = lappend_oid(pokes, orch_shared->pokes[i]);
	orch_shared->npokes = 0;
	orch_shared->poke_all = false;

	/* holds of backends that are gone (they release them at transaction end) */
	for (int i = 0; i < ORCH_MAX_HOLDS; i++)
		if (orch_shared->hold_pids[i] != 0 &&
			kill(orch_shared->hold_pids[i], 0) != 0 && errno == ESRCH)
		{
			orch_shared->holds[i] = InvalidOid;
			orch_shared->hold_pids[i] = 0;
		}
	LWLockRelease(orch_shared->lock);
	return pokes;
}

/* ---- a backend's side ---- */

/*
 * Tells the launcher that database dboid has the extension now (CREATE
 * EXTENSION committed): it starts a scheduler there.
 */
void
registry_poke(Oid dboid)
{
	Latch	   *latch;

	if (orch_shared == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	if (orch_shared->npokes < ORCH_MAX_POKES)
		orch_shared->pokes[orch_shared->npokes++] = dboid;
	else
		orch_shared->poke_all = true;
	latch = orch_shared->launcher_latch;
	LWLockRelease(orch_shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/* Sets the latch of database dboid's scheduler, if one runs. */
void
registry_wake_scheduler(Oid dboid)
{
	Latch	   *latch = NULL;

	if (orch_shared == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_SHARED);
	for (int i = 0; i < orch_shared->nschedulers && latch == NULL; i++)
		if (orch_shared->schedulers[i].dboid == dboid &&
			orch_shared->schedulers[i].pid != 0)
			latch = orch_shared->schedulers[i].latch;
	LWLockRelease(orch_shared->lock);
	if (latch != NULL)
		SetLatch(latch);
}

/* Sets the latch of every scheduler (roles belong to the cluster). */
void
registry_wake_all_schedulers(void)
{
	if (orch_shared == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_SHARED);
	for (int i = 0; i < orch_shared->nschedulers; i++)
		if (orch_shared->schedulers[i].pid != 0 && orch_shared->schedulers[i].latch != NULL)
			SetLatch(orch_shared->schedulers[i].latch);
	LWLockRelease(orch_shared->lock);
}

/*
 * Asks database dboid's scheduler to evaluate every running run at its
 * next pass (what changed is not known to it): an API call, a worker that
 * could not decide.
 */
void
registry_request_evaluation(Oid dboid)
{
	if (orch_shared == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < orch_shared->nschedulers; i++)
		if (orch_shared->schedulers[i].dboid == dboid)
			orch_shared->schedulers[i].evaluate_request = true;
	LWLockRelease(orch_shared->lock);
}

/* The scheduler takes its database's request, if there is one. */
bool
registry_take_evaluation_request(void)
{
	bool		requested = false;

	if (orch_shared == NULL || my_entry == NULL)
		return false;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	requested = my_entry->evaluate_request;
	my_entry->evaluate_request = false;
	LWLockRelease(orch_shared->lock);
	return requested;
}

/* Whether a backend is dropping or renaming database dboid.  Under the lock. */
static bool
held_locked(Oid dboid)
{
	for (int i = 0; i < ORCH_MAX_HOLDS; i++)
		if (orch_shared->holds[i] == dboid && orch_shared->hold_pids[i] != 0)
			return true;
	return false;
}

bool
registry_held(Oid dboid)
{
	bool		held;

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	held = held_locked(dboid);
	LWLockRelease(orch_shared->lock);
	return held;
}

/*
 * Holds database dboid until this transaction ends: no scheduler or task
 * worker starts there meanwhile.  (With every hold taken, none is
 * recorded: the caller's signals still clear the way, and the command
 * fails as it would have if something came back meanwhile.)
 */
void
registry_hold(Oid dboid)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ORCH_MAX_HOLDS; i++)
		if (orch_shared->hold_pids[i] == 0)
		{
			orch_shared->holds[i] = dboid;
			orch_shared->hold_pids[i] = MyProcPid;
			holding = true;
			break;
		}
	LWLockRelease(orch_shared->lock);
}

/*
 * Asks the scheduler and the task workers of database dboid to exit
 * (SIGTERM, as autovacuum workers are asked); returns how many are left.
 */
int
registry_signal_database(Oid dboid)
{
	int			left = 0;

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	for (int i = 0; i < orch_shared->nschedulers; i++)
		if (orch_shared->schedulers[i].dboid == dboid &&
			orch_shared->schedulers[i].pid != 0)
		{
			kill(orch_shared->schedulers[i].pid, SIGTERM);
			left++;
		}
	for (int i = 0; i < orch_shared->nslots; i++)
		if (orch_shared->slots[i].dboid == dboid && orch_shared->slots[i].pid != 0)
		{
			kill(orch_shared->slots[i].pid, SIGTERM);
			left++;
		}
	LWLockRelease(orch_shared->lock);
	return left;
}

/* At the end of the transaction: this backend's holds go, and the launcher looks. */
void
registry_release_holds(void)
{
	Latch	   *latch;

	if (!holding || orch_shared == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < ORCH_MAX_HOLDS; i++)
		if (orch_shared->hold_pids[i] == MyProcPid)
		{
			orch_shared->holds[i] = InvalidOid;
			orch_shared->hold_pids[i] = 0;
		}
	orch_shared->poke_all = true;
	latch = orch_shared->launcher_latch;
	LWLockRelease(orch_shared->lock);
	holding = false;
	if (latch != NULL)
		SetLatch(latch);
}

/* ---- a scheduler's side ---- */

/* The database of scheduler entry "index" (before it connects). */
Oid
registry_dboid(int index)
{
	Oid			dboid = InvalidOid;

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	if (index >= 0 && index < orch_shared->nschedulers)
		dboid = orch_shared->schedulers[index].dboid;
	LWLockRelease(orch_shared->lock);
	return dboid;
}

static void
scheduler_detach(int code, Datum arg)
{
	if (my_entry == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	my_entry->pid = 0;
	my_entry->latch = NULL;
	my_entry->workers = 0;
	my_entry->queued = 0;
	my_entry->wants_budget = false;
	LWLockRelease(orch_shared->lock);
	my_entry = NULL;
}

/*
 * The scheduler takes its entry; false if it is not to run: its database
 * is being dropped or renamed, or the entry is not its own.
 */
bool
registry_scheduler_attach(int index)
{
	bool		ok;

	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	ok = (index >= 0 && index < orch_shared->nschedulers &&
		  orch_shared->schedulers[index].dboid == MyDatabaseId &&
		  orch_shared->schedulers[index].pid == 0 &&
		  !held_locked(MyDatabaseId));
	if (ok)
	{
		my_entry = &orch_shared->schedulers[index];
		my_entry->pid = MyProcPid;
		my_entry->latch = MyLatch;
		my_entry->started_at = GetCurrentTimestamp();
		my_entry->absent = false;
	}
	LWLockRelease(orch_shared->lock);
	if (ok)
		before_shmem_exit(scheduler_detach, 0);
	return ok;
}

/* The scheduler is leaving because its database has no extension. */
void
registry_scheduler_absent(void)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	if (my_entry != NULL)
		my_entry->absent = true;
	LWLockRelease(orch_shared->lock);
}

/*
 * What one scheduler's database wants of the budget: its workers that are
 * not waiting idle for work, and its queued work, up to its cap.  Under
 * the lock.
 */
static int
want_of(const OrchSchedulerSlot *e)
{
	int			cap = e->cap > 0 ? Min(e->cap, orch_max_workers) : orch_max_workers;
	int			idle = 0;

	for (int i = 0; i < orch_shared->nslots; i++)
	{
		OrchWorkerSlot *slot = &orch_shared->slots[i];

		if (slot->pid != 0 && slot->dboid == e->dboid &&
			((slot->phase == SLOT_WAITING && !slot->handed) || slot->leave))
			idle++;
	}
	return Min(cap, Max(e->workers - idle, 0) + e->queued);
}

/*
 * Each running scheduler's share of orchestrator.max_workers, by
 * water-filling from the smallest want up; under the lock.  quota[i] is
 * entry i's (0 for entries without a scheduler).
 */
static void
compute_quotas(int *quota)
{
	int			n = orch_shared->nschedulers;
	int		   *order = palloc(sizeof(int) * n);
	int			k = 0;
	int			remaining = orch_max_workers;

	for (int i = 0; i < n; i++)
	{
		quota[i] = 0;
		if (orch_shared->schedulers[i].pid != 0)
			order[k++] = i;
	}
	/* insertion sort by want (a handful of databases) */
	for (int i = 1; i < k; i++)
	{
		int			x = order[i];
		int			j = i - 1;

		while (j >= 0 && want_of(&orch_shared->schedulers[order[j]]) >
			   want_of(&orch_shared->schedulers[x]))
		{
			order[j + 1] = order[j];
			j--;
		}
		order[j + 1] = x;
	}
	for (int i = 0; i < k; i++)
	{
		int			share = Min(want_of(&orch_shared->schedulers[order[i]]),
								remaining / (k - i));

		quota[order[i]] = share;
		remaining -= share;
	}
	pfree(order);
}

/* the workers of all schedulers together; under the lock */
static int
total_workers(void)
{
	int			total = 0;
	int			running = 0;

	for (int i = 0; i < orch_shared->nschedulers; i++)
		if (orch_shared->schedulers[i].pid != 0)
			total += orch_shared->schedulers[i].workers;
	/*
	 * and the workers that run (a scheduler that stopped or started again
	 * counts its workers no more, while they finish their tasks)
	 */
	for (int i = 0; i < orch_shared->nslots; i++)
		if (orch_shared->slots[i].pid != 0)
			running++;
	return Max(total, running);
}

/* Wakes the schedulers that wait for budget (their share grew); under the lock. */
static void
wake_wanting(void)
{
	for (int i = 0; i < orch_shared->nschedulers; i++)
	{
		OrchSchedulerSlot *e = &orch_shared->schedulers[i];

		if (e != my_entry && e->pid != 0 && e->wants_budget && e->latch != NULL)
			SetLatch(e->latch);
	}
}

/* Records what this scheduler has and wants; under the lock. */
static void
publish_locked(int workers, int queued, int cap)
{
	bool		fewer = workers < my_entry->workers;

	my_entry->workers = workers;
	my_entry->queued = queued;
	my_entry->cap = cap;
	my_entry->last_pass = GetCurrentTimestamp();
	if (fewer || queued == 0)
		wake_wanting();
	if (queued == 0)
		my_entry->wants_budget = false;
}

/*
 * How many task workers this scheduler may start now, for "queued" waiting
 * instances, having "workers" started: within its share and the cluster's
 * budget.  When that is fewer than it wants, it is marked as wanting (woken
 * when budget frees), and if its share is not used up, workers that wait
 * for work in other databases are told to leave.
 */
int
registry_budget(int workers, int queued, int cap)
{
	int		   *quota;
	int			mine;
	int			n;
	int			total;

	if (my_entry == NULL || queued <= 0)
		return 0;
	quota = palloc(sizeof(int) * orch_shared->nschedulers);
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	publish_locked(workers, queued, cap);
	compute_quotas(quota);
	mine = quota[my_entry - orch_shared->schedulers];
	total = total_workers();
	n = Max(0, Min(queued, Min(mine - workers, orch_max_workers - total)));
	/* spent at once: another scheduler's budget sees them before they start */
	my_entry->workers = workers + n;
	/* woken when budget frees, even if its share is used: shares change */
	my_entry->wants_budget = (n < queued);
	if (my_entry->wants_budget && workers + n < mine)
	{
		int			reclaim = mine - workers - n;

		for (int i = 0; i < orch_shared->nslots && reclaim > 0; i++)
		{
			OrchWorkerSlot *slot = &orch_shared->slots[i];

			if (slot->pid != 0 && slot->dboid != MyDatabaseId &&
				slot->phase == SLOT_WAITING && !slot->handed && !slot->leave)
			{
				slot->leave = true;
				SetLatch(slot->latch);
				reclaim--;
			}
		}
	}
	LWLockRelease(orch_shared->lock);
	pfree(quota);
	return n;
}

/* At the end of each pass: what this scheduler has and wants. */
void
registry_publish(int workers, int queued, int cap)
{
	if (my_entry == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	publish_locked(workers, queued, cap);
	LWLockRelease(orch_shared->lock);
}

/* ---- a task worker's side ---- */

/*
 * Between two tasks: whether this worker should exit so that another
 * database gets its share (its own database has more workers than its
 * share while another, below its share, waits for budget), or because its
 * database has more workers than its orchestrator.max_workers_per_database
 * (lowered meanwhile, or workers that waited were handed work).  A worker that
 * says yes is no longer counted here, so its fellows do not all leave.
 */
bool
registry_worker_should_yield(void)
{
	int		   *quota;
	int			mine = -1;
	int			cap = 0;
	int			live = 0;
	bool		other_waits = false;
	OrchWorkerSlot *self = NULL;

	if (orch_shared == NULL)
		return false;

	/* mostly, no database waits and none has a cap: nothing to compute */
	LWLockAcquire(orch_shared->lock, LW_SHARED);
	for (int i = 0; i < orch_shared->nschedulers && !other_waits; i++)
	{
		OrchSchedulerSlot *e = &orch_shared->schedulers[i];

		other_waits = (e->pid != 0 &&
					   (e->dboid == MyDatabaseId ? e->cap > 0 : e->wants_budget));
	}
	LWLockRelease(orch_shared->lock);
	if (!other_waits)
		return false;
	other_waits = false;

	quota = palloc(sizeof(int) * orch_shared->nschedulers);
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	compute_quotas(quota);
	for (int i = 0; i < orch_shared->nschedulers; i++)
	{
		OrchSchedulerSlot *e = &orch_shared->schedulers[i];

		if (e->pid == 0)
			continue;
		if (e->dboid == MyDatabaseId)
		{
			mine = quota[i];
			cap = e->cap;
		}
		else if (e->wants_budget && e->workers < quota[i])
			other_waits = true;
	}
	for (int i = 0; i < orch_shared->nslots; i++)
	{
		OrchWorkerSlot *slot = &orch_shared->slots[i];

		if (slot->pid == MyProcPid)
			self = slot;
		if (slot->pid != 0 && slot->dboid == MyDatabaseId && !slot->leave)
			live++;
	}
	if (self != NULL &&
		((other_waits && mine >= 0 && live > mine) || (cap > 0 && live > cap)))
		self->leave = true;
	else
		self = NULL;
	LWLockRelease(orch_shared->lock);
	pfree(quota);
	return self != NULL;
}

PG_FUNCTION_INFO_V1(orch_scheduler_status);

/*
 * scheduler_status() RETURNS SETOF (datname, pid, started_at, last_pass,
 * workers, queued, max_workers_per_database): the running schedulers;
 * a superuser sees every database's, others their own database's.
 */
Datum
orch_scheduler_status(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	bool		all = superuser();

	InitMaterializedSRF(fcinfo, 0);
	if (orch_shared == NULL)
		return (Datum) 0;
	for (int i = 0; i < orch_shared->nschedulers; i++)
	{
		OrchSchedulerSlot e;
		Datum		values[7];
		bool		nulls[7] = {0};
		char	   *name;

		LWLockAcquire(orch_shared->lock, LW_SHARED);
		e = orch_shared->schedulers[i];
		LWLockRelease(orch_shared->lock);
		if (e.dboid == InvalidOid || e.pid == 0 ||
			(!all && e.dboid != MyDatabaseId))
			continue;
		name = get_database_name(e.dboid);
		if (name == NULL)
			continue;
		values[0] = DirectFunctionCall1(namein, CStringGetDatum(name));
		values[1] = Int32GetDatum(e.pid);
		values[2] = TimestampTzGetDatum(e.started_at);
		values[3] = TimestampTzGetDatum(e.last_pass);
		nulls[3] = (e.last_pass == 0);
		values[4] = Int32GetDatum(e.workers);
		values[5] = Int32GetDatum(e.queued);
		values[6] = Int32GetDatum(e.cap);
		nulls[6] = (e.cap <= 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
