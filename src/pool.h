/*-------------------------------------------------------------------------
 *
 * pool.h
 *	  Pools: shared limits on running task instances across DAGs and
 *	  owners (see pool.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_POOL_H
#define ORCHESTRATOR_POOL_H

#include "nodes/pg_list.h"
#include "state.h"

/* the pools a DAG's tasks use, locked, and the slots each has free */
typedef struct PoolRoom
{
	int			n;
	char	  **names;
	int64	   *free;
} PoolRoom;

/*
 * Locks (FOR NO KEY UPDATE, in name order) the pools the DAG's tasks use,
 * and extra if not NULL, then counts their free slots with a snapshot
 * taken after the locks.  Call it with the DAG's row locked (state.c's
 * order of locks: run, DAG, pools, task instances).  With skip_locked, a
 * pool another transaction holds makes it return false.
 */
extern bool pool_lock(const char *dag_id, const char *extra, bool skip_locked,
					  PoolRoom *room);

/* whether an instance needing slots of pool fits, taking them if so */
extern bool pool_take(PoolRoom *room, const char *pool, int slots);

/* add_task's checks of (pool, pool_slots) for a task of dag_id */
extern void pool_check_task(Oid caller, const char *dag_id, const char *pool, int slots);

/*
 * After a task of pool ended (its transaction committed): queues the
 * pool's waiters of any DAG as far as the pool and their DAGs have room,
 * one transaction each; returns how many it queued.
 */
extern int	pool_hand_out(const char *pool);

/*
 * The scheduler's pass, in its transaction: the same for every pool with
 * waiters, never waiting for a lock; returns how many it queued.
 */
extern int	pool_hand_out_all(void);

#endif							/* ORCHESTRATOR_POOL_H */
