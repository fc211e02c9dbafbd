/*-------------------------------------------------------------------------
 *
 * task.h
 *	  A claimed task instance, as the worker and the operators see it.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_TASK_H
#define ORCHESTRATOR_TASK_H

#include "datatype/timestamp.h"
#include "utils/jsonb.h"

#include "template.h"

typedef struct TaskRun
{
	int64		run_id;
	char	   *dag_id;
	char	   *task_id;
	char	   *run_type;
	int			try_number;
	Oid			owner;
	Jsonb	   *spec;			/* NULL if the task is no longer defined */
	int64		timeout_ms;		/* execution_timeout, 0 for none */
	TemplateContext ctx;		/* for rendering templates */
} TaskRun;

/* operators (op_sql.c) */
extern void op_sql_run(TaskRun *task);

#endif							/* ORCHESTRATOR_TASK_H */
