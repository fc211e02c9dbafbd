/*
 * rules_test.c: the decisions of src/rules.c, on their own (no server).
 *
 * 1. Every trigger rule against every combination of up to four upstream
 *	  states (all eight states), checked against an oracle written from
 *	  Airflow's definitions of the rules once every upstream is done: a
 *	  rule decides as the oracle when all are done, decides early only for
 *	  an outcome the unfinished ones can still lead to, and waits only
 *	  while the outcome is open.  Airflow's early decisions are checked by
 *	  name.
 * 2. Whole runs: propagation, joins, the budget, retries, removed tasks.
 * 3. A run's outcome from its leaves.
 * 4. Mapped tasks: the expansion's decision, and a run whose mapped task
 *	  has an entry per instance, each counted by the rules on its own.
 *
 * Prints one line per failed check and a summary; exits 1 on a failure.
 * Built and run by "make unit" (and so by make test).
 */
#include "postgres.h"

#include <stdio.h>

#include "rules.h"

static int	checks = 0;
static int	failures = 0;

static void
check(bool ok, const char *what, const char *detail)
{
	checks++;
	if (!ok)
	{
		failures++;
		printf("FAILED: %s%s%s\n", what, detail ? ": " : "", detail ? detail : "");
	}
}

static const char *
decision_name(Decision d)
{
	switch (d)
	{
		case DECIDE_WAIT:
			return "wait";
		case DECIDE_READY:
			return "ready";
		case DECIDE_SKIPPED:
			return "skipped";
		case DECIDE_UPSTREAM_FAILED:
			return "upstream_failed";
	}
	return "?";
}

/*
 * Airflow's rules when every upstream instance is done, spelled out per
 * rule from the counts of each final state.
 */
static Decision
oracle(TriggerRule rule, int n, int success, int failed, int upstream_failed,
	   int skipped)
{
	int			anyfail = failed + upstream_failed;

	if (n == 0)
		return DECIDE_READY;
	switch (rule)
	{
		case TR_ALL_SUCCESS:
			if (success == n)
				return DECIDE_READY;
			return anyfail > 0 ? DECIDE_UPSTREAM_FAILED : DECIDE_SKIPPED;
		case TR_ALL_FAILED:
			return anyfail == n ? DECIDE_READY : DECIDE_SKIPPED;
		case TR_ALL_DONE:
			return DECIDE_READY;
		case TR_ONE_SUCCESS:
			if (success > 0)
				return DECIDE_READY;
			return skipped == n ? DECIDE_SKIPPED : DECIDE_UPSTREAM_FAILED;
		case TR_ONE_FAILED:
			return anyfail > 0 ? DECIDE_READY : DECIDE_SKIPPED;
		case TR_NONE_FAILED:
			return anyfail > 0 ? DECIDE_UPSTREAM_FAILED : DECIDE_READY;
		case TR_NONE_SKIPPED:
			return skipped > 0 ? DECIDE_SKIPPED : DECIDE_READY;
		case TR_NONE_FAILED_MIN_ONE_SUCCESS:
			if (anyfail > 0)
				return DECIDE_UPSTREAM_FAILED;
			return success > 0 ? DECIDE_READY : DECIDE_SKIPPED;
		case TR_ALWAYS:
			return DECIDE_READY;
		case TR_NRULES:
			break;
	}
	return DECIDE_WAIT;
}

static const TiState final_states[] = {TI_SUCCESS, TI_FAILED, TI_UPSTREAM_FAILED, TI_SKIPPED};

/*
 * The set of oracle answers over every way the unfinished upstream
 * instances can end: a bit per Decision.
 */
static unsigned
possible_outcomes(TriggerRule rule, const TiState *states, int n, int from)
{
	unsigned	bits = 0;

	if (from == n)
	{
		int			c[TI_NSTATES] = {0};

		for (int i = 0; i < n; i++)
			c[states[i]]++;
		return 1u << oracle(rule, n, c[TI_SUCCESS], c[TI_FAILED],
							c[TI_UPSTREAM_FAILED], c[TI_SKIPPED]);
	}
	if (rules_state_done(states[from]))
		return possible_outcomes(rule, states, n, from + 1);
	for (int f = 0; f < 4; f++)
	{
		TiState		copy[8];

		memcpy(copy, states, sizeof(TiState) * n);
		copy[from] = final_states[f];
		bits |= possible_outcomes(rule, copy, n, from + 1);
	}
	return bits;
}

static void
describe(char *buf, size_t len, TriggerRule rule, const TiState *states, int n)
{
	int			off = snprintf(buf, len, "%s over [", rules_trigger_rule_name(rule));

	for (int i = 0; i < n && off < (int) len; i++)
		off += snprintf(buf + off, len - off, "%s%s", i ? " " : "", rules_state_name(states[i]));
	if (off < (int) len)
		snprintf(buf + off, len - off, "]");
}

/* 1. every rule, every combination of upstream states */
static void
test_trigger_rules(void)
{
	int			combos = 0;

	for (int r = 0; r < TR_NRULES; r++)
	{
		for (int n = 0; n <= 4; n++)
		{
			int			total = 1;
			TiState		states[8];

			for (int i = 0; i < n; i++)
				total *= TI_NSTATES;
			for (int k = 0; k < total; k++)
			{
				UpstreamTally tally = {0};
				Decision	d;
				unsigned	possible;
				bool		all_done = true;
				char		buf[256];

				for (int i = 0, v = k; i < n; i++, v /= TI_NSTATES)
				{
					states[i] = (TiState) (v % TI_NSTATES);
					rules_tally(&tally, states[i]);
					all_done &= rules_state_done(states[i]);
				}
				d = rules_decide((TriggerRule) r, &tally);
				possible = possible_outcomes((TriggerRule) r, states, n, 0);
				describe(buf, sizeof(buf), (TriggerRule) r, states, n);
				combos++;
				if (all_done)
					check(possible == (1u << d), "decides as Airflow once all upstream are done", buf);
				else if (d == DECIDE_WAIT)
				{
					/*
					 * waiting is right while the end is open, or when the end
					 * is to run: a task runs after its upstream, except under
					 * one_success, one_failed and always
					 */
					bool		single = (possible & (possible - 1)) == 0;

					check(!single || (possible == (1u << DECIDE_READY) &&
									  r != TR_ONE_SUCCESS && r != TR_ONE_FAILED && r != TR_ALWAYS),
						  "waits only while the outcome is open", buf);
				}
				else
				{
					/*
					 * an early decision is one the rest can still lead to
					 * (Airflow skips an all_success task at the first skipped
					 * upstream, even if a later one fails), and only the
					 * one_* rules start a task early
					 */
					check((possible & (1u << d)) != 0,
						  "an early decision is a possible outcome", buf);
					check(d != DECIDE_READY || r == TR_ONE_SUCCESS || r == TR_ONE_FAILED || r == TR_ALWAYS,
						  "only one_success, one_failed and always start before their upstream ends", buf);
				}
			}
		}
	}
	check(combos > 9 * 4096, "the combinations were all tried", NULL);
}

static Decision
decide_over(TriggerRule rule, int n, const TiState *states)
{
	UpstreamTally tally = {0};

	for (int i = 0; i < n; i++)
		rules_tally(&tally, states[i]);
	return rules_decide(rule, &tally);
}

/* Airflow's early decisions, by name */
static void
test_early_decisions(void)
{
	struct
	{
		TriggerRule rule;
		TiState		states[3];
		Decision	expected;
	}			cases[] = {
		{TR_ALL_SUCCESS, {TI_FAILED, TI_RUNNING, TI_SCHEDULED}, DECIDE_UPSTREAM_FAILED},
		{TR_ALL_SUCCESS, {TI_UPSTREAM_FAILED, TI_QUEUED, TI_SUCCESS}, DECIDE_UPSTREAM_FAILED},
		{TR_ALL_SUCCESS, {TI_SKIPPED, TI_RUNNING, TI_SUCCESS}, DECIDE_SKIPPED},
		{TR_ALL_SUCCESS, {TI_SUCCESS, TI_SUCCESS, TI_UP_FOR_RETRY}, DECIDE_WAIT},
		{TR_ALL_SUCCESS, {TI_SUCCESS, TI_SUCCESS, TI_SUCCESS}, DECIDE_READY},
		{TR_ONE_SUCCESS, {TI_SUCCESS, TI_RUNNING, TI_SCHEDULED}, DECIDE_READY},
		{TR_ONE_SUCCESS, {TI_FAILED, TI_RUNNING, TI_SKIPPED}, DECIDE_WAIT},
		{TR_ONE_SUCCESS, {TI_SKIPPED, TI_SKIPPED, TI_SKIPPED}, DECIDE_SKIPPED},
		{TR_ONE_SUCCESS, {TI_SKIPPED, TI_FAILED, TI_SKIPPED}, DECIDE_UPSTREAM_FAILED},
		{TR_ONE_FAILED, {TI_FAILED, TI_RUNNING, TI_SCHEDULED}, DECIDE_READY},
		{TR_ONE_FAILED, {TI_UPSTREAM_FAILED, TI_RUNNING, TI_SCHEDULED}, DECIDE_READY},
		{TR_ONE_FAILED, {TI_SUCCESS, TI_SKIPPED, TI_SUCCESS}, DECIDE_SKIPPED},
		{TR_ALL_FAILED, {TI_SUCCESS, TI_RUNNING, TI_FAILED}, DECIDE_SKIPPED},
		{TR_ALL_FAILED, {TI_FAILED, TI_UPSTREAM_FAILED, TI_FAILED}, DECIDE_READY},
		{TR_ALL_DONE, {TI_FAILED, TI_SKIPPED, TI_UP_FOR_RETRY}, DECIDE_WAIT},
		{TR_ALL_DONE, {TI_FAILED, TI_SKIPPED, TI_UPSTREAM_FAILED}, DECIDE_READY},
		{TR_NONE_FAILED, {TI_SKIPPED, TI_SUCCESS, TI_SKIPPED}, DECIDE_READY},
		{TR_NONE_FAILED, {TI_FAILED, TI_RUNNING, TI_SKIPPED}, DECIDE_UPSTREAM_FAILED},
		{TR_NONE_SKIPPED, {TI_SKIPPED, TI_RUNNING, TI_SUCCESS}, DECIDE_SKIPPED},
		{TR_NONE_SKIPPED, {TI_FAILED, TI_SUCCESS, TI_FAILED}, DECIDE_READY},
		{TR_NONE_FAILED_MIN_ONE_SUCCESS, {TI_SKIPPED, TI_SKIPPED, TI_SUCCESS}, DECIDE_READY},
		{TR_NONE_FAILED_MIN_ONE_SUCCESS, {TI_SKIPPED, TI_SKIPPED, TI_SKIPPED}, DECIDE_SKIPPED},
		{TR_NONE_FAILED_MIN_ONE_SUCCESS, {TI_UPSTREAM_FAILED, TI_QUEUED, TI_SUCCESS}, DECIDE_UPSTREAM_FAILED},
		{TR_ALWAYS, {TI_RUNNING, TI_QUEUED, TI_SCHEDULED}, DECIDE_READY},
	};

	for (size_t i = 0; i < lengthof(cases); i++)
	{
		char		buf[256];
		char		msg[300];
		Decision	d = decide_over(cases[i].rule, 3, cases[i].states);

		describe(buf, sizeof(buf), cases[i].rule, cases[i].states, 3);
		snprintf(msg, sizeof(msg), "%s: %s, expected %s", buf, decision_name(d),
				 decision_name(cases[i].expected));
		check(d == cases[i].expected, "early decision", msg);
	}
	/* a task without upstream is ready whatever its rule */
	for (int r = 0; r < TR_NRULES; r++)
		check(decide_over((TriggerRule) r, 0, NULL) == DECIDE_READY,
			  "no upstream: ready", rules_trigger_rule_name((TriggerRule) r));
}

/* names and the state classes */
static void
test_names(void)
{
	for (int s = 0; s < TI_NSTATES; s++)
	{
		TiState		back;

		check(rules_parse_state(rules_state_name((TiState) s), &back) && back == s,
			  "state name round trip", rules_state_name((TiState) s));
	}
	for (int r = 0; r < TR_NRULES; r++)
	{
		TriggerRule back;

		check(rules_parse_trigger_rule(rules_trigger_rule_name((TriggerRule) r), &back) &&
			  back == r, "rule name round trip", rules_trigger_rule_name((TriggerRule) r));
	}
	{
		TiState		s;
		TriggerRule r;

		check(!rules_parse_state("done", &s), "an unknown state is refused", NULL);
		check(!rules_parse_trigger_rule("all_succes", &r), "an unknown rule is refused", NULL);
	}
	check(rules_state_active(TI_QUEUED) && rules_state_active(TI_RUNNING) &&
		  !rules_state_active(TI_SCHEDULED) && !rules_state_active(TI_UP_FOR_RETRY) &&
		  !rules_state_active(TI_SUCCESS), "active states", NULL);
	check(!rules_state_done(TI_UP_FOR_RETRY) && !rules_state_done(TI_SCHEDULED) &&
		  rules_state_done(TI_UPSTREAM_FAILED) && rules_state_done(TI_SKIPPED),
		  "done states", NULL);
	/* a sensor between pokes: not done, holds no worker, comes back by itself */
	check(!rules_state_done(TI_UP_FOR_RESCHEDULE) && !rules_state_active(TI_UP_FOR_RESCHEDULE) &&
		  rules_state_waiting(TI_UP_FOR_RESCHEDULE) && rules_state_waiting(TI_UP_FOR_RETRY) &&
		  !rules_state_waiting(TI_SCHEDULED) && !rules_state_waiting(TI_RUNNING),
		  "up_for_reschedule: waiting, neither done nor active", NULL);
	{
		TiState		s;

		check(rules_parse_state("up_for_reschedule", &s) && s == TI_UP_FOR_RESCHEDULE,
			  "up_for_reschedule is Airflow's name", NULL);
	}
}

#define T(state_, rule_) {.state = (state_), .rule = (rule_)}

/* 2. whole runs */
static void
test_runs(void)
{
	/* a chain a -> b -> c -> d: a failure propagates down to the end */
	{
		static const int up_b[] = {0}, up_c[] = {1}, up_d[] = {2};
		RuleTask	t[4] = {T(TI_FAILED, TR_ALL_SUCCESS), T(TI_SCHEDULED, TR_ALL_SUCCESS),
		T(TI_SCHEDULED, TR_ALL_SUCCESS), T(TI_SCHEDULED, TR_ALL_DONE)};
		int			budget = 10;

		t[1].nupstream = 1, t[1].upstream = up_b;
		t[2].nupstream = 1, t[2].upstream = up_c;
		t[3].nupstream = 1, t[3].upstream = up_d;
		t[3].is_leaf = true;
		check(rules_evaluate_run(t, 4, &budget) == 0, "chain: nothing held", NULL);
		check(t[1].state == TI_UPSTREAM_FAILED && t[2].state == TI_UPSTREAM_FAILED,
			  "chain: upstream_failed propagates", NULL);
		check(t[3].state == TI_QUEUED && budget == 9,
			  "chain: all_done after the failures is queued", NULL);
		check(!t[0].changed && t[1].changed && t[2].changed && t[3].changed,
			  "chain: changed marks exactly the changed", NULL);
		check(rules_run_outcome(t, 4) == RUN_GOING, "chain: going while d is queued", NULL);
		t[3].state = TI_SUCCESS;
		check(rules_run_outcome(t, 4) == RUN_SUCCEEDS,
			  "chain: the leaf decides (an inner failure does not fail the run)", NULL);
	}
	/* fan-out and join: the join waits for every branch */
	{
		static const int up1[] = {0}, join[] = {1, 2, 3};
		RuleTask	t[5] = {T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_SUCCESS, TR_ALL_SUCCESS),
			T(TI_RUNNING, TR_ALL_SUCCESS), T(TI_SCHEDULED, TR_ALL_SUCCESS),
		T(TI_SCHEDULED, TR_ALL_SUCCESS)};
		int			budget = 1;

		for (int i = 1; i <= 3; i++)
			t[i].nupstream = 1, t[i].upstream = up1;
		t[4].nupstream = 3, t[4].upstream = join;
		t[4].is_leaf = true;
		check(rules_evaluate_run(t, 5, &budget) == 0 && t[3].state == TI_QUEUED &&
			  t[4].state == TI_SCHEDULED, "join: waits for its running branch", NULL);
		t[2].state = TI_SUCCESS;
		t[3].state = TI_SUCCESS;
		budget = 0;
		check(rules_evaluate_run(t, 5, &budget) == 1 && t[4].state == TI_SCHEDULED,
			  "join: ready but held back without budget", NULL);
		budget = 2;
		check(rules_evaluate_run(t, 5, &budget) == 0 && t[4].state == TI_QUEUED && budget == 1,
			  "join: queued once there is budget", NULL);
	}
	/* the budget queues in order and holds back the rest */
	{
		RuleTask	t[5];
		int			budget = 2;

		for (int i = 0; i < 5; i++)
			t[i] = (RuleTask) T(TI_SCHEDULED, TR_ALL_SUCCESS);
		check(rules_evaluate_run(t, 5, &budget) == 3 && budget == 0 &&
			  t[0].state == TI_QUEUED && t[1].state == TI_QUEUED && t[2].state == TI_SCHEDULED,
			  "budget: two queued, three held", NULL);
		check(!t[0].ready && !t[1].ready && t[2].ready && t[3].ready && t[4].ready &&
			  !t[2].changed, "budget: the held ones are marked ready, not changed", NULL);
	}
	/* retries: only a due one is queued; removed tasks are skipped */
	{
		static const int up[] = {2};
		RuleTask	t[4] = {T(TI_UP_FOR_RETRY, TR_ALL_SUCCESS), T(TI_UP_FOR_RETRY, TR_ALL_SUCCESS),
		T(TI_SCHEDULED, TR_ALL_SUCCESS), T(TI_SCHEDULED, TR_ONE_SUCCESS)};
		int			budget = 10;

		t[0].retry_due = true;
		t[2].removed = true;
		t[3].nupstream = 1, t[3].upstream = up;
		rules_evaluate_run(t, 4, &budget);
		check(t[0].state == TI_QUEUED && t[1].state == TI_UP_FOR_RETRY,
			  "retry: the due one is queued, the other waits", NULL);
		check(t[2].state == TI_SKIPPED && t[3].state == TI_SKIPPED,
			  "removed: skipped, and its downstream follows its rule", NULL);
	}
	/*
	 * sensors: a rescheduled instance is queued at its next poke only, within
	 * the budget like any other; meanwhile its downstream waits and the run
	 * goes on
	 */
	{
		static const int up[] = {0}, up2[] = {1};
		RuleTask	t[3] = {T(TI_UP_FOR_RESCHEDULE, TR_ALL_SUCCESS), T(TI_UP_FOR_RESCHEDULE, TR_ALL_SUCCESS),
		T(TI_SCHEDULED, TR_ALL_DONE)};
		int			budget = 10;

		t[1].nupstream = 1, t[1].upstream = up;
		t[2].nupstream = 1, t[2].upstream = up2;
		t[2].is_leaf = true;
		check(rules_evaluate_run(t, 3, &budget) == 0 && t[0].state == TI_UP_FOR_RESCHEDULE &&
			  t[1].state == TI_UP_FOR_RESCHEDULE && t[2].state == TI_SCHEDULED && budget == 10 &&
			  !t[0].changed, "reschedule: nothing before the next poke", NULL);
		check(rules_run_outcome(t, 3) == RUN_GOING, "reschedule: the run goes on", NULL);
		t[0].retry_due = t[1].retry_due = true;
		budget = 1;
		check(rules_evaluate_run(t, 3, &budget) == 1 && t[0].state == TI_QUEUED &&
			  t[1].state == TI_UP_FOR_RESCHEDULE && t[1].ready && budget == 0,
			  "reschedule: a due poke is queued, within the budget", NULL);
		t[0].state = TI_SKIPPED;	/* soft_fail: its downstream follows its rule */
		t[1].state = TI_SKIPPED;
		budget = 1;
		check(rules_evaluate_run(t, 3, &budget) == 0 && t[2].state == TI_QUEUED,
			  "reschedule: a soft-failed sensor is skipped, all_done runs after it", NULL);
	}
	/* outcome: a failed leaf fails the run, a skipped one does not */
	{
		RuleTask	t[2] = {T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_UPSTREAM_FAILED, TR_ALL_SUCCESS)};

		t[0].is_leaf = t[1].is_leaf = true;
		check(rules_run_outcome(t, 2) == RUN_FAILS, "outcome: an upstream_failed leaf fails", NULL);
		t[1].state = TI_SKIPPED;
		check(rules_run_outcome(t, 2) == RUN_SUCCEEDS, "outcome: a skipped leaf does not", NULL);
		t[1].state = TI_UP_FOR_RETRY;
		check(rules_run_outcome(t, 2) == RUN_GOING, "outcome: a retry keeps it going", NULL);
		check(rules_run_outcome(t, 0) == RUN_SUCCEEDS, "outcome: an empty run succeeds", NULL);
	}
}

/* 4. mapped tasks */
static void
test_mapping(void)
{
	check(rules_expansion(0, 1024) == EXPAND_SKIPPED, "expansion: none skips (Airflow's rule)", NULL);
	check(rules_expansion(1, 1024) == EXPAND_INSTANCES && rules_expansion(1024, 1024) == EXPAND_INSTANCES,
		  "expansion: 1 to max_map_length expand", NULL);
	check(rules_expansion(1025, 1024) == EXPAND_FAILED, "expansion: one past max_map_length fails", NULL);
	check(rules_expansion(-1, 1024) == EXPAND_FAILED, "expansion: no elements to be had fails", NULL);

	/*
	 * m[0..2] (mapped), then a join over all of them under each rule: the
	 * join's upstream is every instance, as state.c builds it
	 */
	{
		static const int up[] = {0, 1, 2};
		const TriggerRule rules[] = {TR_ALL_SUCCESS, TR_ONE_FAILED, TR_ONE_SUCCESS, TR_ALL_DONE,
		TR_ALL_FAILED};
		const TiState expected[] = {TI_UPSTREAM_FAILED, TI_QUEUED, TI_QUEUED, TI_QUEUED, TI_SKIPPED};

		for (int r = 0; r < (int) lengthof(rules); r++)
		{
			RuleTask	t[4] = {T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_FAILED, TR_ALL_SUCCESS),
			T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_SCHEDULED, rules[r])};
			int			budget = 10;

			t[3].nupstream = 3, t[3].upstream = up;
			t[3].is_leaf = true;
			rules_evaluate_run(t, 4, &budget);
			check(t[3].state == expected[r], "mapped: one failed instance of three, counted alone",
				  rules_trigger_rule_name(rules[r]));
		}
	}
	/* the join waits while one instance is up for retry, whatever the others did */
	{
		static const int up[] = {0, 1, 2};
		RuleTask	t[4] = {T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_UP_FOR_RETRY, TR_ALL_SUCCESS),
		T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_SCHEDULED, TR_ALL_SUCCESS)};
		int			budget = 10;

		t[3].nupstream = 3, t[3].upstream = up;
		t[3].is_leaf = true;
		rules_evaluate_run(t, 4, &budget);
		check(t[3].state == TI_SCHEDULED && t[1].state == TI_UP_FOR_RETRY,
			  "mapped: the join waits for the instance up for retry", NULL);
		check(rules_run_outcome(t, 4) == RUN_GOING, "mapped: the run goes on", NULL);
		t[1].state = TI_SUCCESS;
		rules_evaluate_run(t, 4, &budget);
		check(t[3].state == TI_QUEUED, "mapped: the join runs once every instance succeeded", NULL);
	}
	/* a mapped leaf: one failed instance fails the run */
	{
		RuleTask	t[3] = {T(TI_SUCCESS, TR_ALL_SUCCESS), T(TI_FAILED, TR_ALL_SUCCESS),
		T(TI_SUCCESS, TR_ALL_SUCCESS)};

		t[0].is_leaf = t[1].is_leaf = t[2].is_leaf = true;
		check(rules_run_outcome(t, 3) == RUN_FAILS, "mapped: a failed instance of a leaf fails the run", NULL);
	}
}

static void
test_weights(void)
{
	WeightRule	r;

	check(rules_parse_weight_rule("downstream", &r) && r == WR_DOWNSTREAM, "weight rule downstream", NULL);
	check(rules_parse_weight_rule("upstream", &r) && r == WR_UPSTREAM, "weight rule upstream", NULL);
	check(rules_parse_weight_rule("absolute", &r) && r == WR_ABSOLUTE, "weight rule absolute", NULL);
	check(!rules_parse_weight_rule("Downstream", &r), "weight rule: exact names", NULL);
	check(!rules_parse_weight_rule("", &r), "weight rule: empty", NULL);

	/* Airflow's: downstream sums below, upstream sums above, absolute alone */
	check(rules_effective_weight(WR_DOWNSTREAM, 2, 10, 5) == 7, "downstream weight", NULL);
	check(rules_effective_weight(WR_UPSTREAM, 2, 10, 5) == 12, "upstream weight", NULL);
	check(rules_effective_weight(WR_ABSOLUTE, 2, 10, 5) == 2, "absolute weight", NULL);
	check(rules_effective_weight(WR_DOWNSTREAM, INT64_MAX, 0, INT64_MAX) == RULES_MAX_WEIGHT,
		  "weight: clamped, no overflow", NULL);
	check(rules_effective_weight(WR_UPSTREAM, -5, INT64_MIN, 0) == -RULES_MAX_WEIGHT,
		  "weight: clamped below", NULL);

	/*
	 * A whole DAG's: a -> b, a -> c, b -> d, c -> d, d -> e (a diamond: d is
	 * counted once), weights 1, 2, 3, 10, 4; c absolute, e upstream.
	 */
	{
		int			up_b[] = {0},
					up_c[] = {0},
					up_d[] = {1, 2},
					up_e[] = {3};
		RuleWeightTask dag[5] = {
			{1, WR_DOWNSTREAM, 0, NULL},
			{2, WR_DOWNSTREAM, 1, up_b},
			{3, WR_ABSOLUTE, 1, up_c},
			{10, WR_DOWNSTREAM, 2, up_d},
			{4, WR_UPSTREAM, 1, up_e},
		};
		int			child_start[6] = {0, 2, 3, 4, 5, 5};
		int			children[5] = {1, 2, 3, 3, 4};
		int64		totals[5];
		int			mark[5] = {0};
		int			stack[5];

		rules_weight_totals(dag, 5, child_start, children, totals, mark, stack);
		check(totals[0] == 20, "downstream weight of a DAG's root: each descendant once", NULL);
		check(totals[1] == 16 && totals[3] == 14, "downstream weights in the middle", NULL);
		check(totals[2] == 3, "an absolute weight in a DAG", NULL);
		check(totals[4] == 20, "upstream weight of a leaf: each ancestor once", NULL);
	}
	/* a chain of 1,000 and a fan of 1,000 under one root */
	{
		enum
		{
		N = 1000};
		static RuleWeightTask dag[2 * N + 1];
		static int	up[2 * N + 1];
		static int	child_start[2 * N + 2];
		static int	children[2 * N];
		static int64 totals[2 * N + 1];
		static int	mark[2 * N + 1];
		static int	stack[2 * N + 1];
		int			e = 0;

		/* 0: the root; 1..N a chain from it; N+1..2N each right under it */
		for (int i = 0; i <= 2 * N; i++)
		{
			up[i] = i == 0 ? -1 : (i <= N ? i - 1 : 0);
			dag[i] = (RuleWeightTask) {1, WR_DOWNSTREAM, i == 0 ? 0 : 1, &up[i]};
		}
		for (int i = 0; i <= 2 * N; i++)
		{
			child_start[i] = e;
			if (i == 0)
			{
				children[e++] = 1;
				for (int k = N + 1; k <= 2 * N; k++)
					children[e++] = k;
			}
			else if (i < N)
				children[e++] = i + 1;
		}
		child_start[2 * N + 1] = e;
		rules_weight_totals(dag, 2 * N + 1, child_start, children, totals, mark, stack);
		check(totals[0] == 2 * N + 1, "a root over a chain and a fan", NULL);
		check(totals[1] == N && totals[N] == 1 && totals[2 * N] == 1, "a chain's weights", NULL);
	}

	/* ageing: weight w goes ahead of instances up to w units younger */
	check(rules_claim_offset_ms(10, 1000) == 10000, "claim offset", NULL);
	check(rules_claim_offset_ms(-2, 1000) == -2000, "claim offset of a negative weight", NULL);
	check(rules_claim_offset_ms(RULES_MAX_WEIGHT, INT32_MAX) == RULES_MAX_CLAIM_OFFSET_MS,
		  "claim offset: clamped, no overflow", NULL);
	check(rules_claim_offset_ms(-RULES_MAX_WEIGHT, INT32_MAX) == -RULES_MAX_CLAIM_OFFSET_MS,
		  "claim offset: clamped below", NULL);
	check(rules_claim_offset_ms(5, 0) == 0, "claim offset: no unit, no offset", NULL);
}

int
main(void)
{
	test_weights();
	test_names();
	test_trigger_rules();
	test_early_decisions();
	test_runs();
	test_mapping();
	printf("rules: %d checks, %d failed\n", checks, failures);
	return failures == 0 ? 0 : 1;
}
