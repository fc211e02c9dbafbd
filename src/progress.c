/*-------------------------------------------------------------------------
 *
 * progress.c
 *	  A task worker's slot in shared memory: what it runs, for the
 *	  scheduler (a try whose worker holds no slot for it is lost; a try
 *	  past its deadline is stopped), and how far it got, for
 *	  orchestrator.progress.  The stream stages report bytes and rows here.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "orchestrator.h"

static OrchWorkerSlot *my_slot = NULL;

static void
slot_release(int code, Datum arg)
{
	if (my_slot == NULL)
		return;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	memset(my_slot, 0, sizeof(OrchWorkerSlot));
	LWLockRelease(orch_shared->lock);
	my_slot = NULL;
}

/*
 * Takes a free slot for this worker, released at exit; false if none, or
 * if its database is being dropped or renamed (registry.c: checked under
 * the same lock as the hold is taken, so a worker either is seen there by
 * the backend that holds it, or does not stay).
 */
bool
progress_slot_acquire(void)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < orch_shared->nslots; i++)
	{
		if (orch_shared->slots[i].pid == 0)
		{
			my_slot = &orch_shared->slots[i];
			memset(my_slot, 0, sizeof(OrchWorkerSlot));
			my_slot->pid = MyProcPid;
			my_slot->dboid = MyDatabaseId;
			my_slot->latch = MyLatch;
			break;
		}
	}
	for (int i = 0; my_slot != NULL && i < ORCH_MAX_HOLDS; i++)
		if (orch_shared->holds[i] == MyDatabaseId && orch_shared->hold_pids[i] != 0)
		{
			memset(my_slot, 0, sizeof(OrchWorkerSlot));
			my_slot = NULL;
		}
	LWLockRelease(orch_shared->lock);
	if (my_slot == NULL)
		return false;
	before_shmem_exit(slot_release, 0);
	return true;
}

/*
 * Says what the worker does: a task try (what = "task") or a callback (what
 * = its kind, callback_id its row), in which phase.  Claiming and idle
 * start afresh: no deadline, no stop request, no progress.
 */
void
progress_set(OrchSlotPhase phase, int64 run_id, const char *task_id, int map_index, Oid owner,
			 const char *what, int64 callback_id)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	if (phase == SLOT_CLAIMING || phase == SLOT_IDLE || phase == SLOT_WAITING)
	{
		my_slot->handed = false;
		my_slot->leave = false;
		my_slot->started_at = GetCurrentTimestamp();
		my_slot->bytes_read = 0;
		my_slot->rows_loaded = 0;
		my_slot->deadline = 0;
		my_slot->stop_requested_at = 0;
	}
	my_slot->phase = phase;
	my_slot->run_id = run_id;
	my_slot->owner = owner;
	my_slot->callback_id = callback_id;
	strlcpy(my_slot->task_id, task_id ? task_id : "", sizeof(my_slot->task_id));
	my_slot->map_index = map_index;
	strlcpy(my_slot->what, what ? what : "", sizeof(my_slot->what));
	LWLockRelease(orch_shared->lock);
}

/*
 * A copy of the slots of this database's workers, as they are now (for
 * the scheduler); those of other databases' workers are shown free: their
 * run ids and pids mean nothing here.
 */
OrchWorkerSlot *
progress_copy_slots(void)
{
	OrchWorkerSlot *slots = palloc(sizeof(OrchWorkerSlot) * orch_shared->nslots);

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	memcpy(slots, orch_shared->slots, sizeof(OrchWorkerSlot) * orch_shared->nslots);
	LWLockRelease(orch_shared->lock);
	for (int i = 0; i < orch_shared->nslots; i++)
		if (slots[i].dboid != MyDatabaseId)
			memset(&slots[i], 0, sizeof(OrchWorkerSlot));
	return slots;
}

/*
 * Hands work to up to n workers of this database that wait for some: their
 * latches are set, and they no longer leave when their wait ends.  Returns
 * how many.
 */
int
progress_hand_out(int n)
{
	int			handed = 0;

	if (orch_shared == NULL || n <= 0)
		return 0;
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < orch_shared->nslots && handed < n; i++)
	{
		OrchWorkerSlot *slot = &orch_shared->slots[i];

		if (slot->pid != 0 && slot->dboid == MyDatabaseId &&
			slot->phase == SLOT_WAITING && !slot->handed && !slot->leave)
		{
			slot->handed = true;
			SetLatch(slot->latch);
			handed++;
		}
	}
	LWLockRelease(orch_shared->lock);
	return handed;
}

/*
 * A worker whose wait for work ended: it gives its slot up and is to exit,
 * unless work was handed to it meanwhile (then it stays, and claims).
 */
bool
progress_leave_if_idle(void)
{
	bool		leave;

	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	leave = !my_slot->handed;
	if (leave)
	{
		memset(my_slot, 0, sizeof(OrchWorkerSlot));
		my_slot = NULL;
	}
	LWLockRelease(orch_shared->lock);
	return leave;
}

/*
 * Whether the worker was told to leave (its budget is wanted by another
 * database: registry.c), and not handed work meanwhile.
 */
bool
progress_told_to_leave(void)
{
	bool		leave;

	LWLockAcquire(orch_shared->lock, LW_SHARED);
	leave = my_slot->leave && !my_slot->handed;
	LWLockRelease(orch_shared->lock);
	return leave;
}

/*
 * Whether one of the slots (a copy) shows worker pid running a task try
 * (callback_id 0: run_id, task_id) or a callback (callback_id): a try or
 * callback whose worker holds no slot for it is lost.
 */
bool
progress_slots_show(const OrchWorkerSlot *slots, pid_t pid, int64 run_id,
					int map_index, const char *task_id, int64 callback_id)
{
	for (int s = 0; s < orch_shared->nslots; s++)
	{
		const OrchWorkerSlot *slot = &slots[s];

		if (slot->pid != pid || slot->phase == SLOT_IDLE || slot->phase == SLOT_WAITING)
			continue;
		if (callback_id != 0 ? slot->callback_id == callback_id :
			(slot->callback_id == 0 && slot->run_id == run_id &&
			 slot->map_index == map_index && strcmp(slot->task_id, task_id) == 0))
			return true;
	}
	return false;
}

/* Past this time (and the grace), the scheduler stops what the slot runs. */
void
progress_set_deadline(TimestampTz deadline)
{
	LWLockAcquire(orch_shared->lock, LW_EXCLUSIVE);
	my_slot->deadline = deadline;
	LWLockRelease(orch_shared->lock);
}

/* bytes read by the running task's source */
void
orch_progress_add_bytes(uint64 bytes)
{
	if (my_slot != NULL)
		my_slot->bytes_read += bytes;
}

/* rows loaded so far by the running task's COPY */
void
orch_progress_set_rows(uint64 rows)
{
	if (my_slot != NULL)
		my_slot->rows_loaded = rows;
}

PG_FUNCTION_INFO_V1(orch_worker_progress);

/*
 * worker_progress() RETURNS SETOF (pid, run_id, task_id, what, started_at,
 * bytes_read, rows_loaded, map_index): the tasks and callbacks of this database running
 * now, from shared memory: the calling role's own DAGs' (a superuser's: all), like
 * the catalog's row-level security.
 */
Datum
orch_worker_progress(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			role = GetUserId();
	bool		all = superuser();

	InitMaterializedSRF(fcinfo, 0);
	if (orch_shared == NULL)
		return (Datum) 0;
	for (int i = 0; i < orch_shared->nslots; i++)
	{
		OrchWorkerSlot slot;
		Datum		values[8];
		bool		nulls[8] = {0};

		LWLockAcquire(orch_shared->lock, LW_SHARED);
		slot = orch_shared->slots[i];
		LWLockRelease(orch_shared->lock);
		if (slot.pid == 0 || slot.phase != SLOT_RUNNING ||
			slot.dboid != MyDatabaseId || (!all && slot.owner != role))
			continue;
		values[0] = Int32GetDatum(slot.pid);
		values[1] = Int64GetDatum(slot.run_id);
		values[2] = CStringGetTextDatum(slot.task_id);
		nulls[2] = (slot.task_id[0] == '\0');
		values[3] = CStringGetTextDatum(slot.what);
		values[4] = TimestampTzGetDatum(slot.started_at);
		values[5] = Int64GetDatum((int64) slot.bytes_read);
		values[6] = Int64GetDatum((int64) slot.rows_loaded);
		values[7] = Int32GetDatum(slot.map_index);
		nulls[7] = (slot.map_index < 0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}
