/*-------------------------------------------------------------------------
 *
 * mapping.h
 *	  Dynamic task mapping: a task instance that became ready expands into
 *	  one instance per element of its task's expand array, of the rows of
 *	  its expand_query, or of the instances of the mapped task whose
 *	  artifact it reads.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_MAPPING_H
#define ORCHESTRATOR_MAPPING_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

/*
 * SQL: whether the instance ti (of task t, joined) is one to expand when
 * it becomes ready rather than to queue: the unmapped instance of a task
 * with expand or expand_query, or that reads the artifact of a task mapped
 * in the run.  (A scalar subquery, probed by key for each instance: an
 * EXISTS may be planned as a hash of every mapped instance of every run.)
 */
#define MAPPING_TO_EXPAND_SQL \
	"(ti.map_index = -1 AND t.task_id IS NOT NULL AND " \
	" (t.expand IS NOT NULL OR t.expand_query IS NOT NULL OR " \
	"  (SELECT true FROM orchestrator.task_instance mi " \
	"   WHERE mi.run_id = ti.run_id AND mi.task_id = t.spec->>'input' " \
	"     AND mi.map_index >= 0 LIMIT 1) IS NOT NULL))"

/*
 * Expands the unmapped instance of task_id in run_id, which is scheduled
 * and ready: it is replaced by instances 0 .. n-1, scheduled, and n is
 * returned; or it becomes skipped (no elements: 0 is returned) or failed
 * (too many, or its expand_query failed: -1).  In the caller's
 * transaction, with SPI connected, the run and the DAG locked.
 */
extern int	mapping_expand(int64 run_id, const char *dag_id, const char *task_id,
						   TimestampTz now);

/* add_task's checks of a task's expand and expand_query */
extern void mapping_check_definition(Jsonb *expand, const char *expand_query,
									 const char *task_id);

#endif							/* ORCHESTRATOR_MAPPING_H */
