/*-------------------------------------------------------------------------
 *
 * rules.h
 *	  The rules of runs and task instances, as pure functions: trigger
 *	  rules, which task instances of a run become ready, skipped or
 *	  upstream_failed, and a run's outcome from its leaves.  No catalog, no
 *	  memory allocation, no errors: state.c applies what they decide, and
 *	  test/unit/rules_test.c checks them on their own.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_RULES_H
#define ORCHESTRATOR_RULES_H

#include <stdbool.h>

/* a task instance's state (task_instance.state) */
typedef enum TiState
{
	TI_SCHEDULED,
	TI_QUEUED,
	TI_RUNNING,
	TI_SUCCESS,
	TI_FAILED,
	TI_UP_FOR_RETRY,
	TI_UPSTREAM_FAILED,
	TI_SKIPPED,
	TI_UP_FOR_RESCHEDULE,		/* a sensor between pokes: holds no worker */
	TI_NSTATES
} TiState;

/* a task's trigger rule (task.trigger_rule), Airflow's nine */
typedef enum TriggerRule
{
	TR_ALL_SUCCESS,
	TR_ALL_FAILED,
	TR_ALL_DONE,
	TR_ONE_SUCCESS,
	TR_ONE_FAILED,
	TR_NONE_FAILED,
	TR_NONE_SKIPPED,
	TR_NONE_FAILED_MIN_ONE_SUCCESS,
	TR_ALWAYS,
	TR_NRULES
} TriggerRule;

/* what a scheduled task instance's trigger rule says */
typedef enum Decision
{
	DECIDE_WAIT,				/* not yet: upstream still going */
	DECIDE_READY,				/* to be queued */
	DECIDE_SKIPPED,
	DECIDE_UPSTREAM_FAILED
} Decision;

/* a task instance's upstream instances, counted by state */
typedef struct UpstreamTally
{
	int			n;				/* all of them */
	int			success;
	int			skipped;
	int			failed;			/* failed or upstream_failed */
	int			done;			/* in a final state */
} UpstreamTally;

extern bool rules_parse_state(const char *name, TiState *state);
extern const char *rules_state_name(TiState state);
extern bool rules_parse_trigger_rule(const char *name, TriggerRule *rule);
extern const char *rules_trigger_rule_name(TriggerRule rule);

/* success, failed, upstream_failed or skipped: the instance will not run again */
extern bool rules_state_done(TiState state);

/*
 * queued or running: counts against max_active_tasks (a sensor between
 * pokes, up_for_reschedule, does not: it holds no worker)
 */
extern bool rules_state_active(TiState state);

/* up_for_retry or up_for_reschedule: queued again at its next_try_at */
extern bool rules_state_waiting(TiState state);

extern void rules_tally(UpstreamTally *tally, TiState upstream);
extern Decision rules_decide(TriggerRule rule, const UpstreamTally *tally);

/*
 * A run's task instances, as the evaluation of a run sees them.  upstream
 * holds indexes into the same array.  "removed" is an instance whose task
 * is no longer in the DAG; "retry_due" an up_for_retry instance whose next
 * try time has come, or an up_for_reschedule one (a sensor) whose next
 * poke has.
 */
typedef struct RuleTask
{
	TiState		state;
	TriggerRule rule;
	bool		removed;
	bool		retry_due;
	int			nupstream;
	const int  *upstream;
	bool		is_leaf;		/* no task of the run depends on it */
	bool		changed;		/* set by rules_evaluate_run */
	bool		ready;			/* set by it: ready, held back for want of budget */
} RuleTask;

/*
 * Decides a run until nothing changes: scheduled instances whose trigger
 * rule says so become skipped or upstream_failed (which propagates), ready
 * ones and due retries become queued while *budget (the free places under
 * max_active_tasks) lasts.  Changed instances get changed = true; those
 * ready but held back for want of budget get ready = true, and their
 * number is returned.
 */
extern int	rules_evaluate_run(RuleTask *tasks, int n, int *budget);

typedef enum RunOutcome
{
	RUN_GOING,					/* some instance is not done */
	RUN_SUCCEEDS,
	RUN_FAILS					/* a leaf failed or is upstream_failed */
} RunOutcome;

extern RunOutcome rules_run_outcome(const RuleTask *tasks, int n);

/*
 * A mapped task that became ready, by the number of its elements (-1: they
 * could not be had, its expand_query failed): one instance per element,
 * skipped when there are none (Airflow's rule), failed when there are more
 * than max_map_length or none could be had.
 */
typedef enum Expansion
{
	EXPAND_INSTANCES,
	EXPAND_SKIPPED,
	EXPAND_FAILED
} Expansion;

extern Expansion rules_expansion(long nelements, int max_map_length);

/* a task's weight rule (task.weight_rule), Airflow's three */
typedef enum WeightRule
{
	WR_DOWNSTREAM,				/* its own weight and all its downstream tasks' */
	WR_UPSTREAM,				/* its own weight and all its upstream tasks' */
	WR_ABSOLUTE,				/* its own weight */
	WR_NRULES
} WeightRule;

extern bool rules_parse_weight_rule(const char *name, WeightRule *rule);

/*
 * A task's effective weight, from its own weight and the sums of the
 * weights of its distinct upstream (ancestors) and downstream
 * (descendants) tasks; clamped to +-RULES_MAX_WEIGHT.
 */
#define RULES_MAX_WEIGHT	((int64) 1000000000000)
extern int64 rules_effective_weight(WeightRule rule, int64 own, int64 upstream_sum,
									int64 downstream_sum);

/*
 * A DAG's tasks as their weights see them: upstream holds indexes into the
 * same array; children[child_start[i] .. child_start[i + 1]) are task i's
 * direct downstream tasks.
 */
typedef struct RuleWeightTask
{
	int64		weight;			/* its own priority_weight */
	WeightRule	rule;
	int			nupstream;
	const int  *upstream;
} RuleWeightTask;

/*
 * The effective weight of each of a DAG's n tasks, into totals: its own
 * and the weights of all its distinct downstream (descendant) or upstream
 * (ancestor) tasks by its rule, each counted once however many paths lead
 * to it.  mark and stack are the caller's scratch arrays of n ints, mark
 * zeroed.  O(n * (n + edges)).
 */
extern void rules_weight_totals(const RuleWeightTask *tasks, int n,
								const int *child_start, const int *children,
								int64 *totals, int *mark, int *stack);

/*
 * How far ahead of its age a ready instance is claimed: its effective
 * weight times age_unit_ms (orchestrator.priority_weight_age), in
 * milliseconds, clamped to +-RULES_MAX_CLAIM_OFFSET_MS (about 31 years).
 * Claimed in order of (ready time - offset): weight first, then age, and
 * an instance waits behind later ones only while they are younger by less
 * than their weight's advance, so no flood starves it.
 */
#define RULES_MAX_CLAIM_OFFSET_MS	((int64) 1000000000000)
extern int64 rules_claim_offset_ms(int64 weight, int age_unit_ms);

#endif							/* ORCHESTRATOR_RULES_H */
