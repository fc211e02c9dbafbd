/*-------------------------------------------------------------------------
 *
 * op_sql.c
 *	  The sql operator: runs its (templated) SQL in the worker's
 *	  transaction, as the DAG's owner.
 *
 * The worker has already switched to the owner and set the run context
 * (orchestrator.run_id, ...) as settings, so the SQL can read values with
 * current_setting() instead of splicing them in.  Its effects commit in the
 * same transaction as the task's success.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "executor/spi.h"
#include "utils/jsonb.h"

#include "orchestrator.h"
#include "task.h"

void
op_sql_run(TaskRun *task)
{
	JsonbValue *query = jsonb_get_key(task->spec, "query");
	char	   *sql;
	int			rc;

	if (query == NULL || query->type != jbvString)
		elog(ERROR, "sql task \"%s\" has no query", task->task_id);
	sql = template_render(pnstrdup(query->val.string.val, query->val.string.len),
						  psprintf("the query of task \"%s\"", task->task_id),
						  &task->ctx);
	rc = SPI_execute(sql, false, 0);
	if (rc < 0)
		ereport(ERROR,
				(errmsg("the query of task \"%s\" failed: %s",
						task->task_id, SPI_result_code_string(rc))));
}
