/*-------------------------------------------------------------------------
 *
 * rules.c
 *	  The decisions of runs and task instances (see rules.h): pure
 *	  functions of states, shared by the scheduler, the task workers and
 *	  the SQL API through state.c.
 *
 * The trigger rules are Airflow's.  A rule decides as soon as the outcome
 * cannot change: all_success is upstream_failed at the first failed
 * upstream, one_success ready at the first success; the others wait until
 * every upstream instance is done.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "rules.h"

static const char *const state_names[TI_NSTATES] = {
	[TI_SCHEDULED] = "scheduled",
	[TI_QUEUED] = "queued",
	[TI_RUNNING] = "running",
	[TI_SUCCESS] = "success",
	[TI_FAILED] = "failed",
	[TI_UP_FOR_RETRY] = "up_for_retry",
	[TI_UPSTREAM_FAILED] = "upstream_failed",
	[TI_SKIPPED] = "skipped",
	[TI_UP_FOR_RESCHEDULE] = "up_for_reschedule",
};

static const char *const rule_names[TR_NRULES] = {
	[TR_ALL_SUCCESS] = "all_success",
	[TR_ALL_FAILED] = "all_failed",
	[TR_ALL_DONE] = "all_done",
	[TR_ONE_SUCCESS] = "one_success",
	[TR_ONE_FAILED] = "one_failed",
	[TR_NONE_FAILED] = "none_failed",
	[TR_NONE_SKIPPED] = "none_skipped",
	[TR_NONE_FAILED_MIN_ONE_SUCCESS] = "none_failed_min_one_success",
	[TR_ALWAYS] = "always",
};

bool
rules_parse_state(const char *name, TiState *state)
{
	for (int i = 0; i < TI_NSTATES; i++)
	{
		if (strcmp(name, state_names[i]) == 0)
		{
			*state = (TiState) i;
			return true;
		}
	}
	return false;
}

const char *
rules_state_name(TiState state)
{
	return (state >= 0 && state < TI_NSTATES) ? state_names[state] : "?";
}

bool
rules_parse_trigger_rule(const char *name, TriggerRule *rule)
{
	for (int i = 0; i < TR_NRULES; i++)
	{
		if (strcmp(name, rule_names[i]) == 0)
		{
			*rule = (TriggerRule) i;
			return true;
		}
	}
	return false;
}

const char *
rules_trigger_rule_name(TriggerRule rule)
{
	return (rule >= 0 && rule < TR_NRULES) ? rule_names[rule] : "?";
}

bool
rules_state_done(TiState state)
{
	return state == TI_SUCCESS || state == TI_FAILED ||
		state == TI_UPSTREAM_FAILED || state == TI_SKIPPED;
}

bool
rules_state_active(TiState state)
{
	return state == TI_QUEUED || state == TI_RUNNING;
}

bool
rules_state_waiting(TiState state)
{
	return state == TI_UP_FOR_RETRY || state == TI_UP_FOR_RESCHEDULE;
}

void
rules_tally(UpstreamTally *tally, TiState upstream)
{
	tally->n++;
	if (upstream == TI_SUCCESS)
		tally->success++;
	else if (upstream == TI_SKIPPED)
		tally->skipped++;
	else if (upstream == TI_FAILED || upstream == TI_UPSTREAM_FAILED)
		tally->failed++;
	if (rules_state_done(upstream))
		tally->done++;
}

Decision
rules_decide(TriggerRule rule, const UpstreamTally *t)
{
	bool		all_done = t->done == t->n;

	/* a task without upstream starts with its run */
	if (t->n == 0 || rule == TR_ALWAYS)
		return DECIDE_READY;

	switch (rule)
	{
		case TR_ALL_SUCCESS:
			if (t->failed > 0)
				return DECIDE_UPSTREAM_FAILED;
			if (t->skipped > 0)
				return DECIDE_SKIPPED;
			return t->success == t->n ? DECIDE_READY : DECIDE_WAIT;
		case TR_ALL_FAILED:
			if (t->success + t->skipped > 0)
				return DECIDE_SKIPPED;
			return t->failed == t->n ? DECIDE_READY : DECIDE_WAIT;
		case TR_ALL_DONE:
			return all_done ? DECIDE_READY : DECIDE_WAIT;
		case TR_ONE_SUCCESS:
			if (t->success > 0)
				return DECIDE_READY;
			if (!all_done)
				return DECIDE_WAIT;
			return t->skipped == t->n ? DECIDE_SKIPPED : DECIDE_UPSTREAM_FAILED;
		case TR_ONE_FAILED:
			if (t->failed > 0)
				return DECIDE_READY;
			return all_done ? DECIDE_SKIPPED : DECIDE_WAIT;
		case TR_NONE_FAILED:
			if (t->failed > 0)
				return DECIDE_UPSTREAM_FAILED;
			return all_done ? DECIDE_READY : DECIDE_WAIT;
		case TR_NONE_SKIPPED:
			if (t->skipped > 0)
				return DECIDE_SKIPPED;
			return all_done ? DECIDE_READY : DECIDE_WAIT;
		case TR_NONE_FAILED_MIN_ONE_SUCCESS:
			if (t->failed > 0)
				return DECIDE_UPSTREAM_FAILED;
			if (!all_done)
				return DECIDE_WAIT;
			return t->success > 0 ? DECIDE_READY : DECIDE_SKIPPED;
		case TR_ALWAYS:
		case TR_NRULES:
			break;
	}
	return DECIDE_WAIT;
}

int
rules_evaluate_run(RuleTask *tasks, int n, int *budget)
{
	bool		changed;
	int			held;

	do
	{
		changed = false;
		held = 0;
		for (int i = 0; i < n; i++)
		{
			RuleTask   *ti = &tasks[i];
			Decision	decision = DECIDE_WAIT;

			ti->ready = false;
			if (ti->state == TI_SCHEDULED)
			{
				if (ti->removed)
					decision = DECIDE_SKIPPED;
				else
				{
					UpstreamTally tally = {0};

					for (int u = 0; u < ti->nupstream; u++)
						rules_tally(&tally, tasks[ti->upstream[u]].state);
					decision = rules_decide(ti->rule, &tally);
				}
			}
			else if (rules_state_waiting(ti->state) && ti->retry_due)
				decision = DECIDE_READY;

			switch (decision)
			{
				case DECIDE_WAIT:
					continue;
				case DECIDE_READY:
					if (*budget <= 0)
					{
						ti->ready = true;
						held++;
						continue;
					}
					(*budget)--;
					ti->state = TI_QUEUED;
					break;
				case DECIDE_SKIPPED:
					ti->state = TI_SKIPPED;
					break;
				case DECIDE_UPSTREAM_FAILED:
					ti->state = TI_UPSTREAM_FAILED;
					break;
			}
			ti->changed = true;
			changed = true;
		}
	} while (changed);
	return held;
}

RunOutcome
rules_run_outcome(const RuleTask *tasks, int n)
{
	bool		failed = false;

	for (int i = 0; i < n; i++)
	{
		if (!rules_state_done(tasks[i].state))
			return RUN_GOING;
		if (tasks[i].is_leaf &&
			(tasks[i].state == TI_FAILED || tasks[i].state == TI_UPSTREAM_FAILED))
			failed = true;
	}
	return failed ? RUN_FAILS : RUN_SUCCEEDS;
}

Expansion
rules_expansion(long nelements, int max_map_length)
{
	if (nelements < 0 || nelements > max_map_length)
		return EXPAND_FAILED;
	if (nelements == 0)
		return EXPAND_SKIPPED;
	return EXPAND_INSTANCES;
}

static const char *const weight_rule_names[WR_NRULES] = {
	"downstream", "upstream", "absolute"
};

bool
rules_parse_weight_rule(const char *name, WeightRule *rule)
{
	for (int i = 0; i < WR_NRULES; i++)
	{
		if (strcmp(name, weight_rule_names[i]) == 0)
		{
			*rule = (WeightRule) i;
			return true;
		}
	}
	return false;
}

static int64
clamp64(int64 v, int64 limit)
{
	return v > limit ? limit : (v < -limit ? -limit : v);
}

int64
rules_effective_weight(WeightRule rule, int64 own, int64 upstream_sum,
					   int64 downstream_sum)
{
	/* (each term is clamped, so that the sum cannot overflow) */
	own = clamp64(own, RULES_MAX_WEIGHT);
	switch (rule)
	{
		case WR_DOWNSTREAM:
			return clamp64(own + clamp64(downstream_sum, RULES_MAX_WEIGHT), RULES_MAX_WEIGHT);
		case WR_UPSTREAM:
			return clamp64(own + clamp64(upstream_sum, RULES_MAX_WEIGHT), RULES_MAX_WEIGHT);
		case WR_ABSOLUTE:
		case WR_NRULES:
			break;
	}
	return own;
}

void
rules_weight_totals(const RuleWeightTask *tasks, int n, const int *child_start,
					const int *children, int64 *totals, int *mark, int *stack)
{
	for (int i = 0; i < n; i++)
	{
		bool		down = tasks[i].rule == WR_DOWNSTREAM;
		int64		sum = 0;
		int			depth = 0;

		if (tasks[i].rule != WR_DOWNSTREAM && tasks[i].rule != WR_UPSTREAM)
		{
			totals[i] = rules_effective_weight(tasks[i].rule, tasks[i].weight, 0, 0);
			continue;
		}
		/* every task reachable from i, once (marked i + 1), summed */
		mark[i] = i + 1;
		stack[depth++] = i;
		while (depth > 0)
		{
			int			t = stack[--depth];
			int			nnext = down ? child_start[t + 1] - child_start[t] : tasks[t].nupstream;
			const int  *next = down ? children + child_start[t] : tasks[t].upstream;

			for (int k = 0; k < nnext; k++)
			{
				int			v = next[k];

				if (v < 0 || v >= n || mark[v] == i + 1)
					continue;
				mark[v] = i + 1;
				sum += tasks[v].weight;
				stack[depth++] = v;
			}
		}
		totals[i] = rules_effective_weight(tasks[i].rule, tasks[i].weight,
										   down ? 0 : sum, down ? sum : 0);
	}
}

int64
rules_claim_offset_ms(int64 weight, int age_unit_ms)
{
	weight = clamp64(weight, RULES_MAX_WEIGHT);
	if (age_unit_ms <= 0)
		return 0;
	/* |weight| <= 1e12 and age_unit_ms < 2^31: no overflow before the clamp */
	if (weight > RULES_MAX_CLAIM_OFFSET_MS / age_unit_ms)
		return RULES_MAX_CLAIM_OFFSET_MS;
	if (weight < -RULES_MAX_CLAIM_OFFSET_MS / age_unit_ms)
		return -RULES_MAX_CLAIM_OFFSET_MS;
	return weight * age_unit_ms;
}
