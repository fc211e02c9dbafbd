/*-------------------------------------------------------------------------
 *
 * orchestrator.h
 *	  Declarations shared by the orchestrator extension's subsystems.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_H
#define ORCHESTRATOR_H

#include "datatype/timestamp.h"
#include "fmgr.h"
#include "postmaster/bgworker.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "nodes/pg_list.h"
#include "utils/jsonb.h"

#define ORCH_MAX_ID_LEN 250

/* settings (orchestrator.c) */
extern char *orch_database;
extern int	orch_max_workers;
extern int	orch_max_workers_per_database;
extern int	orch_max_tasks_per_dag;
extern int	orch_max_map_length;
extern int	orch_expand_query_timeout_ms;
extern bool orch_enabled;
extern bool orch_preloaded;
extern char *orch_http_allowed_hosts;
extern char *orch_history_retention;
extern char *orch_events;
extern int	orch_callback_timeout_ms;
extern int	orch_worker_idle_timeout_ms;
extern int	orch_priority_weight_age_ms;

/*
 * Shared memory (orchestrator.c): the scheduler's latch, and one slot per
 * task worker saying which task instance it runs.
 */
typedef enum OrchSlotPhase
{
	SLOT_IDLE,					/* no task */
	SLOT_WAITING,				/* no task, waiting on its latch for one */
	SLOT_CLAIMING,				/* claim not yet committed */
	SLOT_RUNNING,				/* claim committed: running the task */
	SLOT_FINISHING				/* recording the outcome: not to be signalled */
} OrchSlotPhase;

typedef struct OrchWorkerSlot
{
	pid_t		pid;			/* 0: free */
	Oid			dboid;			/* the database the worker is connected to */
	OrchSlotPhase phase;
	Latch	   *latch;			/* the worker's, to hand it work */
	bool		handed;			/* work was handed to it while it waited */
	bool		leave;			/* to exit: its budget is wanted elsewhere */
	int64		run_id;
	Oid			owner;			/* the DAG's owner, for the progress view */
	char		task_id[ORCH_MAX_ID_LEN + 1];	/* "" for a DAG's callback */
	int			map_index;		/* the mapped instance, -1: not mapped */
	char		what[NAMEDATALEN];	/* "task", or the callback's kind */
	int64		callback_id;	/* the callback's row, 0 for a task */
	/* when the try's execution_timeout ends (0: none), set by its worker */
	TimestampTz deadline;
	/* when the scheduler told it to stop (0: not yet), set by the scheduler */
	TimestampTz stop_requested_at;
	/* progress of the running task, written by its worker alone */
	TimestampTz started_at;
	volatile uint64 bytes_read;
	volatile uint64 rows_loaded;
} OrchWorkerSlot;

/*
 * One database's scheduler (registry.c).  The launcher assigns the entry
 * (dboid) before it starts the scheduler and frees it once it saw it stop;
 * the scheduler fills in the rest.
 */
typedef struct OrchSchedulerSlot
{
	Oid			dboid;			/* InvalidOid: free */
	pid_t		launcher_pid;	/* the launcher that assigned it */
	pid_t		pid;			/* 0: not running (yet, or any more) */
	Latch	   *latch;
	TimestampTz started_at;
	TimestampTz last_pass;
	bool		absent;			/* it left: the extension is not installed */
	int			workers;		/* task workers started and not seen stopped */
	int			queued;			/* task instances and callbacks waiting */
	int			cap;			/* orchestrator.max_workers_per_database */
	bool		wants_budget;	/* it has work it found no budget for */
	bool		evaluate_request;	/* every running run to be evaluated */
} OrchSchedulerSlot;

#define ORCH_MAX_POKES	32
#define ORCH_MAX_HOLDS	16

typedef struct OrchShared
{
	LWLock	   *lock;
	pid_t		launcher_pid;
	Latch	   *launcher_latch;
	/* databases where CREATE EXTENSION committed, for the launcher */
	int			npokes;
	bool		poke_all;		/* too many: look at every database again */
	Oid			pokes[ORCH_MAX_POKES];
	/* databases being dropped or renamed, and by which backend */
	Oid			holds[ORCH_MAX_HOLDS];
	pid_t		hold_pids[ORCH_MAX_HOLDS];
	int			nschedulers;
	OrchSchedulerSlot *schedulers;
	uint64		owners_generation;	/* bumped when owners may need mapping */
	uint64		definitions_generation; /* bumped when a dag or task row changed */
	int			nslots;
	OrchWorkerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} OrchShared;

extern OrchShared *orch_shared;

/*
 * How long a task told to stop (execution_timeout, cancel_run, a run's
 * timeout) has to stop on its own after the query cancel, before its worker
 * is terminated: PL/pgSQL can catch a cancel, not a termination.
 */
#define ORCH_STOP_GRACE_MS	3000

/* the catalog version this library works with (orchestrator.c) */
#define ORCH_CATALOG_VERSION "0.2"
extern char *orch_catalog_version(void);
extern void orch_require_catalog(void);

extern void orch_wake_scheduler(void);
extern void orch_request_evaluation(void);
extern bool orch_take_evaluation_request(void);
extern void orch_wake_scheduler_at_commit(void);
extern uint64 orch_definitions_generation(void);
extern void orch_poke_launcher_at_commit(Oid dboid);
extern TimestampTz orch_now(void);

/* the scheduler and workers (scheduler.c, worker.c) */
extern void orch_bgworker_spec(BackgroundWorker *worker, const char *function,
							   const char *type, int restart_time, pid_t notify_pid);
extern PGDLLEXPORT void orch_launcher_main(Datum arg);
extern PGDLLEXPORT void orch_scheduler_main(Datum arg);
extern PGDLLEXPORT void orch_worker_main(Datum arg);

/* the schedulers of the cluster and their worker budget (registry.c) */
#define ASSIGN_NONE_FREE		(-1)
#define ASSIGN_STILL_RUNNING	(-2)
extern int	registry_assign(Oid dboid);
extern bool registry_release(int index);
extern Oid	registry_dboid(int index);
extern bool registry_scheduler_attach(int index);
extern void registry_scheduler_absent(void);
extern int	registry_budget(int workers, int queued, int cap);
extern void registry_publish(int workers, int queued, int cap);
extern bool registry_worker_should_yield(void);
extern void registry_launcher_attach(void);
extern List *registry_take_pokes(bool *all);
extern void registry_poke(Oid dboid);
extern bool registry_held(Oid dboid);
extern void registry_hold(Oid dboid);
extern int	registry_signal_database(Oid dboid);
extern void registry_release_holds(void);
extern void registry_wake_scheduler(Oid dboid);
extern void registry_wake_all_schedulers(void);
extern void registry_request_evaluation(Oid dboid);
extern bool registry_take_evaluation_request(void);

/* what a backend tells the launcher (dbhooks.c) */
extern void dbhooks_init(void);

/* a worker's slot (progress.c) */
extern bool progress_slot_acquire(void);
extern void progress_set(OrchSlotPhase phase, int64 run_id, const char *task_id,
						 int map_index,
						 Oid owner, const char *what, int64 callback_id);
extern void progress_set_deadline(TimestampTz deadline);
extern OrchWorkerSlot *progress_copy_slots(void);
extern bool progress_slots_show(const OrchWorkerSlot *slots, pid_t pid, int64 run_id,
								int map_index,
								const char *task_id, int64 callback_id);
extern int	progress_hand_out(int n);
extern bool progress_leave_if_idle(void);
extern bool progress_told_to_leave(void);
extern void orch_progress_add_bytes(uint64 bytes);
extern void orch_progress_set_rows(uint64 rows);
extern void orch_begin_xact(void);
extern void orch_end_xact(void);

/* owners across clusters (owners.c) */
extern void owners_init(void);
extern void owners_changed_at_commit(void);
extern uint64 owners_generation(void);
extern void owners_map(void *arg);

/* events (events.c): a run's DAG, read with its row, for its instances' events */
extern void events_know_run(int64 run_id, const char *dag_id);

/* callbacks (callback.c), for the scheduler */
extern void orch_drop_lost_callbacks(void);

/* operator specs (operator.c) */
extern void operator_validate(Jsonb *spec, const char *task_id);
extern void callback_validate(Jsonb *spec, const char *what);
extern char *operator_input_task(Jsonb *spec);
extern const char *operator_name(Jsonb *spec);
extern bool operator_produces_artifact(const char *name);
extern bool operator_is_sensor(const char *name);
struct ArrayType;
extern List *outlets_validate(struct ArrayType *outlets, const char *task_id);

/* assets (assets.c) */
#define ORCH_MAX_ASSET_LEN 1000
extern void asset_check_name(const char *name);
extern bool asset_record(const char *name, Jsonb *extra, Oid recorded_by,
						 int64 source_run_id, const char *source_task_id,
						 int source_map_index, TimestampTz at);
extern List *assets_due_dags(void);
extern bool assets_start_run(const char *dag_id, TimestampTz now);
extern int64 assets_purge(TimestampTz cutoff, int limit);
extern JsonbValue *jsonb_get_key(Jsonb *obj, const char *key);

/* definitions (dag.c), also used by the run API (runs.c) */
typedef struct CatalogWrite
{
	Oid			caller;			/* the role calling the API */
	Oid			save_userid;
	int			save_sec_context;
} CatalogWrite;

extern void orch_check_id(const char *id, const char *kind);
extern void catalog_write_begin(CatalogWrite *cw);
extern void catalog_write_end(CatalogWrite *cw);
extern bool lock_owned_dag(CatalogWrite *cw, const char *dag_id,
						   bool missing_ok, bool creating);
extern void run_query(const char *query, int nargs, Oid *types,
					  Datum *values, const char *nulls, int expected);
/* the scheduler's: fresh statistics for the busy tables that grew (dag.c) */
extern void orch_analyze_grown_tables(void);

/* retention (runs.c) */
extern int64 orch_purge_batch(TimestampTz cutoff, Oid owner, int limit);

#endif							/* ORCHESTRATOR_H */
