/*-------------------------------------------------------------------------
 *
 * tasklog.h
 *	  Task logs: what a try says, kept with its outcome.
 *
 *-------------------------------------------------------------------------
 */
#ifndef ORCHESTRATOR_TASKLOG_H
#define ORCHESTRATOR_TASKLOG_H

extern void task_log_begin(void);
extern void task_log_end(void);
extern void task_log(const char *fmt,...) pg_attribute_printf(1, 2);
extern void task_log_write(int64 run_id, const char *task_id, int map_index,
						   int try_number);

#endif							/* ORCHESTRATOR_TASKLOG_H */
